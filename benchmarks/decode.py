"""The decode + resize cost per image, and what JPEG draft mode buys: a 12-megapixel photo to a 224x224
model input with the service's `load_image` (draft) and with a full decode followed by the same conversion
and resize; and `load_image` per image on the shared flower photos (what the benchmarks send).

    python -m benchmarks.decode [--photos-dir ../shared/datasets/flower_photos]

Measured beside it and not adopted: simplejpeg 1.9's DCT-scaled decode (the same libjpeg-turbo scaling
that Pillow's draft uses) was within 3% of `load_image` on both kinds of photo, with identical pixels.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from app.core.imaging import ImageSpec, load_image
from benchmarks.timing import median_ms

SPEC = ImageSpec(height=224, width=224, channels=3)


def _photo(width: int = 4000, height: int = 3000) -> bytes:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8))
    image = small.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _full_decode(data: bytes) -> np.ndarray:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return np.asarray(image.resize((SPEC.width, SPEC.height), Image.Resampling.BILINEAR))


def _per_image_ms(photos: list[bytes]) -> float:
    return round(median_ms(lambda: [load_image(data, SPEC) for data in photos], repeats=5) / len(photos), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flower_photos"
    parser.add_argument("--photos-dir", type=Path, default=root)
    parser.add_argument("--photos", type=int, default=100)
    args = parser.parse_args()
    paths = sorted(args.photos_dir.rglob("*.jpg"))
    shared = [p.read_bytes() for p in paths[:: max(1, len(paths) // args.photos)][: args.photos]]
    data = _photo()
    draft = median_ms(lambda d: load_image(d, SPEC), data)
    full = median_ms(_full_decode, data)
    print(
        json.dumps(
            {
                "photo": "4000x3000 JPEG q90",
                "bytes": len(data),
                "draft_ms": draft,
                "full_decode_ms": full,
                "speedup": round(full / draft, 1),
                "shared_photos": len(shared),
                "shared_photo_ms": _per_image_ms(shared) if shared else None,
            }
        )
    )


if __name__ == "__main__":
    main()
