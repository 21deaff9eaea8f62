"""The one timing comparison the runtimes share: which of several runs is fastest here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from app.core.model import Outputs


def best_seconds(
    first: Callable[[np.ndarray], Outputs],
    second: Callable[[np.ndarray], Outputs],
    batches: Sequence[np.ndarray],
    *,
    rounds: int,
) -> tuple[float, float]:
    """The fastest of `rounds` timed rounds of each over `batches` (one call per batch), after an untimed
    round that warms up each shape (see `fastest_rounds`)."""
    theirs, ours = fastest_rounds(
        [lambda: [first(batch) for batch in batches], lambda: [second(batch) for batch in batches]], rounds=rounds
    )
    return theirs, ours


def fastest_rounds(runs: Sequence[Callable[[], object]], *, rounds: int) -> list[float]:
    """Seconds of each run's fastest of `rounds` timed rounds, after an untimed round that warms up. The runs
    take turns round by round and the minimum is kept, so a busy spell on a shared machine slows them alike
    instead of deciding."""
    times: list[list[float]] = [[] for _ in runs]
    for round_ in range(rounds + 1):
        for run, spent in zip(runs, times, strict=True):
            started = time.perf_counter()
            run()
            if round_:
                spent.append(time.perf_counter() - started)
    return [min(spent) for spent in times]
