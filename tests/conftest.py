"""Shared fixtures: image bytes made on the fly, and a fake model so service tests need no training.

The fake model lives in a real model directory (`<tmp>/models/<task>/<version>/metadata.json`), so the
service's discovery and metadata validation run for real; only the SavedModel call is replaced. Its
prediction is readable: class 0 ("dark") has probability 1 - mean/255 and class 1 ("light") mean/255.
Its out-of-distribution score is how colourful the image is (0 for grays, 1 for pure red): shades of gray
are what it "was trained on", and anything above `OOD_THRESHOLD` is flagged.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel, Outputs, read_metadata
from app.core.settings import Settings
from app.http.application import create_app

LABELS = ["dark", "light"]
OOD_THRESHOLD = 0.2


def image_bytes(
    color: Any = (255, 255, 255), size: tuple[int, int] = (64, 48), fmt: str = "PNG", mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def metadata(task: str = "shades", version: int = 1, **overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "task": task,
        "version": version,
        "labels": LABELS,
        "input": {"height": 16, "width": 16, "channels": 3, "resize": "bilinear"},
        "signature": {"name": "serving_default", "input": "images", "output": "probabilities"},
        "architecture": "fake",
        "metrics": {"test_accuracy": 0.5, "test_examples": 2, "split": "none"},
        "dataset": {"name": "fake", "train_examples": 0, "validation_examples": 0},
        "training": {"epochs": 0, "seconds": 0.0, "command": "none", "tensorflow": "none"},
        "created_at": "2026-01-01T00:00:00+00:00",
        "calibration": {"method": "temperature", "temperature": 1.0},
        "ood": {"method": "colourfulness", "output": "ood_score", "threshold": OOD_THRESHOLD},
        "subject": "a shade of gray",
    }
    meta.update(overrides)
    return meta


def write_model_dir(root: Path, task: str = "shades", version: int = 1, **overrides: Any) -> Path:
    path = root / task / str(version)
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps(metadata(task, version, **overrides)))
    return path


def export_tiny_model(
    root: Path, task: str = "shades", version: int = 1, *, with_ood: bool = True, size: int = 8, **overrides: Any
) -> Path:
    """A real SavedModel from the training exporter (mean colour -> 2 classes, calibrated, with an energy
    OOD score when `with_ood`), for tests that load models for real or start `python -m app`."""
    import keras

    from training.export import export
    from training.model import classifier, heads
    from training.ood import Detector

    inputs = keras.Input((size, size, 3))
    features = keras.layers.GlobalAveragePooling2D(name="features")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, classifier(features, len(LABELS)))
    path = root / task / str(version)
    spec = ImageSpec(height=size, width=size, channels=3)
    detector = Detector("energy") if with_ood else None
    signature = export(heads(model), path, spec, auto_invert=False, temperature=2.0, detector=detector)
    meta = metadata(task, version, input={"height": size, "width": size, "channels": 3, "resize": "bilinear"})
    meta["signature"] = signature
    if with_ood:
        meta["ood"] = {"method": "energy", "output": "ood_score", "threshold": 0.0}
    else:
        meta["ood"] = None
    meta.update(overrides)
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def brightness(batch: np.ndarray) -> np.ndarray:
    light = batch.reshape(len(batch), -1).mean(axis=1) / 255.0
    return np.stack([1 - light, light], axis=1).astype(np.float32)


def colourfulness(batch: np.ndarray) -> np.ndarray:
    """Mean of (max - min channel) / 255 per image: 0 for any gray, 1 for a saturated primary colour."""
    spread = batch.max(axis=-1).astype(np.float32) - batch.min(axis=-1)
    return (spread.reshape(len(batch), -1).mean(axis=1) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class FakeCompiled:
    """A runtime's compiled model (`app.core.model.Compiled`) that runs a Python function."""

    function: Callable[[np.ndarray], Outputs]

    def run(self, batch: np.ndarray) -> Outputs:
        return self.function(batch)

    def describe(self) -> dict[str, Any]:
        return {"precision": "fp32", "frozen": False, "batch_sizes": None}


def fake_model(path: Path, predict: Callable[[np.ndarray], Outputs]) -> LoadedModel:
    """The version at `path` (its metadata read for real) served by `predict`, as TensorFlow would serve it."""
    meta = read_metadata(path)
    threshold = meta.ood.threshold if meta.ood is not None else None
    return LoadedModel(meta, path, FakeCompiled(predict), "tensorflow", "", threshold, meta.conformal)


class FakeLoader:
    """Loads metadata for real; `predict` is `brightness` unless a test swaps it, plus `colourfulness` as
    `ood_score` when the metadata declares `ood`. Records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.predict: Callable[[np.ndarray], np.ndarray] = brightness
        self.delay_s = 0.0

    def __call__(self, path: Path) -> LoadedModel:
        meta = read_metadata(path)

        def predict(batch: np.ndarray) -> Outputs:
            self.batches.append(len(batch))
            if self.delay_s:
                time.sleep(self.delay_s)
            outputs = {PROBABILITIES: self.predict(batch)}
            if meta.ood is not None:
                outputs[OOD_SCORE] = colourfulness(batch)
            return outputs

        return fake_model(path, predict)


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


@pytest.fixture(scope="session")
def trained_fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny fashion_mnist version, trained by the real training code with a seed and validation fraction
    that are not the defaults (--seed 7 --validation-fraction 0.25); its version directory and data folder."""
    from tests.test_training import OOD_ARGS, idx_files
    from training import fashion_mnist

    root = tmp_path_factory.mktemp("trained-fashion")
    data = idx_files(root / "fashion", train=120)
    argv = ["--data-dir", str(data), "--epochs", "1", "--seed", "7", "--validation-fraction", "0.25", *OOD_ARGS]
    fashion_mnist.main([*argv, "--output-dir", str(root / "m")])
    return root / "m" / "fashion_mnist" / "1", data


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


def wait_ready(client: TestClient, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.app.state.service.loaded.is_set():  # type: ignore[attr-defined]
            return
        time.sleep(0.01)
    raise TimeoutError("models did not load")


async def started(app: FastAPI) -> Any:
    """Enter `app`'s lifespan inside the running loop (for httpx.AsyncClient tests); wait for loading."""
    context = app.router.lifespan_context(app)
    await context.__aenter__()
    await asyncio.wait_for(app.state.service.loaded.wait(), 10)
    return context
