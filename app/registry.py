"""Find, load and validate the exported models under `models/<task>/<version>/`.

`discover` only lists directories (fast, at startup); `load_saved_model` does the slow part (TensorFlow)
and checks that `metadata.json` and the SavedModel's signature agree, raising `ModelLoadError` with one
clear sentence otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.imaging import ImageSpec
from app.schemas import ModelMetadata

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model directory cannot be served; the message says why."""


@dataclass
class LoadedModel:
    """A servable model: its metadata and `predict`, mapping uint8 `[n, H, W, C]` to probabilities `[n, classes]`."""

    metadata: ModelMetadata
    path: Path
    predict: Callable[[np.ndarray], np.ndarray]
    handle: Any = None  # keeps the loaded SavedModel (and its variables) alive

    @property
    def spec(self) -> ImageSpec:
        info = self.metadata.input
        return ImageSpec(height=info.height, width=info.width, channels=info.channels, resize=info.resize)


ModelLoader = Callable[[Path], LoadedModel]


def discover(model_dir: Path) -> dict[str, Path]:
    """Task name -> directory of its highest integer version. Empty if `model_dir` does not exist."""
    found: dict[str, Path] = {}
    if not model_dir.is_dir():
        log.warning("model directory %s does not exist", model_dir)
        return found
    for task_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [p for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
        if versions:
            found[task_dir.name] = max(versions, key=lambda p: int(p.name))
    return found


def read_metadata(version_dir: Path) -> ModelMetadata:
    path = version_dir / "metadata.json"
    try:
        metadata = ModelMetadata.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise ModelLoadError(f"{path} is missing") from error
    except (json.JSONDecodeError, ValidationError) as error:
        first = str(error).splitlines()
        raise ModelLoadError(f"{path} is invalid: {' '.join(first[:3])}") from error
    if metadata.task != version_dir.parent.name or metadata.version != int(version_dir.name):
        raise ModelLoadError(
            f"{path} says task {metadata.task!r} version {metadata.version}, "
            f"but lives in {version_dir.parent.name}/{version_dir.name}"
        )
    return metadata


def load_saved_model(version_dir: Path) -> LoadedModel:
    """Load the SavedModel and metadata of `version_dir`; raise `ModelLoadError` if they disagree."""
    import tensorflow as tf

    metadata = read_metadata(version_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as error:  # TensorFlow raises many types for unreadable models
        raise ModelLoadError(f"{version_dir} is not a loadable SavedModel: {type(error).__name__}: {error}") from error
    sig = metadata.signature
    if sig.name not in loaded.signatures:
        raise ModelLoadError(f"{version_dir} has no signature {sig.name!r} (has {sorted(loaded.signatures)})")
    function = loaded.signatures[sig.name]
    _check_signature(function, metadata, version_dir)
    input_name, output_name = sig.input, sig.output

    def predict(batch: np.ndarray) -> np.ndarray:
        outputs = function(**{input_name: tf.constant(batch, dtype=tf.uint8)})
        return np.asarray(outputs[output_name].numpy(), dtype=np.float32)

    return LoadedModel(metadata=metadata, path=version_dir, predict=predict, handle=loaded)


def _check_signature(function: Any, metadata: ModelMetadata, version_dir: Path) -> None:
    _, inputs = function.structured_input_signature
    outputs = function.structured_outputs
    sig, info = metadata.signature, metadata.input
    if set(inputs) != {sig.input}:
        raise ModelLoadError(f"{version_dir}: signature inputs {sorted(inputs)} != metadata input {sig.input!r}")
    spec = inputs[sig.input]
    expected = [None, info.height, info.width, info.channels]
    if spec.dtype.name != "uint8" or spec.shape.as_list() != expected:
        raise ModelLoadError(
            f"{version_dir}: signature input is {spec.dtype.name} {spec.shape.as_list()}, metadata says uint8 {expected}"
        )
    if sig.output not in outputs:
        raise ModelLoadError(f"{version_dir}: signature outputs {sorted(outputs)} lack metadata output {sig.output!r}")
    classes = outputs[sig.output].shape.as_list()[-1]
    if classes != len(metadata.labels):
        raise ModelLoadError(
            f"{version_dir}: model outputs {classes} classes, metadata lists {len(metadata.labels)} labels"
        )
