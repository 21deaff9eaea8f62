"""The last step of the pipeline: one image's model outputs -> what a person reads (DESIGN.md's prediction).

Plain values, no wire format: each protocol renders a `Prediction` its own way (the native REST schema as
JSON objects; the tensor protocols send the outputs themselves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.core.conformal import labels_in_set, prediction_sets
from app.core.model import OOD_SCORE, PROBABILITIES, Outputs


@dataclass(frozen=True)
class LabelConfidence:
    label: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    """The best label and its calibrated confidence, the `top_k` labels by decreasing confidence, and
    whether the image is out of distribution (None: the model has no OOD score)."""

    filename: str | None
    label: str
    confidence: float
    top_k: list[LabelConfidence]
    out_of_distribution: bool | None
    ood_score: float | None
    prediction_set: list[str] | None = None  # labels of the conformal set, when a coverage was asked


@dataclass(frozen=True)
class SetRule:
    """How to make one image's prediction set: the recorded quantile of the asked coverage and the method's
    penalty (`app.core.conformal`)."""

    quantile: float
    penalty: float = 0.0
    k_reg: int = 0


def postprocess(
    outputs: Outputs,
    labels: Sequence[str],
    top_k: int,
    filename: str | None,
    ood_threshold: float | None,
    sets: SetRule | None = None,
) -> Prediction:
    """One image's outputs -> the best label, the `top_k` labels by decreasing (calibrated) confidence,
    where the model has an OOD score and a threshold, whether the image is out of distribution, and with a
    `sets` rule, the labels of its conformal prediction set."""
    probabilities = outputs[PROBABILITIES]
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    ranked = [LabelConfidence(label=labels[i], confidence=round(float(probabilities[i]), 6)) for i in order]
    flagged: bool | None = None
    score: float | None = None
    if OOD_SCORE in outputs and ood_threshold is not None:
        score = float(outputs[OOD_SCORE])
        flagged = not score <= ood_threshold  # a NaN score is flagged: nothing vouches for the image
        score = round(score, 6) if math.isfinite(score) else None  # JSON has no NaN or infinity
    members = None
    if sets is not None:
        inside = prediction_sets(probabilities, sets.quantile, penalty=sets.penalty, k_reg=sets.k_reg)[0]
        members = labels_in_set(probabilities, inside, list(labels))
    return Prediction(
        filename=filename,
        label=ranked[0].label,
        confidence=ranked[0].confidence,
        top_k=ranked,
        out_of_distribution=flagged,
        ood_score=score,
        prediction_set=members,
    )
