"""A pytest plugin that reports the test process's own garbage-collection pauses, for telling a slow service
from a paused test run when a timing test fails:

    .venv/bin/python -m pytest -p tests.gc_pauses          # any selection of tests; the report comes last

It counts the full (generation 2) collections during the run and their longest pause. At the end it prints
the objects alive, then times one full collection of that heap unfrozen and one after `gc.freeze()`, which is
what `frozen_test_heap` does before a timing test. Not loaded unless named.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

_pauses_ms: list[float] = []
_started: list[float] = []


def _timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif info["generation"] == 2 and _started:
        _pauses_ms.append((time.perf_counter() - _started[0]) * 1000)


def _collect_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1000


def pytest_configure(config: pytest.Config) -> None:
    gc.callbacks.append(_timer)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    gc.callbacks.remove(_timer)
    objects = len(gc.get_objects())
    unfrozen = _collect_ms()
    gc.freeze()
    frozen = _collect_ms()
    gc.unfreeze()
    terminalreporter.write_line(
        f"gc pauses: {len(_pauses_ms)} full collections during the run, longest {max(_pauses_ms, default=0):.0f} ms; "
        f"{objects} objects alive at the end, a full collection of them {unfrozen:.0f} ms, {frozen:.0f} ms frozen"
    )
