"""Inference time of each served model on this machine, per runtime: one image, and a batch of 32 (median
of `--repeats` calls after a warm-up; uint8 input already decoded and resized), with each runtime's largest
difference from the SavedModel on that random batch (relative, as `app.core.runtimes` checks it at load).

    python -m benchmarks.models                                  # TensorFlow (frozen, as served) and OpenVINO
    python -m benchmarks.models --runtime tensorflow --no-freeze # the SavedModels as exported
    python -m benchmarks.models --precision int8                 # also the int8 models, where quantized
    python -m benchmarks.models --runtime tensorflow openvino litert  # and LiteRT, which the service does not use
    python -m benchmarks.models --task flowers --precision fp32 int8 --sweep 1 2 4 8 16 32 64

`--sweep` also times each TensorFlow and OpenVINO model at those batch sizes (in turns, `--rounds` times, keeping
each size's fastest round) and reports, per task, each
runtime's best batch and its images/s as a ratio of TensorFlow's best, and its single-image time as a ratio
of TensorFlow's: the figures a "model alone, at its best batch" target is stated in.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from app.core import runtimes
from app.core.model import PROBABILITIES, LoadedModel, max_difference
from app.core.repository import discover
from app.core.runtimes import timing
from app.core.settings import Settings
from benchmarks import machine
from benchmarks.timing import median_ms

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--runtime", nargs="+", default=["tensorflow", "openvino"], choices=["tensorflow", "openvino", "litert"]
    )
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"])
    parser.add_argument(
        "--freeze", action=argparse.BooleanOptionalAction, default=True, help="time the frozen signature, as served"
    )
    parser.add_argument("--task", nargs="+", default=None, help="only these tasks (default: every served one)")
    parser.add_argument("--sweep", nargs="+", type=int, default=[], metavar="BATCH", help="batch sizes to sweep")
    parser.add_argument(
        "--rounds", type=int, default=3, help="sweep rounds; each batch size keeps its fastest round's median"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    for task, path in discover(args.model_dir).items():
        if args.task and task not in args.task:
            continue
        reference = runtimes.load(path, settings=Settings(runtime="tensorflow", freeze_models=args.freeze))
        spec = reference.spec
        single = rng.integers(0, 255, (1, spec.height, spec.width, spec.channels), dtype=np.uint8)
        batch = rng.integers(0, 255, (32, spec.height, spec.width, spec.channels), dtype=np.uint8)
        expected = reference.predict(batch)
        timings: dict[str, Any] = {}
        swept: dict[str, LoadedModel] = {}
        for runtime in args.runtime:
            for precision in args.precision:
                if runtime in ("tensorflow", "litert") and precision != "fp32":
                    continue
                if runtime == "litert":
                    timings["litert-fp32"] = _time_litert(path, single, batch, expected, args.repeats)
                    continue
                settings = Settings(runtime=runtime, precision=precision, freeze_models=args.freeze)
                model = reference if runtime == "tensorflow" else runtimes.load(path, settings=settings)
                if model.precision != precision:  # int8 refused (not quantized, or too inaccurate): logged
                    continue
                timings[f"{runtime}-{precision}"] = _time(model, single, batch, expected, args.repeats)
                swept[f"{runtime}-{precision}"] = model
        if args.sweep:
            for name, figures in _sweep(swept, batch, args.sweep, args.repeats, args.rounds).items():
                timings[name].update(figures)
        results[task] = {
            "version": reference.metadata.version,
            "input": f"{spec.height}x{spec.width}x{spec.channels}",
            "saved_model_mb": round(
                sum(f.stat().st_size for f in path.glob("*") if f.is_file() and f.suffix != ".png") / 1e6
                + sum(f.stat().st_size for f in (path / "variables").glob("*")) / 1e6,
                1,
            ),
            "runtimes": timings,
        }
        if args.sweep and "tensorflow-fp32" in timings:
            results[task]["versus_tensorflow"] = _ratios(timings)
    print(json.dumps({"machine": machine.describe(), "tasks": results}, indent=2))


def _time_litert(
    path: Path, single: np.ndarray, batch: np.ndarray, expected: dict[str, np.ndarray], repeats: int
) -> dict[str, Any]:
    from benchmarks import litert

    timings, outputs, size_mb = litert.measure(path, single, batch, repeats)
    return {"tflite_mb": size_mb, **_figures(timings["single"], timings["batch"], outputs, expected)}


def _time(
    model: LoadedModel, single: np.ndarray, batch: np.ndarray, expected: dict[str, np.ndarray], repeats: int
) -> dict[str, Any]:
    model.predict(single), model.predict(batch)  # warm up
    one = median_ms(model.predict, single, repeats=repeats)
    thirty_two = median_ms(model.predict, batch, repeats=repeats)
    return {"frozen": model.frozen, **_figures(one, thirty_two, model.predict(batch), expected)}


def _sweep(
    models: dict[str, LoadedModel], batch: np.ndarray, sizes: list[int], repeats: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """ms per image of every model at every batch size. At each size the models take turns, `rounds` times
    after a warm-up round (`timing.fastest_rounds`), and each keeps its fastest round: a busy spell on a
    shared machine then slows the runtimes it compares alike, instead of deciding which is faster."""
    per_image: dict[str, dict[int, float]] = {name: {} for name in models}
    for size in sizes:
        x = np.resize(batch, (size, *batch.shape[1:]))  # the random images, repeated
        calls = max(3, repeats * 8 // size // rounds)

        def run(model: LoadedModel, x: np.ndarray = x, calls: int = calls) -> None:
            for _ in range(calls):
                model.predict(x)

        seconds = timing.fastest_rounds([partial(run, model) for model in models.values()], rounds=rounds)
        for name, spent in zip(models, seconds, strict=True):
            per_image[name][size] = spent * 1000 / calls / size
    report = {}
    for name, cells in per_image.items():
        best = min(cells, key=lambda size: cells[size])
        report[name] = {
            "sweep_ms_per_image": {str(size): float(f"{ms:.4g}") for size, ms in cells.items()},
            "best_batch": best,
            "best_images_per_s": round(1000 / cells[best], 1),
        }
    return report


def _ratios(timings: dict[str, Any]) -> dict[str, Any]:
    """Each swept runtime's best images/s over TensorFlow's best, and its single-image time over TensorFlow's
    (from the sweep's batch of 1 where it has one, timed in turns with TensorFlow)."""
    base = timings["tensorflow-fp32"]

    def single(figures: dict[str, Any]) -> float:
        return float(figures["sweep_ms_per_image"].get("1", figures["single_image_ms"]))

    return {
        name: {
            "best_throughput": round(figures["best_images_per_s"] / base["best_images_per_s"], 2),
            "single_image_time": round(single(figures) / single(base), 2),
        }
        for name, figures in timings.items()
        if "best_images_per_s" in figures
    }


def _figures(
    single_ms: float, batch_ms: float, outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> dict[str, Any]:
    return {
        "single_image_ms": round(single_ms, 2),
        "batch_32_ms": round(batch_ms, 2),
        "batch_32_ms_per_image": round(batch_ms / 32, 2),
        "max_difference_vs_savedmodel": float(f"{max_difference(outputs, expected):.2g}"),
        "same_best_class": bool(
            np.array_equal(outputs[PROBABILITIES].argmax(axis=1), expected[PROBABILITIES].argmax(axis=1))
        ),
    }


if __name__ == "__main__":
    main()
