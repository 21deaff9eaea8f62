"""The guarantees of an exported model, fitted on its calibration split from what the served graph outputs:
the out-of-distribution threshold with its PAC bound (`training.ood.pac_threshold`) and the split-conformal
prediction sets (`training.conformal`), with their figures on the test split.

The splits' roles are fixed (`training.splits.Splits`): validation chooses the conformal method, calibration
sets the threshold and the quantiles, test only reports. Whatever serves (the SavedModel, or its int8 model)
is fitted on its own outputs: quantization moves both the scores and the probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.model import OOD_SCORE, PROBABILITIES, Outputs
from training import conformal
from training.ood import PacThreshold, pac_threshold
from training.splits import Splits


@dataclass(frozen=True)
class Guarantees:
    """The fitted threshold (None: the model has no OOD score) and metadata.json's `conformal` object (None
    when the calibration split is too small for any recorded coverage; `note` says so)."""

    threshold: PacThreshold | None
    conformal: dict[str, Any] | None
    note: str = ""
    reference_quantiles: dict[str, float] | None = None  # deciles of the validation images' OOD scores

    def ood_fields(self, test_scores: np.ndarray) -> dict[str, Any]:
        """What the threshold contributes to metadata.json's `ood` object, with its test split figure."""
        if self.threshold is None:
            return {}
        t = self.threshold
        return {
            "validation_score_quantiles": self.reference_quantiles,
            "threshold": t.value,
            "threshold_split": "calibration",
            "in_distribution_kept": round(t.k / t.n, 4) if t.n else None,
            "guarantee": t.guarantee(),
            "test_flagged": round(float(np.mean(test_scores > t.value)), 4),
        }


def fit(outputs: dict[str, Outputs], data: Splits, *, alpha: float, delta: float, seed: int) -> Guarantees:
    """Both guarantees from the served model's `outputs` on the "validation", "calibration" and "test" splits
    of `data`."""
    if data.calibration is None:
        raise ValueError("the splits have no calibration split (training.splits.carve_calibration makes one)")
    labels = {"validation": data.validation.y, "calibration": data.calibration.y, "test": data.test.y}
    threshold = None
    if OOD_SCORE in outputs["calibration"]:
        scores = outputs["calibration"][OOD_SCORE]
        if len(scores):
            threshold = pac_threshold(scores, alpha, delta)
        else:  # no calibration image at all (a tiny folder): the largest validation score, and no bound claimed
            highest = float(np.max(outputs["validation"][OOD_SCORE]))
            threshold = PacThreshold(highest, 0, 0, alpha, delta, False, 1.0)
    # What drift compares live scores with (app.core.drift): in-distribution images the model never trained on.
    reference = (
        {f"{q / 10:g}": float(np.quantile(outputs["validation"][OOD_SCORE], q / 10)) for q in range(1, 10)}
        if OOD_SCORE in outputs["validation"]
        else None
    )
    probabilities = {split: outputs[split][PROBABILITIES] for split in labels}
    method, sizes = conformal.choose(probabilities["validation"], labels["validation"], seed)
    quantiles = conformal.fit(probabilities["calibration"], labels["calibration"], method, seed)
    if not quantiles:
        note = (
            f"{len(labels['calibration'])} calibration images are too few for any of the coverages "
            f"{', '.join(map(str, conformal.COVERAGES))}: no prediction sets"
        )
        return Guarantees(threshold, None, note, reference)
    record = conformal.record(
        method,
        quantiles,
        split="calibration",
        examples=len(labels["calibration"]),
        seed=seed,
        selection=sizes,
        test=conformal.evaluate(probabilities["test"], labels["test"], method, quantiles),
    )
    record["split_description"] = data.calibration_source
    return Guarantees(threshold, record, reference_quantiles=reference)
