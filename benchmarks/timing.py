"""The one timing helper the benchmarks share."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_ms(function: Callable[..., Any], *args: Any, repeats: int = 7) -> float:
    """Median wall time of `function(*args)` over `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)
