"""Turn image file bytes into the uint8 array a model takes.

`load_image` is the single preprocessing function of the project: training decodes every dataset file
with it and the service decodes every upload with it, so the two cannot drift apart (same decoder, same
colour conversion, same resize). It is `decode(open_image(...))`; the service calls the two halves
separately so that it can reserve the decode's memory (`Header.cost_bytes`) before spending it.

`open_image` reads only the header:
1. Identify the format from the bytes (never from the file name); refuse what is not an image (415) and
   anything larger than `max_pixels` (413).
2. For JPEG, ask the decoder for a reduced-size draft (DCT scaling by 1/2, 1/4 or 1/8) that is still at
   least as large as the target in both directions, which makes a 12-megapixel photo decode several times
   faster without changing what the resize sees in a visible way.
3. Work out an upper bound of the memory decoding will take (`decode_cost`), and refuse an image whose
   bound exceeds `max_decode_bytes` (413): a 78 KB PNG can hold 40 megapixels of 16-bit gray.

`decode` then:
4. Decodes the first frame strictly: truncated or corrupt data is `InvalidImage` (400), including a PNG
   whose compressed rows stop early and a GIF without its trailer, which Pillow alone would accept.
5. Shrinks an image far larger than the target by an integer box filter first (`Image.reduce`, as
   Pillow's `reducing_gap` does), so that what follows works on a small copy. Images up to twice the
   target's size, which is every image of the training datasets, skip this step.
6. Applies the EXIF orientation, converts to RGB or grayscale (16-bit and float images are scaled to
   8 bits in integer or float32 arithmetic, CMYK is converted, transparency is composited on white), and
7. resizes to exactly (height, width) with Pillow's antialiased filter named by `resize` ("bilinear" by
   default), ignoring aspect ratio, as `keras.utils.image_dataset_from_directory` does.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InvalidImage, PayloadTooLarge, UnsupportedImageType

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
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Bytes per pixel of Pillow's decoded storage; every other mode (RGB included) takes 4.
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# A decode that cannot shrink first may hold two more 4-byte copies (conversion, transparency).
_FULL_SIZE_COPIES_BYTES = 8
# Shrinking needs one full-size copy first for these: palette and bilevel images are expanded, and
# Pillow's `reduce` premultiplies alpha into a copy.
_SHRINK_COPY_BYTES = {"1": 1, "P": 4, "PA": 4, "RGBA": 4, "LA": 4}
# Per pixel, on top of Pillow's storage: libwebp decodes into its own RGBA canvas, which Pillow copies
# twice; Pillow's BMP run-length decoder builds the image in Python buffers before copying it.
# Measured with `python -m stress.costs`.
_FORMAT_EXTRA_BYTES = {"WEBP": 12, "BMP": 2}
_DECODER_OVERHEAD_BYTES = 16 * 2**20  # row buffers, zlib windows, small temporaries
_REDUCING_GAP = 2  # shrink first only while the remaining resize still covers at least 2x the target


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


@dataclass(frozen=True)
class Header:
    """An image whose header is read and whose first frame is not decoded yet."""

    image: Image.Image
    data: bytes
    cost_bytes: int  # upper bound of the memory `decode` takes


def load_image(
    data: bytes, spec: ImageSpec, *, max_pixels: int = 50_000_000, max_decode_bytes: int | None = None
) -> np.ndarray:
    """Decode `data` into a `(spec.height, spec.width, spec.channels)` uint8 array.

    Raises `UnsupportedImageType` (not an image, or a format outside `SUPPORTED_FORMATS`),
    `PayloadTooLarge` (more than `max_pixels` pixels or a decode costing more than `max_decode_bytes`,
    both checked from the header) and `InvalidImage` (corrupt or truncated data). Never raises anything
    else for any input bytes.
    """
    return decode(open_image(data, spec, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes), spec)


def open_image(data: bytes, spec: ImageSpec, *, max_pixels: int, max_decode_bytes: int | None = None) -> Header:
    """Read only the header: identify the format, check the pixel count and the decode's memory."""
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
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as error:
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
    if image.format in ("JPEG", "MPO"):
        # Both directions at least as large as the target's longer side, so that a 90-degree EXIF
        # rotation applied afterwards still leaves enough pixels for the resize.
        side = max(spec.height, spec.width)
        try:
            image.draft(None, (side, side))
        except (OSError, ValueError) as error:
            raise InvalidImage(f"image header is corrupt ({type(error).__name__}: {error})") from error
    cost = decode_cost(image.format, image.mode, image.size, spec)
    if max_decode_bytes is not None and cost > max_decode_bytes:
        raise PayloadTooLarge(
            f"decoding this {image.size[0]}x{image.size[1]} {image.mode} {image.format} image would take "
            f"{cost / 2**20:,.0f} MiB; the limit is {max_decode_bytes / 2**20:,.0f} MiB"
        )
    return Header(image, data, cost)


