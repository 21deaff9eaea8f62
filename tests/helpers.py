"""Helpers the tests share: image files made on the fly, and waiting for an app's models to load."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image


def image_bytes(
    color: Any = (255, 255, 255), size: tuple[int, int] = (64, 48), fmt: str = "PNG", mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


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


def metric(metrics: Any, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly `labels` in `metrics` (an `app.core.metrics.Metrics`), 0
    if it has none yet."""
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


def eventually(check: Callable[[], Any], timeout_s: float = 5) -> Any:
    """Poll `check` until it returns something truthy (and return it); fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"not true within {timeout_s} s: {check}")
