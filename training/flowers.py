"""Flowers (tf_flowers): photos of 5 kinds of flowers.

Tutorial: https://www.tensorflow.org/tutorials/images/classification (180x180, 3 conv blocks + Dense 128,
augmentation and dropout; ~60% validation accuracy without augmentation). The default is transfer learning
on EfficientNet-Lite ImageNet weights (`training/transfer.py`; `--arch efficientnet_lite0|1|2`). A seeded,
stratified 15% of the photos is the test split and another 15% the validation split (`--validation-fraction`);
the test split does not depend on it (`training.catalogue.FLOWERS`).

    python -m training.flowers --data-dir ../shared/datasets/flower_photos
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import catalogue, transfer
from training.config import RunConfig
from training.model import classifier
from training.run import run
from training.task import Architecture, Task

DATASET = catalogue.FLOWERS
TUTORIAL_EPOCHS = 15
TRANSFER_EPOCHS = 10


def build_tutorial(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = DATASET.augmentation(inputs)
    x = layers.Rescaling(1 / 255)(x)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    return keras.Model(inputs, classifier(features, num_classes), name="flowers_tutorial")


TASK = Task(
    DATASET,
    architectures={
        "tutorial": Architecture(DATASET.input, build_tutorial, epochs=TUTORIAL_EPOCHS),
        **transfer.architectures(epochs=TRANSFER_EPOCHS),
    },
    patience=4,
)


def main(argv: Sequence[str] | None = None) -> None:
    run(TASK, argv)


if __name__ == "__main__":
    main()
