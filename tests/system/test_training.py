"""Each task's entry point on a tiny dataset generated here, in the layout of the real one: one epoch,
an exported SavedModel that answers the documented signature, complete metadata, and clear errors for
bad data directories."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from training import arguments, cats_vs_dogs, fashion_mnist, fitting, flowers, rps
from training.ood import METHODS

REQUIRED = {
    "task",
    "version",
    "labels",
    "input",
    "signature",
    "architecture",
    "metrics",
    "dataset",
    "training",
    "created_at",
}


OOD_ARGS = ["--ood-per-set", "12"]  # small generated OOD sets keep these tests quick


def _image(
    rng: np.random.Generator, index: int, fmt: str, mode: str = "RGB", size: tuple[int, int] = (48, 40)
) -> bytes:
    base = np.full((size[1], size[0], 3), 40 + 50 * index, np.uint8) + rng.integers(
        0, 30, (size[1], size[0], 3), dtype=np.uint8
    )
    buffer = io.BytesIO()
    Image.fromarray(base).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def image_folder(
    root: Path, classes: list[str], per_class: int, fmt: str = "JPEG", mode: str = "RGB", groups: int = 0
) -> Path:
    """`per_class` images per class folder, named `<class>.<i>`, or `<class>0<g>-<i>` in `groups` groups
    (as the rps dataset names the frames of each rendered hand)."""
    rng = np.random.default_rng(0)
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            stem = f"{name}0{i % groups}-{i:03d}" if groups else f"{name}.{i}"
            (root / name / f"{stem}{suffix}").write_bytes(_image(rng, index, fmt, mode))
    return root


def idx_files(root: Path, train: int = 120, test: int = 40) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        header = (
            (0x803).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
        )
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        label_header = (0x801).to_bytes(4, "big") + count.to_bytes(4, "big")
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(label_header + labels.astype(np.uint8).tobytes())
        )
    return root


def check_export(version_dir: Path, task: str, labels: list[str]) -> dict:
    import tensorflow as tf

    meta = json.loads((version_dir / "metadata.json").read_text())
    assert set(meta) >= REQUIRED
    assert meta["task"] == task and meta["labels"] == labels and meta["version"] == int(version_dir.name)
    assert {"test_accuracy", "test_examples", "split", "per_class", "confusion_matrix"} <= set(meta["metrics"])
    assert {"epochs", "seconds", "command", "tensorflow"} <= set(meta["training"])
    assert meta["training"]["command"].startswith(f"python -m training.{task}")
    for plot in (
        "training_curves.png",
        "confusion_matrix.png",
        "test_predictions.png",
        "reliability.png",
        "ood_scores.png",
    ):
        assert (version_dir / plot).stat().st_size > 1000
    calibration = meta["calibration"]
    assert calibration["method"] == "temperature" and calibration["split"] == "validation"
    assert calibration["temperature"] > 0
    assert {"ece_before", "ece_after", "nll_before", "nll_after", "bins"} <= set(calibration["test"])
    ood = meta["ood"]
    assert ood["method"] in ood["candidates"] and ood["output"] == "ood_score"
    assert {"msp", "energy", "mahalanobis", "knn"} <= set(ood["candidates"])
    # The threshold is the PAC order statistic of the calibration split's scores (too few here to bound anything).
    guarantee = ood["guarantee"]
    assert ood["threshold_split"] == "calibration" and (guarantee["alpha"], guarantee["delta"]) == (0.05, 0.1)
    n = guarantee["calibration_examples"]
    assert n == meta["dataset"]["calibration_examples"] and guarantee["holds"] is False  # n is far below ~45
    # One held-out image of a class stays in the test split: the tiniest folders calibrate on none.
    assert ood["in_distribution_kept"] == (round(guarantee["order_statistic"] / n, 4) if n else None)
    assert set(ood["candidates"]) <= set(METHODS)
    assert {"noise", "flat_colours", "gradients", "patterns", "text"} <= set(ood["evaluation"])
    for figures in ood["evaluation"].values():
        assert {"auroc", "flagged", "fpr_at_95_tpr", "examples"} <= set(figures)
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    stored = sum(int(np.prod(shape)) for shape in reader.get_variable_to_shape_map().values())
    assert stored <= meta["parameters"] + 100, f"{stored} values stored for {meta['parameters']} parameters"
    info = meta["input"]
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures[meta["signature"]["name"]]
    batch = np.random.default_rng(0).integers(
        0, 255, (3, info["height"], info["width"], info["channels"]), dtype=np.uint8
    )
    outputs = serve(**{meta["signature"]["input"]: tf.constant(batch)})
    probabilities = outputs[meta["signature"]["output"]].numpy()
    assert probabilities.shape == (3, len(labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert outputs[ood["output"]].shape == (3,)
    return meta


def test_flowers_trains_exports_and_counts_corrupt_files(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "flower_photos", flowers.TASK.labels, per_class=7)
    (data / "roses" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    # A sibling dataset, as in ../shared/datasets: it becomes an out-of-distribution set, never training data.
    image_folder(tmp_path / "rps_28x28" / "test", rps.TASK.labels, per_class=4, fmt="PNG", mode="RGBA")
    flowers.main(
        [
            "--data-dir",
            str(data),
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "2",
            "--fine-tune-schedule",
            "cosine",
            "--augment",
            "randaugment",
            "--batch-size",
            "8",
            "--output-dir",
            str(tmp_path / "models"),
            *OOD_ARGS,
        ]
    )
    meta = check_export(tmp_path / "models" / "flowers" / "1", "flowers", flowers.TASK.labels)
    assert meta["architecture"] == "efficientnet_lite0" and meta["input"]["height"] == 224
    assert meta["dataset"]["skipped_files"] == 1
    assert meta["training"]["epochs"] == 3  # one epoch of the head, two of fine-tuning (cosine runs them all)
    assert meta["ood"]["evaluation"]["rps"]["examples"] == 6  # the report half of 12 hands


def test_cats_vs_dogs_uses_validation_folder_as_test_split(tmp_path: Path) -> None:
    root = tmp_path / "cats_and_dogs_filtered"
    image_folder(root / "train", ["cats", "dogs"], per_class=6)
    image_folder(root / "validation", ["cats", "dogs"], per_class=3)
    cats_vs_dogs.main(
        ["--data-dir", str(root), "--arch", "tutorial", "--epochs", "1", "--output-dir", str(tmp_path / "m"), *OOD_ARGS]
    )
    meta = check_export(tmp_path / "m" / "cats_vs_dogs" / "1", "cats_vs_dogs", ["cat", "dog"])
    # The validation folder's 6 images are held out: 4 calibrate the guarantees, 2 (one per class) are the test split.
    assert (meta["metrics"]["test_examples"], meta["dataset"]["calibration_examples"]) == (2, 4)
    assert meta["input"] == {"height": 160, "width": 160, "channels": 3, "resize": "bilinear"}


def test_rps_reads_rgba_pngs_holds_out_whole_hands_and_writes_the_next_version(tmp_path: Path) -> None:
    root = tmp_path / "rps"
    image_folder(root / "train", rps.TASK.labels, per_class=12, fmt="PNG", mode="RGBA", groups=4)
    image_folder(root / "test", rps.TASK.labels, per_class=2, fmt="PNG", mode="RGBA")
    (tmp_path / "m" / "rps" / "4").mkdir(parents=True)
    rps.main(["--data-dir", str(root), "--epochs", "1", "--output-dir", str(tmp_path / "m"), *OOD_ARGS])
    meta = check_export(tmp_path / "m" / "rps" / "5", "rps", rps.TASK.labels)
    assert meta["dataset"]["validation_examples"] == 9  # one hand of 3 frames per class
    assert meta["dataset"]["train_examples"] == 27


def test_validation_fraction_moves_photos_between_train_and_validation_but_never_the_test_split(
    tmp_path: Path,
) -> None:
    root = image_folder(tmp_path / "flower_photos", flowers.TASK.labels, per_class=40)
    assert flowers.TASK.default == "efficientnet_lite0"  # the photos are decoded at its input, 224x224

    def splits(*options: str) -> Any:
        return flowers.TASK.load(arguments.parse(flowers.TASK, ["--data-dir", str(root), *options]))

    default, smaller = splits(), splits("--validation-fraction", "0.075")
    assert (len(default.validation.y), len(smaller.validation.y)) == (30, 15)  # 15% and 7.5% of 200, per class
    assert len(smaller.train.y) == len(default.train.y) + 15
    np.testing.assert_array_equal(smaller.test.x, default.test.x)  # the test split does not move
    with pytest.raises(SystemExit):
        arguments.parse(flowers.TASK, ["--validation-fraction", "0.6"])
    with pytest.raises(SystemExit):  # rps holds out whole hands: it has no such option
        arguments.parse(rps.TASK, ["--validation-fraction", "0.1"])


def test_cosine_schedule_keeps_the_final_weights_and_plateau_the_best_validation_loss() -> None:
    import keras

    from training.config import Schedule

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    # Validation labels are the training rule reversed: the better the fit, the worse the validation loss,
    # so the final epoch is the worst one and "best validation loss" would keep the first.
    train, val = (
        fitting.make_dataset(x, y, 16, shuffle=False, seed=0),
        fitting.make_dataset(x, 1 - y, 16, shuffle=False, seed=0),
    )
    schedules: tuple[tuple[Schedule, int], ...] = (("cosine", -1), ("plateau", 0))
    for schedule, kept in schedules:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        history = fitting.fit(model, train, val, epochs=4, patience=4, learning_rate=0.1, schedule=schedule)
        assert history["val_loss"][-1] > history["val_loss"][0]
        assert model.evaluate(val, verbose=0)[0] == pytest.approx(history["val_loss"][kept], rel=1e-4)


def test_grouped_split_holds_out_whole_groups_per_class() -> None:
    from training.splits import grouped_split

    groups = ["a1", "a1", "a2", "a2", "a3", "b1", "b1", "b2", "b2"]
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    rest, held = grouped_split(groups, y, per_class=1, seed=3)
    held_groups = {groups[i] for i in held}
    assert len(held_groups) == 2 and {g[0] for g in held_groups} == {"a", "b"}
    assert not held_groups & {groups[i] for i in rest}  # no group on both sides
    assert sorted([*rest, *held]) == list(range(len(y)))
    with pytest.raises(Exception, match="leaves none to train on"):
        grouped_split(["a", "a", "b"], np.array([0, 0, 1]), per_class=1, seed=0)


def test_fashion_mnist_reads_idx_files_and_inverts_light_backgrounds(tmp_path: Path) -> None:
    import tensorflow as tf

    data = idx_files(tmp_path / "fashion")
    fashion_mnist.main(["--data-dir", str(data), "--epochs", "2", "--output-dir", str(tmp_path / "m"), *OOD_ARGS])
    version_dir = tmp_path / "m" / "fashion_mnist" / "1"
    meta = check_export(version_dir, "fashion_mnist", fashion_mnist.TASK.labels)
    assert meta["metrics"]["test_examples"] == 20 and meta["input"]["auto_invert"] is True  # and 20 calibrate
    # The cnn names its blocks: the ensembles that read their statistics are candidates too.
    assert {"feature_ensemble", "knn_ensemble"} <= set(meta["ood"]["candidates"])
    assert "block1 (32 channels), block2 (64 channels)" in meta["ood"]["features"]
    assert meta["training"]["epochs"] == 2  # the cosine schedule runs every epoch
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    garment = np.zeros((1, 28, 28, 1), np.uint8)
    garment[:, 6:22, 8:20] = 200  # light garment on dark background, as in the dataset
    photo = 255 - garment  # the same garment photographed dark on a light background
    dark, light = (serve(images=tf.constant(x))["probabilities"].numpy() for x in (garment, photo))
    np.testing.assert_allclose(dark, light, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "missing"),
        (lambda root: image_folder(root, ["daisy", "dandelion", "roses", "sunflowers"], 2), "missing ['tulips']"),
        (
            lambda root: (image_folder(root, flowers.TASK.labels[:4], 2), (root / "tulips").mkdir(), root)[2],
            "holds no image files",
        ),
    ],
)
def test_bad_data_directory_stops_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        flowers.main(["--data-dir", str(make(tmp_path)), "--output-dir", str(tmp_path / "m")])
    assert str(stopped.value).startswith("error: ") and message in str(stopped.value)


def test_class_with_only_corrupt_files_is_a_clear_error(tmp_path: Path) -> None:
    image_folder(tmp_path, flowers.TASK.labels, 2)
    for path in (tmp_path / "tulips").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(SystemExit, match="no decodable image"):
        flowers.main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "m")])


def test_malformed_idx_file_is_a_clear_error(tmp_path: Path) -> None:
    data = idx_files(tmp_path / "fashion")
    (data / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(SystemExit, match="not an IDX label file"):
        fashion_mnist.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "m")])


def test_vgg16_offline_without_weights_tells_how_to_pass_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    root = tmp_path / "cd"
    image_folder(root / "train", ["cats", "dogs"], per_class=5)
    image_folder(root / "validation", ["cats", "dogs"], per_class=2)
    with pytest.raises(SystemExit, match="--backbone-weights PATH"):
        cats_vs_dogs.main(["--data-dir", str(root), "--arch", "vgg16", "--output-dir", str(tmp_path / "m")])


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        rps.main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--data-dir",
        "--arch",
        "--epochs",
        "--batch-size",
        "--output-dir",
        "--version",
        "--seed",
        "--backbone-weights",
    ):
        assert option in text


def _quantized_tiny_rps(tmp_path: Path, *options: str) -> tuple[Path, dict[str, Any]]:
    """Train a tiny rps model, run `python -m training.quantize rps` on it; its version dir and int8 record."""
    pytest.importorskip("nncf", reason="pip install nncf (the train extra)")
    from training import quantize

    root = tmp_path / "rps"
    image_folder(root / "train", rps.TASK.labels, per_class=12, fmt="PNG", mode="RGBA", groups=4)
    image_folder(root / "test", rps.TASK.labels, per_class=4, fmt="PNG", mode="RGBA")
    rps.main(["--data-dir", str(root), "--epochs", "1", "--output-dir", str(tmp_path / "m"), *OOD_ARGS])
    argv = ["rps", "--data-dir", str(root), "--model-dir", str(tmp_path / "m"), "--calibration-images", "20"]
    quantize.main([*argv, *options])
    version_dir = tmp_path / "m" / "rps" / "1"
    return version_dir, json.loads((version_dir / "metadata.json").read_text())["quantization"]["int8"]


def test_quantize_writes_an_int8_model_that_serves_and_records_its_accuracy(tmp_path: Path) -> None:
    from app.core import runtimes
    from app.core.settings import Settings

    version_dir, record = _quantized_tiny_rps(tmp_path)
    assert (version_dir / "int8" / "model.xml").is_file() and (version_dir / "int8" / "model.bin").is_file()
    assert 0 <= record["test_accuracy"] <= 1 and 0 <= record["fp32_test_accuracy"] <= 1
    assert record["calibration_images"] == 20 and record["calibration_split"] == "training"
    assert record["command"].startswith("python -m training.quantize rps")
    model = runtimes.load(version_dir, settings=Settings(runtime="openvino", precision="int8"))
    drop = record["fp32_test_accuracy"] - record["test_accuracy"]
    assert model.precision == ("int8" if drop <= 0.005 else "fp32")
    if model.precision == "int8":
        assert model.ood_threshold == record["ood_threshold"]
    assert {"noise", "flat_colours", "text"} <= set(record["ood_evaluation"])
    for figures in record["ood_evaluation"].values():
        assert {"auroc", "flagged", "fpr_at_95_tpr", "examples"} <= set(figures)


def test_quantize_with_accuracy_control_keeps_the_validation_drop_and_says_so(tmp_path: Path) -> None:
    version_dir, record = _quantized_tiny_rps(tmp_path, "--max-drop", "0.5")
    assert (version_dir / "int8" / "model.xml").is_file()
    assert record["max_validation_drop_points"] == 0.5 and "accuracy control" in record["method"]
    assert 0 <= record["test_accuracy"] <= 1
