"""Out-of-distribution ("not this task") scores, fitted after training and built into the exported graph.

Every candidate is post-hoc: it needs the trained model's penultimate features and logits, nothing more.
Higher scores mean "less like the training images".

- `msp`: minus the maximum softmax probability (Hendrycks & Gimpel 2017), with the calibrated temperature.
- `energy`: minus the log-sum-exp of the logits (Liu et al. 2020, "Energy-based OOD detection", T = 1).
- `mahalanobis`: distance of the features to the nearest class mean under the class-shared covariance
  (Lee et al. 2018), with Ledoit-Wolf shrinkage because the feature dimension is close to the number of
  training images. Stored as a whitening matrix and the whitened class means.
- `knn`: cosine distance of the normalized features to their k-th nearest training feature (Sun et al.
  2022, "Out-of-distribution detection with deep nearest neighbors"), on a seeded subsample of at most
  `KNN_BANK` training images, with k = `KNN_K` fixed beforehand. The bank is stored in float16 (cosine
  similarities move by ~1e-3), so that it adds 2.6 MB to a 1280-feature model instead of 10 MB.

Scores are computed by the same TensorFlow code when measuring (eagerly, on arrays) and when serving
(traced into the SavedModel), so the figures recorded in metadata.json are those of the exported graph.
The threshold is the score that keeps `KEEP` of the validation images: set from in-distribution data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("msp", "energy", "mahalanobis", "knn")
KEEP = 0.95  # fraction of in-distribution validation images below the threshold
KNN_BANK = 1024
KNN_K = 10


@dataclass
class Detector:
    """A fitted scorer: `method`, its numeric constants (kept in the graph) and scalar parameters."""

    method: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    temperature: float = 1.0
    k: int = KNN_K

    def score(self, features: Any, logits: Any) -> Any:
        """Scores `[n]` (a tf.Tensor) for features `[n, d]` and logits `[n, classes]`, eager or traced."""
        import tensorflow as tf

        features = tf.cast(features, tf.float32)
        logits = tf.cast(logits, tf.float32)
        if self.method == "msp":
            return -tf.reduce_max(tf.nn.softmax(logits / self.temperature, axis=1), axis=1)
        if self.method == "energy":
            return -tf.reduce_logsumexp(logits, axis=1)
        if self.method == "mahalanobis":
            whitened = tf.matmul(features, tf.constant(self.constants["whiten"]))
            means = tf.constant(self.constants["means"])  # [classes, d], already whitened
            distances = tf.reduce_sum(tf.square(whitened[:, None, :] - means[None, :, :]), axis=2)
            return tf.reduce_min(distances, axis=1)
        if self.method == "knn":
            normalized = tf.math.l2_normalize(features, axis=1)
            bank = tf.cast(tf.constant(self.constants["bank"]), tf.float32)
            similarity = tf.matmul(normalized, bank, transpose_b=True)
            kth = tf.math.top_k(similarity, k=self.k).values[:, -1]
            return 1.0 - kth
        raise ValueError(f"unknown OOD method {self.method!r}; choose from {METHODS}")

    def score_array(self, features: np.ndarray, logits: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """`score` over arrays in batches (the knn and mahalanobis products grow with the batch)."""
        parts = [
            np.asarray(self.score(features[i : i + batch_size], logits[i : i + batch_size]))
            for i in range(0, len(features), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def constant_bytes(self) -> int:
        return sum(int(c.nbytes) for c in self.constants.values())


def fit(method: str, features: np.ndarray, labels: np.ndarray, *, temperature: float, seed: int) -> Detector:
    """Fit `method` on the training split's features and labels."""
    if method in ("msp", "energy"):
        return Detector(method, temperature=temperature)
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        features = features.astype(np.float64)
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
        # (f - m)^T P (f - m) = |(f - m) L|^2 with P = L L^T: a whitening matmul at serving time.
        whiten = np.linalg.cholesky(np.linalg.inv(covariance))
        return Detector(
            method, {"whiten": whiten.astype(np.float32), "means": (means @ whiten).astype(np.float32)}, temperature
        )
    if method == "knn":
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(len(features))[:KNN_BANK]
        bank = features[chosen].astype(np.float64)
        bank /= np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        return Detector(method, {"bank": bank.astype(np.float16)}, temperature, k=min(KNN_K, len(chosen)))
    raise ValueError(f"unknown OOD method {method!r}; choose from {METHODS}")


def threshold(validation_scores: np.ndarray, keep: float = KEEP) -> float:
    """The score at or below which `keep` of the in-distribution validation images fall."""
    return float(np.quantile(validation_scores, keep, method="higher"))


def evaluate(in_scores: np.ndarray, out_scores: np.ndarray, cutoff: float) -> dict[str, float | int]:
    """AUROC (out-of-distribution as the positive class), the fraction flagged at `cutoff`, and the
    fraction of out-of-distribution images still accepted when 95% of the in-distribution ones are."""
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    auroc = roc_auc_score(truth, np.concatenate([in_scores, out_scores]))
    at_95_tpr = np.quantile(in_scores, 0.95, method="higher")
    return {
        "auroc": round(float(auroc), 4),
        "flagged": round(float(np.mean(out_scores > cutoff)), 4),
        "fpr_at_95_tpr": round(float(np.mean(out_scores <= at_95_tpr)), 4),
        "examples": len(out_scores),
    }


def select(selection: Mapping[str, Mapping[str, Mapping[str, float | int]]]) -> str:
    """The method with the best worst-case AUROC over the out-of-distribution sets (mean AUROC breaks
    ties). `selection[method][set]` holds `evaluate`'s figures on the selection halves of the sets."""

    def key(method: str) -> tuple[float, float]:
        aurocs = [float(figures["auroc"]) for figures in selection[method].values()]
        return min(aurocs), float(np.mean(aurocs))

    return max(selection, key=key)
