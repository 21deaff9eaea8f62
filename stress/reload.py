"""Publish new versions into a running service while clients keep classifying: every request must be
answered 200 by a version that existed, the switch must be seen, and resident memory must level off
over the cycles instead of growing with each one.

    python -m stress.reload --cycles 20          # flowers, its latest committed version, 8 clients

Each cycle copies the model to a hidden staging name, sets the version in its metadata, renames it into
place (the safe way to publish, see `app.core.repository`), waits until the service answers with it, removes
the previous version directory, and reads the service's resident memory once the old version is released.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from app.core import repository
from stress.process import ROOT, service


def _publish(source: Path, task_dir: Path, version: int) -> None:
    staging = task_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    meta = json.loads((staging / "metadata.json").read_text())
    (staging / "metadata.json").write_text(json.dumps({**meta, "version": version}, indent=2))
    staging.rename(task_dir / str(version))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--poll-s", type=float, default=0.5)
    args = parser.parse_args()
    source = repository.discover(args.model_dir)[args.task]
    photo = next((ROOT.parent / "shared" / "datasets" / "flower_photos" / "tulips").glob("*.jpg")).read_bytes()
    with tempfile.TemporaryDirectory(prefix="reload-") as tmp:
        root = Path(tmp)
        task_dir = root / args.task
        task_dir.mkdir()
        _publish(source, task_dir, 1)
        env = {"APP_MODEL_DIR": str(root), "APP_MODEL_POLL_S": str(args.poll_s), "APP_LOG_LEVEL": "warning"}
        with service(env) as live:
            result = _cycles(live.url, args.task, task_dir, source, photo, args, live.rss_mb)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["failed"] == 0 and not result["unknown_versions"] else 1)


def _cycles(url: str, task: str, task_dir: Path, source: Path, photo: bytes, args: Any, rss: Any) -> dict[str, Any]:
    started = time.monotonic()
    versions: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    published = {1}

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"/predict/{task}", files={"file": ("t.jpg", photo)})
                    status = str(response.status_code)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                except httpx.HTTPError as error:
                    status, version = type(error).__name__, None
                with lock:
                    statuses[status] += 1
                    if version is not None:
                        versions[version] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    series = [{"cycle": 0, "version": 1, "rss_mb": rss()}]
    transcript = [
        f"t={time.monotonic() - started:6.2f}s serving v1 to {args.clients} clients, RSS {series[0]['rss_mb']} MB"
    ]
    with httpx.Client(base_url=url, timeout=10) as http:
        for cycle in range(1, args.cycles + 1):
            version = cycle + 1
            published_at = time.monotonic()
            _publish(source, task_dir, version)
            published.add(version)
            transcript.append(f"t={published_at - started:6.2f}s published v{version}")
            while http.get(f"/models/{task}").json().get("version") != version:
                time.sleep(0.05)
            switched_at = time.monotonic()
            shutil.rmtree(task_dir / str(version - 1))
            time.sleep(1.5)  # the old version is released once its last request returns
            series.append(
                {"cycle": cycle, "version": version, "rss_mb": rss(), "switch_s": round(switched_at - published_at, 2)}
            )
            transcript.append(
                f"t={switched_at - started:6.2f}s v{version} answers (switch {switched_at - published_at:.2f}s after "
                f"publishing); v{version - 1} removed; RSS {series[-1]['rss_mb']} MB; {sum(statuses.values())} requests so far"
            )
    stop.set()
    for thread in threads:
        thread.join()
    failed = sum(n for s, n in statuses.items() if s != "200")
    transcript.append(f"t={time.monotonic() - started:6.2f}s done: {dict(statuses)}")
    for line in transcript:
        print(line, file=sys.stderr)
    return {
        "task": task,
        "source": str(source),
        "cycles": args.cycles,
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "failed": failed,
        "answers_by_version": {str(k): v for k, v in sorted(versions.items())},
        "unknown_versions": sorted(set(versions) - published),
        "rss_series_mb": [row["rss_mb"] for row in series],
        "switch_s": [row.get("switch_s") for row in series[1:]],
        "transcript": transcript,
    }


if __name__ == "__main__":
    main()
