"""Giving freed memory back to the operating system.

glibc's allocator keeps what the service frees in its arenas (one per thread that allocates: decode,
inference, the event loop) instead of returning it, so after a burst of large uploads or decodes the
process stays hundreds of megabytes larger than it needs, for good (measured with `python -m
stress.bombs`: +424 MB after 80 clients sent 18 MB each). `malloc_trim(0)` hands every free page of
every arena back. The service calls it every `memory_trim_s` seconds after work that allocated large
buffers, and the JSON parser process after every parse. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return free heap memory to the OS; True if glibc did."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def call_and_trim(function: Callable[[Any], Any], argument: Any) -> Any:
    """`function(argument)`, then trim: what the JSON parser process runs for each body."""
    try:
        return function(argument)
    finally:
        trim()


async def trim_periodically(interval_s: float, activity: Callable[[], int]) -> None:
    """Every `interval_s`, trim (in a thread) if `activity()` moved since the last time: an idle service
    has nothing new to give back."""
    if _TRIM is None:
        log.info("malloc_trim is not available here; freed memory stays with the allocator")
        return
    last = activity()
    while True:
        await asyncio.sleep(interval_s)
        now = activity()
        if now != last:
            last = now
            await asyncio.to_thread(trim)
