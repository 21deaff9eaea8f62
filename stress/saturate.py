"""Health checks while the service is saturated with every kind of request at once: photos to classify,
large JSON tensors, decode bombs. The load runs in its own process, so the probe measures the service
and not the load generator's GIL.

    python -m stress.saturate                      # the committed models; prints the probe latencies
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.core import repository
from stress.process import ROOT, service

MIX = {"photos": 8, "json": 3, "bombs": 2}


def _load(url: str, task: str, side: int, seconds: float) -> None:
    """Loop every kind of request for `seconds` (runs in a child process)."""
    from stress.bombs import _encode, png16_gray

    photo = _encode(_noise_image(640, 480), "JPEG")
    count = 2**20 * 3 // (side * side * 3 * 4)  # about 3 MB of JSON
    pixels = np.random.default_rng(0).integers(0, 256, (count, side, side, 3)).tolist()
    tensor = {"name": "images", "shape": [count, side, side, 3], "datatype": "UINT8", "data": pixels}
    big_json = json.dumps({"inputs": [tensor]}).encode()
    bomb = png16_gray()
    deadline = time.monotonic() + seconds
    senders: dict[str, Callable[[httpx.Client], object]] = {
        "photos": lambda h: h.post(f"{url}/predict/{task}", files={"file": ("photo.jpg", photo)}),
        "json": lambda h: h.post(f"{url}/v2/models/{task}/infer", content=big_json),
        "bombs": lambda h: h.post(f"{url}/predict/{task}", files={"file": ("bomb.png", bomb)}),
    }

    def loop(send: Callable[[httpx.Client], object]) -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    send(http)

    threads = [threading.Thread(target=loop, args=(senders[k],)) for k, n in MIX.items() for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _noise_image(width: int, height: int) -> Any:
    from PIL import Image

    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (height, width, 3), dtype=np.uint8))


def probe_under_load(url: str, task: str, side: int, *, probes: int = 60, warm_s: float = 2.0) -> dict[str, Any]:
    """Latencies (ms) of GET /healthz and /readyz, alternately every 50 ms, while `_load` runs."""
    seconds = warm_s + probes * 0.06 + 2
    loader = multiprocessing.get_context("spawn").Process(target=_load, args=(url, task, side, seconds))
    loader.start()
    time.sleep(warm_s)
    latencies: list[float] = []
    statuses: list[int] = []
    with httpx.Client(timeout=10) as probe:
        for i in range(probes):
            started = time.perf_counter()
            statuses.append(probe.get(f"{url}/{'healthz' if i % 2 else 'readyz'}").status_code)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    loader.join()
    return {
        "mix": MIX,
        "probes": probes,
        "statuses": sorted(set(statuses)),
        "median_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(sorted(latencies)[int(0.9 * probes)], 1),
        "max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    meta = json.loads((repository.discover(args.model_dir)[args.task] / "metadata.json").read_text())
    env = {"APP_MODEL_DIR": str(args.model_dir), "APP_LOG_LEVEL": "error"}
    with service(env) as live:
        result = probe_under_load(live.url, args.task, meta["input"]["height"], probes=args.probes)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["max_ms"] < 100 and result["statuses"] == [200] else 1)


if __name__ == "__main__":
    main()
