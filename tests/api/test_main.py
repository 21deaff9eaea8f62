"""The app's wiring: request IDs, log formats, offline documentation, compressed answers."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.helpers import image_bytes


def test_request_ids_are_echoed_or_made(client) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "client-42.a"})
    assert given.headers["x-request-id"] == "client-42.a"
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and made != "client-42.a"
    forged = client.get("/healthz", headers={"X-Request-ID": 'x" level=ERROR'}).headers["x-request-id"]
    assert forged != 'x" level=ERROR' and len(forged) == 32  # not a plain token: replaced


def test_every_log_line_of_a_request_carries_its_id(live_server, capfd: pytest.CaptureFixture[str]) -> None:
    host, port = live_server(log_format="json")
    capfd.readouterr()
    with httpx.Client(base_url=f"http://{host}:{port}") as http:
        http.post("/predict/shades", files={"file": ("a.png", image_bytes())}, headers={"X-Request-ID": "trace-7"})
    logging.getLogger("app.test").warning("outside any request")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert lines and all({"asctime", "levelname", "name", "message", "request_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["name"] == "uvicorn.access"]
    assert access and access[-1]["request_id"] == "trace-7" and "/predict/shades" in access[-1]["message"]
    assert lines[-1]["request_id"] == "-" and lines[-1]["message"] == "outside any request"


def test_docs_and_redoc_need_no_cdn(client) -> None:
    for path in ("/docs", "/redoc"):
        page = client.get(path).text
        assert "cdn." not in page and "unpkg" not in page and "/static-offline-docs/" in page
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static-offline-docs/redoc.standalone.js").status_code == 200


def test_large_answers_are_compressed_for_clients_that_accept_it(client) -> None:
    plain = client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    packed = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert packed.headers.get("content-encoding") == "gzip" and "content-encoding" not in plain.headers
    assert packed.json() == plain.json()
    small = client.post(
        "/predict/shades", files={"file": ("a.png", image_bytes())}, headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers  # under 4 KB: not worth it
