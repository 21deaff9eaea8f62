"""app.core.tracing: configured only by OTEL_* variables, spans of a batch linked both ways, lost spans counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.core import tracing
from app.core.batching import MicroBatcher


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every ended span kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


def test_off_without_an_endpoint_and_on_with_one() -> None:
    assert tracing.from_environment({}) is None
    assert tracing.from_environment({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert tracing.from_environment({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    provider = tracing.from_environment(endpoint)
    assert provider is not None and provider.resource.attributes["service.name"] == "image-classifier-service"
    provider.shutdown()
    for protocol in ("grpc", "http/protobuf"):
        traces_only = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        provider = tracing.from_environment(traces_only)
        assert provider is not None
        provider.shutdown()
    with pytest.raises(ValueError, match="exports grpc or http/protobuf"):
        tracing.from_environment({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_the_service_name_comes_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "classifier-eu")  # Resource.create reads the process environment
    provider = tracing.from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SERVICE_NAME": "classifier-eu"}
    )
    assert provider is not None and provider.resource.attributes["service.name"] == "classifier-eu"
    provider.shutdown()


def test_the_trace_id_of_the_current_span(recorded: InMemorySpanExporter) -> None:
    assert tracing.trace_id() is None
    with tracing.tracer().start_as_current_span("request") as span:
        assert tracing.trace_id() == format(span.get_span_context().trace_id, "032x")


def test_every_request_of_a_batch_gets_queue_and_model_spans_linked_to_the_batch(
    recorded: InMemorySpanExporter,
) -> None:
    async def scenario() -> list[int]:
        batcher = MicroBatcher(
            lambda batch: batch.sum(axis=1),
            max_batch_size=8,
            max_wait_s=0.05,
            max_queue_size=16,
            span_attributes={"model.task": "shades", "model.version": 3, "model.runtime": "fake"},
        )
        batcher.start()

        async def request(name: str) -> int:
            with tracing.tracer().start_as_current_span(name) as span:
                await batcher.submit([np.ones(2)])
                return span.get_span_context().trace_id

        blocker = asyncio.create_task(request("first"))  # runs alone; the next two queue behind it
        await asyncio.sleep(0)
        ids = await asyncio.gather(request("second"), request("third"))
        await blocker
        await batcher.stop()
        return list(ids)

    second, third = asyncio.run(scenario())
    spans = recorded.get_finished_spans()
    batches = [s for s in spans if s.name == "batch" and len(s.links) == 2]
    assert len(batches) == 1, [(s.name, len(s.links)) for s in spans]
    batch = batches[0]
    assert {link.context.trace_id for link in batch.links} == {second, third}
    assert batch.context.trace_id not in {second, third}  # a batch serves many traces: a root of its own
    assert batch.attributes is not None and batch.attributes["batch.size"] == 2
    assert batch.attributes["model.task"] == "shades" and batch.attributes["model.runtime"] == "fake"
    for trace_id in (second, third):
        own = {s.name: s for s in spans if s.context.trace_id == trace_id}
        assert {"queue wait", "model call"} <= set(own)
        request = next(s for s in own.values() if s.name in {"second", "third"})
        for name in ("queue wait", "model call"):
            assert own[name].parent is not None and own[name].parent.span_id == request.context.span_id
        assert [link.context.span_id for link in own["model call"].links] == [batch.context.span_id]
        assert own["queue wait"].end_time <= own["model call"].start_time == batch.start_time


def test_no_spans_while_tracing_is_off() -> None:
    async def scenario() -> None:
        batcher = MicroBatcher(lambda batch: batch, max_batch_size=2, max_wait_s=0, max_queue_size=4)
        batcher.start()
        await batcher.submit([np.ones(1)])
        await batcher.stop()

    tracing.install(None)
    assert not tracing.enabled() and tracing.current_context() is None
    asyncio.run(scenario())  # nothing to record, nothing raised


class _Blocking(SpanExporter):
    """Holds its first export until released, then fails every export."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        return SpanExportResult.FAILURE


def test_spans_lost_to_a_full_queue_or_a_failed_export_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # export only when a full batch waits
    dropped: dict[str, int] = {}
    exporter = _Blocking()
    processor = tracing.CountingBatchProcessor(
        exporter, 4, 4, lambda count, why: dropped.__setitem__(why, dropped.get(why, 0) + count)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(4):  # a full batch: the export thread takes it and hangs on the collector
        tracer.start_span("a").end()
    assert exporter.entered.wait(5)
    for _ in range(10):  # 4 fit in the queue, 6 do not
        tracer.start_span("b").end()
    assert dropped == {"queue_full": 6}
    exporter.release.set()
    provider.shutdown()  # the hung batch and the queued one both fail
    assert dropped == {"queue_full": 6, "export_failed": 8}
