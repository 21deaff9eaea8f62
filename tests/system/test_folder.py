"""Your own images: `python -m training.folder` on small generated folders (a scan that refuses what it must,
a real training run into a model store that a running service picks up, a review list that names the photos
planted in the wrong class), and `python -m training.adopt` on a tutorial-style CNN trained outside the
project."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.settings import Settings
from app.http.application import create_app
from tests.helpers import wait_ready
from training import adopt, folder

CLASSES = ("circles", "stripes", "squares")
COLOURS = {"circles": (200, 40, 40), "stripes": (40, 160, 40), "squares": (40, 60, 200)}
QUICK = ["--epochs", "8", "--fine-tune-epochs", "1", "--ood-per-set", "12", "--batch-size", "16"]


def drawing(kind: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A photo-like drawing of its class: a coloured shape on a noisy background, at a random place."""
    background = rng.integers(90, 170, (size, size, 3)).astype(np.uint8)
    image = Image.fromarray(background)
    pixels = np.asarray(image).copy()
    colour = np.array(COLOURS[kind]) + rng.integers(-20, 20, 3)
    y, x = np.mgrid[0:size, 0:size]
    cx, cy = rng.integers(30, size - 30, 2)
    if kind == "circles":
        mask = (x - cx) ** 2 + (y - cy) ** 2 < rng.integers(200, 700)
    elif kind == "stripes":
        mask = (x + y) // rng.integers(5, 9) % 2 == 0
    else:
        half = rng.integers(12, 25)
        mask = (abs(x - cx) < half) & (abs(y - cy) < half)
    pixels[mask] = np.clip(colour, 0, 255)
    return Image.fromarray(pixels)


def make_folder(root: Path, per_class: int = 24, *, mislabelled: int = 2, seed: int = 0) -> dict[str, str]:
    """Class folders of drawings; the first `mislabelled` of each class filed under the next class. Returns
    each planted file's path -> its true class."""
    rng = np.random.default_rng(seed)
    planted = {}
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(CLASSES):
        for n in range(per_class):
            wrong = n < mislabelled
            where = CLASSES[(i + 1) % len(CLASSES)] if wrong else kind
            path = root / where / f"{kind}_{n:02d}.jpg"
            drawing(kind, rng).save(path, quality=90)
            if wrong:
                planted[str(path)] = kind
    return planted


