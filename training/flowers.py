"""Flowers (tf_flowers): photos of 5 kinds of flowers.

Tutorial: https://www.tensorflow.org/tutorials/images/classification (180x180, 3 conv blocks + Dense 128,
augmentation and dropout; ~60% validation accuracy without augmentation). The default is transfer learning
on EfficientNet-Lite ImageNet weights (`training/transfer.py`; `--arch efficientnet_lite0|1|2`). A seeded, stratified 15% of the photos is
the test split and another 15% the validation split (`--validation-fraction`); the test split does not depend on it.

    python -m training.flowers --data-dir ../shared/datasets/flower_photos
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import common, transfer

TASK = "flowers"
LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
ARCHS = {"tutorial": ImageSpec(height=180, width=180, channels=3), **transfer.ARCHS}
TEST_FRACTION = 0.15
VALIDATION_FRACTION = 0.15


# -------------------------------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, spec: ImageSpec) -> common.Splits:
    root = args.data_dir if args.data_dir is not None else common.download(URL, "flower_photos.tgz") / "flower_photos"
    x, y, skipped = common.load_image_folder(root, LABELS, spec)
    rest, test = common.stratified_split(y, TEST_FRACTION, args.seed)
    # --validation-fraction counts all the photos; the split is drawn from those outside the test split.
    train, val = common.stratified_split(y[rest], args.validation_fraction / (1 - TEST_FRACTION), args.seed + 1)
    train, val = rest[train], rest[val]
    return common.Splits(
        x[train],
        y[train],
        x[val],
        y[val],
        x[test],
        y[test],
        test_split=f"seeded stratified {TEST_FRACTION:.0%} of the photos (seed {args.seed}), never used in training",
        skipped_files=skipped,
    )


# ------------------------------------------------------------------------------------------------- model
def build_tutorial(spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomRotation(0.1)(x)
    x = layers.RandomZoom(0.1)(x)
    x = layers.Rescaling(1 / 255)(x)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes), name="flowers_tutorial")


def build_model(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    if args.arch == "tutorial":
        return build_tutorial(spec, num_classes)
    return transfer.build_efficientnet_lite(args, spec, num_classes)


def fit(model: keras.Model, train: object, val: object, args: argparse.Namespace) -> dict[str, list[float]]:
    if args.arch == "tutorial":
        return common.fit(model, train, val, epochs=args.epochs, patience=args.patience)
    return transfer.fit_two_phase(model, train, val, args)


TASK_SPEC = common.Task(
    name=TASK,
    labels=LABELS,
    dataset="tf_flowers",
    archs=ARCHS,
    default_arch="efficientnet_lite0",
    load_data=load_data,
    build_model=build_model,
    fit=fit,
    default_epochs={"tutorial": 15, **dict.fromkeys(transfer.ARCHS, 10)},
    default_patience=4,
    subject="a daisy, dandelion, rose, sunflower or tulip",
    validation_fraction=VALIDATION_FRACTION,
    add_arguments=transfer.add_arguments,
)


def main(argv: Sequence[str] | None = None) -> None:
    common.run(TASK_SPEC, argv)


if __name__ == "__main__":
    main()
