"""The service as users run it (`python -m app` in its own process, on a tiny real model): slow and
half-sent requests are cut loose while others are served, connections beyond the cap are refused, health
answers fast under any load, and SIGTERM drains without losing an accepted request."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stress.drain import drain_under_load
from stress.process import Live, service
from stress.saturate import probe_under_load
from tests.helpers import image_bytes

GUARDED = {"APP_HEADER_TIMEOUT_S": "0.5", "APP_BODY_TIMEOUT_S": "0.5", "APP_MAX_CONNECTIONS": "8"}


@pytest.fixture(scope="module")
def guarded(real_model_dir: Path) -> Iterator[Live]:
    with service({"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "warning", **GUARDED}) as live:
        yield live


def _connect(live: Live) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _predict_ok(live: Live) -> bool:
    response = httpx.post(f"{live.url}/predict/shades", files={"file": ("a.png", image_bytes())}, timeout=10)
    return response.status_code == 200


def test_a_half_sent_header_is_answered_408_and_closed_while_others_are_served(guarded: Live) -> None:
    with _connect(guarded) as slow:
        slow.sendall(b"POST /predict/shades HTTP/1.1\r\nHost: x\r\nContent-Le")
        started = time.monotonic()
        assert _predict_ok(guarded)  # served meanwhile
        answer = _read_all(slow)  # returns once the server closes
        assert answer.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive within 0.5 s" in answer
        assert 0.4 < time.monotonic() - started < 3


def test_a_half_sent_body_is_answered_408_and_closed(guarded: Live) -> None:
    with _connect(guarded) as slow:
        slow.sendall(
            b"POST /predict/shades HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        started = time.monotonic()
        assert _predict_ok(guarded)
        answer = _read_all(slow)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"body did not arrive within 0.5 s" in answer and b"connection: close" in answer.lower()
        assert 0.4 < time.monotonic() - started < 3


def test_an_idle_keep_alive_connection_that_starts_a_header_is_timed_out_too(guarded: Live) -> None:
    with _connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # answered, and idle on a keep-alive connection
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request never finishes its header
        first, _, second = _read_all(sock).partition(b"HTTP/1.1 408 ")
        assert first.startswith(b"HTTP/1.1 200 OK") and b"headers did not arrive" in second


def test_connections_beyond_the_cap_are_refused_with_503(real_model_dir: Path) -> None:
    env = {"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "warning", "APP_MAX_CONNECTIONS": "4"}
    with service(env) as live:  # the default header timeout (10 s) leaves the held connections open
        held = [_connect(live) for _ in range(4)]
        try:
            time.sleep(0.1)
            with _connect(live) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = _read_all(extra)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer
            assert b"maximum of 4 connections" in answer
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert _predict_ok(live)  # the slots came back


@pytest.mark.usefixtures("frozen_test_heap")
def test_health_answers_within_100_ms_while_the_service_is_saturated(real_model_dir: Path) -> None:
    """Photos, 3 MB JSON tensors (parsed in the parser process) and decode bombs (the large lane), all at
    once from another process; /healthz and /readyz are probed throughout."""
    env = {"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "error"}
    with service(env) as live:
        result = probe_under_load(live.url, "shades", side=8)
    print(f"health under load: {result}")
    assert result["statuses"] == [200]
    assert result["max_ms"] < 100


@pytest.mark.usefixtures("frozen_test_heap")
def test_sigterm_drains_without_losing_an_accepted_request(real_model_dir: Path) -> None:
    env = {"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "warning", "APP_DRAIN_S": "2"}
    with service(env) as live:
        result = drain_under_load(live, "shades", image_bytes(), clients=16, lb_delay_s=1.0)
    print(json.dumps(result))
    assert result["failed"] == 0, result
    assert result["answered_200"] > 16 and result["exit_code"] == 0
    assert result["readiness_503_after_s"] is not None and result["readiness_503_after_s"] < 0.5
    assert 2 <= result["stopped_after_s"] < 10


def test_the_guarded_server_still_speaks_plain_http(guarded: Live) -> None:
    with httpx.Client() as http:
        responses = [http.get(f"{guarded.url}/healthz") for _ in range(3)]  # one keep-alive connection
    assert [r.status_code for r in responses] == [200, 200, 200]


def test_json_logs_are_one_object_per_line_including_tensorflows_own(real_model_dir: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "service.log"
    # TF_CPP_MIN_LOG_LEVEL=0: TensorFlow's C++ side then certainly writes start-up lines (oneDNN, CPU features);
    # at the service's JSON default (2) whether it writes any depends on the machine.
    env = {"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_FORMAT": "json", "TF_CPP_MIN_LOG_LEVEL": "0"}
    with service(env, log_path=log_path) as live:
        httpx.get(f"{live.url}/readyz", headers={"X-Request-ID": "probe-1"})
        time.sleep(0.5)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert any(r["name"] == "native" for r in records), "TensorFlow's C++ start-up lines were not captured"
    assert any(r["request_id"] == "probe-1" and r["name"] == "uvicorn.access" for r in records)
