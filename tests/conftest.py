"""Fixtures of every layer (tests/unit, tests/api, tests/system; each test gets its layer's marker from
its folder, so `pytest -m "unit or api"` is `make test-fast`). The fakes and helpers they use are in
`tests/fakes.py` and `tests/helpers.py`."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.http.application import create_app
from tests.fakes import FakeLoader, export_tiny_model, write_model_dir
from tests.helpers import wait_ready

LAYERS = ("unit", "api", "system")
# In-process apps serve no gRPC unless a test gives them a port (tests/api/test_grpc.py picks free ones): the
# default, 8001, is one port for the whole machine, and tests hold several apps at once.
os.environ.setdefault("APP_GRPC_PORT", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, the folder it lives in."""
    for item in items:
        layer = next((part for part in item.path.parts[::-1] if part in LAYERS), None)
        if layer is not None:
            item.add_marker(layer)


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """Each app gc.freeze()s the heap once loaded (a process-wide step); give the next test a normal one."""
    yield
    gc.unfreeze()


@pytest.fixture
def frozen_test_heap() -> Iterator[None]:
    """For a test that times the service from this process. By then the test run's own heap holds over a
    million objects (TensorFlow, models loaded in-process), and a full collection of it has paused this
    process for 1.8 s, which a latency measured here would blame on the service (a health probe once took
    1,275 ms in a full run, never over 51 ms alone). Frozen as the service freezes its own after loading."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ root with one real, tiny SavedModel (task "shades"), shared by the live-server tests."""
    root = tmp_path_factory.mktemp("real-models")
    export_tiny_model(root)
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model_dir(root)
    return root


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def make_client(model_dir: Path, loader: FakeLoader) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        settings.setdefault("model_dir", model_dir)
        app = create_app(Settings(**settings), loader=loader)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def live_server(model_dir: Path, loader: FakeLoader) -> Iterator[Callable[..., tuple[str, int]]]:
    """Start the app on a real uvicorn server (loopback, free port) in a thread."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: Any) -> tuple[str, int]:
        settings.setdefault("model_dir", model_dir)
        app = create_app(Settings(**settings), loader=loader)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started or not app.state.service.loaded.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("live server did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return "127.0.0.1", port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
