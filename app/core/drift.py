"""Is the traffic still like the images a model was validated on? Drift and estimated accuracy per served
version, from signals the pipeline computes on every image anyway (the OOD score and flag, the calibrated
probabilities), over a window of recent images (`drift_window_images`, at most `drift_window_s` old).

Three tests, each against what the model recorded at export (DESIGN.md), each with scipy:

- `flagged_share`: the share of images flagged against the share the threshold's guarantee expects for
  genuine images (`ood.guarantee.expected_flagged`); one-sided exact binomial test (more flags than that);
- `ood_score`: the window's scores bucketed by the deciles of the calibration images' scores
  (`ood.validation_score_quantiles`), against 10% per bucket; chi-square goodness of fit;
- `class_mix`: the predicted classes against the training split's class mix (`dataset.class_counts`);
  chi-square goodness of fit.

`drift` is true when any p-value is below `drift_alpha` divided by the number of tests run (Bonferroni), and
`reasons` say which, in words. With fewer than `drift_min_images` in the window, `drift` is null and says why.

`estimated_accuracy` is the mean top-class confidence of the window's images not flagged out of distribution:
with calibrated probabilities it estimates the accuracy on such images (NannyML's confidence-based
performance estimation). Its interval treats each image as right with its own confidence (a Poisson
binomial: variance sum p(1-p)). It says nothing about flagged images: on those, confidence is not calibrated.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.model import LoadedModel
from app.core.predictions import Prediction


@dataclass(frozen=True)
class Observation:
    """One image as the window keeps it: when, its predicted class, confidence, OOD score and flag."""

    at: float
    label: int
    confidence: float
    ood_score: float | None
    flagged: bool | None


class Window:
    """The recent images of one served version: at most `size`, none older than `age_s` (thread-safe)."""

    def __init__(self, size: int, age_s: float) -> None:
        self.age_s = age_s
        self._seen: deque[Observation] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, observations: Iterable[Observation]) -> None:
        with self._lock:
            self._seen.extend(observations)

    def recent(self, now: float | None = None) -> list[Observation]:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._seen and now - self._seen[0].at > self.age_s:
                self._seen.popleft()
            return list(self._seen)


class Monitor:
    """The windows of every served version, fed by the pipeline and read by the drift endpoint and gauges."""

    def __init__(self, *, window_images: int, window_s: float, min_images: int, alpha: float) -> None:
        self.window_images, self.window_s, self.min_images, self.alpha = window_images, window_s, min_images, alpha
        self._windows: dict[tuple[str, int], Window] = {}
        self._lock = threading.Lock()

    def observe(self, model: LoadedModel, predictions: Sequence[Prediction]) -> None:
        key = (model.metadata.task, model.version)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = Window(self.window_images, self.window_s)
        index = {label: i for i, label in enumerate(model.metadata.labels)}
        now = time.monotonic()
        window.add(
            Observation(now, index[p.label], p.confidence, p.ood_score, p.out_of_distribution) for p in predictions
        )

    def assess(self, model: LoadedModel) -> dict[str, Any]:
        """DESIGN.md's drift object for `model` over its window now."""
        with self._lock:
            window = self._windows.get((model.metadata.task, model.version))
        seen = window.recent() if window is not None else []
        return assess(model, seen, min_images=self.min_images, alpha=self.alpha, window_s=self.window_s)


def assess(
    model: LoadedModel, seen: Sequence[Observation], *, min_images: int, alpha: float, window_s: float
) -> dict[str, Any]:
    """The drift object for the observations `seen` of `model` (see the module docstring)."""
    meta = model.metadata
    seconds = round(seen[-1].at - seen[0].at, 1) if len(seen) > 1 else 0.0
    result: dict[str, Any] = {
        "task": meta.task,
        "version": meta.version,
        "window": {"images": len(seen), "seconds": seconds, "max_seconds": window_s},
        "flagged_share": None,
        "expected_flagged_share": None,
        "flagged_share_interval": None,
        "estimated_accuracy": _estimated_accuracy(model, seen),
        "drift": None,
        "reasons": [],
        "tests": {},
    }
    flags = [o.flagged for o in seen if o.flagged is not None]
    expected = _expected_flagged(model)
    if flags:
        share = sum(flags) / len(flags)
        result["flagged_share"] = round(share, 4)
        result["flagged_share_interval"] = _interval(sum(flags), len(flags))
    result["expected_flagged_share"] = expected
    if len(seen) < min_images:
        result["reasons"] = [f"{len(seen)} images in the window; drift needs at least {min_images}"]
        return result
    tests = _tests(model, seen, flags, expected)
    result["tests"] = tests
    if not tests:
        result["reasons"] = ["metadata.json records none of what the tests compare against"]
        return result
    level = alpha / len(tests)
    drifted = {name: test for name, test in tests.items() if test["p_value"] < level}
    result["drift"] = bool(drifted)
    result["reasons"] = [test["says"] for test in drifted.values()]
    if meta.ood is None:
        result["reasons"].append("the model has no out-of-distribution score: only the class mix is tested")
    return result


