"""Split-conformal prediction sets (APS, and RAPS with its penalty), as the service serves them.

Offline (`training`), each model records in `metadata.json`'s `conformal` the quantile of its calibration
images' conformity scores per coverage. Online, an image's set is the labels, most probable first, whose
cumulative probability (plus RAPS's penalty `penalty * max(0, rank - k_reg)`) first reaches that quantile,
with every label tied with the last one: the rule of MAPIE's `predict_set` with `include_last_label=True`
(tests/unit check it against MAPIE on the same scores). The set is never empty and is deterministic: the
same probabilities always give the same set. If the calibration images are exchangeable with the traffic,
the set holds the true label with probability at least the coverage (Romano et al. 2020, Angelopoulos et
al. 2021).

`coverage_key` is how a coverage is written in `score_quantiles` ("0.9"); coverages not recorded are
refused by the pipeline, never interpolated.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import numpy as np

TIE = 1e-8  # labels within this of the last one join it; a probability at most this is never added


def coverage_key(coverage: float) -> str:
    """The canonical text of a coverage ("0.9" for 0.9, 0.90 or 0.900); ValueError if not a decimal."""
    try:
        return format(Decimal(str(coverage)).normalize(), "f")
    except InvalidOperation as error:
        raise ValueError(f"not a coverage: {coverage!r}") from error


def prediction_sets(probabilities: np.ndarray, quantile: float, *, penalty: float = 0.0, k_reg: int = 0) -> np.ndarray:
    """Boolean membership `[n, classes]` of each row's set (see the module docstring)."""
    p = np.atleast_2d(np.asarray(probabilities, np.float64))
    classes = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")[:, ::-1]
    ranked = np.take_along_axis(p, order, axis=1)
    scores = np.cumsum(ranked, axis=1) + penalty * np.maximum(0, np.arange(1, classes + 1) - k_reg)
    reached = scores >= quantile - TIE
    last = np.where(reached.any(axis=1), np.argmax(reached, axis=1), classes - 1)
    p_last = ranked[np.arange(len(p)), last]
    smallest_positive = np.where(p > TIE, p, np.inf).min(axis=1)
    p_last = np.where(p_last <= TIE, smallest_positive, p_last)
    return p >= p_last[:, None] - TIE


def labels_in_set(probabilities: np.ndarray, members: np.ndarray, labels: list[str]) -> list[str]:
    """The labels of one row's set, most probable first (ties in label order)."""
    order = np.argsort(-np.asarray(probabilities, np.float64), kind="stable")
    return [labels[i] for i in order if members[i]]
