"""A closed-loop HTTP/1.1 load generator: `concurrency` clients, each on its own keep-alive connection,
sending pre-encoded requests back to back for `duration_s` seconds after a warm-up: multipart uploads
(`--body multipart`, the field named by `--field`) or the v1 JSON protocol of TF Serving and KServe with
base64 image bytes (`--body v1-b64`: `{"instances": [{"b64": ...}]}`).

Written on asyncio + uvloop with raw sockets (no HTTP client library): per request it only writes
pre-built bytes and parses a status line and Content-Length, so it costs far less CPU than the server
it measures (its own CPU time is reported). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import time
import uuid
from pathlib import Path

import numpy as np
import uvloop


def multipart_request(host: str, port: int, path: str, field: str, name: str, data: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


def v1_b64_request(host: str, port: int, path: str, data: bytes) -> bytes:
    body = json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, close, chunked = 0, False, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "connection" and value.strip().lower() == "close":
            close = True
        elif key == "transfer-encoding" and "chunked" in value.lower():
            chunked = True  # Ray Serve's proxy streams its answers
    if chunked:
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)  # the chunk and its CRLF
        while await reader.readline() not in (b"\r\n", b""):  # trailers, then the blank line
            pass
    elif length:
        await reader.readexactly(length)
    return status, close


async def _client(
    host: str, port: int, requests: list[bytes], start: float, end: float, out: list[tuple[float, int]]
) -> None:
    index = random.randrange(len(requests))
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while (now := time.perf_counter()) < end:
        if connection is None:
            connection = await asyncio.open_connection(host, port)
        reader, writer = connection
        request = requests[index % len(requests)]
        index += 1
        sent = time.perf_counter()
        try:
            writer.write(request)
            await writer.drain()
            status, close = await _read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            status, close = 0, True  # 0: connection error
        if sent >= start:
            out.append((time.perf_counter() - sent, status))
        if close:
            writer.close()
            connection = None
        del now
    if connection is not None:
        connection[1].close()


def summarize(samples: list[tuple[float, int]], seconds: float) -> dict[str, object]:
    statuses: dict[str, int] = {}
    for _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = np.array([latency for latency, status in samples if status == 200]) * 1000
    every = np.array([latency for latency, _ in samples]) * 1000

    def pct(values: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values.size else None

    return {
        "requests": len(samples),
        "answered_200": int(ok.size),
        "statuses": statuses,
        "errors_other_than_503": sum(n for s, n in statuses.items() if s not in ("200", "503")),
        "images_per_s": round(ok.size / seconds, 1),
        "p50_ms": pct(ok, 50),
        "p95_ms": pct(ok, 95),
        "p99_ms": pct(ok, 99),
        "p99_all_ms": pct(every, 99),
    }


async def run(
    url: str,
    field: str,
    photos: list[Path],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    body: str = "multipart",
) -> dict[str, object]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port_text = hostport.partition(":")
    port = int(port_text or 80)
    if body == "v1-b64":
        requests = [v1_b64_request(host, port, "/" + path, p.read_bytes()) for p in photos]
    else:
        requests = [multipart_request(host, port, "/" + path, field, p.name, p.read_bytes()) for p in photos]
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    samples: list[tuple[float, int]] = []
    cpu_before = os.times()
    await asyncio.gather(*(_client(host, port, requests, start, end, samples) for _ in range(concurrency)))
    cpu = os.times()
    result = summarize(samples, duration_s)
    result["concurrency"] = concurrency
    result["loadgen_cpu_s"] = round((cpu.user - cpu_before.user) + (cpu.system - cpu_before.system), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--field", default="file", help="multipart field of the image")
    parser.add_argument("--body", choices=("multipart", "v1-b64"), default="multipart")
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--warmup-s", type=float, default=2)
    args = parser.parse_args()
    uvloop.install()
    print(
        json.dumps(
            asyncio.run(
                run(args.url, args.field, args.photos, args.concurrency, args.duration_s, args.warmup_s, args.body)
            )
        )
    )


if __name__ == "__main__":
    main()
