"""A servable model, whatever runs it: its metadata, what a runtime compiled, and how it describes itself.

`LoadedModel.predict` maps uint8 images `[n, H, W, C]` to outputs under fixed names, whatever the signature
calls them: `PROBABILITIES` `[n, classes]` and, for models whose metadata declares `ood`, `OOD_SCORE` `[n]`.
A `LoadedModel` is complete when it is constructed (the runtime that serves it, why, the threshold that
flags) and never changes afterwards: a new version or another runtime is another `LoadedModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.core.errors import ModelLoadError
from app.core.imaging import ImageSpec
from app.core.metadata import ConformalInfo, ModelMetadata, read_metadata

__all__ = [
    "OOD_SCORE",
    "PROBABILITIES",
    "Compiled",
    "LoadedModel",
    "ModelLoadError",
    "ModelLoader",
    "ModelMetadata",
    "Outputs",
    "TensorInfo",
    "max_difference",
    "probe_batch",
    "read_metadata",
]

PROBABILITIES = "probabilities"
OOD_SCORE = "ood_score"
Outputs = dict[str, np.ndarray]


class Compiled(Protocol):
    """What a runtime made of a model version (`app.core.runtimes`): it runs a batch and says what it is."""

    def run(self, batch: np.ndarray) -> Outputs:
        """uint8 `[n, H, W, C]` -> `Outputs` of n rows each; thread-safe."""
        ...

    def describe(self) -> dict[str, Any]:
        """`precision` ("fp32", "bf16", "int8"), `frozen` (bool) and `batch_sizes` (a list, or None: any)."""
        ...


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor of a model, as every protocol describes it: its name in the signature,
    its datatype in the Open Inference Protocol's words ("UINT8", "FP32") and its shape (-1: any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to serve: its metadata, where it lives, what runs it and why, the
    out-of-distribution threshold that flags (None: the model has no OOD score) and the conformal record
    its prediction sets use (None: none was recorded). The last two are those of what runs: an int8
    model has its own, fitted on its own scores."""

    metadata: ModelMetadata
    path: Path
    compiled: Compiled
    runtime: str
    why: str
    ood_threshold: float | None
    conformal: ConformalInfo | None

    def predict(self, batch: np.ndarray) -> Outputs:
        return self.compiled.run(batch)

    def describe(self) -> dict[str, Any]:
        """The runtime, as `GET /models/{task}` shows it."""
        compiled = self.compiled.describe()
        return {
            "name": self.runtime,
            "precision": compiled["precision"],
            "frozen": compiled["frozen"],
            "why": self.why,
            "ood_threshold": self.ood_threshold,
            "batch_sizes": compiled["batch_sizes"],
        }

    @property
    def precision(self) -> str:
        return str(self.compiled.describe()["precision"])

    @property
    def frozen(self) -> bool:
        return bool(self.compiled.describe()["frozen"])

    @property
    def spec(self) -> ImageSpec:
        return self.metadata.spec

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names `predict` returns."""
        return (PROBABILITIES, OOD_SCORE) if self.metadata.ood is not None else (PROBABILITIES,)

    def input_tensor(self) -> TensorInfo:
        meta, info = self.metadata, self.metadata.input
        return TensorInfo(meta.signature.input, "UINT8", (-1, info.height, info.width, info.channels))

    def output_tensors(self) -> dict[str, TensorInfo]:
        """Our output name -> the signature's tensor."""
        meta = self.metadata
        tensors = {PROBABILITIES: TensorInfo(meta.signature.output, "FP32", (-1, len(meta.labels)))}
        if meta.ood is not None:
            tensors[OOD_SCORE] = TensorInfo(meta.ood.output, "FP32", (-1,))
        return tensors


ModelLoader = Callable[[Path], LoadedModel]


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
