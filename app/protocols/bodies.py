"""Request bodies that routes parse themselves (the JSON protocols), without stalling the event loop.

Parsing JSON holds the GIL for its whole length (about 15 ms per MB for the v2 tensors here, measured with
pydantic, orjson and the standard library alike), and so does turning a list of a million Python numbers
into an array. A worker thread does not help: while it holds the GIL no other request, not even a health
check, is served, and three clients looping on 3 MB tensors kept /healthz waiting 270 ms. So a JSON body
has its own, small size limit (`max_json_bytes`), and one above `inline_bytes` is parsed in a separate
process (spawned, one at a time), which hands back only compact results (arrays, bytes). Its memory is
bounded too: one parse at a time, of at most `max_json_bytes` (a JSON list of numbers takes ~40x its size
as Python objects).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from fastapi import Request

from app.core.errors import InvalidRequest, PayloadTooLarge, Unavailable, UnsupportedEncoding
from app.core.memory import call_and_trim

T = TypeVar("T")


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refused with 413 as soon as it is declared or found larger than `limit`. A body
    sent with `Content-Encoding: gzip` or `deflate` is decompressed (off the event loop) and held to the
    same limit once decompressed, so a small compressed bomb is refused without its memory."""
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
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    return await asyncio.to_thread(_inflate, body, encoding, limit, what)


def _inflate(body: bytes, encoding: str, limit: int, what: str) -> bytes:
    # gzip; zlib-wrapped deflate as HTTP defines it; raw deflate, which some clients send instead.
    formats = [16 + zlib.MAX_WBITS] if "gzip" in encoding else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    for wbits in formats:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as error:
            if wbits == formats[-1]:
                raise InvalidRequest(f"{encoding} {what} does not decompress: {error}") from error
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"{what} decompresses to more than the {limit:,}-byte limit")
        if not inflater.eof:
            raise InvalidRequest(f"{encoding} {what} is truncated")
        return out
    raise AssertionError("unreachable")


class JsonParser:
    """Runs `parse(raw)` inline for small bodies and in one parser process for larger ones. `parse` must
    be picklable (a module-level function, or a `functools.partial` of one) and so must its result."""

    def __init__(self, inline_bytes: int) -> None:
        self.inline_bytes = inline_bytes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Spawned, never forked: the service process runs TensorFlow's threads.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def warm_up(self) -> None:
        """Start the parser process now (it takes a second), instead of at the first large body."""
        self._executor().submit(int)

    async def __call__(self, raw: bytes, parse: Callable[[bytes], T]) -> T:
        if len(raw) <= self.inline_bytes:
            return parse(raw)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), call_and_trim, parse, raw)
        except BrokenProcessPool as error:  # the parser process died (killed, out of memory): start afresh
            self.shutdown()
            raise Unavailable("the JSON parser restarted; retry") from error

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
