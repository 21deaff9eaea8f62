"""Inference time of each served SavedModel on this machine: one image, and a batch of 32 (median of
`--repeats` calls after a warm-up; uint8 input already decoded and resized).

    python -m benchmarks.models               # as served (frozen signatures)
    python -m benchmarks.models --no-freeze   # the SavedModels as exported
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app.repository import discover
from app.runtimes.tensorflow import load_saved_model
from benchmarks.timing import median_ms

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--freeze", action=argparse.BooleanOptionalAction, default=True, help="time the frozen signature, as served"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    for task, path in discover(args.model_dir).items():
        model = load_saved_model(path, freeze=args.freeze)
        spec = model.spec
        single = rng.integers(0, 255, (1, spec.height, spec.width, spec.channels), dtype=np.uint8)
        batch = rng.integers(0, 255, (32, spec.height, spec.width, spec.channels), dtype=np.uint8)
        model.predict(single), model.predict(batch)  # warm up
        one = median_ms(model.predict, single, repeats=args.repeats)
        thirty_two = median_ms(model.predict, batch, repeats=args.repeats)
        results[task] = {
            "version": model.metadata.version,
            "frozen": model.frozen,
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
