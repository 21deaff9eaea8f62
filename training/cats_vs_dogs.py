"""Cats vs dogs ("cats_and_dogs_filtered", a 3,000-image subset of the Kaggle competition).

Tutorials: https://www.tensorflow.org/tutorials/images/transfer_learning (160x160, scaled to [-1, 1]) and
the earlier "overfitting" notebook: 3 conv blocks + Dense 512 (77.6% validation accuracy); VGG16 frozen base
+ global pooling + Dense 512 (94.1%). The default is transfer learning on EfficientNet-Lite0 (`--arch efficientnet_lite0|1|2`).
The dataset's `validation/` folder is our test split; validation is a seeded 20% of `train/`.

    python -m training.cats_vs_dogs --data-dir ../shared/datasets/cats_vs_dogs
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import common, transfer

TASK = "cats_vs_dogs"
LABELS = ["cat", "dog"]
CLASS_DIRS = ["cats", "dogs"]
URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
ARCHS = {
    "tutorial": ImageSpec(height=160, width=160, channels=3),
    "vgg16": ImageSpec(height=160, width=160, channels=3),
    **transfer.ARCHS,
}
VALIDATION_FRACTION = 0.2


# -------------------------------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, spec: ImageSpec) -> common.Splits:
    root = args.data_dir
    if root is None:
        root = common.download(URL, "cats_and_dogs_filtered.zip") / "cats_and_dogs_filtered"
    x, y, skipped_train = common.load_image_folder(Path(root) / "train", CLASS_DIRS, spec)
    x_test, y_test, skipped_test = common.load_image_folder(Path(root) / "validation", CLASS_DIRS, spec)
    return common.carve_validation(
        x,
        y,
        x_test,
        y_test,
        fraction=args.validation_fraction,
        seed=args.seed,
        test_split="the dataset's validation/ folder (300 cats + 300 dogs), never used in training",
        skipped_files=skipped_train + skipped_test,
    )


# ------------------------------------------------------------------------------------------------- model
def _scale_to_unit_range(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Rescaling(1 / 127.5, offset=-1)(x)


def build_tutorial(spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = _scale_to_unit_range(inputs)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes), name="cats_vs_dogs_tutorial")


def build_vgg16(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    """The tutorial's VGG16 feature extractor: frozen ImageNet base + global pooling + Dense 512."""
    weights = str(args.backbone_weights) if args.backbone_weights else "imagenet"
    try:
        base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(spec.height, spec.width, 3))
    except Exception as error:  # the download fails in many ways offline; all need the same advice
        raise common.TrainingError(
            f"could not load VGG16 ImageNet weights ({error}); offline, download "
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and pass --backbone-weights PATH"
        ) from error
    base.trainable = False
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = keras.applications.vgg16.preprocess_input(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes), name="cats_vs_dogs_vgg16")


def build_model(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    if args.arch == "tutorial":
        return build_tutorial(spec, num_classes)
    if args.arch == "vgg16":
        return build_vgg16(args, spec, num_classes)
    return transfer.build_efficientnet_lite(args, spec, num_classes)


def fit(model: keras.Model, train: object, val: object, args: argparse.Namespace) -> dict[str, list[float]]:
    if args.arch in transfer.ARCHS:
        return transfer.fit_two_phase(model, train, val, args)
    return common.fit(model, train, val, epochs=args.epochs, patience=args.patience)


TASK_SPEC = common.Task(
    name=TASK,
    labels=LABELS,
    dataset="cats_and_dogs_filtered",
    archs=ARCHS,
    default_arch="efficientnet_lite0",
    load_data=load_data,
    build_model=build_model,
    fit=fit,
    default_epochs={"tutorial": 15, "vgg16": 10, **dict.fromkeys(transfer.ARCHS, 6)},
    subject="a cat or a dog",
    validation_fraction=VALIDATION_FRACTION,
    add_arguments=transfer.add_arguments,
)


def main(argv: Sequence[str] | None = None) -> None:
    common.run(TASK_SPEC, argv)


if __name__ == "__main__":
    main()
