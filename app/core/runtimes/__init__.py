"""Runtimes that execute a model version, one module per runtime, registered in `RUNTIMES`, and the one
place that chooses among them (`load`), per model, from `APP_RUNTIME` and `APP_PRECISION`:

- `tensorflow`: the SavedModel, frozen where that is faster (the reference every other runtime is held to).
- every other runtime (today `openvino`): serves only if every output matches the SavedModel's within
  `PARITY_TOLERANCE` (relative) on the probe batch, with the same best class; otherwise the version is
  refused (when that runtime was asked for) or passed over (under `auto`).
- `auto` (the default): every runtime that passes that check is timed against TensorFlow on one image and
  on a batch, alternately; the fastest serves. TensorFlow stays where nothing beats it and on machines
  with a GPU.

`APP_PRECISION=int8` serves a version's quantized model (`python -m training.quantize`) only when its
metadata records a test accuracy within 0.5 points of fp32 (instead of the parity check, which int8 cannot
pass), with the int8 model's own OOD threshold; otherwise fp32 serves and the log says why. Which runtime
serves each model, and why, is logged and shown by `GET /models/{task}`.

A new runtime is one module with a `Runtime` (`app.core.runtimes.base`) and one line in `RUNTIMES`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.core.metadata import ConformalInfo, ModelMetadata, read_metadata
from app.core.model import (
    PROBABILITIES,
    Compiled,
    LoadedModel,
    ModelLoader,
    ModelLoadError,
    max_difference,
    probe_batch,
)
from app.core.runtimes import openvino, tensorflow
from app.core.runtimes.base import Runtime, RuntimeOptions
from app.core.runtimes.timing import best_seconds
from app.core.settings import Settings

log = logging.getLogger(__name__)
Own = tuple[float | None, ConformalInfo | None]  # the OOD threshold and conformal record of what runs
PARITY_TOLERANCE = 1e-4
INT8_MAX_DROP = 0.005  # accuracy, as a fraction
REFERENCE = tensorflow.RUNTIME.name

RUNTIMES: dict[str, Runtime] = {
    tensorflow.RUNTIME.name: tensorflow.RUNTIME,
    openvino.RUNTIME.name: openvino.RUNTIME,
}


def loader(settings: Settings) -> ModelLoader:
    return partial(load, settings=settings)


def load(version_dir: Path, *, settings: Settings) -> LoadedModel:
    """Load `version_dir` with the runtime `settings` ask for (see the module docstring)."""
    metadata = read_metadata(version_dir)
    options = RuntimeOptions(precision="fp32", threads=settings.tf_intra_op_threads, freeze=settings.freeze_models)
    reference = RUNTIMES[REFERENCE].load(version_dir, metadata, options)
    fp32 = (metadata.ood.threshold if metadata.ood is not None else None, metadata.conformal)

    def serve(
        name: str, compiled: Compiled, why: str, own: tuple[float | None, ConformalInfo | None] = fp32
    ) -> LoadedModel:
        model = LoadedModel(metadata, version_dir, compiled, name, why, *own)
        log.info("%s v%d: %s (%s) serves: %s", metadata.task, metadata.version, name, model.precision, why)
        return model

    if settings.runtime == REFERENCE:
        return serve(REFERENCE, reference, f"APP_RUNTIME={REFERENCE}")
    if settings.runtime == "auto" and _has_gpu():
        return serve(REFERENCE, reference, "a GPU is present: TensorFlow uses it")
    precision = settings.precision
    if precision == "int8":
        refusal = _int8_refusal(metadata)
        if refusal:
            log.warning("%s: serving fp32, not int8: %s", version_dir, refusal)
            precision = "fp32"
    candidates = [settings.runtime] if settings.runtime != "auto" else [n for n in RUNTIMES if n != REFERENCE]
    fastest: tuple[float, str, Compiled, Own, str] | None = None  # seconds, name, compiled, own, why
    notes = []
    for name in candidates:
        try:
            compiled = RUNTIMES[name].load(
                version_dir, metadata, RuntimeOptions(precision, options.threads, options.freeze)
            )
            if precision != "int8":  # int8 is held to its recorded test accuracy instead
                _check_parity(name, compiled, reference, metadata)
        except ModelLoadError as error:
            if settings.runtime == name:
                raise
            notes.append(f"{_display(name)} not used: {error}")
            continue
        own = _int8_own(metadata) if precision == "int8" else fp32
        if settings.runtime == name:
            return serve(name, compiled, f"APP_RUNTIME={name}", own)
        theirs, ours = _timed(compiled, reference, metadata)
        timing = f"{theirs * 1000:.1f} ms vs TensorFlow's {ours * 1000:.1f} ms for 1 + 16 images"
        if theirs >= ours:
            notes.append(f"{_display(name)} matched but was not faster: {timing}")
        elif fastest is None or theirs < fastest[0]:
            fastest = (theirs, name, compiled, own, f"fastest that matches the SavedModel: {timing}")
    if fastest is not None:
        _, name, compiled, own, why = fastest
        return serve(name, compiled, why, own)
    return serve(REFERENCE, reference, "; ".join(notes) or "no other runtime is registered")


def _display(name: str) -> str:
    return {"openvino": "OpenVINO", "tensorflow": "TensorFlow"}.get(name, name)


def _timed(candidate: Compiled, reference: Compiled, metadata: ModelMetadata) -> tuple[float, float]:
    info = metadata.input
    batches = [probe_batch(metadata)[:1], np.zeros((16, info.height, info.width, info.channels), np.uint8)]
    return best_seconds(candidate.run, reference.run, batches, rounds=5)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _int8_record(metadata: ModelMetadata) -> dict[str, Any]:
    return dict((getattr(metadata, "quantization", None) or {}).get("int8") or {})


def _int8_own(metadata: ModelMetadata) -> Own:
    """The int8 model's own OOD threshold and conformal record (`training.quantize` fits them on its own
    scores: quantization moves them). An int8 model recorded without conformal quantiles serves no sets."""
    record = _int8_record(metadata)
    threshold = record.get("ood_threshold") if metadata.ood is not None else None
    try:
        conformal = ConformalInfo.model_validate(record["conformal"]) if record.get("conformal") else None
    except ValidationError as error:
        raise ModelLoadError(f"metadata.json's quantization.int8.conformal is invalid: {error}") from error
    return threshold, conformal


def _int8_refusal(metadata: ModelMetadata) -> str:
    """Why the version's int8 model may not serve ("" if it may)."""
    record = _int8_record(metadata)
    if not record:
        return "no int8 model recorded in metadata.json (python -m training.quantize)"
    drop = float(record["fp32_test_accuracy"]) - float(record["test_accuracy"])
    if drop > INT8_MAX_DROP:
        return f"its test accuracy is {drop * 100:.2f} points below fp32's (at most {INT8_MAX_DROP * 100:.1f} allowed)"
    return ""


def _check_parity(name: str, candidate: Compiled, reference: Compiled, metadata: ModelMetadata) -> None:
    probe = probe_batch(metadata)
    theirs, ours = candidate.run(probe), reference.run(probe)
    difference = max_difference(theirs, ours)
    same_class = np.array_equal(theirs[PROBABILITIES].argmax(axis=1), ours[PROBABILITIES].argmax(axis=1))
    if not difference <= PARITY_TOLERANCE or not same_class:
        raise ModelLoadError(
            f"{name} differs from the SavedModel on the probe batch by {difference:.2g} (relative)"
            + ("" if same_class else ", with another best class")
        )
