"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") and the figures
that judge it: expected calibration error and negative log-likelihood.

One scalar T divides the logits before the softmax. It changes no prediction (the argmax is the same),
only how confident they are. T is fitted on the validation split, never the test split, by minimising
the negative log-likelihood; `training.export` then builds it into the exported graph, so every consumer
of the SavedModel gets calibrated `probabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

ECE_BINS = 15
# log T is searched in [-4, 4]: T from 0.02 to 55, far beyond what any trained classifier needs.
_LOG_T_BOUNDS = (-4.0, 4.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, computed stably."""
    return np.exp(log_softmax(np.asarray(logits, np.float64) / temperature, axis=1))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels (natural log), from logits: no log(0)."""
    log_p = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: mean confidence, accuracy and count (empty bins have count 0)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
        total = self.count.sum()
        return float((self.count * np.abs(self.accuracy - self.confidence)).sum() / max(1, total))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin the top-class confidence into `bins` equal-width bins over (0, 1]."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins (a confidence of exactly 1.0 falls in the last one), as in Guo et al.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return Reliability(edges, np.nan_to_num(mean_conf), np.nan_to_num(accuracy), count)


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    return reliability(probabilities, labels, bins).ece


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of `labels` under softmax(logits / T). Searched over log T, where the
    NLL is smooth and unimodal in practice; bounded, so degenerate data cannot send T to 0 or infinity."""
    if len(labels) == 0:
        raise ValueError("temperature scaling needs at least one labelled example")
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def summary(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float | int]:
    """ECE and NLL before (T = 1) and after temperature scaling, for metadata.json."""
    return {
        "ece_before": round(ece(softmax(logits), labels), 4),
        "ece_after": round(ece(softmax(logits, temperature), labels), 4),
        "nll_before": round(nll(logits, labels), 4),
        "nll_after": round(nll(logits, labels, temperature), 4),
        "bins": ECE_BINS,
    }
