"""Runtimes that execute a model version, one module per runtime (`tensorflow`, `openvino`), and the one
place that chooses among them (`load`), per model, from `APP_RUNTIME` and `APP_PRECISION`:

- `tensorflow`: the SavedModel, frozen where that is faster (the reference every other runtime is held to).
- `openvino`: OpenVINO, if every output matches the SavedModel's within `PARITY_TOLERANCE` (relative) on
  the probe batch, with the same best class; otherwise the version is refused.
- `auto` (the default): every runtime that passes that check is timed against TensorFlow on one image and
  on a batch, alternately; the fastest serves. TensorFlow stays where nothing beats it, where a runtime
  fails the check, and on machines with a GPU.

`APP_PRECISION=int8` serves a version's quantized model (`python -m training.quantize`) only when its
metadata records a test accuracy within 0.5 points of fp32; otherwise fp32 serves and the log says why.
Which runtime serves each model, and why, is logged and shown by `GET /models/{task}`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model import PROBABILITIES, LoadedModel, ModelLoader, ModelLoadError, max_difference, probe_batch
from app.core.runtimes import openvino, tensorflow
from app.core.runtimes.timing import best_seconds
from app.core.settings import Settings

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4
INT8_MAX_DROP = 0.005  # accuracy, as a fraction


def loader(settings: Settings) -> ModelLoader:
    return partial(load, settings=settings)


def load(version_dir: Path, *, settings: Settings) -> LoadedModel:
    """Load `version_dir` with the runtime `settings` ask for (see the module docstring)."""
    reference = tensorflow.load_saved_model(version_dir, freeze=settings.freeze_models)
    if settings.runtime == "tensorflow":
        return _chosen(reference, "APP_RUNTIME=tensorflow")
    if settings.runtime == "auto" and _has_gpu():
        return _chosen(reference, "a GPU is present: TensorFlow uses it")
    precision = settings.precision
    if precision == "int8":
        refusal = _int8_refusal(reference)
        if refusal:
            log.warning("%s: serving fp32, not int8: %s", version_dir, refusal)
            precision = "fp32"
    try:
        candidate = openvino.load(
            version_dir, reference.metadata, precision=precision, threads=settings.tf_intra_op_threads
        )
        if precision == "int8":  # held to its recorded test accuracy instead, with its own OOD threshold
            candidate.ood_threshold_override = _int8_record(reference).get("ood_threshold")
        else:
            _check_parity(candidate, reference)
    except ModelLoadError as error:
        if settings.runtime == "openvino":
            raise
        return _chosen(reference, f"OpenVINO not used: {error}")
    if settings.runtime == "openvino":
        return _chosen(candidate, "APP_RUNTIME=openvino")
    spec = reference.spec
    batches = [probe_batch(reference.metadata)[:1], np.zeros((16, spec.height, spec.width, spec.channels), np.uint8)]
    theirs, ours = best_seconds(candidate.predict, reference.predict, batches, rounds=5)
    timing = f"{theirs * 1000:.1f} ms vs TensorFlow's {ours * 1000:.1f} ms for 1 + 16 images"
    if theirs < ours:
        return _chosen(candidate, f"fastest that matches the SavedModel: {timing}")
    return _chosen(reference, f"OpenVINO matched but was not faster: {timing}")


def _chosen(model: LoadedModel, why: str) -> LoadedModel:
    model.runtime_note = why
    log.info("%s v%d: %s (%s) serves: %s", model.metadata.task, model.version, model.runtime, model.precision, why)
    return model


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _int8_record(reference: LoadedModel) -> dict[str, Any]:
    return dict((getattr(reference.metadata, "quantization", None) or {}).get("int8") or {})


def _int8_refusal(reference: LoadedModel) -> str:
    """Why the version's int8 model may not serve ("" if it may)."""
    record = _int8_record(reference)
    if not record:
        return "no int8 model recorded in metadata.json (python -m training.quantize)"
    drop = float(record["fp32_test_accuracy"]) - float(record["test_accuracy"])
    if drop > INT8_MAX_DROP:
        return f"its test accuracy is {drop * 100:.2f} points below fp32's (at most {INT8_MAX_DROP * 100:.1f} allowed)"
    return ""


def _check_parity(candidate: LoadedModel, reference: LoadedModel) -> None:
    probe = probe_batch(reference.metadata)
    theirs, ours = candidate.predict(probe), reference.predict(probe)
    difference = max_difference(theirs, ours)
    same_class = np.array_equal(theirs[PROBABILITIES].argmax(axis=1), ours[PROBABILITIES].argmax(axis=1))
    if not difference <= PARITY_TOLERANCE or not same_class:
        raise ModelLoadError(
            f"{candidate.runtime} differs from the SavedModel on the probe batch by {difference:.2g} (relative)"
            + ("" if same_class else ", with another best class")
        )
