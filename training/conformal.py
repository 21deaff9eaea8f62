"""Split-conformal prediction sets for an exported model: the method, chosen on validation, and the score
quantiles per coverage, computed on the calibration split (DESIGN.md's `conformal`).

Scores are APS's (Romano et al. 2020): the calibrated probability of every label ranked at or above the true
one, minus a uniform share of the true label's own (seeded: MAPIE's calibration), plus for RAPS
(Angelopoulos et al. 2021) `penalty * max(0, rank - k_reg)`, which keeps sets of a confident model small.
The quantile at coverage c is the k-th smallest calibration score with k = ceil((n + 1) c) (MAPIE's), so a
set built by `app.core.conformal.prediction_sets` holds the true label with probability at least c for
images exchangeable with the calibration split. The service serves those sets deterministically (the last
label always included), which only makes them larger: coverage stays at least c.

Which method, and RAPS's `penalty` and `k_reg`, is chosen on the validation split (by mean set size at 0.9,
calibrated on one seeded half, measured on the other), never on the calibration or test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from app.core.conformal import coverage_key, prediction_sets

COVERAGES = (0.8, 0.9, 0.95, 0.99)
SELECTION_COVERAGE = 0.9
PENALTIES = (0.001, 0.01, 0.1, 0.2, 0.5)  # RAPS's lambda grid (Angelopoulos et al.'s)


@dataclass(frozen=True)
class Method:
    name: str  # "aps" or "raps"
    penalty: float = 0.0
    k_reg: int = 0


def scores(
    probabilities: np.ndarray, labels: np.ndarray, method: Method, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Each image's conformity score for its true label (see the module docstring); `rng` draws the uniform
    share (None: the deterministic score, the whole true label's probability counted)."""
    p = np.asarray(probabilities, np.float64)
    order = np.argsort(p, axis=1, kind="stable")[:, ::-1]
    cumulative = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    rank = np.argmax(order == np.asarray(labels)[:, None], axis=1)  # 0 for the most probable label
    rows = np.arange(len(p))
    score = cumulative[rows, rank]
    if rng is not None:
        score = score - rng.uniform(size=len(p)) * p[rows, labels]
    return score + np.maximum(method.penalty * (rank + 1 - method.k_reg), 0)


def quantile(calibration_scores: np.ndarray, coverage: float) -> float:
    """The k-th smallest score, k = ceil((n + 1) * coverage); ValueError if the split is too small for it."""
    ordered = np.sort(np.asarray(calibration_scores, np.float64))
    k = math.ceil((len(ordered) + 1) * float(Decimal(str(coverage))) - 1e-9)
    if k > len(ordered):
        raise ValueError(f"{len(ordered)} calibration images are too few for coverage {coverage} (needs {k})")
    return float(ordered[k - 1])


def evaluate(
    probabilities: np.ndarray, labels: np.ndarray, method: Method, quantiles: dict[str, float]
) -> dict[str, dict[str, float | int]]:
    """Per coverage: the fraction of images whose set holds the true label, and the mean set size."""
    figures = {}
    for key, q in quantiles.items():
        members = prediction_sets(probabilities, q, penalty=method.penalty, k_reg=method.k_reg)
        figures[key] = {
            "coverage": round(float(np.mean(members[np.arange(len(labels)), labels])), 4),
            "mean_set_size": round(float(members.sum(axis=1).mean()), 4),
            "examples": len(labels),
        }
    return figures


def choose(probabilities: np.ndarray, labels: np.ndarray, seed: int) -> tuple[Method, dict[str, float]]:
    """The method with the smallest mean set size at `SELECTION_COVERAGE` on the validation split: APS, or
    RAPS with `k_reg` the smallest k whose top-k accuracy on validation reaches it and each `PENALTIES`;
    calibrated on one seeded half of the split, measured on the other. Returns it and every candidate's size."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    tune, measure = order[: len(order) // 2], order[len(order) // 2 :]
    if math.ceil((len(tune) + 1) * SELECTION_COVERAGE - 1e-9) > len(tune):
        return Method("aps"), {}  # too few validation images to compare sets: APS, which needs no tuning
    ranks = np.argmax(np.argsort(-probabilities, axis=1, kind="stable") == labels[:, None], axis=1)
    k_reg = int(np.searchsorted(np.cumsum(np.bincount(ranks, minlength=probabilities.shape[1])) / len(ranks), 0.9)) + 1
    candidates = [Method("aps"), *(Method("raps", penalty, k_reg) for penalty in PENALTIES)]
    sizes: dict[str, float] = {}
    for method in candidates:
        tuned = scores(probabilities[tune], labels[tune], method, np.random.default_rng(seed))
        q = quantile(tuned, SELECTION_COVERAGE)
        members = prediction_sets(probabilities[measure], q, penalty=method.penalty, k_reg=method.k_reg)
        sizes[_name(method)] = round(float(members.sum(axis=1).mean()), 4)
    best = min(candidates, key=lambda m: (sizes[_name(m)], m.name != "aps", m.penalty))
    return best, sizes


def fit(
    probabilities: np.ndarray, labels: np.ndarray, method: Method, seed: int, coverages: tuple[float, ...] = COVERAGES
) -> dict[str, float]:
    """Coverage key -> quantile of the calibration split's (seeded) scores, for every coverage it is large
    enough for."""
    calibration = scores(probabilities, labels, method, np.random.default_rng(seed))
    quantiles = {}
    for coverage in coverages:
        try:
            quantiles[coverage_key(coverage)] = quantile(calibration, coverage)
        except ValueError:
            continue
    return quantiles


def record(
    method: Method,
    quantiles: dict[str, float],
    *,
    split: str,
    examples: int,
    seed: int,
    selection: dict[str, float],
    test: dict[str, dict[str, float | int]],
) -> dict[str, Any]:
    """metadata.json's `conformal` object (DESIGN.md)."""
    return {
        "method": method.name,
        "penalty": method.penalty,
        "k_reg": method.k_reg,
        "split": split,
        "examples": examples,
        "score_quantiles": dict(quantiles),  # unrounded: a rounded-down quantile would shrink the sets
        "scores": f"APS conformity scores with a seeded uniform share of the true label (seed {seed}), "
        "as MAPIE calibrates; served deterministically with the last label included",
        "selection": {
            "rule": f"smallest mean set size at coverage {SELECTION_COVERAGE} on the validation split "
            "(calibrated on one seeded half, measured on the other)",
            "mean_set_size": selection,
        },
        "test": test,
    }


def _name(method: Method) -> str:
    return "aps" if method.name == "aps" else f"raps(penalty={method.penalty:g}, k_reg={method.k_reg})"