def decode_cost(fmt: str | None, mode: str, size: tuple[int, int], spec: ImageSpec) -> int:
    """An upper bound, in bytes, of the memory `decode` holds at once for an image of `mode` and `size`
    (after any JPEG draft): the decoded frame, plus either one conversion copy and the shrunk copy, or
    the full-size copies of a decode that cannot shrink first."""
    pixels = size[0] * size[1]
    stored = _STORED_BYTES.get(mode, 4)
    fixed = _FORMAT_EXTRA_BYTES.get(fmt or "", 0) * pixels + _DECODER_OVERHEAD_BYTES
    factor = _reduce_factor(size, spec)
    if factor < 2:
        return pixels * (stored + _FULL_SIZE_COPIES_BYTES) + fixed
    return pixels * (stored + _SHRINK_COPY_BYTES.get(mode, 0)) + 4 * pixels // (factor * factor) + fixed


def decode(header: Header, spec: ImageSpec) -> np.ndarray:
    """Decode an opened image into a `(spec.height, spec.width, spec.channels)` uint8 array; raises
    `InvalidImage` for corrupt or truncated data and `PayloadTooLarge` if Pillow finds a bomb."""
    try:
        image = header.image
        image.load()
        _check_complete(header.data, image)
        image = _shrink(image, spec)
        image = ImageOps.exif_transpose(image)
        image = _to_mode(image, "RGB" if spec.channels == 3 else "L")
        if image.size != (spec.width, spec.height):
            image = image.resize((spec.width, spec.height), _RESAMPLING[spec.resize])
        array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image is too large to decode: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError, struct.error) as error:
        raise InvalidImage(f"image data is corrupt or truncated ({type(error).__name__}: {error})") from error
    if spec.channels == 1:
        array = array[..., np.newaxis]
    return array


def _reduce_factor(size: tuple[int, int], spec: ImageSpec) -> int:
    """The integer factor that shrinks `size` while both sides stay `_REDUCING_GAP` times the target's
    longer side (so an EXIF rotation afterwards changes nothing). 1 means no shrinking."""
    side = max(spec.height, spec.width) * _REDUCING_GAP
    return max(1, min(size) // side)


def _shrink(image: Image.Image, spec: ImageSpec) -> Image.Image:
    factor = _reduce_factor(image.size, spec)
    if factor < 2:
        return image
    # Palette and bilevel images cannot be averaged as they are: expand them first (one copy).
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    info = image.info
    if image.mode in _WIDE_MODES - {"I", "F"}:  # `reduce` does not take 16-bit modes; a box resize is the same
        shrunk = image.resize((image.width // factor, image.height // factor), Image.Resampling.BOX)
    else:
        shrunk = image.reduce(factor)
    shrunk.info = info  # keep the EXIF orientation for `exif_transpose`
    return shrunk


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit `mode` ("RGB" or "L"), compositing transparency on white."""
    if image.mode in _WIDE_MODES:
        # 16-bit (or 32-bit) grayscale: map the 16-bit range onto 8 bits (round(x / 257)) instead of
        # clipping, without float64 copies: for integers, (x + 128) // 257 is exactly that rounding.
        wide = np.asarray(image)
        if wide.dtype.kind == "f":
            narrow = np.clip(wide.astype(np.float32) / np.float32(257), 0, 255).round()
        else:
            narrow = (np.clip(wide, 0, 65535).astype(np.uint32) + 128) // 257
        image = Image.fromarray(narrow.astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        background.alpha_composite(rgba)
        image = background
    if image.mode != mode:
        image = image.convert(mode)
    return image


# ---------------------------------------------------------------------------------- strict decoding
def _check_complete(data: bytes, image: Image.Image) -> None:
    """Refuse data Pillow decodes leniently: a PNG whose compressed rows end early (Pillow stops at the
    end of the zlib stream and leaves the missing rows blank) or lacks its IEND chunk, and a GIF without
    its trailer byte."""
    if image.format == "PNG":
        _check_png(data)
    elif image.format == "GIF" and not data.rstrip(b"\x00\r\n ").endswith(b";"):
        raise InvalidImage("GIF data is truncated (no trailer)")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png(data: bytes) -> None:
    """Walk the chunks to IEND, checking each CRC, and inflate the IDAT stream (without keeping the
    output) to check that it holds every row the header promises."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-columns * bits // 8))
    inflater = zlib.decompressobj()
    produced, offset = 0, 8
    while True:
        if offset + 12 > len(data):
            raise InvalidImage("PNG data is truncated (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        crc = data[offset + 8 + length : offset + 12 + length]
        if len(body) != length or len(crc) != 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise InvalidImage(f"PNG chunk {kind!r} is truncated or corrupt")
        if kind == b"IDAT":
            try:
                while body and produced <= expected:
                    produced += len(inflater.decompress(body, 1 << 20))
                    body = inflater.unconsumed_tail
            except zlib.error as error:
                raise InvalidImage(f"PNG image data is corrupt ({error})") from error
        elif kind == b"IEND":
            break
        offset += 12 + length
    if produced < expected:
        raise InvalidImage(f"PNG image data ends early ({produced:,} of {expected:,} bytes of rows)")
