from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.core.batching import MicroBatcher
from app.core.errors import InferenceError, NotReady, Overloaded


class Recorder:
    """A model that returns each row's first value and records the batch sizes it was called with."""

    def __init__(self, delay_s: float = 0.0, fail_when: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.threads: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        values = [int(v) for v in batch[:, 0]]
        self.calls.append(values)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        if self.fail_when is not None and self.fail_when in values:
            raise RuntimeError("model exploded")
        return batch[:, :1].astype(np.float32) * 10


def item(value: int) -> np.ndarray:
    return np.array([value], dtype=np.int64)


async def running(model: Recorder, **kwargs: object) -> MicroBatcher:
    options: dict = {"max_batch_size": 8, "max_wait_s": 0.05, "max_queue_size": 64} | kwargs
    batcher = MicroBatcher(model, **options)
    batcher.start()
    return batcher


async def test_concurrent_requests_share_one_model_call_and_keep_order() -> None:
    model = Recorder()
    batcher = await running(model)
    results = await asyncio.gather(*(batcher.submit([item(i)]) for i in range(6)))
    await batcher.stop()
    assert model.calls == [[0, 1, 2, 3, 4, 5]]
    assert [float(r[0][0]) for r in results] == [0, 10, 20, 30, 40, 50]


async def test_multi_image_request_gets_its_results_in_order() -> None:
    batcher = await running(Recorder())
    results = await batcher.submit([item(3), item(1), item(2)])
    await batcher.stop()
    assert [float(r[0]) for r in results] == [30, 10, 20]


async def test_batch_size_is_capped() -> None:
    model = Recorder()
    batcher = await running(model, max_batch_size=4)
    await asyncio.gather(*(batcher.submit([item(i)]) for i in range(10)))
    await batcher.stop()
    assert [len(c) for c in model.calls] == [4, 4, 2]
    assert sorted(v for c in model.calls for v in c) == list(range(10))


async def test_lone_request_is_not_delayed_by_the_wait_cap() -> None:
    batcher = await running(Recorder(), max_wait_s=1.0)
    await batcher.submit([item(1)])  # first call: the worker was idle
    started = time.perf_counter()
    await batcher.submit([item(2)])  # a quiet service, well after the previous batch
    elapsed = time.perf_counter() - started
    await batcher.stop()
    assert elapsed < 0.5, f"a lone request waited {elapsed:.3f}s; the wait cap is 1s"


async def test_busy_batcher_waits_to_fill_the_next_batch() -> None:
    model = Recorder(delay_s=0.05)
    batcher = await running(model, max_batch_size=8, max_wait_s=0.2)
    first = asyncio.create_task(batcher.submit([item(0)]))
    await asyncio.sleep(0.01)  # the model is now busy with item 0
    queued = [asyncio.create_task(batcher.submit([item(i)])) for i in (1, 2)]
    await asyncio.sleep(0.06)  # item 0 is done; the worker waits for more because it was busy
    late = [asyncio.create_task(batcher.submit([item(i)])) for i in (3, 4)]
    await asyncio.gather(first, *queued, *late)
    await batcher.stop()
    assert model.calls == [[0], [1, 2, 3, 4]]


async def test_failing_batch_fails_only_its_own_requests() -> None:
    model = Recorder(delay_s=0.05, fail_when=13)
    batcher = await running(model, max_batch_size=2, max_wait_s=0.0)
    tasks = [asyncio.create_task(batcher.submit([item(v)])) for v in (1, 13, 2, 3)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await batcher.stop()
    # all four were queued before the worker ran: batches [1, 13] (fails) and [2, 3] (succeeds)
    assert model.calls == [[1, 13], [2, 3]]
    assert isinstance(results[0], InferenceError) and "model exploded" in str(results[0])
    assert isinstance(results[1], InferenceError)
    assert [float(r[0][0]) for r in results[2:]] == [20, 30]  # type: ignore[index]


async def test_full_queue_refuses_with_overloaded_and_keeps_serving() -> None:
    model = Recorder(delay_s=0.1)
    batcher = await running(model, max_batch_size=1, max_wait_s=0.0, max_queue_size=2)
    first = asyncio.create_task(batcher.submit([item(0)]))
    await asyncio.sleep(0.02)  # item 0 is being computed; the queue is empty
    waiting = asyncio.create_task(batcher.submit([item(1), item(2)]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as refused:
        await batcher.submit([item(3)])
    assert refused.value.retry_after_s >= 1
    assert [float(r[0]) for r in await waiting] == [10, 20]
    await first
    assert float((await batcher.submit([item(4)]))[0][0]) == 40
    await batcher.stop()


async def test_model_runs_off_the_event_loop() -> None:
    model = Recorder(delay_s=0.2)
    batcher = await running(model)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await batcher.submit([item(1)])
    ticking.cancel()
    await batcher.stop()
    assert ticks >= 10, "the event loop was blocked while the model ran"
    assert threading.current_thread().name not in model.threads


async def test_one_model_call_at_a_time_by_default() -> None:
    model = Recorder(delay_s=0.05)
    batcher = await running(model, max_batch_size=1, max_wait_s=0.0, executor=ThreadPoolExecutor(4))
    await asyncio.gather(*(batcher.submit([item(i)]) for i in range(4)))
    await batcher.stop()
    assert model.max_in_flight == 1


async def test_concurrent_batches_overlap_up_to_their_cap_and_keep_each_answer() -> None:
    model = Recorder(delay_s=0.1)
    batcher = await running(
        model, max_batch_size=2, max_wait_s=0.0, max_concurrent_batches=2, executor=ThreadPoolExecutor(4)
    )
    results = await asyncio.gather(*(batcher.submit([item(i)]) for i in range(8)))
    await batcher.stop()
    assert model.max_in_flight == 2
    assert sorted(len(c) for c in model.calls) == [2, 2, 2, 2]
    assert [float(r[0][0]) for r in results] == [i * 10 for i in range(8)]


async def test_stop_fails_queued_and_in_flight_requests_and_refuses_new_ones() -> None:
    model = Recorder(delay_s=0.2)
    batcher = await running(model, max_batch_size=1, max_wait_s=0.0)
    first = asyncio.create_task(batcher.submit([item(0)]))
    await asyncio.sleep(0.02)
    queued = asyncio.create_task(batcher.submit([item(1)]))
    await asyncio.sleep(0)
    await batcher.stop()
    for request in (first, queued):
        with pytest.raises(NotReady, match="shutting down"):
            await request
    with pytest.raises(NotReady):
        await batcher.submit([item(2)])


async def test_stop_fails_a_batch_that_is_waiting_to_fill() -> None:
    model = Recorder(delay_s=0.1)
    batcher = await running(model, max_batch_size=8, max_wait_s=5.0)
    first = asyncio.create_task(batcher.submit([item(0)]))
    await asyncio.sleep(0.02)  # item 0 is being computed
    waiting = asyncio.create_task(batcher.submit([item(1)]))
    await asyncio.sleep(0.15)  # item 0 is done; item 1 left the queue and waits up to 5 s for company
    assert batcher.queue_depth == 0
    await batcher.stop()
    with pytest.raises(NotReady, match="shutting down"):
        await asyncio.wait_for(waiting, 1)
    assert float((await first)[0][0]) == 0
    assert model.calls == [[0]]


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), max_batch_size=0, max_wait_s=0.01, max_queue_size=1)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(Recorder(), max_batch_size=1, max_wait_s=-1, max_queue_size=1)
    with pytest.raises(ValueError, match="max_concurrent_batches"):
        MicroBatcher(Recorder(), max_batch_size=1, max_wait_s=0, max_queue_size=1, max_concurrent_batches=0)


async def test_named_outputs_are_split_into_each_callers_row() -> None:
    def two_outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": batch.astype(np.float32) / 10, "ood_score": batch[:, 0].astype(np.float32)}

    batcher = MicroBatcher(two_outputs, max_batch_size=8, max_wait_s=0.05, max_queue_size=64)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit([item(i)]) for i in range(3)))
    assert [r[0]["ood_score"] for r in results] == [0.0, 1.0, 2.0]
    assert [float(r[0]["probabilities"][0]) for r in results] == pytest.approx([0.0, 0.1, 0.2])

    def ragged(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": batch.astype(np.float32), "ood_score": np.zeros(len(batch) + 1, np.float32)}

    batcher._infer = ragged  # the same batcher, now with a model whose outputs disagree in length
    with pytest.raises(InferenceError, match="rows for a batch of 1"):
        await batcher.submit([item(7)])
    await batcher.stop()
