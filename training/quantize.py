"""Full-integer (int8) quantization of an exported model version, for OpenVINO on CPUs with VNNI:

    python -m training.quantize flowers --data-dir ../shared/datasets/flower_photos [--version N]

NNCF's post-training quantization of the OpenVINO model read from the SavedModel, calibrated on
`--calibration-images` training images (never the validation or test splits). With `--max-drop P`, NNCF's
quantization with accuracy control instead: it measures top-1 accuracy on the validation split and returns
to fp32 the operations that cost the most of it, until the drop there is at most P points (slower than full
int8, by how many it returns; the test split stays out of it and judges the result). The splits are the
training run's own, rebuilt from the command its metadata records (`training.exported`). The result is written
beside the SavedModel (`<version>/int8/model.xml` and `.bin`), evaluated on the test split next to fp32,
and recorded in `metadata.json` under `quantization.int8`: test accuracy of both, the OOD threshold
recomputed on the validation split (int8 moves the scores, so fp32's threshold would not keep 95%), and the
int8 model's OOD figures on the report halves of training's out-of-distribution sets (`ood_evaluation`).
The operations that compute only `ood_score` (the distance head) stay in fp32.
The service serves it only with `APP_PRECISION=int8`, and only if the accuracy dropped by at most 0.5 points.
NNCF sends Intel usage telemetry unless opted out: `.venv/bin/opt_in_out --opt_out` once per user.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, ModelMetadata
from app.core.runtimes.openvino import INT8_DIR, INT8_MODEL
from app.core.runtimes.openvino import load as load_openvino
from training import exported, guarantee, ood_sets
from training.config import PROJECT_ROOT, RunConfig
from training.errors import TrainingError
from training.ood import evaluate
from training.splits import Splits

log = logging.getLogger("training")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a task of the model store: a built-in one, or one training.folder or adopt made")
    parser.add_argument("--data-dir", type=Path, default=None, help="the dataset, as for training")
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "models")
    parser.add_argument("--version", type=int, default=None, help="default: the highest")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="keep the validation accuracy within POINTS (e.g. 0.3) of fp32's by leaving the operations that "
        "cost the most in fp32 (NNCF's quantization with accuracy control); default: every operation in int8",
    )
    args = parser.parse_args(argv)
    try:
        version_dir = exported.version_dir(args.model_dir, args.task, args.version)
        record = quantize(version_dir, args)
    except TrainingError as error:
        sys.exit(f"error: {error}")
    record["command"] = f"python -m training.quantize {shlex.join(argv)}"
    meta = json.loads((version_dir / "metadata.json").read_text())
    meta.setdefault("quantization", {})["int8"] = record
    (version_dir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        "int8 test accuracy %.4f (fp32 %.4f); wrote %s",
        record["test_accuracy"],
        record["fp32_test_accuracy"],
        version_dir / INT8_DIR,
    )


def quantize(version_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import nncf
    import openvino as ov

    version = exported.load(version_dir, args.data_dir)
    metadata, spec, data, run_config = version.metadata, version.spec, version.data, version.config
    rng = np.random.default_rng(run_config.seed)
    chosen = rng.permutation(len(data.train))[: args.calibration_images]
    calibration = nncf.Dataset([data.train.x[i : i + 1] for i in chosen])

    model = ov.Core().read_model(str(version_dir))  # not ov.convert_model: no usage telemetry
    ood_head = _ood_only_operations(model, metadata.signature.output, metadata.ood.output) if metadata.ood else []
    # Distances in int8 lose their ranking (measured on rps' Mahalanobis head: 63-87% of other tasks' images
    # flagged instead of 100%), so what computes only `ood_score` stays in fp32. Its cost depends on the head:
    # within noise on the Lite0 models' kNN, ~15% per image on fashion_mnist's block-statistics ensemble.
    ignored = nncf.IgnoredScope(names=ood_head, validate=False)
    if args.max_drop is None:
        quantized = nncf.quantize(model, calibration, subset_size=len(chosen), ignored_scope=ignored)
    else:
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration,
            nncf.Dataset(
                [(data.validation.x[i : i + 1], data.validation.y[i]) for i in range(len(data.validation))], _image
            ),
            partial(_top1, output=metadata.signature.output),
            max_drop=args.max_drop / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(chosen),
            ignored_scope=ignored,
        )
    out = version_dir / INT8_DIR
    out.mkdir(exist_ok=True)
    ov.save_model(quantized, out / INT8_MODEL, compress_to_fp16=False)

    control = {} if args.max_drop is None else {"max_validation_drop_points": args.max_drop}
    return {
        "method": "NNCF post-training quantization (OpenVINO IR, int8 weights and activations)"
        + ("" if args.max_drop is None else ", with accuracy control on the validation split"),
        **control,
        "fp32_operations": f"the {len(ood_head)} operations that compute only ood_score",
        "artifact": f"{INT8_DIR}/{INT8_MODEL}",
        "calibration_images": len(chosen),
        "calibration_split": "training",
        **measure(version_dir, metadata, spec, data, run_config),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def measure(
    version_dir: Path, metadata: ModelMetadata, spec: ImageSpec, data: Splits, config: RunConfig
) -> dict[str, Any]:
    """The int8 model's figures beside fp32's on the test split, and its own guarantees: the OOD threshold and
    conformal quantiles fitted on its own outputs on the calibration split (int8 moves both), with its OOD
    figures on the same report halves of the out-of-distribution sets as training's."""
    int8 = load_openvino(version_dir, metadata, precision="int8", threads=0)
    fp32 = load_openvino(version_dir, metadata, precision="fp32", threads=0)

    def run(predict: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        parts = [predict(x[i : i + 64]) for i in range(0, len(x), 64)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    assert data.calibration is not None
    outputs = {
        name: run(int8.predict, split.x)
        for name, split in (("validation", data.validation), ("calibration", data.calibration), ("test", data.test))
    }
    test_int8, test_fp32 = outputs["test"], run(fp32.predict, data.test.x)
    record: dict[str, Any] = {
        "test_accuracy": round(float(np.mean(test_int8[PROBABILITIES].argmax(axis=1) == data.test.y)), 4),
        "fp32_test_accuracy": round(float(np.mean(test_fp32[PROBABILITIES].argmax(axis=1) == data.test.y)), 4),
        "test_examples": len(data.test),
        "same_predictions_as_fp32": round(
            float(np.mean(test_int8[PROBABILITIES].argmax(axis=1) == test_fp32[PROBABILITIES].argmax(axis=1))), 4
        ),
    }
    fitted = guarantee.fit(outputs, data, alpha=config.ood_alpha, delta=config.ood_delta, seed=config.seed)
    record["conformal"] = fitted.conformal
    if fitted.threshold is not None:
        cutoff = fitted.threshold.value
        record["ood_threshold"] = cutoff
        record["ood_validation_score_quantiles"] = fitted.reference_quantiles
        record["ood_guarantee"] = fitted.threshold.guarantee()
        record["ood_test_flagged"] = round(float(np.mean(test_int8[OOD_SCORE] > cutoff)), 4)
        # The same report halves of the same out-of-distribution sets as training's figures, through int8.
        sets = ood_sets.build(metadata.task, spec, config.ood_data_dir, per_set=config.ood_per_set, seed=config.seed)
        _, report = ood_sets.split_halves(sets, config.seed)
        record["ood_evaluation"] = {
            name: evaluate(test_int8[OOD_SCORE], run(int8.predict, x)[OOD_SCORE], cutoff) for name, x in report.items()
        }
    return record


def _ood_only_operations(model: Any, probabilities: str, ood_score: str) -> list[str]:
    """Names of the operations of an OpenVINO `model` that feed its `ood_score` output and not `probabilities`."""

    def ancestors(output: str) -> set[str]:
        seen: set[str] = set()
        stack = [model.output(output).get_node()]
        while stack:
            node = stack.pop()
            if node.get_friendly_name() not in seen:
                seen.add(node.get_friendly_name())
                stack.extend(value.get_node() for value in node.input_values())
        return seen

    return sorted(ancestors(ood_score) - ancestors(probabilities))


def _image(item: tuple[np.ndarray, int]) -> np.ndarray:
    return item[0]


def _top1(compiled: Any, items: Iterable[tuple[np.ndarray, int]], *, output: str) -> float:
    """NNCF's validation function: top-1 accuracy of a compiled candidate on (image batch of 1, label) items."""
    port = compiled.output(output)
    hits = [int(np.argmax(compiled(x)[port][0]) == y) for x, y in items]
    return float(np.mean(hits))


if __name__ == "__main__":
    main()