def test_a_dry_run_refuses_exactly_when_training_would(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "photos"
    make_folder(data, per_class=12, mislabelled=0)
    (data / "empty").mkdir()
    (data / "circles" / "notes.jpg").write_text("not an image")
    assert folder.run(["--data-dir", str(data), "--task", "shapes", "--dry-run"]) == folder.EXIT_REFUSED
    out = capsys.readouterr()
    assert "class 'empty' is empty" in out.err and "circles/notes.jpg: not a supported image" in out.out
    (data / "empty").rmdir()
    assert folder.run(["--data-dir", str(data), "--task", "shapes", "--dry-run"]) == 0
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        folder.run(["--data-dir", str(data), "--task", "Shapes", "--dry-run"])
    assert refused.value.code == 2 and "is not a task name" in capsys.readouterr().err
    assert folder.run(["--data-dir", str(tmp_path / "nowhere"), "--task", "shapes", "--dry-run"]) == folder.EXIT_REFUSED
    assert "does not exist" in capsys.readouterr().err


def test_a_folder_becomes_a_served_model_and_its_mislabelled_photos_are_named(tmp_path: Path) -> None:
    data, store, run = tmp_path / "photos", tmp_path / "store", tmp_path / "run"
    planted = make_folder(data)
    store.mkdir()
    app = create_app(Settings(model_dir=store, model_poll_s=0.2, runtime="tensorflow"))
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/readyz").status_code == 200  # an empty store is ready
        argv = ["--data-dir", str(data), "--task", "shapes", "--output-dir", str(store), "--run-dir", str(run), *QUICK]
        assert folder.run(argv) == 0
        version = store / "shapes" / "1"
        meta = json.loads((version / "metadata.json").read_text())
        assert meta["labels"] == sorted(CLASSES) and meta["dataset"]["calibration_examples"] > 0
        assert {"calibration", "ood", "conformal", "metrics"} <= set(meta) and meta["ood"]["guarantee"]["alpha"] == 0.05
        assert not [p for p in (store / "shapes").iterdir() if p.name.startswith(".")]  # nothing left half-written
        deadline = time.monotonic() + 60
        while [m["task"] for m in client.get("/models").json()] != ["shapes"]:
            assert time.monotonic() < deadline, "the service did not pick up the new task"
            time.sleep(0.2)
        probe = tmp_path / "probe.jpg"
        drawing("squares", np.random.default_rng(99)).save(probe)
        answer = client.post("/predict/shapes?coverage=0.9", files={"file": ("probe.jpg", probe.read_bytes())})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == "squares"
    with (run / "review.csv").open() as rows:
        issues = {row["path"] for row in csv.DictReader(rows) if row["kind"] == "label_issue"}
    named = {path for path in planted if path in issues}
    assert len(named) >= len(planted) - 1, f"review named {sorted(named)} of the planted {sorted(planted)}"
    assert (run / "review.png").is_file() and any((run / "head").iterdir())  # contact sheet; TensorBoard logs


def tutorial_cnn(data: Path, path: Path, *, classes: int = 3, size: int = 64) -> None:
    """The image classification tutorial's model (its own Rescaling, 3 conv blocks, Dense 128), trained a little
    with plain Keras on the folder, outside the project's code, and saved as a .keras file."""
    import keras
    from keras import layers

    dataset = keras.utils.image_dataset_from_directory(data, image_size=(size, size), batch_size=16, seed=1)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Rescaling(1.0 / 255),
            *(
                block
                for filters in (16, 32, 64)
                for block in (layers.Conv2D(filters, 3, padding="same", activation="relu"), layers.MaxPooling2D())
            ),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(classes),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(dataset, epochs=4, verbose=0)
    model.save(path)


def test_a_keras_model_trained_elsewhere_is_adopted_with_the_same_guarantees(tmp_path: Path) -> None:
    data, store = tmp_path / "photos", tmp_path / "store"
    make_folder(data, mislabelled=0)
    model = tmp_path / "tutorial.keras"
    tutorial_cnn(data, model)
    adopt.main(
        [str(model), "--data-dir", str(data), "--task", "adopted", "--output-dir", str(store), "--ood-per-set", "12"]
    )
    meta = json.loads((store / "adopted" / "1" / "metadata.json").read_text())
    assert meta["input"]["height"] == 64 and meta["labels"] == sorted(CLASSES)
    assert meta["metrics"]["test_accuracy"] >= 0.6 and meta["conformal"]["score_quantiles"]
    app = create_app(Settings(model_dir=store, runtime="tensorflow"))
    with TestClient(app) as client:
        wait_ready(client)
        probe = tmp_path / "probe.jpg"
        drawing("circles", np.random.default_rng(5)).save(probe)
        answer = client.post("/predict/adopted", files={"file": ("probe.jpg", probe.read_bytes())})
        assert answer.status_code == 200 and answer.json()["predictions"][0]["out_of_distribution"] is not None


def test_adoption_refuses_what_it_cannot_serve_with_a_clear_message(tmp_path: Path) -> None:
    import keras

    data = tmp_path / "photos"
    make_folder(data, per_class=12, mislabelled=0)
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    four = tmp_path / "four.keras"
    keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(), keras.layers.Dense(4)]
    ).save(four)
    vectors = tmp_path / "vectors.keras"
    keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)]).save(vectors)
    for path, reason in (
        (not_a_model, "is not a Keras model"),
        (four, "outputs 4 classes, but"),
        (vectors, "not images"),
        (tmp_path / "missing.keras", "does not exist"),
    ):
        with pytest.raises(SystemExit) as refused:
            adopt.main([str(path), "--data-dir", str(data), "--task", "refused", "--output-dir", str(tmp_path / "s")])
        assert reason in str(refused.value.code), (path, refused.value.code)