def _tests(
    model: LoadedModel, seen: Sequence[Observation], flags: list[bool], expected: float | None
) -> dict[str, dict[str, Any]]:
    from scipy.stats import binomtest, chisquare

    meta, tests = model.metadata, {}
    if flags and expected is not None:
        flagged = sum(flags)
        p = binomtest(flagged, len(flags), expected, alternative="greater").pvalue
        tests["flagged_share"] = {
            "statistic": round(flagged / len(flags), 4),
            "p_value": float(p),
            "method": "exact binomial test, one-sided (more flagged than the guarantee expects)",
            "says": f"{flagged} of {len(flags)} images flagged out of distribution, where genuine images would "
            f"give about {expected:.1%}",
        }
    quantiles = (meta.ood.model_extra or {}).get("validation_score_quantiles") if meta.ood is not None else None
    if model.precision == "int8":  # its own scores' deciles (training.quantize): quantization moves the scores
        record = ((meta.model_extra or {}).get("quantization") or {}).get("int8") or {}
        quantiles = record.get("ood_validation_score_quantiles")
    scores = np.array([o.ood_score for o in seen if o.ood_score is not None], dtype=np.float64)
    if quantiles and len(scores):
        edges = np.array(sorted(float(q) for q in quantiles.values()))
        counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
        shares = np.diff([0.0, *sorted(float(k) for k in quantiles), 1.0])
        statistic, p = chisquare(counts, shares * len(scores))
        tests["ood_score"] = {
            "statistic": round(float(statistic), 4),
            "p_value": float(p),
            "method": "chi-square goodness of fit of the scores' deciles against the calibration images'",
            "says": "the out-of-distribution scores are distributed unlike the calibration images' "
            f"({int(counts[-1])} of {len(scores)} above the top decile, {shares[-1]:.0%} expected)",
        }
    prior = meta.dataset.get("class_counts")
    if prior and len(prior) == len(meta.labels) and sum(prior) > 0:
        counts = np.bincount([o.label for o in seen], minlength=len(meta.labels))
        shares = np.asarray(prior, dtype=np.float64) / sum(prior)
        statistic, p = chisquare(counts, shares * len(seen))
        most = int(np.argmax(counts / np.maximum(shares * len(seen), 1e-9)))
        tests["class_mix"] = {
            "statistic": round(float(statistic), 4),
            "p_value": float(p),
            "method": "chi-square goodness of fit of the predicted classes against the training split's mix",
            "says": f"the predicted classes are mixed unlike the training images' (most over-represented: "
            f"{meta.labels[most]!r}, {counts[most]} of {len(seen)} against {shares[most]:.0%} in training)",
        }
    return tests


def _expected_flagged(model: LoadedModel) -> float | None:
    """The share of genuine images the threshold flags on average: (n + 1 - k) / (n + 1) of its guarantee."""
    ood = model.metadata.ood
    if ood is None:
        return None
    if model.precision == "int8":
        record = ((model.metadata.model_extra or {}).get("quantization") or {}).get("int8") or {}
        own = record.get("ood_guarantee") or {}
        if "expected_flagged" in own:
            return float(own["expected_flagged"])
    recorded = (ood.guarantee.model_extra or {}) if ood.guarantee is not None else {}
    if "expected_flagged" in recorded:
        return float(recorded["expected_flagged"])
    kept = (ood.model_extra or {}).get("in_distribution_kept")
    return round(1 - float(kept), 4) if kept is not None else None


def _estimated_accuracy(model: LoadedModel, seen: Sequence[Observation]) -> dict[str, Any]:
    confident = np.array([o.confidence for o in seen if o.flagged is not True], dtype=np.float64)
    test = model.metadata.metrics.get("test_accuracy")
    if not len(confident):
        return {"value": None, "interval": None, "images": 0, "test_accuracy": test}
    mean = float(confident.mean())
    spread = 1.96 * math.sqrt(float(np.sum(confident * (1 - confident)))) / len(confident)
    return {
        "value": round(mean, 4),
        "interval": [round(max(0.0, mean - spread), 4), round(min(1.0, mean + spread), 4)],
        "images": len(confident),
        "test_accuracy": test,
    }


def _interval(successes: int, trials: int) -> list[float]:
    """The 95% Wilson interval of a share."""
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]
