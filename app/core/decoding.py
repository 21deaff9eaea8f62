"""Decoding uploads off the event loop, within a memory budget that no client can exceed.

A 78 KB PNG can hold 40 megapixels of 16-bit gray, so the size of an upload says little about what
decoding it costs. Every image is first opened (header only) and its cost computed
(`app.core.imaging.decode_cost`, an upper bound of the bytes the decode holds at once). Then:

- an image costing more than `max_decode_bytes` is refused (413) before a pixel is decoded;
- a small image (at most `small_decode_bytes`: every photo, thanks to JPEG draft decoding) is decoded at
  once on one of `decode_threads` threads;
- a large one waits its turn in a FIFO lane with one thread, so at most one large decode runs at a time
  and the memory all decodes hold together stays under
  `max_decode_bytes + decode_threads * small_decode_bytes`. Normal requests never queue behind bombs.
  When `max_large_waiting` large images already wait, the next one is refused (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.core.errors import ClientError, Overloaded
from app.core.imaging import ImageSpec, decode, open_image
from app.core.metrics import Metrics
from app.core.settings import Settings


class Decoder:
    """The decode threads of one service, and its large-image lane."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._small = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._large = ThreadPoolExecutor(1, thread_name_prefix="decode-large")  # FIFO: one large decode at once
        self.large_waiting = 0  # large images queued or decoding

    def shutdown(self) -> None:
        for pool in (self._small, self._large):
            pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, task: str, data: bytes, spec: ImageSpec, name: str) -> np.ndarray:
        """File bytes -> the model's uint8 input. A client error names the upload (`name`), so a request
        with several images says which one failed."""
        loop = asyncio.get_running_loop()
        s = self.settings
        started = time.perf_counter()
        try:
            header = await loop.run_in_executor(
                self._small,
                lambda: open_image(data, spec, max_pixels=s.max_image_pixels, max_decode_bytes=s.max_decode_bytes),
            )
            if header.cost_bytes <= s.small_decode_bytes:
                return await loop.run_in_executor(self._small, decode, header, spec)
            if self.large_waiting >= s.max_large_waiting:
                raise Overloaded(
                    f"{self.large_waiting} large images are waiting to be decoded; retry later", s.retry_after_s
                )
            self.large_waiting += 1
            self.metrics.large_decodes.inc()
            try:
                return await loop.run_in_executor(self._large, decode, header, spec)
            finally:
                self.large_waiting -= 1
        except ClientError as error:
            raise type(error)(f"{name}: {error}") from error
        finally:
            self.metrics.decode.labels(task).observe(time.perf_counter() - started)
