"""The OpenVINO runtime: OpenVINO reads the SavedModel itself (its TensorFlow front end) and compiles it
for the CPU, fusing and vectorising further than TensorFlow's own kernels do.

Executed in fp32 (`INFERENCE_PRECISION_HINT`): OpenVINO would otherwise pick bf16 on CPUs that have it and
move the outputs by ~1e-2. `precision="bf16"` asks for bf16 explicitly. `precision="int8"` serves the
quantized model that `python -m training.quantize` wrote beside the SavedModel (`int8/model.xml`).
The calling module (`app.core.runtimes`) checks every output against the SavedModel's before serving it.

Static batch shapes, in chunks: with a dynamic batch dimension the CPU plugin redoes shape inference and
memory planning on every call; compiled for one static batch size it runs the same model 5-7% faster per
image (EfficientNet-Lite0 here), ~10% for the 28x28 CNNs at small batches. So the model is compiled for batch
sizes 1, 2, 4, ... up to the smallest that runs within `NEAR_BEST` of the fastest per image (timed at load; 2
or 4 for Lite0 on this 2-core machine, where one call of 32 is 18% slower per image than eight of 4), and a
batch of n runs as chunks of the largest size, then the remainder in powers of two: no padding, and
log2(largest) + 1 compiled models.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.metadata import ModelMetadata
from app.core.model import OOD_SCORE, PROBABILITIES, ModelLoadError, Outputs
from app.core.runtimes.base import RuntimeOptions
from app.core.runtimes.timing import fastest_rounds

INT8_DIR = "int8"
INT8_MODEL = "model.xml"
LARGEST_CHUNK = 32  # batch sizes tried at load stop here (the batcher's default largest batch)
NEAR_BEST = 0.02  # per-image time within this fraction of the fastest counts as fastest
TIMING_ROUNDS = 3  # after one untimed round
TIMED_ROUND_S = 0.02  # each timed round runs at least this long, so tiny models time above clock noise


@dataclass(frozen=True)
class CompiledChunks:
    """The model compiled for each batch size in `batch_sizes`; `run` splits a batch into those (`chunks`)."""

    predict: Callable[[np.ndarray], Outputs]
    precision: str
    batch_sizes: tuple[int, ...]
    handle: Any  # the compiled models, alive as long as this

    def run(self, batch: np.ndarray) -> Outputs:
        return self.predict(batch)

    def describe(self) -> dict[str, Any]:
        return {"precision": self.precision, "frozen": False, "batch_sizes": list(self.batch_sizes)}


class OpenVino:
    """The `openvino` runtime."""

    name = "openvino"

    def load(self, version_dir: Path, metadata: ModelMetadata, options: RuntimeOptions) -> CompiledChunks:
        return load(version_dir, metadata, precision=options.precision, threads=options.threads)


RUNTIME = OpenVino()


def load(version_dir: Path, metadata: ModelMetadata, *, precision: str, threads: int) -> CompiledChunks:
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
        compiled = _compile_chunks(core, model, config)
    except ModelLoadError:
        raise
    except Exception as error:  # conversion and compilation raise many types
        raise ModelLoadError(f"{version_dir}: OpenVINO cannot compile it: {type(error).__name__}: {error}") from error

    names = {PROBABILITIES: metadata.signature.output}
    if metadata.ood is not None:
        names[OOD_SCORE] = metadata.ood.output
    any_compiled = next(iter(compiled.values()))
    available = {name for output in any_compiled.outputs for name in output.get_names()}
    missing = sorted(set(names.values()) - available)
    if missing:
        raise ModelLoadError(f"{version_dir}: the OpenVINO model lacks outputs {missing} (has {sorted(available)})")
    ports = {size: {ours: model.output(theirs) for ours, theirs in names.items()} for size, model in compiled.items()}
    sizes = sorted(compiled)
    local = threading.local()  # an infer request is not thread-safe: one per calling thread and batch size

    def predict(batch: np.ndarray) -> Outputs:
        requests = getattr(local, "requests", None)
        if requests is None:
            requests = local.requests = {size: model.create_infer_request() for size, model in compiled.items()}
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        parts: dict[str, list[np.ndarray]] = {ours: [] for ours in names}
        start = 0
        for size in chunks(len(batch), sizes):
            results = requests[size].infer({0: batch[start : start + size]})
            for ours, port in ports[size].items():
                parts[ours].append(np.array(results[port], dtype=np.float32))
            start += size
        return {ours: np.concatenate(arrays) for ours, arrays in parts.items()}

    return CompiledChunks(predict, precision, tuple(sizes), handle=compiled)


def chunks(n: int, sizes: list[int]) -> list[int]:
    """How a batch of `n` runs on models compiled for `sizes` (1, 2, 4, ... ascending): as many of the
    largest as fit, then the remainder in powers of two, largest first. Sums to `n`; no padding."""
    largest = sizes[-1]
    runs = [largest] * (n // largest)
    remainder = n % largest
    runs += [size for size in reversed(sizes) if remainder & size]
    return runs


def _compile_chunks(core: Any, model: Any, config: dict[str, Any]) -> dict[int, Any]:
    """The model compiled for batch sizes 1, 2, 4, ... up to the smallest that runs within `NEAR_BEST` of the
    fastest per image of all sizes to `LARGEST_CHUNK` (the smallest: less memory, and among near-equals a
    busy spell does not decide)."""
    shape = [dimension.get_length() for dimension in list(model.input(0).get_partial_shape())[1:]]
    compiled: dict[int, Any] = {}
    for size in (2**i for i in range(LARGEST_CHUNK.bit_length())):
        static = model.clone()
        static.reshape({0: [size, *shape]})
        compiled[size] = core.compile_model(static, "CPU", config)
    seconds = _seconds_per_image(compiled, shape)
    fastest = min(seconds.values())
    largest = min(size for size, spent in seconds.items() if spent <= fastest * (1 + NEAR_BEST))
    return {size: model for size, model in compiled.items() if size <= largest}


def _seconds_per_image(compiled: dict[int, Any], shape: list[int]) -> dict[int, float]:
    """Per batch size, the best of `TIMING_ROUNDS` rounds taken in turns (`fastest_rounds`), each round long
    enough (`TIMED_ROUND_S`, from a first call) to time a tiny model above clock noise."""
    runs = []
    for size, model in compiled.items():
        request, batch = model.create_infer_request(), np.zeros([size, *shape], np.uint8)
        started = time.perf_counter()
        request.infer({0: batch})
        calls = max(1, int(TIMED_ROUND_S / max(time.perf_counter() - started, 1e-6)))
        runs.append((calls * size, lambda r=request, b=batch, n=calls: [r.infer({0: b}) for _ in range(n)]))
    seconds = fastest_rounds([run for _, run in runs], rounds=TIMING_ROUNDS)
    return {size: spent / images for size, (images, _), spent in zip(compiled, runs, seconds, strict=True)}
