"""A new version of an exported model with the same weights and guarantees fitted on a calibration split:

    python -m training.recalibrate flowers --data-dir ../shared/datasets/flower_photos [--version N]

For versions exported before the calibration split existed, whose OOD threshold was set on validation (which
also chose the method, so nothing bounded its false flags) and which had no prediction sets. The training run's
splits are rebuilt from the command its metadata records (`training.exported`); the held-out images are now cut
in two (`training.splits.carve_calibration`): one half sets the PAC threshold and the conformal quantiles
(`training.guarantee`), the other is the test split every figure is measured on. The SavedModel (and an int8
model beside it) is copied unchanged, byte for byte: no retraining, and the graph's outputs are those of the
version it comes from. An int8 model gets its own threshold and quantiles from its own outputs. The new version
is published atomically as the next one (`training.store`); `recalibration` in its metadata.json names the
version it came from and the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model import OOD_SCORE, PROBABILITIES
from training import calibration, exported, guarantee, metadata, ood_sets, plots, quantize, store
from training.config import PROJECT_ROOT
from training.errors import TrainingError
from training.evaluation import classification_metrics, predict_in_batches
from training.ood import ALPHA, DELTA, evaluate

log = logging.getLogger("training")
_COPIED = ("saved_model.pb", "fingerprint.pb", "variables", "int8", "training_curves.png")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.recalibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a task of the model store: a built-in one, or one training.folder or adopt made")
    parser.add_argument("--data-dir", type=Path, default=None, help="the dataset, as for training")
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "models", help="the model store")
    parser.add_argument("--version", type=int, default=None, help="the version to start from (default: the highest)")
    parser.add_argument("--ood-alpha", type=float, default=ALPHA, help="false-flag rate the threshold bounds")
    parser.add_argument(
        "--ood-delta", type=float, default=DELTA, help="chance the bound fails over the calibration draw"
    )
    args = parser.parse_args(argv)
    try:
        source = exported.version_dir(args.model_dir, args.task, args.version)
        out = recalibrate(source, args, f"python -m training.recalibrate {shlex.join(argv)}")
    except TrainingError as error:
        sys.exit(f"error: {error}")
    log.info("wrote %s", out)


def recalibrate(source: Path, args: argparse.Namespace, command: str) -> Path:
    """Publish the next version of `source`'s task (see the module docstring); returns its directory."""
    import tensorflow as tf

    version = exported.load(source, args.data_dir)
    meta, record, data, config = version.metadata, dict(version.record), version.data, version.config
    if data.calibration is None:
        raise TrainingError("the rebuilt splits have no calibration split")
    served = tf.saved_model.load(str(source)).signatures[meta.signature.name]
    splits = {"validation": data.validation, "calibration": data.calibration, "test": data.test}
    outputs = {name: predict_in_batches(served, split.x) for name, split in splits.items()}
    fitted = guarantee.fit(outputs, data, alpha=args.ood_alpha, delta=args.ood_delta, seed=config.seed)
    test = outputs["test"]
    probabilities = test[PROBABILITIES]
    labels = list(meta.labels)
    metrics = classification_metrics(data.test.y, probabilities.argmax(axis=1), labels)
    metrics["split"] = data.test_source
    temperature = meta.calibration.temperature if meta.calibration and meta.calibration.temperature else 1.0
    logits = temperature * np.log(np.maximum(probabilities.astype(np.float64), 1e-30))  # softmax-equivalent
    record["metrics"] = metrics
    record["calibration"] = {
        **record.get("calibration", {}),
        "test": calibration.summary(logits, data.test.y, temperature),
    }
    record["conformal"] = fitted.conformal
    record["dataset"] = {**record["dataset"], **metadata.dataset_record(record["dataset"]["name"], data, len(labels))}
    log.info("test accuracy %.4f on %d images", metrics["test_accuracy"], metrics["test_examples"])

    report: dict[str, np.ndarray] = {}
    if fitted.threshold is not None:
        sets = ood_sets.build(
            meta.task, version.spec, config.ood_data_dir, per_set=config.ood_per_set, seed=config.seed
        )
        _, halves = ood_sets.split_halves(sets, config.seed)
        report = {name: predict_in_batches(served, x)[OOD_SCORE] for name, x in halves.items()}
        cutoff = fitted.threshold.value
        record["ood"] = {
            **record["ood"],
            **fitted.ood_fields(test[OOD_SCORE]),
            "evaluation": {name: evaluate(test[OOD_SCORE], scores, cutoff) for name, scores in report.items()},
        }
        log.info("OOD threshold %.4g, test flagged %.4f", cutoff, record["ood"]["test_flagged"])

    with store.staged(args.model_dir, meta.task, None) as (number, out):
        for name in _COPIED:
            path = source / name
            if path.is_dir():
                shutil.copytree(path, out / name)
            elif path.is_file():
                shutil.copy2(path, out / name)
        record["version"] = number
        record["recalibration"] = {
            "from_version": meta.version,
            "command": command,
            "weights": f"the SavedModel of version {meta.version}, copied unchanged",
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if (source / "int8").is_dir() and "int8" in record.get("quantization", {}):
            int8 = quantize.measure(out, meta, version.spec, data, config)
            record["quantization"]["int8"] = {**record["quantization"]["int8"], **int8, "recalibrated": True}
        _plots(out, data, probabilities, labels, logits, temperature, test.get(OOD_SCORE), report, record, config.seed)
        metadata.write(out, record)
    return out.parent / str(number)


def _plots(
    out: Path,
    data: Any,
    probabilities: np.ndarray,
    labels: list[str],
    logits: np.ndarray,
    temperature: float,
    test_scores: np.ndarray | None,
    report: dict[str, np.ndarray],
    record: dict[str, Any],
    seed: int,
) -> None:
    """The plots that show the test split, redrawn on the new one (training curves are copied)."""
    plots.confusion_matrix(np.asarray(record["metrics"]["confusion_matrix"]), labels, out / "confusion_matrix.png")
    plots.prediction_grid(data.test.x, data.test.y, probabilities, labels, out / "test_predictions.png", seed=seed)
    plots.reliability_diagram(
        calibration.reliability(calibration.softmax(logits), data.test.y),
        calibration.reliability(probabilities, data.test.y),
        out / "reliability.png",
        temperature=temperature,
    )
    if test_scores is not None:
        method = record["ood"]["method"]
        plots.ood_histogram(test_scores, report, record["ood"]["threshold"], out / "ood_scores.png", method=method)


if __name__ == "__main__":
    main()
