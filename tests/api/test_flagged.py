"""Flagged uploads (`app.core.flagged`): through the API with the fake model (a saturated colour is out of
distribution, a gray is not), and the store on its own for the cap, the queue and the disk errors.

Writes happen on the store's thread after the answer, so the tests poll with a short deadline."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from app.core.flagged import FlaggedStore
from app.core.metrics import Metrics
from app.core.predictions import LabelConfidence, Prediction
from app.core.settings import Settings
from tests.helpers import eventually, image_bytes, metric

RED = image_bytes((255, 0, 0))
GREEN = image_bytes((0, 255, 0))
GRAY = image_bytes((90, 90, 90))  # the fake model: "dark" with confidence 1 - 90/255 = 0.647, in distribution


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def predict(client, *uploads: tuple[str, bytes]) -> list[dict[str, Any]]:
    response = client.post("/predict/shades", files=[("file", upload) for upload in uploads])
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def metrics_showing(client, *lines: str) -> str:
    """/metrics once it shows every one of `lines` (the store counts after it writes: poll)."""

    def showing() -> str | None:
        text: str = client.get("/metrics").text
        return text if all(line in text for line in lines) else None

    return eventually(showing)


def noise(seed: int, size: int = 100) -> bytes:
    """A PNG that does not compress (about 30 kB at 100x100): its size dwarfs the JSON beside it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def flagged_prediction(name: str = "upload.png") -> Prediction:
    return Prediction(name, "dark", 0.5, [LabelConfidence("dark", 0.5), LabelConfidence("light", 0.5)], True, 1.0)


@pytest.fixture
def stores() -> Any:
    """Make FlaggedStores on a fresh Metrics; closes them after the test."""
    made: list[FlaggedStore] = []

    def make(root: Path, **options: Any) -> FlaggedStore:
        store = FlaggedStore(root, Metrics(), **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


# ------------------------------------------------------------------------------------- through the API
def test_off_by_default(client) -> None:
    assert client.app.state.service.flagged is None
    predict(client, ("red.png", RED))
    assert "flagged_uploads_saved_total{" not in client.get("/metrics").text


def test_an_out_of_distribution_upload_is_kept_with_its_prediction(make_client, tmp_path: Path) -> None:
    client = make_client(flagged_dir=tmp_path / "flagged")
    (red,) = predict(client, ("red.png", RED))
    assert red["out_of_distribution"] is True
    image = tmp_path / "flagged" / "shades" / f"{sha(RED)}.png"
    record = image.with_suffix(".json")
    eventually(record.exists)
    assert image.read_bytes() == RED  # the upload as sent, named by the hash of its bytes
    document = json.loads(record.read_text())
    assert document["task"] == "shades" and document["version"] == 1
    assert document["filename"] == "red.png" and document["image"] == image.name and document["sha256"] == sha(RED)
    assert document["out_of_distribution"] is True and document["ood_score"] == 1.0
    assert (document["label"], document["confidence"]) == (red["label"], red["confidence"])
    assert [entry["label"] for entry in document["top_k"]] == [entry["label"] for entry in red["top_k"]]
    assert document["reasons"] == ["out_of_distribution"] and document["times_flagged"] == 1
    assert document["received_at"].endswith("+00:00")  # ISO 8601, UTC
    assert files_in(image.parent) == sorted([image.name, record.name])  # no temporary file left behind
    metrics_showing(client, 'flagged_uploads_saved_total{task="shades"} 1.0', "flagged_store_bytes ")


def test_an_in_distribution_upload_is_not_kept(make_client, tmp_path: Path) -> None:
    client = make_client(flagged_dir=tmp_path / "flagged")
    gray, _ = predict(client, ("gray.png", GRAY), ("red.png", RED))
    assert gray["out_of_distribution"] is False
    folder = tmp_path / "flagged" / "shades"
    # One writer, in order: once red (offered after gray) is written, gray would have been.
    eventually((folder / f"{sha(RED)}.json").exists)
    assert files_in(folder) == sorted([f"{sha(RED)}.png", f"{sha(RED)}.json"])


@pytest.mark.parametrize(("below", "kept"), [(0.7, True), (0.6, False)])
def test_flagged_below_also_keeps_unsure_in_distribution_uploads(make_client, tmp_path: Path, below, kept) -> None:
    client = make_client(flagged_dir=tmp_path / "flagged", flagged_below=below)
    (gray,) = predict(client, ("gray.png", GRAY))
    assert gray["out_of_distribution"] is False and 0.6 < gray["confidence"] < 0.7
    predict(client, ("red.png", RED))  # written after gray: a marker that the writer got past it
    folder = tmp_path / "flagged" / "shades"
    eventually((folder / f"{sha(RED)}.json").exists)
    record = folder / f"{sha(GRAY)}.json"
    assert record.exists() is kept
    if kept:
        assert json.loads(record.read_text())["reasons"] == ["below_confidence"]


def test_flagged_below_is_validated() -> None:
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValidationError):
            Settings(flagged_below=bad)
    assert Settings(flagged_below=1).flagged_below == 1


