"""SIGTERM under load: does the service drain without losing an accepted request?

Clients loop on `POST /predict/<task>` over keep-alive connections while a prober polls `/readyz`. The
service gets SIGTERM. The clients stand for a load balancer's view of the world: they keep sending for
`lb_delay_s` after readiness turns 503 (the time a balancer takes to notice; it must be shorter than the
service's `APP_DRAIN_S`), then send nothing new, while requests already sent finish. Every response must
be a 200, and no request may be cut (a connection reset or closed without an answer).

    python -m stress.drain                     # 16 clients, the committed models
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from stress.process import ROOT, Live, service


def drain_under_load(
    live: Live, task: str, image: bytes, *, clients: int = 16, warm_s: float = 1.0, lb_delay_s: float = 1.0
) -> dict[str, Any]:
    """Run the scenario against `live`; returns counts and timings (see the module docstring)."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop_sending = threading.Event()
    ready_503_at: list[float] = []
    signalled_at = 0.0

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop_sending.is_set():
                try:
                    response = http.post(f"{live.url}/predict/{task}", files={"file": ("image.jpg", image)})
                    outcome = str(response.status_code)
                except httpx.ConnectError:
                    outcome = "refused"  # never accepted: nothing was lost
                except httpx.HTTPError as error:
                    outcome = f"cut ({type(error).__name__})"
                with lock:
                    outcomes[outcome] += 1

    def prober() -> None:
        with httpx.Client(timeout=5) as http:
            while not ready_503_at:
                try:
                    if http.get(f"{live.url}/readyz").status_code == 503 and signalled_at:
                        ready_503_at.append(time.monotonic())
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    probe = threading.Thread(target=prober, daemon=True)
    for thread in [*threads, probe]:
        thread.start()
    time.sleep(warm_s)
    signalled_at = time.monotonic()
    live.signal(signal.SIGTERM)
    probe.join(10)
    if ready_503_at:
        time.sleep(max(0.0, ready_503_at[0] + lb_delay_s - time.monotonic()))
    stop_sending.set()
    for thread in threads:
        thread.join(60)
    exit_code = live.process.wait(60)
    stopped_at = time.monotonic()
    failed = sum(n for outcome, n in outcomes.items() if outcome not in ("200", "refused"))
    return {
        "clients": clients,
        "outcomes": dict(outcomes),
        "answered_200": outcomes["200"],
        "failed": failed,
        "refused": outcomes["refused"],
        "readiness_503_after_s": round(ready_503_at[0] - signalled_at, 3) if ready_503_at else None,
        "stopped_after_s": round(stopped_at - signalled_at, 2),
        "exit_code": exit_code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--drain-s", type=float, default=5.0)
    parser.add_argument("--lb-delay-s", type=float, default=2.0)
    args = parser.parse_args()
    photo = next((ROOT.parent / "shared" / "datasets" / "flower_photos" / "daisy").glob("*.jpg"))
    env = {"APP_MODEL_DIR": str(args.model_dir), "APP_DRAIN_S": str(args.drain_s), "APP_LOG_LEVEL": "warning"}
    with service(env) as live:
        result = drain_under_load(live, args.task, photo.read_bytes(), clients=args.clients, lb_delay_s=args.lb_delay_s)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["failed"] == 0 else 1)


if __name__ == "__main__":
    main()
