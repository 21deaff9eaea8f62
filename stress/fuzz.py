"""Fuzzed images: seeds of every supported format and mode, mutated (bytes flipped, cut, repeated,
inserted, header fields rewritten), through `load_image` and through a live service. `load_image` must
raise nothing but the documented client errors; the service must never answer 5xx.

    python -m stress.fuzz --count 10000
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from app.core.errors import ClientError
from app.core.imaging import ImageSpec, load_image
from stress.process import ROOT, service


def seeds() -> list[tuple[str, bytes]]:
    """Small valid images in every format and the modes that take different decoding paths."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    images = {
        "rgb": noise,
        "rgba": noise.convert("RGBA"),
        "gray": noise.convert("L"),
        "palette": noise.convert("P"),
        "bilevel": noise.convert("1"),
        "gray16": Image.fromarray(rng.integers(0, 65535, (48, 64), dtype=np.uint16)),
    }
    out = []
    for fmt, modes in {
        "PNG": ("rgb", "rgba", "gray", "palette", "bilevel", "gray16"),
        "JPEG": ("rgb", "gray"),
        "GIF": ("palette",),
        "WEBP": ("rgb", "rgba"),
        "BMP": ("rgb", "gray", "palette", "bilevel"),
    }.items():
        for mode in modes:
            buffer = io.BytesIO()
            images[mode].save(buffer, format=fmt)
            out.append((f"{mode}.{fmt.lower()}", buffer.getvalue()))
    progressive = io.BytesIO()
    noise.save(progressive, format="JPEG", progressive=True)
    out.append(("progressive.jpeg", progressive.getvalue()))
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = int(rng.integers(0, 6))
    if kind == 0:  # flip a few bytes
        for position in rng.integers(0, len(out), int(rng.integers(1, 9))):
            out[position] = int(rng.integers(0, 256))
    elif kind == 1:  # cut
        del out[int(rng.integers(1, len(out))) :]
    elif kind == 2:  # insert garbage
        position = int(rng.integers(0, len(out)))
        out[position:position] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 3:  # repeat a slice
        start = int(rng.integers(0, len(out)))
        out += out[start : start + int(rng.integers(1, 256))] * int(rng.integers(1, 8))
    elif kind == 4:  # rewrite a 32-bit field near the start (sizes, lengths, offsets of headers)
        position = int(rng.integers(0, min(64, len(out) - 4)))
        out[position : position + 4] = struct.pack(">I", int(rng.choice([0, 1, 65535, 2**31 - 1, 2**32 - 1])))
    else:  # rewrite a 16-bit field near the start
        position = int(rng.integers(0, min(64, len(out) - 2)))
        out[position : position + 2] = struct.pack("<H", int(rng.choice([0, 1, 255, 32767, 65535])))
    return bytes(out)


def mutations(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """`count` mutated images, cycling over the seeds, reproducibly for `seed`."""
    rng = np.random.default_rng(seed)
    originals = seeds()
    for i in range(count):
        name, data = originals[i % len(originals)]
        yield f"{i}-{name}", mutate(data, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--task", default="flowers")
    args = parser.parse_args()
    images = list(mutations(args.count, args.seed))
    spec = ImageSpec(224, 224, 3)
    direct: Counter[str] = Counter()
    started = time.perf_counter()
    for _, data in images:
        try:
            load_image(data, spec)
            direct["decoded"] += 1
        except ClientError as error:
            direct[type(error).__name__] += 1
        except Exception as error:  # exactly what this command looks for
            direct[f"UNEXPECTED {type(error).__name__}"] += 1
    direct_s = time.perf_counter() - started
    api: Counter[str] = Counter()
    env = {"APP_MODEL_DIR": str(args.model_dir), "APP_LOG_LEVEL": "error"}
    with service(env) as live, httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        for name, data in images:
            api[str(client.post(f"{live.url}/predict/{args.task}", files={"file": (name, data)}).status_code)] += 1
        api_s = time.perf_counter() - started
    report = {
        "images": len(images),
        "load_image": dict(direct),
        "load_image_seconds": round(direct_s, 1),
        "api_statuses": dict(api),
        "api_seconds": round(api_s, 1),
        "unexpected_exceptions": sum(n for k, n in direct.items() if k.startswith("UNEXPECTED")),
        "server_errors": sum(n for k, n in api.items() if k.startswith("5")),
    }
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["unexpected_exceptions"] == report["server_errors"] == 0 else 1)


if __name__ == "__main__":
    main()
