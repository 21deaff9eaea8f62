"""Traces reach a real receiver: Arize Phoenix (PyPI, in a virtualenv of its own) takes OTLP over HTTP and
answers span queries. A request sent with a `traceparent` is found there by its trace id, with the spans
and attributes the service promises, and the service's log line for it carries the same id.

Why Phoenix and not Jaeger or the Collector: `stress.receivers`. Phoenix drops span links on ingest, so the
links between a request's spans and its batch span are checked in tests/unit/test_tracing.py and
tests/api/test_tracing.py.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from stress import receivers
from stress.process import service
from tests.helpers import image_bytes

PROJECT = "image-classifier-tests"
pytestmark = pytest.mark.e2e


def _spans(base: str, trace_id: str, expect: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The spans of `trace_id` in Phoenix's project, once at least `expect` of them arrived."""
    query = urllib.parse.urlencode({"trace_id": trace_id, "limit": 1000})
    url = f"{base}/v1/projects/{PROJECT}/spans?{query}"
    deadline = time.monotonic() + timeout_s
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                spans = json.load(answer)["data"]
        except urllib.error.HTTPError as error:
            if error.code != 404:  # the project exists once its first span arrived
                raise
        if len(spans) >= expect:
            return spans
        time.sleep(0.2)
    raise AssertionError(f"{len(spans)} spans of trace {trace_id} in Phoenix after {timeout_s} s: {spans}")


def test_a_requests_trace_arrives_at_a_real_receiver_with_its_spans(real_model_dir: Path, tmp_path: Path) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    log_path = tmp_path / "service.log"
    with receivers.phoenix(tmp_path / "phoenix") as phoenix:
        env = {
            "APP_MODEL_DIR": str(real_model_dir),
            "APP_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,  # the exporter appends /v1/traces
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        with service(env, log_path=log_path) as live:
            files = [("file", (f"{i}.png", image_bytes((40 * i, 90, 200)), "image/png")) for i in range(3)]
            answer = httpx.post(
                f"{live.url}/predict/shades", files=files, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
            )
            assert answer.status_code == 200, answer.text
            spans = _spans(phoenix.url, trace_id, expect=1 + 1 + 3 + 3)  # server, decode, 3 queue waits, 3 calls
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    (server,) = by_name["POST /predict/{task}"]
    assert server["parent_id"] == parent_id  # the client's span: its trace continued
    assert server["attributes"]["model.task"] == "shades" and server["attributes"]["model.version"] == 1
    server_id = server["context"]["span_id"]
    assert len(by_name["decode"]) == 1 and by_name["decode"][0]["attributes"]["images"] == 3
    assert len(by_name["queue wait"]) == 3 and len(by_name["model call"]) == 3
    for span in [*by_name["decode"], *by_name["queue wait"], *by_name["model call"]]:
        assert span["parent_id"] == server_id, span
    for call in by_name["model call"]:
        attributes = call["attributes"]
        assert attributes["model.task"] == "shades" and attributes["model.version"] == 1
        assert attributes["model.runtime"] == server["attributes"]["model.runtime"] and attributes["batch.size"] >= 1
    # The service's log line of that request carries the trace id.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == trace_id and "/predict/shades" in line["message"] for line in lines), lines[-5:]
