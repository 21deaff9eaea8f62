"""Fashion-MNIST: 28x28 grayscale garments in 10 classes.

Tutorial: https://www.tensorflow.org/tutorials/keras/classification (Flatten + Dense 128 + Dense 10,
88.5% test accuracy). The default `cnn` is a small VGG-style network (two blocks of two 3x3 convolutions)
trained for 60 epochs with the learning rate decayed to zero on a cosine, keeping the final weights (v2's
plateau schedule ended at 0.933 after 20 epochs; v3's 30 cosine epochs at 0.938, validation accuracy still
rising). Its blocks are named `block1` and `block2`, so the out-of-distribution score can read their
channel statistics (`training/ood.py`).

    python -m training.fashion_mnist --data-dir ../shared/datasets/fashion_mnist
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from app.core.imaging import ImageSpec
from training import common

TASK = "fashion_mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPEC = ImageSpec(height=28, width=28, channels=1)
VALIDATION_FRACTION = 0.1
INPUT_NOTES = (
    "Fashion-MNIST garments are light on a dark background. The exported graph inverts any image whose "
    "border is mostly light (mean > 127.5), so a photo of a garment on a light background is classified "
    "in the dataset's polarity; dataset-style images pass unchanged."
)


# -------------------------------------------------------------------------------------------------- data
def _read_idx(path: Path, *, images: bool) -> np.ndarray:
    """Parse a gzipped IDX file (the format of the official distribution)."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise common.DatasetError(f"{path} is not a readable gzip IDX file ({error})") from error
    magic = int.from_bytes(raw[:4], "big")
    expected = 0x803 if images else 0x801
    if magic != expected:
        raise common.DatasetError(f"{path} is not an IDX {'image' if images else 'label'} file (magic {magic:#x})")
    count = int.from_bytes(raw[4:8], "big")
    if images:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        if data.size != count * rows * cols:
            raise common.DatasetError(f"{path} is truncated: {data.size} bytes for {count} images of {rows}x{cols}")
        return data.reshape(count, rows, cols, 1)
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.size != count:
        raise common.DatasetError(f"{path} is truncated: {labels.size} labels, header says {count}")
    return labels


def load_split(data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = []
    for name in FILES[split]:
        if data_dir is None:
            paths.append(common.download(BASE_URL + name, name, extract=False))
        else:
            path = data_dir / name
            if not path.is_file():
                raise common.DatasetError(f"{data_dir} must hold the four official Fashion-MNIST files; missing {name}")
            paths.append(path)
    x, y = _read_idx(paths[0], images=True), _read_idx(paths[1], images=False)
    if len(x) != len(y):
        raise common.DatasetError(f"{split} split has {len(x)} images but {len(y)} labels")
    return x, y


def load_data(args: argparse.Namespace, spec: ImageSpec) -> common.Splits:
    x, y = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "test")
    return common.carve_validation(
        x,
        y,
        x_test,
        y_test,
        fraction=args.validation_fraction,
        seed=args.seed,
        test_split="official Fashion-MNIST test set (t10k, 10,000 images)",
    )


# ------------------------------------------------------------------------------------------------- model
def build_tutorial(num_classes: int) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Flatten()(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes), name="fashion_mnist_tutorial")


def build_cnn(num_classes: int) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.RandomFlip("horizontal")(x)  # garments are left-right symmetric; shifts hurt at 28x28
    for block, filters in enumerate((32, 64), start=1):
        for conv in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            # Named block outputs give the out-of-distribution score its low-level statistics.
            x = layers.ReLU(name=f"block{block}" if conv == 1 else None)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    features = layers.Dense(256, activation="relu", name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes, dropout=0.4), name="fashion_mnist_cnn")


def build_model(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    return build_tutorial(num_classes) if args.arch == "tutorial" else build_cnn(num_classes)


def fit(model: keras.Model, train: object, val: object, args: argparse.Namespace) -> dict[str, list[float]]:
    schedule = "plateau" if args.arch == "tutorial" else "cosine"
    return common.fit(model, train, val, epochs=args.epochs, patience=args.patience, schedule=schedule)


TASK_SPEC = common.Task(
    name=TASK,
    labels=LABELS,
    dataset="fashion_mnist",
    archs={"tutorial": SPEC, "cnn": SPEC},
    default_arch="cnn",
    load_data=load_data,
    build_model=build_model,
    fit=fit,
    default_epochs={"tutorial": 10, "cnn": 60},
    default_batch_size=128,
    default_patience=8,  # the tutorial's plateau schedule; the cnn's cosine runs every epoch
    auto_invert=True,
    input_notes=INPUT_NOTES,
    subject="a garment, shoe or bag",
    validation_fraction=VALIDATION_FRACTION,
)


def main(argv: Sequence[str] | None = None) -> None:
    common.run(TASK_SPEC, argv)


if __name__ == "__main__":
    main()
