"""Rock-Paper-Scissors: CGI hands in 3 classes.

Tutorial: https://www.tensorflow.org/tutorials (Laurence Moroney's "rps" notebook): 150x150 RGB, heavy
augmentation, 4 conv blocks (64/64/128/128) + Dropout 0.5 + Dense 512. The local copy is downscaled to
28x28 RGBA, so the default `cnn` works at that native size; `tutorial` upsamples to 150x150 as its model
requires. Transparency is composited on white by the shared `load_image`.

The training images are renders of a few CGI hands per class (`rock01-*`, `rock02-*`, ...), 120 frames
each, nearly alike; the official test set shows other hands. So validation holds out one whole hand per
class: a random split would validate on frames of hands the model trains on, which makes early stopping,
the calibration temperature and the out-of-distribution threshold all blind to unseen hands.

    python -m training.rps --data-dir ../shared/datasets/rps_28x28
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import common

TASK = "rps"
LABELS = ["paper", "rock", "scissors"]
TRAIN_URL = "https://storage.googleapis.com/learning-datasets/rps.zip"
TEST_URL = "https://storage.googleapis.com/learning-datasets/rps-test-set.zip"
ARCHS = {
    "tutorial": ImageSpec(height=150, width=150, channels=3),
    "cnn": ImageSpec(height=28, width=28, channels=3),
}
VALIDATION_HANDS = 1  # per class, of 7


# -------------------------------------------------------------------------------------------------- data
def _roots(data_dir: Path | None) -> tuple[Path, Path]:
    if data_dir is not None:
        return data_dir / "train", data_dir / "test"
    return common.download(TRAIN_URL, "rps.zip") / "rps", common.download(TEST_URL, "rps-test-set.zip") / "rps-test-set"


def load_data(args: argparse.Namespace, spec: ImageSpec) -> common.Splits:
    train_root, test_root = _roots(args.data_dir)
    x, y, skipped_train, paths = common.load_image_folder_with_paths(train_root, LABELS, spec)
    x_test, y_test, skipped_test = common.load_image_folder(test_root, LABELS, spec)
    hands = [path.name.split("-")[0] for path in paths]  # "rock03-117.png" -> hand "rock03"
    train, val = common.grouped_split(hands, y, per_class=VALIDATION_HANDS, seed=args.seed)
    return common.Splits(
        x[train],
        y[train],
        x[val],
        y[val],
        x_test,
        y_test,
        test_split="official rps test set (rps-test-set, 372 images)",
        skipped_files=skipped_train + skipped_test,
    )


# ------------------------------------------------------------------------------------------------- model
def _augmentation(x: keras.KerasTensor) -> keras.KerasTensor:
    """The tutorial's ImageDataGenerator settings as Keras preprocessing layers."""
    x = layers.RandomRotation(40 / 360, fill_mode="nearest")(x)
    x = layers.RandomTranslation(0.2, 0.2, fill_mode="nearest")(x)
    x = layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="nearest")(x)
    x = layers.RandomZoom(0.2, fill_mode="nearest")(x)
    return layers.RandomFlip("horizontal")(x)


def build_tutorial(spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.Rescaling(1 / 255)(inputs)
    x = _augmentation(x)
    for filters in (64, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes), name="rps_tutorial")


def build_cnn(spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.Rescaling(1 / 255)(inputs)
    x = _augmentation(x)
    x = layers.RandomContrast(0.3)(x)
    x = layers.RandomBrightness(0.2, value_range=(0, 1))(x)
    for filters in (32, 64, 128):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes, dropout=0.5), name="rps_cnn")


def build_model(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    return build_tutorial(spec, num_classes) if args.arch == "tutorial" else build_cnn(spec, num_classes)


TASK_SPEC = common.Task(
    name=TASK,
    labels=LABELS,
    dataset="rock_paper_scissors",
    archs=ARCHS,
    default_arch="cnn",
    load_data=load_data,
    build_model=build_model,
    default_epochs={"tutorial": 25, "cnn": 60},
    default_batch_size=32,
    default_patience=12,
    subject="a hand showing rock, paper or scissors",
)


def main(argv: Sequence[str] | None = None) -> None:
    common.run(TASK_SPEC, argv)


if __name__ == "__main__":
    main()
