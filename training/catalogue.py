"""The datasets the tasks train on, one entry each: what the images are, where they are, how their splits are
made, and what a model of them takes by default. A task module (`training.flowers`, ...) names its entry and
adds its architectures; `training.ood_sets` samples the other entries for out-of-distribution sets.

A new dataset is a new entry: its labels, a layout of `training.layouts` (or a new one), and its defaults.
Everything here is data; nothing imports Keras or TensorFlow until a loader or an augmentation runs.
The local copies' folders are those of ../shared/datasets (see its README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.core.imaging import ImageSpec
from training import augmentation
from training.download import Remote
from training.layouts import ClassFolders, IdxFiles, Layout, SplitFolders
from training.splits import Splits, carve_calibration

if TYPE_CHECKING:
    from keras import KerasTensor

Augmentation = Callable[["KerasTensor"], "KerasTensor"]


@dataclass(frozen=True)
class Dataset:
    """One dataset and the defaults of the models trained on it.

    `name` is the task's: `python -m training.<name>` and the model store's folder. `labels` are in the order of
    the model's outputs; `class_dirs` the folders that hold them (default: the labels). `input` is what the
    dataset's own models take (a pretrained backbone takes its own size); `augmentation` the transformations
    that keep its labels; `backbone` the pretrained architecture that suits its images, None where they are too
    small for one. `validation_fraction` is the default of `--validation-fraction`, None when the layout holds
    out whole groups instead (and the option does not exist). `auto_invert` and `input_notes` describe the
    polarity the exported graph enforces (metadata.json's `input`).
    """

    name: str
    title: str  # metadata.json's dataset.name
    labels: tuple[str, ...]
    subject: str  # what an image of it shows ("a cat or a dog"), for the service's "does not look like ..."
    folder: str  # of a local copy, under ../shared/datasets (and under --ood-data-dir)
    layout: Layout
    input: ImageSpec
    augmentation: Augmentation = augmentation.none
    backbone: str | None = None
    validation_fraction: float | None = None
    class_dirs: tuple[str, ...] = ()
    auto_invert: bool = False
    input_notes: str = ""

    def load(self, directory: Path | None, spec: ImageSpec, *, seed: int, validation_fraction: float | None) -> Splits:
        """The splits, decoded at `spec`, from the local copy at `directory` or downloaded when it is None."""
        classes: Sequence[str] = self.class_dirs or self.labels
        held_out = self.layout.load(directory, classes, spec, seed=seed, validation_fraction=validation_fraction)
        return carve_calibration(held_out, seed=seed + 2)  # the layout draws with seed and seed + 1

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]:
        """Up to `count` of its images as encoded files, from `directory` (a local copy) or downloaded."""
        return self.layout.sample(directory, count, rng)


FLOWERS = Dataset(
    name="flowers",
    title="tf_flowers",
    labels=("daisy", "dandelion", "roses", "sunflowers", "tulips"),
    subject="a daisy, dandelion, rose, sunflower or tulip",
    folder="flower_photos",
    layout=ClassFolders(
        Remote(
            "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
            "flower_photos.tgz",
            folder="flower_photos",
        ),
        test_fraction=0.15,  # no official test split: a fixed, seeded one
    ),
    input=ImageSpec(height=180, width=180, channels=3),  # the tutorial's
    augmentation=augmentation.photos,
    backbone="efficientnet_lite0",
    validation_fraction=0.15,
)

_CATS_VS_DOGS = Remote(
    "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip", "cats_and_dogs_filtered.zip"
)
CATS_VS_DOGS = Dataset(
    name="cats_vs_dogs",
    title="cats_and_dogs_filtered",
    labels=("cat", "dog"),
    class_dirs=("cats", "dogs"),
    subject="a cat or a dog",
    folder="cats_vs_dogs",
    layout=SplitFolders(
        # The dataset's own validation/ folder is our test split; validation is carved from train/.
        "train",
        "validation",
        train_remote=Remote(_CATS_VS_DOGS.url, _CATS_VS_DOGS.filename, folder="cats_and_dogs_filtered/train"),
        test_remote=Remote(_CATS_VS_DOGS.url, _CATS_VS_DOGS.filename, folder="cats_and_dogs_filtered/validation"),
        test_source="the dataset's validation/ folder (300 cats + 300 dogs), never used in training",
    ),
    input=ImageSpec(height=160, width=160, channels=3),  # the transfer-learning tutorial's
    backbone="efficientnet_lite0",
    validation_fraction=0.2,
)

_FASHION_MNIST_NOTES = (
    "Fashion-MNIST garments are light on a dark background. The exported graph inverts any image whose "
    "border is mostly light (mean > 127.5), so a photo of a garment on a light background is classified "
    "in the dataset's polarity; dataset-style images pass unchanged."
)
FASHION_MNIST = Dataset(
    name="fashion_mnist",
    title="fashion_mnist",
    labels=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    subject="a garment, shoe or bag",
    folder="fashion_mnist",
    layout=IdxFiles(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        train=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        test=("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        test_source="official Fashion-MNIST test set (t10k, 10,000 images)",
    ),
    input=ImageSpec(height=28, width=28, channels=1),
    augmentation=augmentation.garments,
    validation_fraction=0.1,
    auto_invert=True,
    input_notes=_FASHION_MNIST_NOTES,
)


def _hand(path: Path) -> str:
    """The rendered hand an rps frame shows: "rock03-117.png" -> "rock03"."""
    return path.name.split("-")[0]


RPS = Dataset(
    name="rps",
    title="rock_paper_scissors",
    labels=("paper", "rock", "scissors"),
    subject="a hand showing rock, paper or scissors",
    folder="rps_28x28",
    layout=SplitFolders(
        "train",
        "test",
        train_remote=Remote("https://storage.googleapis.com/learning-datasets/rps.zip", "rps.zip", folder="rps"),
        test_remote=Remote(
            "https://storage.googleapis.com/learning-datasets/rps-test-set.zip",
            "rps-test-set.zip",
            folder="rps-test-set",
        ),
        test_source="official rps test set (rps-test-set, 372 images)",
        # The training images are 120 nearly alike frames of each of a few CGI hands per class; the test set
        # shows other hands. Validation holds out one whole hand per class (of 7), or it would validate on
        # frames of hands the model trains on and be blind to unseen ones.
        group=_hand,
        groups_per_class=1,
    ),
    input=ImageSpec(height=28, width=28, channels=3),  # the local copy's size (the originals are 300x300)
    augmentation=augmentation.hands,
)

# In this order: the out-of-distribution sets draw from them in turn with one random generator.
DATASETS: dict[str, Dataset] = {d.name: d for d in (FLOWERS, CATS_VS_DOGS, FASHION_MNIST, RPS)}
