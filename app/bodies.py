"""Request bodies that routes parse themselves (the JSON protocols), without stalling the event loop.

Parsing JSON holds the GIL for its whole length (about 15 ms per MB for the v2 tensors here, measured with
pydantic, orjson and the standard library alike), and while it holds it no other request, not even a
health check, is served. So a JSON body has its own, small size limit (`max_json_bytes`), and one above
`inline_json_bytes` is parsed on a single worker thread: one large parse at a time bounds both the memory
(a JSON list of numbers takes ~40x its size as Python objects) and the longest stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fastapi import Request

from app.errors import PayloadTooLarge

T = TypeVar("T")


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refused with 413 as soon as it is declared or found larger than `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} of {int(declared):,} bytes exceeds the {limit:,}-byte limit")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"{what} exceeds the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class JsonParser:
    """Runs `parse(raw)` inline for small bodies and on one worker thread for larger ones."""

    def __init__(self, inline_bytes: int) -> None:
        self.inline_bytes = inline_bytes
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="json")

    async def __call__(self, raw: bytes, parse: Callable[[bytes], T]) -> T:
        if len(raw) <= self.inline_bytes:
            return parse(raw)
        return await asyncio.get_running_loop().run_in_executor(self._pool, parse, raw)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
