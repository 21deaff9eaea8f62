"""Out-of-distribution ("not this task") scores, fitted after training and built into the exported graph.

Every candidate is post-hoc: it needs the trained model's outputs (`features`, `logits`, and for networks
that name their convolution blocks `block1`, `block2`, ..., each block's channel statistics), nothing
more. Higher scores mean "less like the training images".

- `msp`: minus the maximum softmax probability (Hendrycks & Gimpel 2017), with the calibrated temperature.
- `energy`: minus the log-sum-exp of the logits (Liu et al. 2020, "Energy-based OOD detection", T = 1).
- `mahalanobis`: distance of the features to the nearest class mean under the class-shared covariance
  (Lee et al. 2018), with Ledoit-Wolf shrinkage because the feature dimension is close to the number of
  training images. Stored as a whitening matrix and the whitened class means.
- `knn`: cosine distance of the normalized features to their k-th nearest training feature (Sun et al.
  2022, "Out-of-distribution detection with deep nearest neighbors"), on a seeded subsample of at most
  `KNN_BANK` training images, with k = `KNN_K` fixed beforehand. The bank is stored in float16 (cosine
  similarities move by ~1e-3), so that it adds 2.6 MB to a 1280-feature model instead of 10 MB.
- `feature_ensemble` (models with blocks): Lee et al.'s feature ensemble: Mahalanobis on every block's
  channel statistics and on the features, each standardized by its mean and deviation on the
  in-distribution validation split, summed with equal weights (the paper weighs them by a regression on
  OOD samples, which would fit on the sets we measure with). The block statistics are each channel's
  spatial mean and standard deviation: the low-level texture that a small network's penultimate layer
  discards (a 28x28 garment CNN maps noise and photos close to garments there; its first block does not).
- `knn_ensemble` (models with blocks): the same, with `knn` on the features in place of `mahalanobis`.

Scores are computed by the same TensorFlow code when measuring (eagerly, on arrays) and when serving
(traced into the SavedModel), so the figures recorded in metadata.json are those of the exported graph.
The threshold is the score that keeps `KEEP` of the validation images: set from in-distribution data only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("msp", "energy", "mahalanobis", "knn", "feature_ensemble", "knn_ensemble")
ENSEMBLES = {"feature_ensemble": "mahalanobis", "knn_ensemble": "knn"}  # -> the method on `features`
KEEP = 0.95  # fraction of in-distribution validation images below the threshold
KNN_BANK = 1024
KNN_K = 10
FEATURES = "features"


def is_block(name: str) -> bool:
    """Whether a layer (and the output it gives) is a named block: `block1`, `block2`, ..."""
    return re.fullmatch(r"block\d+", name) is not None


def block_names(outputs: Iterable[str]) -> list[str]:
    """The block-statistics outputs among `outputs` (names, or a mapping keyed by them), in order."""
    return sorted(filter(is_block, outputs), key=lambda name: int(name[5:]))


@dataclass
class Detector:
    """A fitted scorer: `method`, its numeric constants (kept in the graph), the output it reads
    (`layer`) and, for ensembles, its standardized `parts`."""

    method: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    temperature: float = 1.0
    k: int = KNN_K
    layer: str = FEATURES
    parts: list[Detector] = field(default_factory=list)

    def score(self, outputs: Mapping[str, Any]) -> Any:
        """Scores `[n]` (a tf.Tensor) from the model's outputs (`features` `[n, d]`, `logits`
        `[n, classes]`, block statistics), eager or traced."""
        import tensorflow as tf

        if self.parts:
            standardized = [
                (part.score(outputs) - self.constants["offsets"][i]) / self.constants["scales"][i]
                for i, part in enumerate(self.parts)
            ]
            return tf.add_n(standardized)
        logits = tf.cast(outputs["logits"], tf.float32)
        if self.method == "msp":
            return -tf.reduce_max(tf.nn.softmax(logits / self.temperature, axis=1), axis=1)
        if self.method == "energy":
            return -tf.reduce_logsumexp(logits, axis=1)
        features = tf.cast(outputs[self.layer], tf.float32)
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

    def score_array(self, outputs: Mapping[str, np.ndarray], batch_size: int = 512) -> np.ndarray:
        """`score` over arrays in batches (the knn and mahalanobis products grow with the batch)."""
        count = len(outputs["logits"])
        parts = [
            np.asarray(self.score({name: value[i : i + batch_size] for name, value in outputs.items()}))
            for i in range(0, count, batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def constant_bytes(self) -> int:
        own = sum(int(c.nbytes) for c in self.constants.values())
        return own + sum(part.constant_bytes() for part in self.parts)


def available(outputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The methods a model with these outputs can use: the ensembles need block statistics."""
    return METHODS if block_names(outputs) else tuple(m for m in METHODS if m not in ENSEMBLES)


