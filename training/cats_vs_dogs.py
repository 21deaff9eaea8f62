"""Cats vs dogs ("cats_and_dogs_filtered", a 3,000-image subset of the Kaggle competition).

Tutorials: https://www.tensorflow.org/tutorials/images/transfer_learning (160x160, scaled to [-1, 1]) and
the earlier "overfitting" notebook: 3 conv blocks + Dense 512 (77.6% validation accuracy); VGG16 frozen base
+ global pooling + Dense 512 (94.1%). The default is transfer learning on EfficientNet-Lite0
(`--arch efficientnet_lite0|1|2`). The dataset's `validation/` folder is our test split; validation is a
seeded 20% of `train/` (`training.catalogue.CATS_VS_DOGS`).

    python -m training.cats_vs_dogs --data-dir ../shared/datasets/cats_vs_dogs
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import catalogue, transfer
from training.config import RunConfig
from training.errors import TrainingError
from training.model import classifier
from training.run import run
from training.task import Architecture, Task

DATASET = catalogue.CATS_VS_DOGS
TUTORIAL_EPOCHS = 15
VGG16_EPOCHS = 10
TRANSFER_EPOCHS = 6


def build_tutorial(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = DATASET.augmentation(inputs)
    x = layers.Rescaling(1 / 127.5, offset=-1)(x)  # to [-1, 1], as the tutorial
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, classifier(features, num_classes), name="cats_vs_dogs_tutorial")


def build_vgg16(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """The tutorial's VGG16 feature extractor: frozen ImageNet base + global pooling + Dense 512."""
    weights = str(config.backbone_weights) if config.backbone_weights else "imagenet"
    try:
        base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(spec.height, spec.width, 3))
    except Exception as error:  # the download fails in many ways offline; all need the same advice
        raise TrainingError(
            f"could not load VGG16 ImageNet weights ({error}); offline, download "
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and pass --backbone-weights PATH"
        ) from error
    base.trainable = False
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = keras.applications.vgg16.preprocess_input(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, classifier(features, num_classes), name="cats_vs_dogs_vgg16")


TASK = Task(
    DATASET,
    architectures={
        "tutorial": Architecture(DATASET.input, build_tutorial, epochs=TUTORIAL_EPOCHS),
        "vgg16": Architecture(DATASET.input, build_vgg16, epochs=VGG16_EPOCHS),
        **transfer.architectures(epochs=TRANSFER_EPOCHS),
    },
)


def main(argv: Sequence[str] | None = None) -> None:
    run(TASK, argv)


if __name__ == "__main__":
    main()
