"""Flagged uploads: copies of the uploads the service flagged, kept on disk to learn from (DESIGN.md,
"Flagged uploads"). Off unless `APP_FLAGGED_DIR` is set, because storing users' uploads is a privacy choice.

    <flagged_dir>/<task>/<sha256>.<ext>    the upload as sent (pixels sent as JSON: a PNG of them)
    <flagged_dir>/<task>/<sha256>.json     its prediction, the task and version, the file name, the times

An upload is kept when its prediction is out of distribution or, with `flagged_below`, when its confidence
is below that (`FlaggedStore.wants`). `offer` runs on the request path and only puts the upload on a
bounded queue (full: dropped and counted); one daemon thread detects the format, hashes and writes, so a
slow or full disk never slows an answer and no disk error reaches a request (they are logged once per kind
and counted). `<sha256>` is the SHA-256 of the stored file's bytes (`sha256sum` checks it), so the same
upload flagged again is one file: its modification time is touched and its JSON rewritten. Past
`flagged_max_bytes`, all tasks together, the least recently flagged pairs are deleted first.

Every file appears whole or not at all: written under a hidden temporary name, synced, then renamed over
its name (`os.replace`). Only names this module writes are ever deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.core.metrics import Metrics
from app.core.predictions import Prediction
from app.core.settings import Settings

log = logging.getLogger(__name__)

_STORED = re.compile(r"[0-9a-f]{64}\.[a-z0-9]+")  # <sha256>.<ext>
_TEMPORARY = re.compile(r"\.[0-9a-f]{64}\.[a-z0-9]+\.[0-9a-f]{32}\.tmp")  # what _write_atomically leaves on a crash
_EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg"}  # Pillow's format name -> the usual extension, where they differ
_POLL_S = 0.5  # how often an idle writer checks whether the store closed without its stop marker


@dataclass(frozen=True)
class _Pending:
    """One upload waiting for the writer."""

    task: str
    version: int
    data: bytes | np.ndarray
    prediction: Prediction
    name: str | None
    received_at: float  # time.time() when offered: the request's time, not the (later) write's
    size: int  # bytes it holds in memory while it waits


@dataclass(frozen=True)
class _Stored:
    """One stored pair as the writer's index knows it: the image's path, and the bytes of image and JSON."""

    image: Path
    size: int


class FlaggedStore:
    """Keeps copies of flagged uploads under `root` (see the module docstring).

    Thread contract: `wants`, `offer` and `close` are called from the event loop (or any one thread);
    everything else runs on the store's own writer thread, which alone touches the disk and the index.
    """

    def __init__(
        self,
        root: Path,
        metrics: Metrics,
        *,
        below: float | None = None,
        max_bytes: int = 2**30,
        queue_size: int = 256,
        queue_bytes: int = 64 * 2**20,
    ) -> None:
        self.root = root
        self.below = below
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._queue: queue.Queue[_Pending | None] = queue.Queue(queue_size)  # None: stop
        self._queue_bytes = queue_bytes
        self._pending_bytes = 0  # uploads are held in memory while queued: bound their bytes, not only their count
        self._lock = threading.Lock()  # guards _pending_bytes (added by offers, released by the writer)
        self._closed = False
        self._abandon = threading.Event()  # set when close gave up waiting: drop the rest instead of writing
        # Writer thread only: (task, sha256) -> what is stored, least recently flagged first.
        self._index: OrderedDict[tuple[str, str], _Stored] = OrderedDict()
        self._total = 0
        self._failing: set[str] = set()  # error kinds logged since the last write that worked
        metrics.flagged_pending.set_function(self._queue.qsize)
        self._thread = threading.Thread(target=self._run, name="flagged-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> FlaggedStore | None:
        """The store `settings` ask for, its writer started; None when `flagged_dir` is unset (the default)."""
        if settings.flagged_dir is None:
            return None
        return cls(
            settings.flagged_dir,
            metrics,
            below=settings.flagged_below,
            max_bytes=settings.flagged_max_bytes,
            queue_size=settings.flagged_queue_size,
            queue_bytes=settings.flagged_queue_bytes,
        )

    # ------------------------------------------------------------------------------ the request path
    def wants(self, prediction: Prediction) -> bool:
        """Whether an upload with `prediction` is to be kept: out of distribution, or below `below`."""
        return prediction.out_of_distribution is True or (self.below is not None and prediction.confidence < self.below)

    def offer(
        self, task: str, version: int, data: bytes | np.ndarray, prediction: Prediction, name: str | None = None
    ) -> bool:
        """Queue one upload (its encoded bytes, or the decoded uint8 pixels sent) to be kept, and return at
        once: True when queued, False when dropped (the store is closed, the queue is full by count or by
        bytes, or the upload alone exceeds the queue's bytes; counted by reason). Never blocks, never raises."""
        try:
            size = len(data) if isinstance(data, bytes | bytearray) else int(data.nbytes)
            if self._closed:
                return self._drop("shutdown")
            if size > self._queue_bytes:
                return self._drop("too_large")
            with self._lock:
                if self._pending_bytes + size > self._queue_bytes:
                    return self._drop("queue_full")
                self._pending_bytes += size
            try:
                self._queue.put_nowait(_Pending(task, version, data, prediction, name, time.time(), size))
            except queue.Full:
                self._release(size)
                return self._drop("queue_full")
            return True
        except Exception:  # a bug here must cost the copy, never the answer
            log.exception("offering a flagged upload of %r failed", task)
            return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Take no more uploads, write those queued for up to `timeout_s`, then stop the writer; what is
        still queued after that is dropped (reason shutdown). Blocks up to `timeout_s`: call it off the
        event loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):  # full: the writer stops by itself once the queue is empty
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abandon.set()
            log.warning(
                "the flagged-upload writer did not finish within %.1f s (a slow disk under %s?); "
                "the uploads still queued are dropped",
                timeout_s,
                self.root,
            )

    def _drop(self, reason: str) -> bool:
        self._metrics.flagged_dropped.labels(reason).inc()
        return False

    def _release(self, size: int) -> None:
        with self._lock:
            self._pending_bytes -= size

    # -------------------------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        self._scan()
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._closed:  # closed while the queue was full, so no stop marker came
                    return
                continue
            if item is None:
                return
            try:
                if self._abandon.is_set():
                    self._drop("shutdown")
                else:
                    self._keep(item)
            except Exception as error:  # a disk error (or a bug) costs this copy, never the writer
                self._drop("write_error")
                self._failed(error, f"keeping a flagged upload of {item.task!r} under {self.root}")
            finally:
                self._release(item.size)

    def _keep(self, item: _Pending) -> None:
        """Write one upload and its JSON (or refresh them when the same content is stored), then hold the
        store to its cap."""
        data, ext = _encoded(item.data)
        sha = hashlib.sha256(data).hexdigest()
        folder = self.root / item.task
        image, record = folder / f"{sha}.{ext}", folder / f"{sha}.json"
        key = (item.task, sha)
        stored = self._index.get(key)
        if stored is not None:
            try:
                os.utime(image)  # least recently flagged is what the cap deletes first
            except FileNotFoundError:  # deleted by someone else since: store it again
                del self._index[key]
                self._total -= stored.size
                stored = None
        previous = _read_json(record) if stored is not None else {}
        document = self._document(item, sha, image.name, len(data), previous)
        if stored is None and len(data) + len(document) > self.max_bytes:
            self._drop("too_large")
            return
        if stored is None:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(image, data)  # the image first: a JSON is never without its image
        _write_atomically(record, document)
        if stored is not None:
            self._total -= stored.size
        self._index[key] = _Stored(image, len(data) + len(document))
        self._index.move_to_end(key)
        self._total += len(data) + len(document)
        (self._metrics.flagged_saved if stored is None else self._metrics.flagged_repeated).labels(item.task).inc()
        if self._failing:
            log.info("the flagged store under %s works again", self.root)
            self._failing.clear()
        self._prune()

    def _document(self, item: _Pending, sha: str, image: str, size: int, previous: dict[str, Any]) -> bytes:
        """The JSON beside an image: the prediction as the native API renders it, and why, when and by
        which version it was flagged; `first_received_at` and `times_flagged` carry over from `previous`."""
        prediction = dataclasses.asdict(item.prediction)
        reasons = ["out_of_distribution"] if item.prediction.out_of_distribution is True else []
        if self.below is not None and item.prediction.confidence < self.below:
            reasons.append("below_confidence")
        received_at = datetime.fromtimestamp(item.received_at, UTC).isoformat()
        times = previous.get("times_flagged")
        document = {
            "task": item.task,
            "version": item.version,
            "filename": item.name if item.name is not None else prediction["filename"],
            "received_at": received_at,
            "first_received_at": previous.get("first_received_at", received_at),
            "times_flagged": times + 1 if isinstance(times, int) else 1,
            "reasons": reasons,
            "image": image,
            "sha256": sha,
            "bytes": size,
            **{field: value for field, value in prediction.items() if field != "filename"},
        }
        return json.dumps(document, indent=2).encode()

    def _prune(self) -> None:
        """Delete the least recently flagged pairs until the store is within its cap."""
        while self._total > self.max_bytes and self._index:
            _, stored = self._index.popitem(last=False)
            self._total -= stored.size
            for path in (stored.image.with_suffix(".json"), stored.image):  # the JSON first: never without its image
                try:
                    path.unlink(missing_ok=True)
                except OSError as error:  # forgotten anyway: a file we cannot delete must not stop the pruning
                    self._failed(error, f"deleting {path}")
            self._metrics.flagged_evicted.inc()
        self._metrics.flagged_bytes.set(self._total)

    def _scan(self) -> None:
        """Index what earlier runs stored, oldest modification time first, delete the temporary files a
        crash left behind, and hold the store to the cap (a lowered cap applies at start)."""
        found: list[tuple[int, str, Path, int]] = []
        try:
            folders = [path for path in self.root.iterdir() if path.is_dir()] if self.root.is_dir() else []
            for folder in folders:
                for path in folder.iterdir():
                    if _TEMPORARY.fullmatch(path.name):
                        path.unlink(missing_ok=True)
                    elif _STORED.fullmatch(path.name) and path.suffix != ".json":
                        stat = path.stat()
                        size = stat.st_size
                        with contextlib.suppress(FileNotFoundError):
                            size += path.with_suffix(".json").stat().st_size
                        found.append((stat.st_mtime_ns, folder.name, path, size))
        except OSError as error:
            self._failed(error, f"reading {self.root}")
        for _, task, path, size in sorted(found):
            self._index[(task, path.name.split(".")[0])] = _Stored(path, size)
            self._total += size
        self._prune()

    def _failed(self, error: BaseException, what: str) -> None:
        """Count an error by kind; log a kind only the first time it happens since writes last worked (a
        full disk fails every write: one line says so, the counter says how often)."""
        code = error.errno if isinstance(error, OSError) else None
        kind = errno.errorcode.get(code, type(error).__name__) if code is not None else type(error).__name__
        self._metrics.flagged_errors.labels(kind).inc()
        if kind not in self._failing:
            self._failing.add(kind)
            log.warning(
                "%s failed (%s: %s); further %s errors are counted in flagged_store_errors_total, not logged",
                what,
                kind,
                error,
                kind,
                exc_info=not isinstance(error, OSError),  # anything but a disk error is a bug: show where
            )


def _encoded(data: bytes | np.ndarray) -> tuple[bytes, str]:
    """The bytes to store and their extension: an upload as sent, named by its format; pixels as a PNG."""
    if isinstance(data, np.ndarray):
        pixels = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data  # Pillow wants (h, w) for gray
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    return bytes(data), _extension(data)


def _extension(data: bytes) -> str:
    """The file extension of an encoded image, from its header ("bin" if Pillow cannot name it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the upload already passed the decode limits
            with Image.open(io.BytesIO(data)) as image:
                name = (image.format or "").lower()
    except Exception:
        return "bin"
    name = _EXTENSIONS.get(name, name)
    return name if re.fullmatch(r"[a-z0-9]+", name) else "bin"


def _read_json(path: Path) -> dict[str, Any]:
    """A stored JSON document, or {} if it is missing or unreadable (it is rewritten anyway)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` whole, or keeps what it held: a hidden temporary file, synced, renamed over it."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # else a crash can leave the final name pointing at an empty file
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
