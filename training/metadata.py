"""metadata.json, the record of one exported version: what the service reads to serve it (`app.core.model`
validates the keys it needs: task, labels, input, signature, ood, ...) and what a person reads to trust it
(figures, the exact command and the commit of the code that made it).

Its keys are a contract with the service and with the versions already in the model store: add keys, never
rename or drop one.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from app.core.imaging import ImageSpec
from training.catalogue import Dataset
from training.config import PROJECT_ROOT, RunConfig
from training.fitting import History
from training.splits import Splits


def git_commit() -> str | None:
    """The commit the training code came from, with "+dirty" if it had uncommitted changes; None outside a
    git checkout. Read when a run starts, before anything can change the tree during a long run."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "training", "app"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def input_record(dataset: Dataset, spec: ImageSpec) -> dict[str, Any]:
    """The `input` object: the array the signature takes and how the service must make it from an upload."""
    record: dict[str, Any] = {
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "resize": spec.resize,
    }
    if dataset.input_notes:
        record["notes"] = dataset.input_notes
    if dataset.auto_invert:
        record["auto_invert"] = True
    return record


def build(
    *,
    dataset: Dataset,
    config: RunConfig,
    spec: ImageSpec,
    version: int,
    signature: dict[str, str],
    parameters: int,
    metrics: dict[str, Any],
    temperature: float,
    calibration_test: dict[str, float | int],
    ood: dict[str, Any],
    conformal: dict[str, Any] | None,
    data: Splits,
    history: History,
    seconds: float,
    commit: str | None,
) -> dict[str, Any]:
    """The whole record. `metrics` are the exported graph's on the test split (`training.evaluation`),
    `calibration_test` the temperature's effect there (`training.calibration.summary`), `ood` the
    out-of-distribution object (`training.ood_fit.OodFit.metadata`), `history` the fit's per-epoch figures."""
    import keras
    import tensorflow as tf

    epochs = len(history.get("loss", []))
    return {
        "task": dataset.name,
        "version": version,
        "labels": list(dataset.labels),
        "subject": dataset.subject,
        "input": input_record(dataset, spec),
        "signature": signature,
        "architecture": config.arch,
        "parameters": parameters,
        "metrics": metrics,
        "calibration": {
            "method": "temperature",
            "temperature": round(temperature, 6),
            "split": "validation",
            "validation_examples": len(data.validation),
            "test": calibration_test,
        },
        "ood": ood,
        "conformal": conformal,
        "dataset": dataset_record(dataset.title, data, len(dataset.labels)),
        "training": {
            "epochs": epochs,
            "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(1, epochs), 1),
            "batch_size": config.batch_size,
            "seed": config.seed,
            "history": history,
            "command": config.command,
            "git_commit": commit,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "devices": [d.device_type for d in tf.config.list_physical_devices()],
        },
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def dataset_record(title: str, data: Splits, classes: int) -> dict[str, Any]:
    """The `dataset` object: the name and the size of every split, and the class mix of the training split
    (what drift is measured against)."""
    counts = np.bincount(data.train.y, minlength=classes)
    return {
        "name": title,
        "train_examples": len(data.train),
        "validation_examples": len(data.validation),
        "calibration_examples": len(data.calibration) if data.calibration is not None else 0,
        "test_examples": len(data.test),
        "calibration_split": data.calibration_source,
        "class_counts": [int(c) for c in counts],
        "skipped_files": data.skipped_files,
    }


def write(directory: Path, record: dict[str, Any]) -> None:
    (directory / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
