"""The one timing comparison the runtimes share: which of two predict functions is faster here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from app.model import Outputs


def best_seconds(
    first: Callable[[np.ndarray], Outputs],
    second: Callable[[np.ndarray], Outputs],
    batches: Sequence[np.ndarray],
    *,
    rounds: int,
) -> tuple[float, float]:
    """The fastest of `rounds` timed rounds of each over `batches` (one call per batch), after an untimed
    round that warms up each shape. The two alternate and the minimum is kept, so a busy spell on a shared
    machine slows both alike instead of deciding."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds + 1):
        for predict, spent in zip((first, second), times, strict=True):
            started = time.perf_counter()
            for batch in batches:
                predict(batch)
            if round_:
                spent.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])
