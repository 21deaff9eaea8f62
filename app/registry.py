"""Find, load and validate the exported models under `models/<task>/<version>/`.

`discover` only lists directories (fast, at startup); `load_saved_model` does the slow part (TensorFlow)
and checks that `metadata.json` and the SavedModel's signature agree, raising `ModelLoadError` with one
clear sentence otherwise.

A loaded model's `predict` maps uint8 images `[n, H, W, C]` to its outputs under fixed names, whatever the
signature calls them: `PROBABILITIES` `[n, classes]` and, for models whose metadata declares `ood`,
`OOD_SCORE` `[n]`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.imaging import ImageSpec
from app.schemas import ModelMetadata

log = logging.getLogger(__name__)


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
    handle: Any = None  # keeps the loaded SavedModel (and its variables) alive
    frozen: bool = False  # `predict` runs the frozen signature (see `load_saved_model`)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names `predict` returns."""
        return (PROBABILITIES, OOD_SCORE) if self.metadata.ood is not None else (PROBABILITIES,)

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


def load_saved_model(version_dir: Path, *, freeze: bool = True) -> LoadedModel:
    """Load the SavedModel and metadata of `version_dir`; raise `ModelLoadError` if they disagree.

    With `freeze`, the serving signature is also frozen (variables folded into constants), which lets
    TensorFlow's graph optimizer fold batch normalization into the convolutions: about 30% faster on CPU
    for the EfficientNet models. The frozen graph is served only if it gives the same probabilities as the
    SavedModel on a probe batch and is not slower on it (for some small models it is); otherwise the
    SavedModel is served as is and the log says why.
    """
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
    names = _output_names(metadata)  # our name -> the signature's

    def predict(batch: np.ndarray) -> Outputs:
        outputs = function(**{sig.input: tf.constant(batch, dtype=tf.uint8)})
        return {ours: np.asarray(outputs[theirs].numpy(), dtype=np.float32) for ours, theirs in names.items()}

    if freeze:
        frozen = _freeze(function, names, predict, metadata, version_dir)
        if frozen is not None:
            return LoadedModel(metadata=metadata, path=version_dir, predict=frozen, frozen=True)
    return LoadedModel(metadata=metadata, path=version_dir, predict=predict, handle=loaded)


def _output_names(metadata: ModelMetadata) -> dict[str, str]:
    names = {PROBABILITIES: metadata.signature.output}
    if metadata.ood is not None:
        names[OOD_SCORE] = metadata.ood.output
    return names


_FREEZE_TOLERANCE = 1e-4  # relative; float reassociation after folding moves outputs by ~1e-6


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


def _freeze(
    function: Any,
    names: dict[str, str],
    reference: Callable[[np.ndarray], Outputs],
    metadata: ModelMetadata,
    version_dir: Path,
) -> Callable[[np.ndarray], Outputs] | None:
    """`predict` through the frozen signature, or None (logged) if freezing fails, changes the outputs or is slower."""
    import tensorflow as tf

    # No public API freezes a ConcreteFunction; this is the function tf.lite and TF-TRT use to do it.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        frozen = convert_variables_to_constants_v2(function)
    except Exception as error:  # e.g. ops that own resources (lookup tables) cannot be frozen
        log.warning("%s: serving the SavedModel unfrozen (%s: %s)", version_dir, type(error).__name__, error)
        return None
    # The frozen function takes the input positionally and returns the outputs flattened as a list,
    # in the order `tf.nest` flattens the signature's output dict: sorted by name.
    order = sorted(function.structured_outputs)
    index = {ours: order.index(theirs) for ours, theirs in names.items()}

    def predict(batch: np.ndarray) -> Outputs:
        outputs = frozen(tf.constant(batch, dtype=tf.uint8))
        return {ours: np.asarray(outputs[i].numpy(), dtype=np.float32) for ours, i in index.items()}

    probe = probe_batch(metadata)
    difference = max_difference(predict(probe), reference(probe))
    if not difference <= _FREEZE_TOLERANCE:
        log.warning("%s: serving the SavedModel unfrozen (frozen outputs differ by %.2g)", version_dir, difference)
        return None
    # Timed on one image and on the probe batch: some small models run a single image slower when frozen.
    frozen_s, reference_s = _best_seconds(predict, reference, [probe[:1], probe])
    if frozen_s > reference_s:
        log.info(
            "%s: serving the SavedModel unfrozen (frozen %.2f ms vs %.2f ms for 1 + 3 probe images)",
            version_dir,
            frozen_s * 1000,
            reference_s * 1000,
        )
        return None
    return predict


def _best_seconds(
    first: Callable[[np.ndarray], Outputs],
    second: Callable[[np.ndarray], Outputs],
    batches: Sequence[np.ndarray],
) -> tuple[float, float]:
    """The fastest of 7 timed rounds of each over `batches` (one call per batch), after an untimed round.
    The two alternate and the minimum is kept, so a busy spell on a shared machine slows both alike
    instead of deciding."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(8):
        for predict, spent in zip((first, second), times, strict=True):
            started = time.perf_counter()
            for batch in batches:
                predict(batch)
            if round_:  # the first round warms up each shape
                spent.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


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
    if metadata.ood is not None:
        name = metadata.ood.output
        if name not in outputs:
            raise ModelLoadError(f"{version_dir}: signature outputs {sorted(outputs)} lack the ood output {name!r}")
        if outputs[name].shape.as_list() != [None]:
            raise ModelLoadError(
                f"{version_dir}: ood output {name!r} has shape {outputs[name].shape.as_list()}, expected [None]"
            )
