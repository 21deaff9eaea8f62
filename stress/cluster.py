"""Several replicas behind a real load balancer, on loopback: HAProxy (Debian's package) configured the
way a Kubernetes Service with readiness gating behaves. It health-checks `/readyz` every 500 ms and sends
nothing to a replica that is loading or draining (one failed check takes it out, two good ones put it
back), and it retries a request whose connection failed or was closed without an answer on another
replica. That retry is safe because a prediction has no side effect: running it twice changes nothing
but the CPU spent.

Scenarios, each under continuous load from `--clients` clients:
- `rolling`: SIGTERM each replica in turn, wait for it to exit, start it again, wait until HAProxy
  routes to it: no request may fail.
- `kill` and `kill-noretry`: SIGKILL one replica. HAProxy always retries a failed connection on another
  replica, so without more (`kill-noretry`) only the requests in flight on the killed replica fail (a 502 for
  the first request on a client connection, a silently closed connection for the later ones); with
  the retry of requests closed without an answer (`kill`), none does, unless the kill lands between an
  answer's headers and its body (uvicorn writes them separately; HAProxy cannot retry a response it has
  begun to forward): at most that one answer, seen once in four runs of the test.
- `publish`: a new model version published to the directory every replica polls: no failure, and every
  answer names a version that existed.
- `throughput`: images per second through HAProxy with one replica, then with three, and each
  replica's resident memory after that load.

    python -m stress.cluster                       # every scenario, flowers, 3 replicas, 16 clients
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from app.core import repository
from stress.process import ROOT, Live, free_port, service

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
_CONFIG = """
global
    maxconn 2048
    stats socket {socket} mode 600 level admin
    # Requests are kept in the buffer so that they can be retried: 256 KB holds a photo upload.
    tune.bufsize 262144

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    option http-buffer-request
    {retry}

