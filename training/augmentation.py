"""Random, label-preserving transformations of training images, as Keras preprocessing layers inside the
model: active in `model.fit`, inactive at inference (the export calls the model with `training=False`), so
the served graph never augments.

Each dataset of the catalogue names the one that suits its images (`Dataset.augmentation`); the
transfer-learning architectures use `fine_tuning`, chosen by `--augment`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keras import KerasTensor


def none(x: KerasTensor) -> KerasTensor:
    """No augmentation (the cats-vs-dogs tutorials train their own models without)."""
    return x


def photos(x: KerasTensor) -> KerasTensor:
    """The tf_flowers tutorial's: horizontal flips, rotations and zooms of up to 10%."""
    from keras import layers

    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.1)(x)
    return layers.RandomZoom(0.1)(x)


def garments(x: KerasTensor) -> KerasTensor:
    """Horizontal flips only: garments are left-right symmetric, while shifts and zooms hurt at 28x28."""
    from keras import layers

    return layers.RandomFlip("horizontal")(x)


def hands(x: KerasTensor) -> KerasTensor:
    """The rps tutorial's ImageDataGenerator settings (rotation 40 degrees, shifts, shear and zoom of 20%,
    horizontal flips), as Keras preprocessing layers."""
    from keras import layers

    x = layers.RandomRotation(40 / 360, fill_mode="nearest")(x)
    x = layers.RandomTranslation(0.2, 0.2, fill_mode="nearest")(x)
    x = layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="nearest")(x)
    x = layers.RandomZoom(0.2, fill_mode="nearest")(x)
    return layers.RandomFlip("horizontal")(x)


def fine_tuning(x: KerasTensor, strength: str = "basic") -> KerasTensor:
    """Flips, rotation, zoom, translation and contrast ("basic"); "randaugment" adds RandAugment (Cubuk et al.
    2020: 2 random photometric or geometric operations per image). Expects [0, 255] inputs."""
    from keras import layers

    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.1)(x)
    x = layers.RandomZoom(0.15)(x)
    x = layers.RandomTranslation(0.1, 0.1)(x)
    x = layers.RandomContrast(0.2)(x)
    if strength == "randaugment":
        x = layers.RandAugment(value_range=(0, 255))(x)
    return x
