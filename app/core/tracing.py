"""Traces: OpenTelemetry, configured only by OpenTelemetry's own environment variables, off without an endpoint.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318      # or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; none: off
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf              # or grpc (then the endpoint is host:4317)
    OTEL_SERVICE_NAME=image-classifier-service             # the default here
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1
    OTEL_BSP_MAX_QUEUE_SIZE=2048 ... OTEL_EXPORTER_OTLP_TIMEOUT=10000 ...

`from_environment` builds the SDK's tracer provider from them (`OTEL_SDK_DISABLED=true` also turns it off);
`install` makes it the one `tracer()` returns. The HTTP shell opens a server span per request (continuing
an incoming W3C `traceparent`); inside it the pipeline opens `decode`, and the micro-batcher
(`app.core.batching`) records, per request, `queue wait` and `model call` spans and, per model call, one
`batch` span linked from every request in it (`BatchSpans`).

Exporting never slows a prediction: ended spans go to the SDK's bounded queue and a background thread
sends them. When the queue is full or the collector refuses or does not answer, spans are dropped and
counted (`on_dropped`, the `trace_spans_dropped_total` metric); a prediction never waits for a collector.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Tracer

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "image-classifier-service"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_NOOP: Tracer = trace.NoOpTracer()
_tracer: Tracer = _NOOP  # module state: tracing belongs to the process, like the SDK's own globals

DroppedCallback = Callable[[int, str], None]
"""Called with a number of spans dropped and why: "queue_full" or "export_failed"."""


def enabled() -> bool:
    """Whether spans are recorded (`install` was given a provider)."""
    return _tracer is not _NOOP


def tracer() -> Tracer:
    """The service's tracer: a no-op one while tracing is off."""
    return _tracer


def install(provider: TracerProvider | None) -> None:
    """Make `provider`'s tracer the one `tracer()` returns (None: tracing off)."""
    global _tracer
    _tracer = provider.get_tracer("app") if provider is not None else _NOOP


def from_environment(
    environ: Mapping[str, str] | None = None, *, on_dropped: DroppedCallback | None = None
) -> TracerProvider | None:
    """The tracer provider the OTEL_* variables of `environ` (default: the process's) describe, or None when
    no OTLP endpoint is set or `OTEL_SDK_DISABLED` is true. The SDK reads the sampler, the resource's
    attributes and the batch processor's limits itself; the exporters read the endpoint, headers,
    compression and timeout."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not any(env.get(name) for name in _ENDPOINTS):
        return None
    protocol = next((env[name] for name in _PROTOCOLS if env.get(name)), "http/protobuf").strip().lower()
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this service exports grpc or http/protobuf")
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over this default.
    resource = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME}) if "OTEL_SERVICE_NAME" not in env else None
    provider = TracerProvider(resource=resource or Resource.create())
    capacity = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048"))  # the SDK's defaults
    batch = min(int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")), capacity)
    provider.add_span_processor(CountingBatchProcessor(exporter, capacity, batch, on_dropped or _ignore))
    return provider


def _ignore(count: int, reason: str) -> None:
    pass


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor (bounded queue, background export), counting the spans it loses.

    The SDK drops a span when its queue is full and drops a batch whose export fails (collector down, slow
    past the timeout, or refusing); it only logs either. This keeps its own count of spans waiting (ended,
    not yet handed to the exporter) to know when the queue is full, and wraps the exporter to see failures."""

    def __init__(
        self, exporter: SpanExporter, max_queue_size: int, max_export_batch_size: int, on_dropped: DroppedCallback
    ) -> None:
        self._on_dropped = on_dropped
        self._waiting = 0
        self._capacity = max_queue_size
        self._lock = threading.Lock()
        counting = _CountingExporter(exporter, self._taken, on_dropped)
        super().__init__(counting, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._lock:
                full = self._waiting >= self._capacity
                if not full:
                    self._waiting += 1
            if full:  # the SDK evicts the oldest waiting span for this one
                self._on_dropped(1, "queue_full")
        super().on_end(span)

    def _taken(self, count: int) -> None:
        with self._lock:
            self._waiting = max(0, self._waiting - count)


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, taken: Callable[[int], None], on_dropped: DroppedCallback) -> None:
        self._inner, self._taken, self._on_dropped = inner, taken, on_dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._taken(len(spans))
        try:
            result = self._inner.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            log.exception("trace export raised")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_dropped(len(spans), "export_failed")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def current_context() -> otel_context.Context | None:
    """The caller's trace context, to parent spans recorded later on its behalf (None: tracing off)."""
    return otel_context.get_current() if enabled() else None


def trace_id() -> str | None:
    """The current span's trace id as 32 hex digits (what log lines carry), or None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


class BatchSpans:
    """The spans of one model call of the micro-batcher, for requests that each carry their caller's
    context (`current_context()` at submit): one `batch` span (a root of its own trace, since it serves
    many) linked to every request's trace, and in each request's trace a `queue wait` span (from submit to
    the model call) and a `model call` span linked to the batch span. `attributes` name the model (task,
    version, runtime); each span adds `batch.size`."""

    def __init__(self, attributes: Mapping[str, Any], contexts: Sequence[otel_context.Context | None]) -> None:
        self._attributes = {**attributes, "batch.size": len(contexts)}
        self._contexts = contexts
        self._started_ns = time.time_ns()
        parents = [trace.get_current_span(c).get_span_context() for c in contexts if c is not None]
        self._batch = _tracer.start_span(
            "batch",
            context=otel_context.Context(),
            links=[Link(p) for p in parents if p.is_valid],
            attributes=self._attributes,
            start_time=self._started_ns,
        )

    def end(self, enqueued_ns: Sequence[int], error: BaseException | None = None) -> None:
        """End the batch span, and record each request's spans (`enqueued_ns`: when each was submitted)."""
        finished = time.time_ns()
        if error is not None:
            self._batch.record_exception(error)
            self._batch.set_status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        self._batch.end(finished)
        link = [Link(self._batch.get_span_context())]
        for parent, queued in zip(self._contexts, enqueued_ns, strict=True):
            if parent is None:
                continue
            _tracer.start_span("queue wait", context=parent, attributes=self._attributes, start_time=queued).end(
                self._started_ns
            )
            call = _tracer.start_span(
                "model call", context=parent, links=link, attributes=self._attributes, start_time=self._started_ns
            )
            if error is not None:
                call.set_status(trace.StatusCode.ERROR, type(error).__name__)
            call.end(finished)
