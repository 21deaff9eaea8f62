"""Resource bombs against a live service: small uploads that decode into huge images, corrupt images,
oversized JSON. Per bomb: the answer, the time, and the service's resident memory before, at its peak
and one second after. Then the latency of a normal request sent while three 2.5 MB bomb requests run.

    python -m stress.bombs                                   # this checkout's service and models
    python -m stress.bombs --app-dir ../old-checkout         # the same bombs against another checkout

Every bomb is generated here, deterministically.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from stress.process import ROOT, service

Files = list[tuple[str, bytes]]


# ------------------------------------------------------------------------------------------ the bombs
def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png16_gray() -> bytes:
    """6324x6324 16-bit grayscale, one flat value: 78 KB, 40 megapixels (under the pixel limit)."""
    return _encode(Image.fromarray(np.full((6324, 6324), 1000, np.uint16)), "PNG", optimize=True)


def webp_flat() -> bytes:
    """6324x6324 lossless WebP of one colour: 1.6 KB."""
    return _encode(Image.new("RGB", (6324, 6324), (30, 120, 200)), "WEBP", lossless=True)


def png_rgba() -> bytes:
    """6000x6000 RGBA with transparency: 150 KB."""
    return _encode(Image.new("RGBA", (6000, 6000), (10, 20, 30, 40)), "PNG", optimize=True)


def gif_flat() -> bytes:
    return _encode(Image.new("P", (6000, 6000), 3), "GIF")


def bmp_rle8() -> bytes:
    """6000x6000 8-bit BMP, run-length encoded: 290 KB of runs for 36 megapixels."""
    width = height = 6000
    row = b"".join(struct.pack("BB", 250, 7) for _ in range(width // 250)) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = b"".join(struct.pack("BBBB", i, i, i, 0) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def png_tall() -> bytes:
    """A 64x64 PNG whose header was edited to say 65535 rows: most rows are missing (corrupt)."""
    data = _encode(Image.new("RGB", (64, 64), (200, 10, 10)), "PNG")
    header = bytearray(data[16:29])
    header[4:8] = struct.pack(">I", 65535)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)))
    return data[:16] + bytes(header) + crc + data[33:]


def gif_truncated() -> bytes:
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "GIF")
    return data[: len(data) - 40]


def pixel_flood() -> bytes:
    """A 1-bit PNG of 20000x20000 (400 megapixels): 50 KB."""
    return _encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)


def jpeg_40mp() -> bytes:
    """A 7300x5475 noisy JPEG (40 megapixels): decoded at 1/8 scale thanks to DCT scaling."""
    noise = np.random.default_rng(1).integers(0, 255, (5475 // 8, 7300 // 8, 3), np.uint8)
    return _encode(Image.fromarray(noise).resize((7300, 5475)), "JPEG", quality=70)


def uint8_json(count: int) -> bytes:
    """A v2 infer body with a UINT8 tensor of `count` 224x224 images, as JSON (~0.7 MB per image)."""
    pixels = np.random.default_rng(2).integers(0, 256, (count, 224, 224, 3)).tolist()
    tensor = {"name": "images", "shape": [count, 224, 224, 3], "datatype": "UINT8", "data": pixels}
    return json.dumps({"inputs": [tensor]}).encode()


def _multipart(make: Callable[[], bytes], name: str, count: int = 1) -> Callable[[], Files]:
    return lambda: [(f"{name}-{i}", data) for data in [make()] for i in range(count)]


BOMBS: dict[str, tuple[str, Callable[[], Files] | Callable[[], bytes]]] = {
    "png16_gray_6324": ("predict", _multipart(png16_gray, "gray16.png")),
    "webp_flat_6324": ("predict", _multipart(webp_flat, "flat.webp")),
    "png_rgba_6000": ("predict", _multipart(png_rgba, "rgba.png")),
    "gif_flat_6000": ("predict", _multipart(gif_flat, "flat.gif")),
    "bmp_rle8_6000": ("predict", _multipart(bmp_rle8, "rle.bmp")),
    "jpeg_40mp": ("predict", _multipart(jpeg_40mp, "big.jpg")),
    "pixel_flood_400mp": ("predict", _multipart(pixel_flood, "flood.png")),
    "png16_gray_6324_x32": ("predict", _multipart(png16_gray, "gray16.png", 32)),
    "png_tall_corrupt": ("predict", _multipart(png_tall, "tall.png")),
    "gif_truncated": ("predict", _multipart(gif_truncated, "cut.gif")),
    "v2_uint8_json_3.5mb": ("infer", lambda: uint8_json(5)),
    "v2_uint8_json_19mb": ("infer", lambda: uint8_json(28)),
}


# --------------------------------------------------------------------------------------- measuring
def _send(client: httpx.Client, base: str, task: str, kind: str, payload: Files | bytes) -> httpx.Response:
    if kind == "infer":
        assert isinstance(payload, bytes)
        return client.post(
            f"{base}/v2/models/{task}/infer", content=payload, headers={"content-type": "application/json"}
        )
    assert isinstance(payload, list)
    return client.post(f"{base}/predict/{task}", files=[("file", item) for item in payload])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="checkout whose `python -m app` is attacked")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the checkout's models/")
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--trials", type=int, default=5, help="normal requests sent beside three bomb requests")
    parser.add_argument("--service-env", nargs="*", default=[], help="KEY=VALUE for the service (LD_PRELOAD=...)")
    parser.add_argument("--phases", nargs="*", default=["bombs", "burst", "beside"], help="which measurements to run")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "stress" / "bombs.json")
    args = parser.parse_args()
    photo = next((ROOT.parent / "shared" / "datasets" / "flower_photos" / "roses").glob("*.jpg"), None)
    normal = photo.read_bytes() if photo else _encode(Image.new("RGB", (400, 300), (200, 40, 60)), "JPEG")
    payloads = {name: (kind, make()) for name, (kind, make) in BOMBS.items()}
    env = {"APP_MODEL_DIR": str(args.model_dir or args.app_dir / "models"), "APP_LOG_LEVEL": "warning"}
    env.update(item.split("=", 1) for item in args.service_env)  # type: ignore[misc]
    report: dict[str, Any] = {"app_dir": str(args.app_dir.resolve()), "service_env": args.service_env, "bombs": {}}
    with service(env, cwd=args.app_dir) as live, httpx.Client(timeout=120) as client:
        report["rss_ready_mb"] = live.rss_mb()
        overall_peak = live.peak_mb()
        for name, (kind, payload) in payloads.items() if "bombs" in args.phases else []:
            size = len(payload) if isinstance(payload, bytes) else sum(len(d) for _, d in payload)
            live.reset_peak()
            before = live.rss_mb()
            started = time.perf_counter()
            try:
                response = _send(client, live.url, args.task, kind, payload)
                answer = f"{response.status_code} {response.text[:90]}"
            except httpx.HTTPError as error:
                answer = f"{type(error).__name__}: {error}"
            seconds = time.perf_counter() - started
            peak = live.peak_mb()
            time.sleep(1)
            row = {
                "request_bytes": size,
                "answer": answer,
                "seconds": round(seconds, 3),
                "rss_before_mb": before,
                "rss_peak_mb": peak,
                "rss_after_mb": live.rss_mb(),
                "added_mb": round(peak - before, 1),
            }
            overall_peak = max(overall_peak, peak)
            report["bombs"][name] = row
            print(
                f"{name:22} {size:>10,} B  {row['seconds']:7.3f} s  {before:7.0f} -> {peak:7.0f} -> "
                f"{row['rss_after_mb']:7.0f} MB  {answer[:70]}",
                file=sys.stderr,
            )
        if "burst" in args.phases:
            live.reset_peak()
            burst = _burst(live.url, args.task, jpeg_18mb(), clients=80)
            burst["peak_rss_mb"] = live.peak_mb()
            time.sleep(1)
            burst["rss_after_mb"] = live.rss_mb()
            report["burst"] = burst
            overall_peak = max(overall_peak, burst["peak_rss_mb"])
            print(f"burst: {burst}", file=sys.stderr)
        if "beside" in args.phases:
            live.reset_peak()
            beside = _beside_bombs(live.url, args.task, normal, payloads["png16_gray_6324_x32"][1], args.trials)
            beside["peak_rss_mb"] = live.peak_mb()
            report["beside_bombs"] = beside
            overall_peak = max(overall_peak, beside["peak_rss_mb"])
            print(f"beside: {beside}", file=sys.stderr)
        report["peak_rss_mb"] = overall_peak
        time.sleep(1)
        report["rss_end_mb"] = live.rss_mb()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))


def jpeg_18mb() -> bytes:
    """A valid 12-megapixel JPEG of 18.6 MB (noise at quality 98), just under the 20 MiB upload limit."""
    noise = np.random.default_rng(4).integers(0, 255, (3000, 4000, 3), np.uint8)
    return _encode(Image.fromarray(noise), "JPEG", quality=98)


def _burst(base: str, task: str, upload: bytes, clients: int) -> dict[str, Any]:
    """`clients` upload the same large photo at once: how many are admitted, and what it costs."""
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(timeout=120) as http:
            try:
                status = str(http.post(f"{base}/predict/{task}", files={"file": ("big.jpg", upload)}).status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
        with lock:
            statuses[status] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "upload_bytes": len(upload),
        "statuses": dict(statuses),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _beside_bombs(base: str, task: str, normal: bytes, bomb: Files | bytes, trials: int) -> dict[str, Any]:
    """Three clients send the 32-image bomb request while one normal photo is classified: its latency."""
    latencies: list[float] = []
    statuses: list[int | str] = []
    for _ in range(trials):
        stop = threading.Event()

        def attack(stop: threading.Event) -> None:
            with httpx.Client(timeout=120) as attacker:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        _send(attacker, base, task, "predict", bomb)

        attackers = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(3)]
        for thread in attackers:
            thread.start()
        time.sleep(1.0)  # the bombs are decoding
        with httpx.Client(timeout=60) as client:
            started = time.perf_counter()
            try:
                status: int | str = client.post(
                    f"{base}/predict/{task}", files={"file": ("rose.jpg", normal)}
                ).status_code
            except httpx.HTTPError as error:  # e.g. no answer within the client's 60 s
                status = type(error).__name__
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
        stop.set()
        for thread in attackers:
            thread.join()
    return {
        "trials": trials,
        "statuses": statuses,
        "latency_s": [round(x, 3) for x in latencies],
        "max_s": round(max(latencies), 3),
        "median_s": round(statistics.median(latencies), 3),
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"service: {report['app_dir']} {' '.join(report['service_env'])}; resident memory when ready "
        f"{report['rss_ready_mb']} MB",
        "",
        "| bomb | request bytes | answer | seconds | RSS before / peak / after (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["bombs"].items():
        answer = row["answer"].split(" ", 1)[0]
        lines.append(
            f"| {name} | {row['request_bytes']:,} | {answer} | {row['seconds']} | "
            f"{row['rss_before_mb']:.0f} / {row['rss_peak_mb']:.0f} / {row['rss_after_mb']:.0f} |"
        )
    lines.append("")
    if "beside_bombs" in report:
        beside = report["beside_bombs"]
        lines.append(
            f"normal request beside three 32-image bomb requests: max {beside['max_s']} s, median {beside['median_s']} s "
            f"over {beside['trials']} trials (statuses {beside['statuses']}); peak memory meanwhile {beside['peak_rss_mb']} MB"
        )
    if "burst" in report:
        burst = report["burst"]
        lines.append(
            f"{burst['clients']} clients uploading {burst['upload_bytes'] / 2**20:.0f} MiB at once: {burst['statuses']}, "
            f"peak {burst['peak_rss_mb']} MB, {burst['rss_after_mb']} MB after"
        )
    lines.append(f"peak resident memory: {report['peak_rss_mb']} MB; at the end: {report['rss_end_mb']} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
