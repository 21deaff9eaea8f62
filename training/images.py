"""Image files, read as the service reads uploads and written as a user would upload them.

Training decodes every file with the service's own `app.core.imaging.load_image`, so a model trains on exactly
the arrays it will be served (`tests/test_parity.py` checks it). A file that does not decode is skipped and
counted, never fatal: a public dataset with one corrupt photo must still train.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from app.core.errors import ClientError
from app.core.imaging import ImageSpec, load_image
from training.errors import DatasetError

log = logging.getLogger("training")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})


def image_files(root: Path) -> list[Path]:
    """Every image file under `root` (recursively), in sorted order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def decode_files(files: Sequence[Path], spec: ImageSpec) -> list[np.ndarray | None]:
    """Each file decoded by the service's `load_image` at `spec` (in threads), or None where it does not
    decode (logged): what an upload of the same bytes would give."""

    def decode(path: Path) -> np.ndarray | None:
        try:
            return load_image(path.read_bytes(), spec)
        except ClientError as error:
            log.warning("skipping %s: %s", path, error)
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(decode, files))


def load_image_folder(root: Path, class_dirs: Sequence[str], spec: ImageSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode `root/<class_dir>/*`; label = index in `class_dirs`.

    Returns (images, labels, number of skipped files). Raises `DatasetError` for a missing root, a missing
    or empty class folder, or a class none of whose files decode.
    """
    images, labels, skipped, _ = load_image_folder_with_paths(root, class_dirs, spec)
    return images, labels, skipped


def load_image_folder_with_paths(
    root: Path, class_dirs: Sequence[str], spec: ImageSpec
) -> tuple[np.ndarray, np.ndarray, int, list[Path]]:
    """`load_image_folder`, with the path of each decoded image (for splits by group of files)."""
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist or is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = [c for c in class_dirs if c not in found]
    if missing:
        raise DatasetError(
            f"{root} must contain one folder per class {list(class_dirs)}; missing {missing}, found {found or 'none'}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        class_files = sorted(p for p in (root / class_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not class_files:
            raise DatasetError(f"class folder {root / class_dir} holds no image files ({sorted(IMAGE_SUFFIXES)})")
        files += class_files
        labels += [index] * len(class_files)

    decoded = decode_files(files, spec)
    keep = [i for i, image in enumerate(decoded) if image is not None]
    skipped = len(files) - len(keep)
    y = np.asarray(labels, dtype=np.int64)[keep]
    for index, class_dir in enumerate(class_dirs):
        if not np.any(y == index):
            raise DatasetError(f"class folder {root / class_dir} holds no decodable image")
    log.info("loaded %d images from %s (%d corrupt files skipped)", len(keep), root, skipped)
    images = [image for image in decoded if image is not None]
    return np.stack(images), y, skipped, [files[i] for i in keep]


def png(image: Image.Image) -> bytes:
    """`image` encoded as a PNG file: how an array-only dataset or a generated image reaches `load_image`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
