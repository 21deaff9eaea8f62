"""Dynamic micro-batching: group single-image requests from concurrent clients into one model call.

One `MicroBatcher` per model owns a bounded queue and one background task. The task takes the oldest
request, adds whatever else is already queued (up to `max_batch_size`), runs the model on the stacked batch
in an executor thread (so the event loop keeps serving I/O), and resolves each request's future with its
own row of the result (or, when the model returns several named outputs, a dict of its rows). If the model call raises, every future of *that* batch gets the exception; other
batches are unaffected.

Up to `max_concurrent_batches` model calls run at once (TF Serving's `num_batch_threads`), for machines
where one call cannot keep every core busy; the executor needs as many threads. On the 2-core benchmark
machine a second call in flight bought no throughput and raised p99, so the service's default is 1.

Waiting policy: a request that finds the worker idle is dispatched at once, so a quiet service never pays
the wait cap. Only when requests were already queueing behind the previous model call (the service is
busy) does the worker wait up to `max_wait_s` for the batch to fill, because then a fuller batch is
cheaper per image than an extra call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core import tracing
from app.core.errors import DeadlineExceeded, InferenceError, NotReady, Overloaded

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, Sequence[float]], None]
"""Called once per model call with the batch size and each member's queue wait in seconds."""

BatchResult = np.ndarray | Mapping[str, np.ndarray]
"""What `infer` returns for a batch of n: one `[n, ...]` array, or named `[n, ...]` arrays."""


@dataclass
class _Request:
    """One image waiting for the model, and the future its caller awaits."""

    item: np.ndarray
    future: asyncio.Future[Any]
    deadline: float | None = None  # loop time after which it is not run
    enqueued_at: float = field(default_factory=time.perf_counter)
    trace: Any = None  # the caller's trace context (`tracing.current_context()`); None while tracing is off
    enqueued_ns: int = 0  # wall clock at submit, for the spans (`tracing.BatchSpans`)


