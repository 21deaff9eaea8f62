"""A servable model, whatever runs it: its metadata, its `predict`, and the checks every runtime shares.

`predict` maps uint8 images `[n, H, W, C]` to outputs under fixed names, whatever the signature calls them:
`PROBABILITIES` `[n, classes]` and, for models whose metadata declares `ood`, `OOD_SCORE` `[n]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.core.imaging import ImageSpec
from app.core.schemas import ModelMetadata

PROBABILITIES = "probabilities"
OOD_SCORE = "ood_score"
Outputs = dict[str, np.ndarray]


class ModelLoadError(Exception):
    """A model directory cannot be served; the message says why."""


@dataclass
class LoadedModel:
    """A servable model: its metadata and `predict`, mapping uint8 `[n, H, W, C]` to `Outputs`."""

    metadata: ModelMetadata
    path: Path
    predict: Callable[[np.ndarray], Outputs]
    handle: Any = None  # keeps what `predict` runs alive (the SavedModel, a compiled model)
    frozen: bool = False  # `predict` runs the frozen signature (see `app.core.runtimes.tensorflow`)
    runtime: str = "tensorflow"  # what runs `predict` (see `app.core.runtimes`)
    precision: str = "fp32"
    runtime_note: str = ""  # why this runtime serves the model
    ood_threshold_override: float | None = None  # the int8 model's own threshold (training.quantize)
    batch_sizes: tuple[int, ...] = ()  # the static batch sizes `predict` runs in (empty: any, in one call)

    @property
    def ood_threshold(self) -> float | None:
        """Flag an image whose OOD score is above this (None: the model has no OOD score)."""
        if self.metadata.ood is None:
            return None
        return self.ood_threshold_override if self.ood_threshold_override is not None else self.metadata.ood.threshold

    def describe(self) -> dict[str, Any]:
        """The runtime, as `GET /models/{task}` shows it."""
        return {
            "name": self.runtime,
            "precision": self.precision,
            "frozen": self.frozen,
            "why": self.runtime_note,
            "ood_threshold": self.ood_threshold,
            "batch_sizes": list(self.batch_sizes) or None,
        }

    @property
    def spec(self) -> ImageSpec:
        info = self.metadata.input
        return ImageSpec(height=info.height, width=info.width, channels=info.channels, resize=info.resize)

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names `predict` returns."""
        return (PROBABILITIES, OOD_SCORE) if self.metadata.ood is not None else (PROBABILITIES,)


ModelLoader = Callable[[Path], LoadedModel]


def read_metadata(version_dir: Path) -> ModelMetadata:
    """`version_dir/metadata.json`, validated, naming the task and version of its directory."""
    path = version_dir / "metadata.json"
    try:
        metadata = ModelMetadata.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise ModelLoadError(f"{path} is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
        first = str(error).splitlines()
        raise ModelLoadError(f"{path} is invalid: {' '.join(first[:3])}") from error
    if metadata.task != version_dir.parent.name or metadata.version != int(version_dir.name):
        raise ModelLoadError(
            f"{path} says task {metadata.task!r} version {metadata.version}, "
            f"but lives in {version_dir.parent.name}/{version_dir.name}"
        )
    return metadata


def probe_batch(metadata: ModelMetadata) -> np.ndarray:
    """Noise, all black and all white: both branches of fashion_mnist's in-graph inversion run."""
    info = metadata.input
    shape = (info.height, info.width, info.channels)
    noise = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    return np.stack([noise, np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)])


def max_difference(first: Outputs, second: Outputs) -> float:
    """The largest difference between two models' outputs, relative to each output's scale (so an OOD
    distance in the hundreds is held to the same 1e-4 as a probability)."""
    worst = 0.0
    for name, value in first.items():
        scale = max(1.0, float(np.abs(second[name]).max()))
        worst = max(worst, float(np.abs(value - second[name]).max()) / scale)
    return worst
