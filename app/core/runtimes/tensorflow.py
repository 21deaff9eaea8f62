"""The TensorFlow runtime: a SavedModel version directory served through its signature, frozen where that
is faster and gives the same outputs. It is the reference every other runtime is held to.

`load` checks that `metadata.json` and the SavedModel's signature agree, raising `ModelLoadError` with one
clear sentence otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.metadata import ModelMetadata, read_metadata
from app.core.model import (
    OOD_SCORE,
    PROBABILITIES,
    LoadedModel,
    ModelLoadError,
    Outputs,
    max_difference,
    probe_batch,
)
from app.core.runtimes.base import RuntimeOptions
from app.core.runtimes.timing import best_seconds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedModelRunner:
    """A SavedModel's serving signature, or its frozen twin. `handle` keeps the loaded SavedModel alive:
    a signature holds only weak references to the variables it reads."""

    predict: Callable[[np.ndarray], Outputs]
    frozen: bool
    handle: Any = None

    def run(self, batch: np.ndarray) -> Outputs:
        return self.predict(batch)

    def describe(self) -> dict[str, Any]:
        return {"precision": "fp32", "frozen": self.frozen, "batch_sizes": None}


class TensorFlow:
    """The `tensorflow` runtime (any precision other than fp32 is another runtime's business)."""

    name = "tensorflow"

    def load(self, version_dir: Path, metadata: ModelMetadata, options: RuntimeOptions) -> SavedModelRunner:
        """Load the SavedModel of `version_dir`; raise `ModelLoadError` if it disagrees with `metadata`.

        With `options.freeze`, the serving signature is also frozen (variables folded into constants), which
        lets TensorFlow's graph optimizer fold batch normalization into the convolutions: about 30% faster on
        CPU for the EfficientNet models. The frozen graph is served only if it gives the same outputs as the
        SavedModel on a probe batch and is not slower on it (for some small models it is); otherwise the
        SavedModel is served as is and the log says why.
        """
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(version_dir))
        except Exception as error:  # TensorFlow raises many types for unreadable models
            raise ModelLoadError(
                f"{version_dir} is not a loadable SavedModel: {type(error).__name__}: {error}"
            ) from error
        sig = metadata.signature
        if sig.name not in loaded.signatures:
            raise ModelLoadError(f"{version_dir} has no signature {sig.name!r} (has {sorted(loaded.signatures)})")
        function = loaded.signatures[sig.name]
        _check_signature(function, metadata, version_dir)
        names = _output_names(metadata)  # our name -> the signature's

        def predict(batch: np.ndarray) -> Outputs:
            outputs = function(**{sig.input: tf.constant(batch, dtype=tf.uint8)})
            return {ours: np.asarray(outputs[theirs].numpy(), dtype=np.float32) for ours, theirs in names.items()}

        if options.freeze:
            frozen = _freeze(function, names, predict, metadata, version_dir)
            if frozen is not None:
                return SavedModelRunner(frozen, frozen=True)
        return SavedModelRunner(predict, frozen=False, handle=loaded)


RUNTIME = TensorFlow()


def load_saved_model(version_dir: Path, *, freeze: bool = True) -> LoadedModel:
    """`version_dir` served by TensorFlow alone, with its metadata's own threshold (tools and tests that
    want the SavedModel as exported, without the runtime choice of `app.core.runtimes`)."""
    metadata = read_metadata(version_dir)
    compiled = RUNTIME.load(version_dir, metadata, RuntimeOptions(freeze=freeze))
    threshold = metadata.ood.threshold if metadata.ood is not None else None
    return LoadedModel(metadata, version_dir, compiled, RUNTIME.name, "", threshold, metadata.conformal)


def _output_names(metadata: ModelMetadata) -> dict[str, str]:
    names = {PROBABILITIES: metadata.signature.output}
    if metadata.ood is not None:
        names[OOD_SCORE] = metadata.ood.output
    return names


_FREEZE_TOLERANCE = 1e-4  # relative; float reassociation after folding moves outputs by ~1e-6


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
    frozen_s, reference_s = best_seconds(predict, reference, [probe[:1], probe], rounds=7)
    if frozen_s > reference_s:
        log.info(
            "%s: serving the SavedModel unfrozen (frozen %.2f ms vs %.2f ms for 1 + 3 probe images)",
            version_dir,
            frozen_s * 1000,
            reference_s * 1000,
        )
        return None
    return predict


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
