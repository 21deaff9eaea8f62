"""What a served model guarantees, in figures and in words, for its model card (`GET /models/{task}`).

Two guarantees, each stated only where the model's `metadata.json` records what backs it, and each with
the figures measured on the test split (images that chose nothing):

- prediction sets: at each recorded coverage, the set holds the true label with probability at least
  that coverage (split conformal, calibrated on images the weights never trained on);
- out of distribution: with probability at least 1 - delta over the draw of the calibration images, at most
  alpha of genuine images are flagged (the threshold is an order statistic chosen by the binomial tail).

Where a model records neither (a model exported elsewhere), the card says so and why.
"""

from __future__ import annotations

from typing import Any

from app.core.metadata import OodGuarantee
from app.core.model import LoadedModel


def describe(model: LoadedModel) -> dict[str, Any]:
    """`{"prediction_sets": ..., "out_of_distribution": ...}`, each a record or `{"available": false, "why": ...}`."""
    return {"prediction_sets": _sets(model), "out_of_distribution": _ood(model)}


def _sets(model: LoadedModel) -> dict[str, Any]:
    conformal = model.conformal
    note = (model.metadata.model_extra or {}).get("conformal_note")
    if conformal is None and note:
        return {"available": False, "why": str(note)}
    if conformal is None:
        why = (
            "this precision's model records no conformal quantiles (python -m training.quantize records them)"
            if model.precision != "fp32" and model.metadata.conformal is not None
            else "metadata.json records no conformal quantiles (models exported before prediction sets, or elsewhere)"
        )
        return {"available": False, "why": why}
    extra = conformal.model_extra or {}
    test = extra.get("test", {})
    coverages = sorted(conformal.score_quantiles, key=float)
    return {
        "available": True,
        "method": conformal.method,
        "calibration": {"split": extra.get("split"), "examples": extra.get("examples")},
        "coverages": [float(c) for c in coverages],
        "test": {c: test[c] for c in coverages if c in test},
        "statement": (
            f"ask for ?coverage= one of {', '.join(coverages)}: the set then holds the true label with at least "
            "that probability, for images like the calibration images"
        ),
    }


def _ood(model: LoadedModel) -> dict[str, Any]:
    ood = model.metadata.ood
    if ood is None or model.ood_threshold is None:
        return {"available": False, "why": "the model has no out-of-distribution score"}
    guarantee, test_flagged = ood.guarantee, (ood.model_extra or {}).get("test_flagged")
    if model.precision == "int8":  # its own threshold, fitted on its own scores (training.quantize)
        record8 = ((model.metadata.model_extra or {}).get("quantization") or {}).get("int8") or {}
        own = record8.get("ood_guarantee")
        guarantee = OodGuarantee.model_validate(own) if own else None
        test_flagged = record8.get("ood_test_flagged")
    record: dict[str, Any] = {
        "available": guarantee is not None and guarantee.holds,
        "threshold": model.ood_threshold,
        "test_flagged": test_flagged,
    }
    if guarantee is None:
        record["why"] = "metadata.json records no guarantee (a threshold set by an older rule, or elsewhere)"
        return record
    record |= {
        "alpha": guarantee.alpha,
        "delta": guarantee.delta,
        "calibration_examples": guarantee.calibration_examples,
    }
    if not guarantee.holds:
        record["why"] = (
            f"{guarantee.calibration_examples} calibration images are too few for any threshold to give the bound"
        )
        return record
    record["statement"] = (
        f"at most {guarantee.alpha:.0%} of genuine images flagged, with {1 - guarantee.delta:.0%} confidence "
        f"over the draw of the {guarantee.calibration_examples} calibration images"
    )
    return record
