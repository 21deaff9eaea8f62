"""The IDX format of the MNIST family's official files (gzipped): a magic number, the dimensions, raw bytes.

http://yann.lecun.com/exdb/mnist/ describes it; magic 0x803 holds uint8 images `[n, rows, cols]`, 0x801 uint8
labels `[n]`. A truncated or mislabelled file is a `DatasetError`, never a reshape error deep in numpy.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.errors import DatasetError

IMAGES_MAGIC = 0x803
LABELS_MAGIC = 0x801


def read_images(path: Path) -> np.ndarray:
    """uint8 images `[n, rows, cols, 1]` from a gzipped IDX image file."""
    raw = _read(path, IMAGES_MAGIC, "image")
    count = int.from_bytes(raw[4:8], "big")
    rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
    data = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if data.size != count * rows * cols:
        raise DatasetError(f"{path} is truncated: {data.size} bytes for {count} images of {rows}x{cols}")
    return data.reshape(count, rows, cols, 1)


def read_labels(path: Path) -> np.ndarray:
    """int64 labels `[n]` from a gzipped IDX label file."""
    raw = _read(path, LABELS_MAGIC, "label")
    count = int.from_bytes(raw[4:8], "big")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.size != count:
        raise DatasetError(f"{path} is truncated: {labels.size} labels, header says {count}")
    return labels


def _read(path: Path, expected: int, kind: str) -> bytes:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable gzip IDX file ({error})") from error
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        raise DatasetError(f"{path} is not an IDX {kind} file (magic {magic:#x})")
    return raw