frontend classify
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 2
{servers}
"""
# Connection failures are retried on another replica (HAProxy's default retry-on is conn-failure); with
# `retry_cut`, so are requests whose replica closed the connection without answering (SIGKILL mid-request).
_RETRY_CONNECT = "retries 3\n    option redispatch 1"
_RETRY_CUT = _RETRY_CONNECT + "\n    retry-on conn-failure empty-response response-timeout"


class Cluster:
    """`replicas` services on loopback ports behind one HAProxy."""

    def __init__(self, env: dict[str, str], replicas: int, workdir: Path, *, retry_cut: bool = True) -> None:
        self.env = env
        self.workdir = workdir
        self.retry_cut = retry_cut
        self.ports = [free_port() for _ in range(replicas)]
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        self.replicas: dict[int, Live] = {}
        self._stacks: dict[int, contextlib.ExitStack] = {}
        self._haproxy: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        for index in range(len(self.ports)):
            self.start_replica(index)
        config = self.workdir / "haproxy.cfg"
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port}" for i, port in enumerate(self.ports))
        retry = _RETRY_CUT if self.retry_cut else _RETRY_CONNECT
        config.write_text(_CONFIG.format(socket=self.socket, retry=retry, port=self.port, servers=servers))
        self._haproxy = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_until(lambda: self.states() == ["UP"] * len(self.ports), 30)

    def start_replica(self, index: int) -> None:
        stack = contextlib.ExitStack()
        env = {**self.env, "APP_PORT": str(self.ports[index])}
        log = self.workdir / f"replica-{index}.log"
        self.replicas[index] = stack.enter_context(service(env, port=self.ports[index], log_path=log))
        self._stacks[index] = stack

    def stop_replica(self, index: int, sig: int) -> None:
        live = self.replicas.pop(index)
        live.signal(sig)
        live.process.wait(120)
        self._stacks.pop(index).close()

    def states(self) -> list[str]:
        """Each server's status as HAProxy sees it (UP, DOWN, ...), from its stats socket ([] until the
        socket exists)."""
        if self._haproxy is not None and self._haproxy.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self._haproxy.returncode}")
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.socket))
            except OSError:
                return []
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
        return [row[17] for row in rows if row[0] == "replicas" and row[1].startswith("r")]

    def wait_until(self, condition: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy states {self.states()}")
            time.sleep(0.1)

    def close(self) -> None:
        if self._haproxy is not None:
            self._haproxy.terminate()
            self._haproxy.wait(10)
        for index in list(self._stacks):
            self._stacks.pop(index).close()


class Load:
    """`clients` threads classifying `photo` through the cluster until stopped; counts every outcome."""

    def __init__(self, url: str, task: str, photo: bytes, clients: int) -> None:
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(url, task, photo), daemon=True) for _ in range(clients)
        ]
        self.started = 0.0
        self.seconds = 0.0

    def _client(self, url: str, task: str, photo: bytes) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"/predict/{task}", files={"file": ("photo.jpg", photo)})
                    outcome = str(response.status_code)
                    version = response.json()["model_version"] if response.status_code == 200 else None
                except httpx.HTTPError as error:
                    outcome, version = type(error).__name__, None
                with self._lock:
                    self.outcomes[outcome] += 1
                    if version is not None:
                        self.versions[version] += 1

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.seconds = time.monotonic() - self.started

    def report(self) -> dict[str, Any]:
        answered = self.outcomes["200"]
        return {
            "requests": sum(self.outcomes.values()),
            "outcomes": dict(self.outcomes),
            "failed": sum(n for k, n in self.outcomes.items() if k != "200"),
            "versions": {str(k): v for k, v in sorted(self.versions.items())},
            "images_per_s": round(answered / self.seconds, 1) if self.seconds else None,
        }


@contextlib.contextmanager
def _cluster(env: dict[str, str], replicas: int, *, retry_cut: bool = True) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="cluster-") as tmp:
        cluster = Cluster(env, replicas, Path(tmp), retry_cut=retry_cut)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()


def rolling(env: dict[str, str], task: str, photo: bytes, clients: int, replicas: int = 3) -> dict[str, Any]:
    with _cluster(env, replicas) as cluster, Load(cluster.url, task, photo, clients) as load:
        time.sleep(2)
        for index in range(replicas):
            cluster.stop_replica(index, signal.SIGTERM)
            cluster.start_replica(index)
            cluster.wait_until(lambda: cluster.states() == ["UP"] * replicas, 120)
        time.sleep(2)
    return load.report()


def kill(
    env: dict[str, str], task: str, photo: bytes, clients: int, *, retry_cut: bool, replicas: int = 3
) -> dict[str, Any]:
    with _cluster(env, replicas, retry_cut=retry_cut) as cluster, Load(cluster.url, task, photo, clients) as load:
        time.sleep(3)
        cluster.stop_replica(0, signal.SIGKILL)
        time.sleep(4)
    return load.report()


def publish(
    env: dict[str, str], task: str, photo: bytes, clients: int, model_dir: Path, replicas: int = 3
) -> dict[str, Any]:
    versions_before = sorted(repository.Repository(model_dir).layout()[task])
    with _cluster(env, replicas) as cluster, Load(cluster.url, task, photo, clients) as load:
        time.sleep(2)
        new = versions_before[-1] + 1
        staging = model_dir / task / f".staging-{new}"
        shutil.copytree(model_dir / task / str(versions_before[-1]), staging)
        meta = json.loads((staging / "metadata.json").read_text())
        (staging / "metadata.json").write_text(json.dumps({**meta, "version": new}))
        staging.rename(model_dir / task / str(new))
        with httpx.Client() as http:
            for port in cluster.ports:  # every replica switched
                cluster.wait_until(
                    lambda p=port: http.get(f"http://127.0.0.1:{p}/models/{task}").json()["version"] == new, 120
                )
        time.sleep(2)
    result = load.report()
    result["published"] = new
    result["unknown_versions"] = sorted(set(load.versions) - {*versions_before, new})
    return result


def throughput(env: dict[str, str], task: str, photo: bytes, clients: int, seconds: float) -> dict[str, Any]:
    result = {}
    for replicas in (1, 3):
        with _cluster(env, replicas) as cluster:
            with Load(cluster.url, task, photo, clients):
                time.sleep(2)  # warm-up, not counted
            with Load(cluster.url, task, photo, clients) as load:
                time.sleep(seconds)
            report = load.report()
            # for the sizing rule: what one replica holds after serving under load (every model loaded)
            report["replica_rss_mb"] = [round(live.rss_mb(), 1) for live in cluster.replicas.values()]
            result[f"{replicas} replica(s)"] = report
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20, help="of each throughput measurement")
    parser.add_argument("--scenario", nargs="*", default=["rolling", "kill", "kill-noretry", "publish", "throughput"])
    args = parser.parse_args()
    photo = next((ROOT.parent / "shared" / "datasets" / "flower_photos" / "roses").glob("*.jpg")).read_bytes()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cluster-models-") as tmp:
        models = Path(tmp)
        shutil.copytree(args.model_dir / args.task, models / args.task)  # only this task: quicker starts
        env = {"APP_MODEL_DIR": str(models), "APP_LOG_LEVEL": "warning", "APP_DRAIN_S": "2", "APP_MODEL_POLL_S": "0.5"}
        for scenario in args.scenario:
            print(f"scenario {scenario} ...", file=sys.stderr)
            if scenario == "rolling":
                results[scenario] = rolling(env, args.task, photo, args.clients)
            elif scenario in ("kill", "kill-noretry"):
                results[scenario] = kill(env, args.task, photo, args.clients, retry_cut=scenario == "kill")
            elif scenario == "publish":
                results[scenario] = publish(env, args.task, photo, args.clients, models)
            elif scenario == "throughput":
                results[scenario] = throughput(env, args.task, photo, args.clients, args.seconds)
            print(json.dumps(results[scenario]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
