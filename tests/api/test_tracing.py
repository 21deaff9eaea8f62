"""Traces over HTTP with a fake model: the client's `traceparent` is continued, a malformed one starts a new
trace, each prediction's spans carry the model, and a collector that is down costs predictions nothing."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.core import tracing
from app.core.settings import Settings
from app.http import logs
from app.http.application import create_app
from tests.fakes import FakeLoader
from tests.helpers import image_bytes, wait_ready

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def traced(model_dir: Path, loader: FakeLoader) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Settings(model_dir=model_dir), loader=loader, tracer_provider=provider)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client, exporter
    tracing.install(None)


def _predict(client: TestClient, **headers: str) -> None:
    files = [("file", ("a.png", image_bytes((0, 0, 0)), "image/png")), ("file", ("b.png", image_bytes(), "image/png"))]
    response = client.post("/predict/shades", files=files, headers=headers)
    assert response.status_code == 200, response.text


def test_a_request_continues_the_clients_trace_with_decode_queue_and_model_spans(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    _predict(client, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID]
    names = [s.name for s in spans]
    server = next(s for s in spans if s.parent is not None and format(s.parent.span_id, "016x") == PARENT_ID)
    assert server.name == "POST /predict/{task}" and server.attributes is not None
    assert (server.attributes["model.task"], server.attributes["model.version"]) == ("shades", 1)
    assert names.count("decode") == 1 and names.count("queue wait") == 2 and names.count("model call") == 2
    for span in spans:
        if span is not server:
            assert span.parent is not None and span.parent.span_id == server.context.span_id, span.name
    calls = [s for s in spans if s.name == "model call"]
    batch_ids = {link.context.span_id for call in calls for link in call.links}
    batches = [s for s in exporter.get_finished_spans() if s.name == "batch" and s.context.span_id in batch_ids]
    runtime = server.attributes["model.runtime"]
    assert batches and all(b.attributes is not None and b.attributes["model.runtime"] == runtime for b in batches)
    assert sum(b.attributes["batch.size"] for b in batches if b.attributes is not None) == 2
    # Both images rode in the batches the request's model-call spans link to, and those link back.
    assert all(any(format(link.context.trace_id, "032x") == TRACE_ID for link in b.links) for b in batches)


def test_a_malformed_traceparent_starts_a_new_trace(traced: tuple[TestClient, InMemorySpanExporter]) -> None:
    client, exporter = traced
    _predict(client, traceparent="00-not-a-trace-01")
    _predict(client, traceparent=f"00-{'0' * 32}-{PARENT_ID}-01")  # all-zero trace ids are invalid too
    servers = [s for s in exporter.get_finished_spans() if s.name == "POST /predict/{task}"]
    assert len(servers) == 2 and all(s.parent is None for s in servers)
    assert len({s.context.trace_id for s in servers}) == 2


def test_log_lines_carry_the_trace_id(
    traced: tuple[TestClient, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logs, "_real_stderr", stream)
    logs.configure(Settings(log_format="json"))
    try:
        with tracing.tracer().start_as_current_span("request") as span:
            logging.getLogger("app.test").warning("inside")
        logging.getLogger("app.test").warning("outside")
    finally:
        monkeypatch.setattr(logs, "_real_stderr", None)
        logs.configure(Settings())
    inside, outside = stream.getvalue().splitlines()[-2:]
    assert f'"trace_id": "{format(span.get_span_context().trace_id, "032x")}"' in inside
    assert '"trace_id": "-"' in outside


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a collector that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for connection in held:
        connection.close()
    server.close()


def test_a_collector_that_hangs_never_slows_a_prediction_and_lost_spans_are_counted(
    model_dir: Path, loader: FakeLoader, silent_collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", silent_collector)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds, in OpenTelemetry Python
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    app = create_app(Settings(model_dir=model_dir), loader=loader)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            wait_ready(client)
            started = time.monotonic()
            for _ in range(10):
                _predict(client)
            elapsed = time.monotonic() - started
            assert elapsed < 5, elapsed  # ten exports each hang 1 s at the collector; none was waited for
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                metrics = client.get("/metrics").text
                if 'trace_spans_dropped_total{reason="export_failed"}' in metrics:
                    break
                time.sleep(0.2)
            assert 'trace_spans_dropped_total{reason="export_failed"}' in metrics
    finally:
        tracing.install(None)
