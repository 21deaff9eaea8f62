"""Choosing a trained model's out-of-distribution score, and the `ood` object of its metadata.json.

`fit` fits every candidate of `training.ood` that the model's outputs allow on the training split, sets each
threshold on the validation split, chooses by the selection halves of the out-of-distribution sets
(`training.ood_sets`, scored against validation), and measures the report halves against the test split. The
test split and the report halves decide nothing. `OodFit.metadata` then describes the choice with the exported
graph's own scores, so the recorded figures are those of what is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.imaging import ImageSpec
from app.core.model import Outputs
from training import ood, ood_sets
from training.config import RunConfig
from training.errors import TrainingError
from training.evaluation import predict_in_batches

log = logging.getLogger("training")


@dataclass
class Candidate:
    """One fitted method, its validation threshold and its figures (`ood.evaluate`'s) per OOD set."""

    detector: ood.Detector
    threshold: float
    test_flagged: float
    selection: dict[str, dict[str, float | int]]
    report: dict[str, dict[str, float | int]]

    def figures(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "test_flagged": round(self.test_flagged, 4),
            "constants_bytes": self.detector.constant_bytes(),
            "selection": self.selection,
            "report": self.report,
        }


@dataclass
class OodFit:
    """Every candidate, the one chosen and why, and the report halves of the sets (to score the export on)."""

    candidates: dict[str, Candidate]
    chosen: str
    report_sets: dict[str, np.ndarray]
    description: str  # what the sets are
    rule: str  # how `chosen` was chosen
    features: str  # what the feature-based methods read

    @property
    def detector(self) -> ood.Detector:
        return self.candidates[self.chosen].detector

    def metadata(self, cutoff: float, test_scores: np.ndarray, report_scores: dict[str, np.ndarray]) -> dict[str, Any]:
        """metadata.json's `ood` object, from the exported model's threshold (`cutoff`, set on its validation
        scores) and scores on the test split and on each report half."""
        return {
            "method": self.chosen,
            "output": "ood_score",
            "threshold": cutoff,
            "in_distribution_kept": ood.KEEP,
            "features": self.features,
            "test_flagged": round(float(np.mean(test_scores > cutoff)), 4),
            "evaluation": {name: ood.evaluate(test_scores, scores, cutoff) for name, scores in report_scores.items()},
            "sets": self.description,
            "selection": self.rule,
            "candidates": {name: c.figures() for name, c in self.candidates.items()},
        }


def fit(
    task: str,
    config: RunConfig,
    spec: ImageSpec,
    forward: Callable[..., Any],
    measured: dict[str, Outputs],
    y_train: np.ndarray,
    temperature: float,
) -> OodFit:
    """Fit, threshold, choose and measure every candidate (see the module docstring). `measured` holds the
    trained model's outputs (`forward`'s) on the "train", "validation" and "test" splits; of `config`, it reads
    `ood_data_dir`, `ood_per_set`, `ood_method` and `seed`."""
    sets = ood_sets.build(task, spec, config.ood_data_dir, per_set=config.ood_per_set, seed=config.seed)
    selection_sets, report_sets = ood_sets.split_halves(sets, config.seed)
    outputs = {
        half: {name: predict_in_batches(forward, x) for name, x in chosen.items()}
        for half, chosen in (("selection", selection_sets), ("report", report_sets))
    }
    candidates: dict[str, Candidate] = {}
    methods = ood.available(measured["train"])
    if config.ood_method not in ("auto", *methods):
        raise TrainingError(f"--ood-method {config.ood_method} needs a model with blocks; this one offers {methods}")
    for method in methods:
        detector = ood.fit(
            method,
            measured["train"],
            y_train,
            temperature=temperature,
            seed=config.seed,
            validation=measured["validation"],
        )
        val_scores, test_scores = detector.score_array(measured["validation"]), detector.score_array(measured["test"])
        cutoff = ood.threshold(val_scores)
        candidates[method] = Candidate(
            detector,
            cutoff,
            float(np.mean(test_scores > cutoff)),
            {
                name: ood.evaluate(val_scores, detector.score_array(o), cutoff)
                for name, o in outputs["selection"].items()
            },
            {name: ood.evaluate(test_scores, detector.score_array(o), cutoff) for name, o in outputs["report"].items()},
        )
        worst = min(candidates[method].report.values(), key=lambda f: float(f["auroc"]))
        log.info(
            "OOD %s: worst report AUROC %.4f, test flagged %.3f",
            method,
            worst["auroc"],
            candidates[method].test_flagged,
        )
    chosen = (
        config.ood_method
        if config.ood_method != "auto"
        else ood.select({m: c.selection for m, c in candidates.items()})
    )
    log.info("OOD method: %s", chosen)
    description = (
        f"{', '.join(f'{name} ({len(x)})' for name, x in report_sets.items())}: the report halves of seeded "
        f"sets of up to {config.ood_per_set} images each (other tasks' datasets and generated images), decoded "
        "by load_image at this model's input size"
    )
    rule = (
        "forced by --ood-method"
        if config.ood_method != "auto"
        else "highest worst-case AUROC over the selection halves of the sets, against the validation split"
    )
    return OodFit(candidates, chosen, report_sets, description, rule, feature_description(measured["train"]))


def feature_description(outputs: Outputs) -> str:
    """What a model's feature outputs are, in words (metadata.json's `ood.features`)."""
    text = f"{outputs['features'].shape[-1]}-dimensional penultimate layer 'features'"
    blocks = [f"{name} ({outputs[name].shape[-1] // 2} channels)" for name in ood.block_names(outputs)]
    if blocks:
        text += "; channel means and standard deviations of " + ", ".join(blocks)
    return text
