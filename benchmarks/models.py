"""Inference time of each served SavedModel on this machine: one image, and a batch of 32 (median of
`--repeats` calls after a warm-up; uint8 input already decoded and resized).

    python -m benchmarks.models
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from app.registry import discover, load_saved_model

ROOT = Path(__file__).resolve().parent.parent


def _median_ms(predict: object, batch: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(batch)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    for task, path in discover(args.model_dir).items():
        model = load_saved_model(path)
        spec = model.spec
        single = rng.integers(0, 255, (1, spec.height, spec.width, spec.channels), dtype=np.uint8)
        batch = rng.integers(0, 255, (32, spec.height, spec.width, spec.channels), dtype=np.uint8)
        model.predict(single), model.predict(batch)  # warm up
        one = _median_ms(model.predict, single, args.repeats)
        thirty_two = _median_ms(model.predict, batch, args.repeats)
        results[task] = {
            "version": model.metadata.version,
            "input": f"{spec.height}x{spec.width}x{spec.channels}",
            "single_image_ms": one,
            "batch_32_ms": thirty_two,
            "batch_32_images_per_s": round(32000 / thirty_two, 1),
            "saved_model_mb": round(
                sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix != ".png") / 1e6, 1
            ),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
