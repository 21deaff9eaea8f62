"""Turn image file bytes into the uint8 array a model takes.

`load_image` is the single preprocessing function of the project: training decodes every dataset file
with it and the service decodes every upload with it, so the two cannot drift apart (same decoder, same
colour conversion, same resize). Its steps, in order:

1. Identify the format from the bytes (never from the file name); refuse what is not an image (415) and
   anything larger than `max_pixels` before a single pixel is decoded (413).
2. For JPEG, ask the decoder for a reduced-size draft (DCT scaling by 1/2, 1/4 or 1/8) that is still at
   least as large as the target in both directions, which makes a 12-megapixel photo decode several times
   faster without changing what the resize sees in a visible way.
3. Apply the EXIF orientation, take the first frame of animations.
4. Convert to RGB or grayscale: 16-bit and float images are scaled to 8 bits, CMYK is converted, and any
   transparency (RGBA, LA, palette with a transparent colour) is composited on white.
5. Resize to exactly (height, width) with Pillow's antialiased filter named by `resize` ("bilinear" by
   default), ignoring aspect ratio, as `keras.utils.image_dataset_from_directory` does.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImage, PayloadTooLarge, UnsupportedImageType

# MPO is what many phone cameras write: a JPEG with extra preview frames.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP"})

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class ImageSpec:
    """What a model takes: `height` x `width` x `channels` (1 or 3) uint8, resized with `resize`."""

    height: int
    width: int
    channels: int
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize not in _RESAMPLING:
            raise ValueError(f"resize must be one of {sorted(_RESAMPLING)}, got {self.resize!r}")


def load_image(data: bytes, spec: ImageSpec, *, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode `data` into a `(spec.height, spec.width, spec.channels)` uint8 array.

    Raises `UnsupportedImageType` (not an image, or a format outside `SUPPORTED_FORMATS`),
    `PayloadTooLarge` (more than `max_pixels` pixels, checked from the header before decoding) and
    `InvalidImage` (corrupt or truncated data). Never raises anything else for any input bytes.
    """
    image = _open(data, max_pixels)
    try:
        image = _decode(image, spec)
        array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image is too large to decode: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as error:
        raise InvalidImage(f"image data is corrupt or truncated ({type(error).__name__}: {error})") from error
    if spec.channels == 1:
        array = array[..., np.newaxis]
    return array


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read only the header: identify the format and check the pixel count."""
    if not data:
        raise InvalidImage("the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own fixed limit; ours is `max_pixels`, checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image has too many pixels (limit {max_pixels:,})") from error
    except UnidentifiedImageError as error:
        raise UnsupportedImageType(
            f"not a supported image; send one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        raise InvalidImage(f"image header is corrupt ({type(error).__name__}: {error})") from error
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageType(
            f"{image.format} images are not supported; send one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    if width < 1 or height < 1:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    return image


def _decode(image: Image.Image, spec: ImageSpec) -> Image.Image:
    if image.format in ("JPEG", "MPO"):
        # Both directions at least as large as the target's longer side, so that a 90-degree EXIF
        # rotation applied afterwards still leaves enough pixels for the resize.
        side = max(spec.height, spec.width)
        image.draft(None, (side, side))
    image = ImageOps.exif_transpose(image)
    image = _to_mode(image, "RGB" if spec.channels == 3 else "L")
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), _RESAMPLING[spec.resize])
    return image


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit `mode` ("RGB" or "L"), compositing transparency on white."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit (or 32-bit) grayscale: map the 16-bit range onto 8 bits instead of clipping.
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(wide / 257.0, 0, 255).round().astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        background.alpha_composite(rgba)
        image = background
    if image.mode != mode:
        image = image.convert(mode)
    return image