def fit(
    method: str,
    train: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    temperature: float,
    seed: int,
    validation: Mapping[str, np.ndarray] | None = None,
    layer: str = FEATURES,
) -> Detector:
    """Fit `method` on the training split's outputs and labels (ensembles also standardize their parts
    on the in-distribution `validation` outputs)."""
    if method in ("msp", "energy"):
        return Detector(method, temperature=temperature)
    if method in ENSEMBLES:
        if validation is None:
            raise ValueError(f"{method} standardizes its parts on the validation split; pass validation=")
        parts = [fit(ENSEMBLES[method], train, labels, temperature=temperature, seed=seed)]
        parts += [
            fit("mahalanobis", train, labels, temperature=temperature, seed=seed, layer=name)
            for name in block_names(train)
        ]
        if len(parts) == 1:
            raise ValueError(f"{method} needs block statistics (layers named block1, block2, ...)")
        scores = [part.score_array(validation) for part in parts]
        offsets = np.array([s.mean() for s in scores], np.float32)
        scales = np.array([max(float(s.std()), 1e-6) for s in scores], np.float32)
        return Detector(method, {"offsets": offsets, "scales": scales}, temperature, parts=parts)
    features = train[layer]
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        features = features.astype(np.float64)
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
        # (f - m)^T P (f - m) = |(f - m) L|^2 with P = L L^T: a whitening matmul at serving time.
        whiten = np.linalg.cholesky(np.linalg.inv(covariance))
        constants = {"whiten": whiten.astype(np.float32), "means": (means @ whiten).astype(np.float32)}
        return Detector(method, constants, temperature, layer=layer)
    if method == "knn":
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(len(features))[:KNN_BANK]
        bank = features[chosen].astype(np.float64)
        bank /= np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        return Detector(method, {"bank": bank.astype(np.float16)}, temperature, k=min(KNN_K, len(chosen)), layer=layer)
    raise ValueError(f"unknown OOD method {method!r}; choose from {METHODS}")


def threshold(validation_scores: np.ndarray, keep: float = KEEP) -> float:
    """The score at or below which `keep` of the in-distribution validation images fall (the rule before the
    PAC threshold; candidates are still compared at it when choosing the method)."""
    return float(np.quantile(validation_scores, keep, method="higher"))


ALPHA = 0.05  # false-flag rate the PAC threshold bounds
DELTA = 0.1  # chance, over the calibration draw, that the bound fails


@dataclass(frozen=True)
class PacThreshold:
    """A training-conditional threshold: the `k`-th smallest of `n` calibration scores, flagged above. If the
    images are exchangeable with the calibration split, the share of genuine images it flags, 1 - F(s_(k)),
    exceeds `alpha` with probability at most `delta` over the calibration draw (F(s_(k)) ~ Beta(k, n - k + 1):
    P = beta.cdf(1 - alpha, k, n - k + 1), which is the binomial tail P(Binomial(n, 1 - alpha) >= k)).
    `holds` is False when n is too small for any k (n < log(delta) / log(1 - alpha), 45 at the defaults): the
    threshold is then the largest score, and no bound is claimed."""

    value: float
    k: int
    n: int
    alpha: float
    delta: float
    holds: bool
    failure_probability: float  # P(false-flag rate > alpha) at this k

    @property
    def expected_flagged(self) -> float:
        """The expected false-flag rate, (n + 1 - k) / (n + 1)."""
        return (self.n + 1 - self.k) / (self.n + 1)

    def guarantee(self) -> dict[str, Any]:
        """metadata.json's `ood.guarantee` (DESIGN.md)."""
        return {
            "alpha": self.alpha,
            "delta": self.delta,
            "calibration_examples": self.n,
            "holds": self.holds,
            "order_statistic": self.k,
            "failure_probability": round(self.failure_probability, 4),
            "expected_flagged": round(self.expected_flagged, 4),
            "rule": "the k-th smallest calibration score, k the smallest with P(Binomial(n, 1 - alpha) >= k) <= delta",
        }


def pac_threshold(calibration_scores: np.ndarray, alpha: float = ALPHA, delta: float = DELTA) -> PacThreshold:
    """The smallest order statistic of the in-distribution `calibration_scores` that bounds the false-flag
    rate by `alpha` with confidence 1 - `delta` (see `PacThreshold`)."""
    from scipy.stats import beta

    ordered = np.sort(np.asarray(calibration_scores, np.float64))
    n = len(ordered)
    if n == 0:
        raise ValueError("no calibration scores")
    ks = np.arange(1, n + 1)
    failure = beta.cdf(1 - alpha, ks, n - ks + 1)
    good = np.flatnonzero(failure <= delta)
    if len(good) == 0:
        return PacThreshold(float(ordered[-1]), n, n, alpha, delta, False, float(failure[-1]))
    k = int(ks[good[0]])
    return PacThreshold(float(ordered[k - 1]), k, n, alpha, delta, True, float(failure[k - 1]))


def flagged_count_distribution(n: int, k: int, count: int) -> Any:
    """How many of `count` new in-distribution images a threshold at the `k`-th smallest of `n` calibration
    scores flags, if the new images are drawn like those (exchangeable with them): a scipy.stats frozen
    distribution.

    A new score lands above the k-th of n with probability (n - k + 1) / (n + 1), and the count among `count`
    new images is beta-binomial(count, n - k + 1, k) (the conformal argument of Vovk et al.). It assumes
    nothing about the scores beyond no ties, so it says how far a test split's flag rate may stray by chance
    alone, and how much a small calibration split leaves the threshold uncertain."""
    from scipy.stats import betabinom

    return betabinom(count, n - k + 1, k)


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
