"""The REST API of DESIGN.md with a fake model: shapes, every error code, batching over HTTP, metrics."""

from __future__ import annotations

import asyncio
import gc
import io
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.core.settings import Settings
from app.http.application import create_app
from tests.fakes import FakeLoader, write_model_dir
from tests.helpers import image_bytes, started

BLACK = image_bytes((0, 0, 0))
WHITE = image_bytes((255, 255, 255))


def test_predict_returns_labelled_confidences_in_upload_order(client) -> None:
    files = [
        ("file", ("black.png", BLACK, "image/png")),
        ("file", ("white.jpg", image_bytes(fmt="JPEG"), "image/jpeg")),
    ]
    response = client.post("/predict/shades", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "shades" and body["model_version"] == 1
    first, second = body["predictions"]
    assert (first["filename"], first["label"]) == ("black.png", "dark")
    assert (second["filename"], second["label"]) == ("white.jpg", "light")
    assert first["confidence"] > 0.99
    assert [entry["label"] for entry in first["top_k"]] == ["dark", "light"]
    assert abs(sum(entry["confidence"] for entry in first["top_k"]) - 1) < 1e-5


def test_predictions_flag_images_unlike_the_training_data(client) -> None:
    files = [("file", ("gray.png", image_bytes((90, 90, 90)))), ("file", ("red.png", image_bytes((255, 0, 0))))]
    gray, red = client.post("/predict/shades", files=files).json()["predictions"]
    assert gray["out_of_distribution"] is False and gray["ood_score"] == 0.0
    assert red["out_of_distribution"] is True and red["ood_score"] == 1.0
    assert red["label"] in ("dark", "light") and len(red["top_k"]) == 2  # still ranked: the client decides


def test_a_model_without_ood_score_serves_with_nulls(make_client, model_dir) -> None:
    write_model_dir(model_dir, task="legacy", ood=None, calibration=None)
    client = make_client()
    prediction = client.post("/predict/legacy", files={"file": ("red.png", image_bytes((255, 0, 0)))}).json()
    assert prediction["predictions"][0]["label"] == "dark"
    assert prediction["predictions"][0]["out_of_distribution"] is None
    assert prediction["predictions"][0]["ood_score"] is None
    info = client.get("/models/legacy").json()
    assert info["ood"] is None and info["calibration"] is None


def test_model_info_shows_calibration_ood_and_plots(client, model_dir) -> None:
    plot = image_bytes(size=(30, 20))
    (model_dir / "shades" / "1" / "reliability.png").write_bytes(plot)
    info = client.get("/models/shades").json()
    assert info["calibration"]["method"] == "temperature"
    assert info["ood"]["threshold"] == 0.2 and info["ood"]["output"] == "ood_score"
    assert info["subject"] == "a shade of gray"
    assert info["plots"] == {"reliability": "/models/shades/plots/reliability"}
    response = client.get(info["plots"]["reliability"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == plot
    missing = client.get("/models/shades/plots/training_curves")
    assert missing.status_code == 404 and "has no plot 'training_curves'" in missing.json()["detail"]
    assert client.get("/models/shades/plots/..%2Fmetadata.json").status_code == 404
    assert client.get("/models/shades/plots/metadata").status_code == 404


def test_top_k_limits_the_labels(client) -> None:
    response = client.post("/predict/shades?top_k=1", files={"file": ("b.png", BLACK)})
    assert [e["label"] for e in response.json()["predictions"][0]["top_k"]] == ["dark"]
    response = client.post("/predict/shades?top_k=50", files={"file": ("b.png", BLACK)})
    assert len(response.json()["predictions"][0]["top_k"]) == 2  # capped at the number of classes


def test_models_endpoints_show_labels_input_version_and_metrics(client) -> None:
    listing = client.get("/models").json()
    assert [m["task"] for m in listing] == ["shades"]
    one = client.get("/models/shades").json()
    assert one["labels"] == ["dark", "light"]
    assert one["input"]["height"] == 16 and one["version"] == 1
    assert one["metrics"]["test_accuracy"] == 0.5
    assert client.get("/models/nope").status_code == 404


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"shades": "ready"}


def test_readyz_is_503_while_models_load(model_dir, loader: FakeLoader) -> None:
    release = threading.Event()

    def gated_loader(path: Path):  # runs in a worker thread until the test lets it finish
        release.wait(10)
        return loader(path)

    async def scenario() -> None:
        app = create_app(Settings(model_dir=model_dir), loader=gated_loader)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            assert (await http.get("/healthz")).status_code == 200
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "1"
            assert (await http.get("/v2/health/ready")).status_code == 503
            loading = await http.post("/predict/shades", files={"file": ("b.png", BLACK)})
            assert loading.status_code == 503 and "loading" in loading.json()["detail"]
            release.set()
            await asyncio.wait_for(app.state.service.loaded.wait(), 5)
            assert (await http.get("/readyz")).status_code == 200
        await context.__aexit__(None, None, None)

    asyncio.run(scenario())


def test_unknown_task_is_404(client) -> None:
    response = client.post("/predict/unicorns", files={"file": ("b.png", BLACK)})
    assert response.status_code == 404
    assert "unicorns" in response.json()["detail"] and "shades" in response.json()["detail"]


def test_corrupt_image_is_400_and_names_the_file(client) -> None:
    truncated = image_bytes(fmt="JPEG", size=(200, 200))[:300]
    response = client.post("/predict/shades", files=[("file", ("ok.png", BLACK)), ("file", ("broken.jpg", truncated))])
    assert response.status_code == 400
    assert "broken.jpg" in response.json()["detail"]


def test_non_image_is_415(client) -> None:
    response = client.post("/predict/shades", files={"file": ("notes.txt", b"hello, I am not an image", "text/plain")})
    assert response.status_code == 415
    assert "JPEG" in response.json()["detail"]


def test_decompression_bomb_is_413_before_decoding(make_client) -> None:
    client = make_client(max_image_pixels=1_000_000)
    buffer = io.BytesIO()
    Image.new("1", (4000, 4000)).save(buffer, format="PNG")  # 16 Mpx in a few kB
    response = client.post("/predict/shades", files={"file": ("bomb.png", buffer.getvalue())})
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


def test_upload_over_byte_limit_is_413(make_client) -> None:
    client = make_client(max_upload_bytes=10_000)
    response = client.post("/predict/shades", files={"file": ("big.bin", b"\xff" * 20_000)})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_chunked_upload_over_byte_limit_is_413_without_reading_it_all(live_server) -> None:
    """On a real server: a chunked body with no Content-Length is cut off once it passes the limit."""
    host, port = live_server(max_upload_bytes=10_000)
    chunks_sent = 0
    reply = b""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"POST /predict/shades HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        sock.sendall(f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n")
        sock.setblocking(False)
        for _ in range(2000):  # offers 2 MB in 1 kB chunks
            try:
                sock.sendall(b"400\r\n" + b"\0" * 1024 + b"\r\n")
                chunks_sent += 1
                reply += sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            if b"\r\n\r\n" in reply:
                break
            time.sleep(0.001)
        sock.setblocking(True)
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert chunks_sent < 2000, "the server read the whole body although the limit was passed early"


def test_too_many_files_is_413(make_client) -> None:
    client = make_client(max_files_per_request=2)
    response = client.post("/predict/shades", files=[("file", (f"{i}.png", BLACK)) for i in range(3)])
    assert response.status_code == 413


def test_missing_file_and_bad_parameters_are_422(client) -> None:
    assert client.post("/predict/shades").status_code == 422
    assert client.post("/predict/shades", data={"other": "x"}).status_code == 422
    response = client.post("/predict/shades?top_k=0", files={"file": ("b.png", BLACK)})
    assert response.status_code == 422 and "top_k" in response.json()["detail"]
    response = client.post("/predict/shades?top_k=abc", files={"file": ("b.png", BLACK)})
    assert response.status_code == 422
    garbage = client.post(
        "/predict/shades", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert garbage.status_code in (400, 422) and garbage.status_code != 500


def test_model_failure_is_500_for_that_batch_only_and_the_service_keeps_serving(client, loader: FakeLoader) -> None:
    def explode(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("GPU on fire")

    loader.predict = explode
    failed = client.post("/predict/shades", files={"file": ("b.png", BLACK)})
    assert failed.status_code == 500 and "GPU on fire" in failed.json()["detail"]
    from tests.fakes import brightness

    loader.predict = brightness
    assert client.post("/predict/shades", files={"file": ("b.png", BLACK)}).status_code == 200


def test_full_queue_is_503_with_retry_after(model_dir, loader: FakeLoader) -> None:
    loader.delay_s = 0.3

    async def scenario() -> list[httpx.Response]:
        settings = Settings(
            model_dir=model_dir, max_queue_size=2, max_batch_size=1, max_wait_s=0, max_concurrent_batches=1
        )
        app = create_app(settings, loader=loader)
        context = await started(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            responses = await asyncio.gather(
                *(http.post("/predict/shades", files={"file": (f"{i}.png", BLACK)}) for i in range(8))
            )
        await context.__aexit__(None, None, None)
        return list(responses)

    responses = asyncio.run(scenario())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "overloaded" in refused.json()["detail"]


def test_overload_is_refused_before_the_body_is_read(live_server, loader: FakeLoader) -> None:
    """With the queue full, a predict request gets 503 although its body never arrives."""
    loader.delay_s = 1.0
    host, port = live_server(max_queue_size=1, max_batch_size=1, max_wait_s=0, max_concurrent_batches=1)
    with socket.create_connection((host, port)) as busy, socket.create_connection((host, port)) as queued:
        for sock in (busy, queued):  # one image computing, one waiting: the queue is now full
            body = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.png"\r\n\r\n'
                + BLACK
                + b"\r\n--b--\r\n"
            )
            sock.sendall(
                b"POST /predict/shades HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.2)
        with socket.create_connection((host, port), timeout=5) as late:
            late.sendall(
                b"POST /predict/shades HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            )
            reply = late.recv(65536)  # no body sent at all
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"retry-after: 1" in reply.lower() and b"overloaded" in reply
        metrics = httpx.get(f"http://{host}:{port}/metrics").text
        assert 'http_requests_total{route="/predict/{task}",status="503",task="shades"} 1.0' in metrics


def test_concurrent_clients_are_batched_and_metrics_show_it(model_dir, loader: FakeLoader) -> None:
    loader.delay_s = 0.05

    async def scenario() -> tuple[list[httpx.Response], str]:
        app = create_app(Settings(model_dir=model_dir, max_batch_size=32, max_wait_s=0.02), loader=loader)
        context = await started(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            shades = [BLACK if i % 2 else WHITE for i in range(24)]
            responses = await asyncio.gather(
                *(http.post("/predict/shades", files={"file": (f"{i}.png", data)}) for i, data in enumerate(shades))
            )
            metrics = (await http.get("/metrics")).text
        await context.__aexit__(None, None, None)
        return list(responses), metrics

    responses, metrics = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in responses)
    labels = [r.json()["predictions"][0]["label"] for r in responses]
    assert labels == ["light" if i % 2 == 0 else "dark" for i in range(24)]  # each client got its own answer
    assert max(loader.batches[2:]) > 1, loader.batches  # [0:2] are the warm-up calls
    assert len(loader.batches) - 2 < 24
    assert 'batch_size_count{task="shades"}' in metrics
    assert 'http_requests_total{route="/predict/{task}",status="200",task="shades"} 24.0' in metrics
    for name in (
        "batch_queue_wait_seconds_bucket",
        "batch_queue_depth",
        "image_decode_seconds_bucket",
        "http_request_duration_seconds_bucket",
    ):
        assert name in metrics


def test_metric_labels_do_not_grow_with_unknown_tasks(client) -> None:
    for name in ("a", "b", "c"):
        client.post(f"/predict/{name}", files={"file": ("b.png", BLACK)})
    metrics = client.get("/metrics").text
    assert 'task="other"' in metrics and 'task="a"' not in metrics


def test_refused_model_is_logged_and_the_others_serve(model_dir: Path, loader: FakeLoader, caplog) -> None:
    broken = write_model_dir(model_dir, task="broken")
    (broken / "metadata.json").write_text('{"task": "broken"}')
    (model_dir / "nometa" / "1").mkdir(parents=True)
    from fastapi.testclient import TestClient

    from tests.helpers import wait_ready

    with TestClient(create_app(Settings(model_dir=model_dir), loader=loader)) as client:
        wait_ready(client)
        assert client.get("/readyz").status_code == 200
        assert client.post("/predict/shades", files={"file": ("b.png", BLACK)}).status_code == 200
        refused = client.post("/predict/broken", files={"file": ("b.png", BLACK)})
        assert refused.status_code == 404 and "refused" in refused.json()["detail"]
        status = client.get("/readyz").json()["models"]
        assert status["shades"] == "ready" and status["nometa"].startswith("refused: ")
    refusals = [r.getMessage() for r in caplog.records if "refusing model" in r.getMessage()]
    assert len(refusals) == 2 and any("metadata.json is missing" in m for m in refusals)


def test_highest_version_is_served(model_dir: Path, loader: FakeLoader) -> None:
    write_model_dir(model_dir, version=3)
    write_model_dir(model_dir, version=12)
    from fastapi.testclient import TestClient

    from tests.helpers import wait_ready

    with TestClient(create_app(Settings(model_dir=model_dir), loader=loader)) as client:
        wait_ready(client)
        assert client.get("/models/shades").json()["version"] == 12


def test_index_page_is_served(client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]


@pytest.mark.parametrize("enabled", [True, False])
def test_startup_objects_leave_the_garbage_collectors_sight_once_loaded(make_client, enabled: bool) -> None:
    gc.unfreeze()
    client = make_client(gc_freeze_after_load=enabled)
    assert client.get("/readyz").status_code == 200  # the freeze runs on the event loop right after loading
    deadline = time.monotonic() + 5
    while enabled and gc.get_freeze_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gc.get_freeze_count() > 0) is enabled
