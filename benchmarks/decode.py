"""What JPEG draft mode buys: decoding a 12-megapixel photo to a 224x224 model input, with the service's
`load_image` (draft) and with a full decode followed by the same conversion and resize.

    python -m benchmarks.decode
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from app.imaging import ImageSpec, load_image
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


def main() -> None:
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
            }
        )
    )


if __name__ == "__main__":
    main()
