"""The OpenVINO runtime: OpenVINO reads the SavedModel itself (its TensorFlow front end) and compiles it
for the CPU, fusing and vectorising further than TensorFlow's own kernels do.

Executed in fp32 (`INFERENCE_PRECISION_HINT`): OpenVINO would otherwise pick bf16 on CPUs that have it and
move the outputs by ~1e-2. `precision="bf16"` asks for bf16 explicitly. `precision="int8"` serves the
quantized model that `python -m training.quantize` wrote beside the SavedModel (`int8/model.xml`).
The calling module (`app.runtimes`) checks every output against the SavedModel's before serving it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from app.model import OOD_SCORE, PROBABILITIES, LoadedModel, ModelLoadError, Outputs
from app.schemas import ModelMetadata

INT8_DIR = "int8"
INT8_MODEL = "model.xml"


def load(version_dir: Path, metadata: ModelMetadata, *, precision: str, threads: int) -> LoadedModel:
    """Compile the version's model (the SavedModel, or its int8 artifact) for the CPU."""
    try:
        import openvino as ov
    except ImportError as error:
        raise ModelLoadError("OpenVINO is not installed (pip install openvino)") from error
    core = ov.Core()
    try:
        if precision == "int8":
            artifact = version_dir / INT8_DIR / INT8_MODEL
            if not artifact.is_file():
                raise ModelLoadError(
                    f"{version_dir} has no int8 model ({INT8_DIR}/{INT8_MODEL}): run python -m training.quantize"
                )
            model = core.read_model(artifact)
        else:
            # The core's TensorFlow front end reads the SavedModel: the same graph as `ov.convert_model`,
            # without the converter's usage telemetry, which would phone home from every replica at load.
            model = core.read_model(str(version_dir))
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the batcher makes one call at a time, with all cores
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
        }
        compiled = core.compile_model(model, "CPU", config)
    except ModelLoadError:
        raise
    except Exception as error:  # conversion and compilation raise many types
        raise ModelLoadError(f"{version_dir}: OpenVINO cannot compile it: {type(error).__name__}: {error}") from error

    names = {PROBABILITIES: metadata.signature.output}
    if metadata.ood is not None:
        names[OOD_SCORE] = metadata.ood.output
    available = {name for output in compiled.outputs for name in output.get_names()}
    missing = sorted(set(names.values()) - available)
    if missing:
        raise ModelLoadError(f"{version_dir}: the OpenVINO model lacks outputs {missing} (has {sorted(available)})")
    ports = {ours: compiled.output(theirs) for ours, theirs in names.items()}
    local = threading.local()  # an infer request is not thread-safe: one per calling thread

    def predict(batch: np.ndarray) -> Outputs:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        results = request.infer({0: np.ascontiguousarray(batch, dtype=np.uint8)})
        return {ours: np.array(results[port], dtype=np.float32) for ours, port in ports.items()}

    return LoadedModel(
        metadata=metadata,
        path=version_dir,
        predict=predict,
        handle=compiled,
        runtime="openvino",
        precision=precision,
    )
