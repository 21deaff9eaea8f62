"""Evaluating a model on arrays: its outputs in batches, the classification figures of the test split, and
the check that the exported graph computes what was measured in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from training.calibration import softmax
from training.errors import TrainingError
from training.ood import Detector


def predict_in_batches(function: Callable[..., Any], x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every output of `function` (a serving signature, or `training.export.forward_fn`'s) over `x`, in batches;
    `function` takes `images=` and returns a dict of tensors."""
    import tensorflow as tf

    if not len(x):  # an empty split (a tiny folder's calibration half): its outputs, with no rows
        probe = function(images=tf.constant(np.zeros((1, *x.shape[1:]), dtype=x.dtype)))
        return {name: value.numpy()[:0] for name, value in probe.items()}
    parts: list[dict[str, np.ndarray]] = []
    for i in range(0, len(x), batch_size):
        outputs = function(images=tf.constant(x[i : i + batch_size]))
        parts.append({name: value.numpy() for name, value in outputs.items()})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: true, columns: predicted)."""
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n), where=actual > 0)
    return {
        "test_accuracy": round(float(tp.sum() / max(1, confusion.sum())), 4),
        "test_examples": int(confusion.sum()),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for label, p, r, s in zip(labels, precision, recall, actual, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def check_served(
    served: dict[str, np.ndarray], measured: dict[str, np.ndarray], temperature: float, detector: Detector
) -> None:
    """The exported graph's outputs (`served`) must be those fitted and measured in memory (`measured`, the
    forward function's on the same images): a `TrainingError` if either output differs by more than 1e-4."""
    difference = float(np.abs(served["probabilities"] - softmax(measured["logits"], temperature)).max())
    expected = detector.score_array(measured)
    ood_difference = float(np.abs(served["ood_score"] - expected).max() / max(1.0, float(np.abs(expected).max())))
    if difference > 1e-4 or ood_difference > 1e-4:
        raise TrainingError(
            f"the exported model disagrees with the trained one: probabilities by {difference:.2g}, "
            f"ood_score by {ood_difference:.2g} (relative)"
        )
