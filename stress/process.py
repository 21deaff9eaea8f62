"""The service (or a peer) as a separate process on loopback, with its resident memory read from /proc.

Shared by the stress commands, the benchmarks and the live tests, so all of them start, wait for and
measure a server the same way.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None  # loaded before any fork


def _die_with_parent() -> None:
    """In the child: SIGTERM when the thread that started it dies, however it dies. A stress command
    stopped with SIGTERM or SIGKILL never reaches its `finally`, and left a service using a core behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status_kb(pid: int, field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


def _family(pid: int) -> list[int]:
    """`pid` and its direct children (the service's JSON parser process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid] + ([int(p) for p in children.read_text().split()] if children.exists() else [])
    return [p for p in found if Path(f"/proc/{p}").exists()]


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its direct children, from /proc."""
    return round(sum(_status_kb(p, "VmRSS") for p in _family(pid)) / 1024, 1)


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) used so far by `pid` and its direct children, from /proc."""
    total = 0
    for each in _family(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Live:
    """A running server: its base URL and process."""

    url: str
    process: subprocess.Popen[bytes]
    start_to_ready_s: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def reset_peak(self) -> None:
        """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
        for pid in _family(self.pid):
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_mb(self) -> float:
        """The highest resident memory since the last `reset_peak`, summed over the process and its
        children (each one's own peak: an upper bound of their peak together)."""
        return round(sum(_status_kb(p, "VmHWM") for p in _family(self.pid)) / 1024, 1)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)


@contextmanager
def service(
    env: dict[str, str] | None = None,
    *,
    command: list[str] | None = None,
    port: int | None = None,
    cwd: Path = ROOT,
    ready_path: str = "/readyz",
    timeout_s: float = 300,
    log_path: Path | None = None,
) -> Iterator[Live]:
    """Start `command` (default: `python -m app`; a peer's command must listen on `port`) on a loopback
    port with `env`, wait until `ready_path` answers 200, yield it, then stop it (SIGTERM, then SIGKILL
    after 30 s)."""
    port = port or free_port()
    # A free gRPC port too: the default (8001) would let only one service run at a time.
    env = {"APP_HOST": "127.0.0.1", "APP_PORT": str(port), "APP_GRPC_PORT": str(free_port()), **(env or {})}
    command = command or [sys.executable, "-m", "app"]
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}; see {log_path or 'its log'}")
            try:
                if urllib.request.urlopen(url + ready_path, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{command} not ready after {timeout_s} s")
            time.sleep(0.1)
        yield Live(url, process, round(time.perf_counter() - started, 2))
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
