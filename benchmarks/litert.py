"""LiteRT (TFLite with XNNPACK), measured beside the served runtimes so that the choice of OpenVINO stays
checkable: `python -m benchmarks.models --runtime tensorflow openvino litert`.

The SavedModel is converted by TensorFlow's own `TFLiteConverter` (fp32, builtin ops only) and run by
`ai-edge-litert` with 2 threads in a virtualenv of its own (`stress.venvs`: it is not a dependency of the
service), on the same inputs as the other runtimes; its outputs come back to be compared with the
SavedModel's like theirs.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from stress.venvs import ensure

REQUIREMENTS = ["ai-edge-litert==2.3.0", "numpy==2.4.6"]
THREADS = 2

_RUNNER = """
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter

model, folder, repeats, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
timings = {}
for name in ("single", "batch"):
    x = np.load(f"{folder}/{name}.npy")
    runner = Interpreter(model_path=model, num_threads=threads).get_signature_runner("serving_default")
    outputs = runner(images=x)  # warm-up: XNNPACK plans for this shape
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner(images=x)
        times.append(time.perf_counter() - started)
    timings[name] = float(np.median(times) * 1000)
    for key, value in outputs.items():
        np.save(f"{folder}/{name}-{key}.npy", value)
print(json.dumps(timings))
"""


def convert(saved_model: Path, destination: Path) -> Path:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    destination.write_bytes(converter.convert())
    return destination


def measure(
    saved_model: Path, single: np.ndarray, batch: np.ndarray, repeats: int
) -> tuple[dict[str, float], dict[str, np.ndarray], float]:
    """Median ms for `single` and `batch`, the batch's outputs, and the .tflite file's size in MB."""
    python = ensure("litert", REQUIREMENTS)
    with tempfile.TemporaryDirectory() as folder:
        model = convert(saved_model, Path(folder) / "model.tflite")
        np.save(f"{folder}/single.npy", single)
        np.save(f"{folder}/batch.npy", batch)
        command = [str(python), "-c", _RUNNER, str(model), folder, str(repeats), str(THREADS)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        timings = json.loads(result.stdout.strip().splitlines()[-1])
        outputs = {p.stem.removeprefix("batch-"): np.load(p) for p in Path(folder).glob("batch-*.npy")}
        return timings, outputs, round(model.stat().st_size / 1e6, 1)
