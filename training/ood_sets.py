"""Out-of-distribution image sets, built offline from what we have: the other tasks' datasets and
generated images. They measure the OOD scores; they are never used to fit anything.

Every image goes through the service's own `load_image` at the task's input size, from encoded bytes
(PNG for generated or array-only data), exactly as an upload would: a flower photo shown to the
Fashion-MNIST model is a 28x28 grayscale flower, as a user sending one would get.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.core.errors import ClientError
from app.core.imaging import ImageSpec, load_image
from training.catalogue import DATASETS
from training.errors import DatasetError
from training.images import png

log = logging.getLogger("training")

GENERATED = ("noise", "flat_colours", "gradients", "patterns", "text")
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "invoice",
    "total",
    "receipt",
    "hello",
    "world",
    "model",
    "serving",
    "2026",
]


def build(task: str, spec: ImageSpec, data_root: Path | None, *, per_set: int, seed: int) -> dict[str, np.ndarray]:
    """Set name -> uint8 images `[n, H, W, C]` for `spec`: `per_set` images of each catalogue dataset other
    than `task`'s (from `data_root/<its folder>`, or downloaded when `data_root` is None) and of each generated
    kind. A dataset that cannot be found is left out with a warning, so training never fails for it."""
    rng = np.random.default_rng(seed)
    sets: dict[str, np.ndarray] = {}
    for name, dataset in DATASETS.items():
        if name == task:
            continue
        try:
            encoded = dataset.sample(data_root / dataset.folder if data_root is not None else None, per_set, rng)
        except DatasetError as error:
            log.warning("OOD set %s left out: %s", name, error)
            continue
        sets[name] = _decode(encoded, spec)
    size = (max(spec.width, 64), max(spec.height, 64))
    for kind in GENERATED:
        sets[kind] = _decode([png(_GENERATORS[kind](rng, size)) for _ in range(per_set)], spec)
    return sets


def split_halves(sets: dict[str, np.ndarray], seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each set cut in two seeded halves: one to choose the method on, one to report figures on."""
    rng = np.random.default_rng(seed)
    selection, report = {}, {}
    for name, images in sets.items():
        order = rng.permutation(len(images))
        half = len(images) // 2
        selection[name], report[name] = images[order[:half]], images[order[half:]]
    return selection, report


def _decode(encoded: list[bytes], spec: ImageSpec) -> np.ndarray:
    images = []
    for data in encoded:
        try:
            images.append(load_image(data, spec))
        except ClientError as error:
            log.warning("OOD image skipped: %s", error)
    return np.stack(images)


# ------------------------------------------------------------------------------------ generated images
def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _noise(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _flat(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, _colour(rng))


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / max(1e-9, float(np.ptp(t)))
    start, end = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray((start + t[..., None] * (end - start)).astype(np.uint8))


def _pattern(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Stripes or a checkerboard at a random period and angle, in two random colours."""
    width, height = size
    period = rng.uniform(4, max(5, min(size) / 3))
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width]
    u = (x * np.cos(angle) + y * np.sin(angle)) // period
    v = (-x * np.sin(angle) + y * np.cos(angle)) // period
    mask = (u % 2 == 0) if rng.random() < 0.5 else ((u + v) % 2 == 0)
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray(np.where(mask[..., None], a, b).astype(np.uint8))


def _text(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A few lines of random words, dark on light or light on dark, as a photographed document would be."""
    light = rng.random() < 0.5
    background = (
        tuple(int(c) for c in rng.integers(200, 256, 3)) if light else tuple(int(c) for c in rng.integers(0, 56, 3))
    )
    ink = tuple(int(c) for c in rng.integers(0, 60, 3)) if light else tuple(int(c) for c in rng.integers(196, 256, 3))
    image = Image.new("RGB", size, background)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(8, int(min(size) / rng.uniform(5, 9))))
    line_height = font.size * 1.3 if isinstance(font, ImageFont.FreeTypeFont) else 12
    y = float(rng.uniform(0, line_height))
    while y < size[1]:
        words = " ".join(rng.choice(_WORDS, size=int(rng.integers(2, 6))))
        draw.text((float(rng.uniform(-5, 10)), y), words, fill=ink, font=font)  # type: ignore[arg-type]
        y += line_height
    return image


_GENERATORS: dict[str, Callable[[np.random.Generator, tuple[int, int]], Image.Image]] = {
    "noise": _noise,
    "flat_colours": _flat,
    "gradients": _gradient,
    "patterns": _pattern,
    "text": _text,
}