def test_an_empty_flagged_dir_is_off(monkeypatch) -> None:
    monkeypatch.setenv("APP_FLAGGED_DIR", "")  # what compose passes for an unset variable
    monkeypatch.setenv("APP_FLAGGED_BELOW", "")
    settings = Settings()
    assert settings.flagged_dir is None and settings.flagged_below is None


def test_the_same_upload_twice_is_one_file(make_client, tmp_path: Path) -> None:
    client = make_client(flagged_dir=tmp_path / "flagged")
    predict(client, ("first.png", RED))
    predict(client, ("again.png", RED))
    record = tmp_path / "flagged" / "shades" / f"{sha(RED)}.json"
    document = eventually(lambda: record.exists() and (d := json.loads(record.read_text()))["times_flagged"] == 2 and d)
    assert document["filename"] == "again.png"  # the JSON tells of the latest time it was flagged
    assert document["first_received_at"] <= document["received_at"]
    assert files_in(record.parent) == sorted([f"{sha(RED)}.png", record.name])
    metrics_showing(
        client, 'flagged_uploads_saved_total{task="shades"} 1.0', 'flagged_uploads_repeated_total{task="shades"} 1.0'
    )


def test_an_unwritable_directory_costs_the_copies_never_the_answers(make_client, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    # Under a regular file, mkdir fails even for root (chmod would not stop the root the tests run as).
    client = make_client(flagged_dir=blocker / "flagged")
    for _ in range(2):
        (red,) = predict(client, ("red.png", RED))
        assert red["out_of_distribution"] is True
    metrics_showing(
        client,
        'flagged_uploads_dropped_total{reason="write_error"} 2.0',
        'flagged_store_errors_total{kind="ENOTDIR"} 2.0',
    )
    assert client.get("/readyz").status_code == 200


def test_pixels_sent_as_json_are_kept_as_png(make_client, tmp_path: Path) -> None:
    client = make_client(flagged_dir=tmp_path / "flagged")
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 255  # pure red: out of distribution
    body = {"inputs": [{"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": pixels.tolist()}]}
    response = client.post("/v2/models/shades/infer", json=body)
    assert response.status_code == 200, response.text
    folder = tmp_path / "flagged" / "shades"
    stored = eventually(lambda: list(folder.glob("*.png")) if folder.is_dir() else None)
    assert len(stored) == 1 and stored[0].stem == sha(stored[0].read_bytes())
    assert np.array_equal(np.asarray(Image.open(stored[0])), pixels)
    eventually(stored[0].with_suffix(".json").exists)


# ------------------------------------------------------------------------------------- the store itself
def test_the_cap_deletes_the_least_recently_flagged_first(stores, tmp_path: Path) -> None:
    a, b, c = noise(1), noise(2), noise(3)
    store = stores(tmp_path, max_bytes=int(2.5 * len(a)))  # two pairs fit, three do not
    for data in (a, b, a, c):  # a flagged again after b: b is now the oldest
        assert store.offer("shades", 1, data, flagged_prediction())
    folder = tmp_path / "shades"

    def on_disk() -> int:
        return sum(p.stat().st_size for p in folder.iterdir())

    # Counted once both files are gone; the gauge is set when the pruning ends.
    metrics = store._metrics
    eventually(lambda: metric(metrics, "flagged_uploads_evicted_total") == 1)
    eventually(lambda: metric(metrics, "flagged_store_bytes") == on_disk())
    assert files_in(folder) == sorted(f"{sha(d)}.{ext}" for d in (a, c) for ext in ("png", "json"))
    assert on_disk() <= store.max_bytes


def test_a_new_store_indexes_what_is_on_disk_oldest_first(stores, tmp_path: Path) -> None:
    a, b, c = noise(1), noise(2), noise(3)
    first = stores(tmp_path)
    for data in (a, b, c):
        first.offer("shades", 1, data, flagged_prediction())
    first.close()  # writes what is queued before it returns
    folder = tmp_path / "shades"
    assert len(files_in(folder)) == 6
    for age, data in ((300, b), (200, c), (100, a)):  # b is the oldest on disk, then c
        os.utime(folder / f"{sha(data)}.png", (time.time() - age, time.time() - age))
    crashed = folder / f".{sha(a)}.png.{'0' * 32}.tmp"
    crashed.write_bytes(b"half a write")
    mine = folder / "notes.txt"  # not a name the store writes: never deleted
    mine.write_text("keep me")
    second = stores(tmp_path, max_bytes=int(2.5 * len(a)))
    eventually(lambda: metric(second._metrics, "flagged_uploads_evicted_total") == 1)  # the scan's last step
    assert files_in(folder) == sorted([mine.name] + [f"{sha(d)}.{ext}" for d in (a, c) for ext in ("png", "json")])


def test_a_full_queue_drops_instead_of_blocking(stores, tmp_path: Path, monkeypatch) -> None:
    writing, release = threading.Event(), threading.Event()
    keep = FlaggedStore._keep

    def slow_keep(self: FlaggedStore, item: Any) -> None:  # a disk that hangs until the test lets it go
        writing.set()
        release.wait(10)
        keep(self, item)

    monkeypatch.setattr(FlaggedStore, "_keep", slow_keep)
    store = stores(tmp_path, queue_size=1)
    assert store.offer("shades", 1, RED, flagged_prediction())
    assert writing.wait(5)  # the writer holds the first; the queue is empty again
    assert store.offer("shades", 1, GREEN, flagged_prediction())  # waits in the queue
    started = time.monotonic()
    assert store.offer("shades", 1, GRAY, flagged_prediction()) is False  # full: dropped at once
    assert time.monotonic() - started < 0.1
    assert metric(store._metrics, "flagged_uploads_dropped_total", reason="queue_full") == 1
    release.set()
    eventually(lambda: metric(store._metrics, "flagged_uploads_saved_total", task="shades") == 2)
    assert not (tmp_path / "shades" / f"{sha(GRAY)}.png").exists()


def test_the_queue_is_bounded_by_bytes_too(stores, tmp_path: Path, monkeypatch) -> None:
    release = threading.Event()
    keep = FlaggedStore._keep
    monkeypatch.setattr(FlaggedStore, "_keep", lambda self, item: (release.wait(10), keep(self, item)))
    store = stores(tmp_path, queue_bytes=len(RED) + len(GREEN))
    assert store.offer("shades", 1, RED, flagged_prediction())
    assert store.offer("shades", 1, GREEN, flagged_prediction())
    assert store.offer("shades", 1, GRAY, flagged_prediction()) is False  # the bytes in memory, not the count
    assert store.offer("shades", 1, noise(1), flagged_prediction()) is False  # larger than the whole budget
    assert metric(store._metrics, "flagged_uploads_dropped_total", reason="queue_full") == 1
    assert metric(store._metrics, "flagged_uploads_dropped_total", reason="too_large") == 1
    release.set()
    eventually(lambda: store._pending_bytes == 0)  # given back once written
    assert store.offer("shades", 1, GRAY, flagged_prediction())


def test_disk_errors_are_counted_and_logged_once_per_kind(stores, tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    store = stores(blocker / "flagged")
    with caplog.at_level(logging.WARNING, logger="app.core.flagged"):
        for data in (RED, GREEN, GRAY):
            assert store.offer("shades", 1, data, flagged_prediction())
        eventually(lambda: metric(store._metrics, "flagged_store_errors_total", kind="ENOTDIR") == 3)
    assert metric(store._metrics, "flagged_uploads_dropped_total", reason="write_error") == 3
    warnings = [r for r in caplog.records if r.name == "app.core.flagged" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ENOTDIR" in warnings[0].getMessage()


def test_encoded_uploads_are_named_by_their_format(stores, tmp_path: Path) -> None:
    store = stores(tmp_path)
    jpeg, webp = image_bytes((255, 0, 0), fmt="JPEG"), image_bytes((0, 0, 255), fmt="WEBP")
    for data in (jpeg, webp):
        store.offer("shades", 1, data, flagged_prediction())
    store.close()
    assert files_in(tmp_path / "shades") == sorted(
        [f"{sha(jpeg)}.jpg", f"{sha(jpeg)}.json", f"{sha(webp)}.webp", f"{sha(webp)}.json"]
    )


def test_a_closed_store_drops_offers(stores, tmp_path: Path) -> None:
    store = stores(tmp_path)
    store.close()
    assert store.offer("shades", 1, RED, flagged_prediction()) is False
    assert metric(store._metrics, "flagged_uploads_dropped_total", reason="shutdown") == 1
    assert not store._thread.is_alive()
