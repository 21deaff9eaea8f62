"""The in-process limit: decode + resize (the service's `load_image`) and the model called directly, no HTTP,
no batcher, loaded by the runtime the service would choose (`--runtime auto`, as `APP_RUNTIME`; `tensorflow`
for the SavedModel itself). Prints JSON: the runtime, the single-image time and images/s per batch size."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from app.core import runtimes
from app.core.imaging import load_image
from app.core.repository import discover
from app.core.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", choices=["auto", "tensorflow", "openvino"], default="auto")
    args = parser.parse_args()

    model = runtimes.load(discover(args.model_dir)[args.task], settings=Settings(runtime=args.runtime))
    spec = model.spec
    files = [p.read_bytes() for p in args.photos]
    model.predict(np.stack([load_image(f, spec, max_pixels=10**9) for f in files[:8]]))  # warm up

    singles = []
    for data in files[:40]:
        started = time.perf_counter()
        model.predict(load_image(data, spec, max_pixels=10**9)[None])
        singles.append(time.perf_counter() - started)
    decode = []
    for data in files[:40]:
        started = time.perf_counter()
        load_image(data, spec, max_pixels=10**9)
        decode.append(time.perf_counter() - started)

    throughput: dict[str, float] = {}
    for batch_size in args.batch_sizes:
        total = max(batch_size, 128 // batch_size * batch_size)
        best = 0.0
        for _ in range(args.rounds):
            started = time.perf_counter()
            for offset in range(0, total, batch_size):
                batch = [files[(offset + i) % len(files)] for i in range(batch_size)]
                model.predict(np.stack([load_image(f, spec, max_pixels=10**9) for f in batch]))
            best = max(best, total / (time.perf_counter() - started))
        throughput[str(batch_size)] = round(best, 1)
    best_batch = max(throughput, key=lambda k: throughput[k])
    print(
        json.dumps(
            {
                "runtime": model.describe(),
                "single_image_ms": round(statistics.median(singles) * 1000, 2),
                "decode_ms": round(statistics.median(decode) * 1000, 2),
                "images_per_s_by_batch": throughput,
                "best_batch_size": int(best_batch),
                "images_per_s": throughput[best_batch],
            }
        )
    )


if __name__ == "__main__":
    main()
