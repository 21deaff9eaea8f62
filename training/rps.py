"""Rock-Paper-Scissors: CGI hands in 3 classes.

Tutorial: https://www.tensorflow.org/tutorials (Laurence Moroney's "rps" notebook): 150x150 RGB, heavy
augmentation, 4 conv blocks (64/64/128/128) + Dropout 0.5 + Dense 512. The local copy is downscaled to
28x28 RGBA, so the default `cnn` works at that native size; `tutorial` upsamples to 150x150 as its model
requires. Transparency is composited on white by the shared `load_image`. Validation holds out one whole
rendered hand per class, since the frames of one hand are nearly alike (`training.catalogue.RPS`).

    python -m training.rps --data-dir ../shared/datasets/rps_28x28
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import catalogue
from training.config import RunConfig
from training.model import classifier
from training.run import run
from training.task import Architecture, Task

DATASET = catalogue.RPS
TUTORIAL_INPUT = ImageSpec(height=150, width=150, channels=3)
TUTORIAL_EPOCHS = 25
CNN_EPOCHS = 60


def build_tutorial(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.Rescaling(1 / 255)(inputs)
    x = DATASET.augmentation(x)
    for filters in (64, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    features = layers.Dense(512, activation="relu", name="features")(x)
    return keras.Model(inputs, classifier(features, num_classes), name="rps_tutorial")


def build_cnn(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.Rescaling(1 / 255)(inputs)
    x = DATASET.augmentation(x)
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
    return keras.Model(inputs, classifier(features, num_classes, dropout=0.5), name="rps_cnn")


TASK = Task(
    DATASET,
    architectures={
        "tutorial": Architecture(TUTORIAL_INPUT, build_tutorial, epochs=TUTORIAL_EPOCHS),
        "cnn": Architecture(DATASET.input, build_cnn, epochs=CNN_EPOCHS),
    },
    default_architecture="cnn",
    patience=12,
)


def main(argv: Sequence[str] | None = None) -> None:
    run(TASK, argv)


if __name__ == "__main__":
    main()
