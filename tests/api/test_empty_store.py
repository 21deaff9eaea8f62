"""A service started on an empty model store is ready, and serves the first task that lands in it, published
the way training publishes (a hidden staging folder renamed into place), without a restart."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.fakes import metadata
from tests.helpers import image_bytes


def test_an_empty_store_is_ready_and_serves_the_first_task_that_lands(tmp_path: Path, make_client) -> None:
    store = tmp_path / "store"
    store.mkdir()
    client = make_client(model_dir=store, model_poll_s=0.05)
    assert client.get("/readyz").status_code == 200
    assert client.get("/models").json() == []
    assert client.post("/predict/parts", files={"file": ("a.png", image_bytes(), "image/png")}).status_code == 404

    staging = store / "parts" / ".1.staging-1234"  # what training.store writes before the rename
    staging.mkdir(parents=True)
    (staging / "metadata.json").write_text(json.dumps(metadata("parts", 1)))
    os.rename(staging, store / "parts" / "1")
    deadline = time.monotonic() + 10
    while [m["task"] for m in client.get("/models").json()] != ["parts"]:
        assert time.monotonic() < deadline, "the new task was not served"
        time.sleep(0.05)
    answer = client.post("/predict/parts", files={"file": ("a.png", image_bytes(), "image/png")})
    assert answer.status_code == 200 and answer.json()["model_version"] == 1
    assert client.get("/readyz").json()["models"] == {"parts": "ready"}