class MicroBatcher:
    """Batches calls to `infer`, which maps a stacked `[n, ...]` array to a `BatchResult`; each caller
    gets its own row (a dict of rows for named outputs)."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], BatchResult],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        max_concurrent_batches: int = 1,
        executor: Executor | None = None,
        retry_after_s: int = 1,
        on_batch: BatchObserver | None = None,
        name: str = "model",
        span_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self._executor = executor
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._name = name
        self._span_attributes = dict(span_attributes or {"model.name": name})
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._free_calls = asyncio.Semaphore(max_concurrent_batches)
        self._calls: set[asyncio.Task[None]] = set()  # model calls in flight
        self._last_batch_done_at = 0.0

    @property
    def queue_depth(self) -> int:
        """Images waiting for a model call (not counting the batch being computed)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the background task; call from the running event loop (the app's lifespan)."""
        if self._task is not None:
            raise RuntimeError(f"batcher {self._name} already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self._name}")

    async def stop(self) -> None:
        """Stop the background task and fail every request still queued or in flight with `NotReady`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for call in list(self._calls):
            call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        queued = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        _fail(queued, self._shutting_down())

    def _shutting_down(self) -> NotReady:
        return NotReady("the service is shutting down", self._retry_after_s)

    def check_capacity(self, count: int) -> None:
        """Raise `NotReady` if the batcher is not running, `Overloaded` if `count` more images would not
        fit in the queue now. Callers use it to refuse early, before spending work on a request."""
        if self._task is None or self._task.done():
            raise NotReady(f"model {self._name} is not running", self._retry_after_s)
        if self._queue.qsize() + count > self.max_queue_size:
            raise Overloaded(
                f"model {self._name} is overloaded ({self._queue.qsize()} images queued); retry later",
                self._retry_after_s,
            )

    async def submit(self, items: Sequence[np.ndarray], *, deadline: float | None = None) -> list[Any]:
        """Queue `items` (all or none) and return their results in the same order.

        Raises `Overloaded` if the queue has no room for all of them, `NotReady` if the batcher is not
        running, `DeadlineExceeded` if the loop time passed `deadline` before their batch ran (they are not
        run), and `InferenceError` if the model call of their batch fails."""
        self.check_capacity(len(items))
        loop = asyncio.get_running_loop()
        trace = tracing.current_context()
        enqueued_ns = time.time_ns() if trace is not None else 0
        requests = [
            _Request(item, loop.create_future(), deadline, trace=trace, enqueued_ns=enqueued_ns) for item in items
        ]
        for request in requests:
            self._queue.put_nowait(request)
        try:
            return list(await asyncio.gather(*(r.future for r in requests)))
        except asyncio.CancelledError:
            for request in requests:  # the client went away: don't compute for it
                request.future.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._free_calls.acquire()
            try:
                first = await self._queue.get()
            except BaseException:
                self._free_calls.release()
                raise
            busy = bool(self._calls) or first.enqueued_at < self._last_batch_done_at
            batch = [first]
            self._drain_into(batch)
            try:
                if busy and len(batch) < self.max_batch_size and self.max_wait_s > 0:
                    await self._fill(batch, loop.time() + self.max_wait_s)
            except asyncio.CancelledError:  # stop() while waiting: these left the queue, so fail them here
                _fail(batch, self._shutting_down())
                raise
            call = loop.create_task(self._execute(batch, loop), name=f"batch-{self._name}")
            self._calls.add(call)
            call.add_done_callback(self._call_done)

    async def _fill(self, batch: list[_Request], deadline: float) -> None:
        """Add queued requests to `batch` as they arrive, until it is full or the loop time is `deadline`."""
        loop = asyncio.get_running_loop()
        while len(batch) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return
            self._drain_into(batch)

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._last_batch_done_at = time.perf_counter()
        self._free_calls.release()

    def _drain_into(self, batch: list[_Request]) -> None:
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _execute(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = [r for r in batch if r.deadline is not None and r.deadline <= now]
        _fail(late, DeadlineExceeded("the request's deadline passed while it waited for the model"))
        live = [r for r in batch if not r.future.done()]  # skip requests whose clients disconnected
        if not live:
            return
        started = time.perf_counter()
        if self._on_batch is not None:
            self._on_batch(len(live), [started - r.enqueued_at for r in live])
        traced = any(r.trace is not None for r in live)
        spans = tracing.BatchSpans(self._span_attributes, [r.trace for r in live]) if traced else None
        try:
            stacked = np.stack([r.item for r in live])
            results = _rows(await loop.run_in_executor(self._executor, self._infer, stacked), len(live))
        except asyncio.CancelledError as error:  # stop(): the service is shutting down
            _fail(live, self._shutting_down())
            if spans is not None:
                spans.end([r.enqueued_ns for r in live], error)
            raise
        except Exception as error:  # any model failure fails this batch only
            log.exception("model %s failed on a batch of %d", self._name, len(live))
            _fail(live, InferenceError(f"model {self._name} failed on this batch: {type(error).__name__}: {error}"))
            if spans is not None:
                spans.end([r.enqueued_ns for r in live], error)
            return
        if spans is not None:
            spans.end([r.enqueued_ns for r in live])
        for request, result in zip(live, results, strict=True):
            if not request.future.done():
                request.future.set_result(result)


def _rows(results: BatchResult, count: int) -> list[Any]:
    """Split a batch result into `count` per-request rows; ValueError if any output has another length."""
    if isinstance(results, Mapping):
        lengths = {name: len(value) for name, value in results.items()}
        if any(length != count for length in lengths.values()):
            raise ValueError(f"model returned {lengths} rows for a batch of {count}")
        return [{name: value[i] for name, value in results.items()} for i in range(count)]
    if len(results) != count:
        raise ValueError(f"model returned {len(results)} rows for a batch of {count}")
    return list(results)


def _fail(requests: Sequence[_Request], error: Exception) -> None:
    """Give `error` to every request whose caller still waits."""
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
