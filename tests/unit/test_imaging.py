from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from app.core.errors import InvalidImage, PayloadTooLarge, UnsupportedImageType
from app.core.imaging import ImageSpec, load_image

RGB = ImageSpec(height=8, width=12, channels=3)
GRAY = ImageSpec(height=8, width=8, channels=1)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_every_supported_format_decodes_to_the_model_shape(fmt: str) -> None:
    data = encode(Image.new("RGB", (40, 30), (200, 30, 30)), fmt)
    array = load_image(data, RGB)
    assert array.shape == (8, 12, 3) and array.dtype == np.uint8
    assert array[..., 0].mean() > 150 and array[..., 1].mean() < 80  # still red


def test_grayscale_model_gets_one_channel_and_rgb_model_gets_three() -> None:
    gray = encode(Image.new("L", (20, 20), 90), "PNG")
    assert load_image(gray, GRAY).shape == (8, 8, 1)
    rgb = load_image(gray, RGB)
    assert rgb.shape == (8, 12, 3) and np.all(rgb == 90)


def test_transparency_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert np.all(load_image(encode(transparent, "PNG"), RGB) == 255)
    half = Image.new("LA", (10, 10), (0, 128))
    assert abs(int(load_image(encode(half, "PNG"), GRAY).mean()) - 127) <= 1


def test_palette_with_transparent_colour_is_composited_on_white() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0] * 256)
    data = encode(palette, "PNG", transparency=0)
    assert np.all(load_image(data, RGB) == 255)


def test_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), (0, 0, 0)), Image.new("RGB", (10, 10), (255, 255, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue(), RGB).max() < 10


def test_cmyk_jpeg_converts_to_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    array = load_image(data, RGB)
    assert array[..., 0].mean() > 200 and array[..., 1].mean() < 60


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    wide = Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16))
    array = load_image(encode(wide, "PNG"), GRAY)
    assert 120 <= int(array.mean()) <= 135


def test_exif_orientation_is_applied() -> None:
    # A landscape image (left half black, right white) tagged "rotate 90 CW to display" (orientation 6):
    # displayed, it is portrait with the black half on top.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    array = load_image(data, ImageSpec(height=40, width=20, channels=3))
    assert array[:15].mean() < 30 and array[25:].mean() > 225


def test_large_jpeg_uses_draft_mode_and_keeps_the_content() -> None:
    pixels = np.zeros((3000, 4000, 3), np.uint8)
    pixels[:, 2000:] = 255
    array = load_image(encode(Image.fromarray(pixels), "JPEG"), ImageSpec(height=100, width=100, channels=3))
    assert array.shape == (100, 100, 3)
    assert array[:, :45].mean() < 10 and array[:, 55:].mean() > 245


def test_pixel_limit_refuses_before_decoding() -> None:
    data = encode(Image.new("1", (3000, 3000)), "PNG")  # 9 Mpx in a few kB
    assert len(data) < 50_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        load_image(data, RGB, max_pixels=1_000_000)


@pytest.mark.parametrize(
    "data",
    [b"definitely not an image", b"%PDF-1.4 ...", b"\x00" * 100, b"GIF8"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageType):
        load_image(data, RGB)


def test_formats_outside_the_list_are_unsupported() -> None:
    with pytest.raises(UnsupportedImageType, match="TIFF"):
        load_image(encode(Image.new("RGB", (4, 4)), "TIFF"), RGB)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(noise, fmt)
    with pytest.raises((InvalidImage, UnsupportedImageType)):
        load_image(data[: len(data) // 2], RGB)


def test_empty_file_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        load_image(b"", RGB)


def test_random_garbage_never_raises_anything_else() -> None:
    rng = np.random.default_rng(1)
    png = encode(Image.new("RGB", (30, 30), (1, 2, 3)), "PNG")
    for _ in range(200):
        mutated = bytearray(png)
        for position in rng.integers(0, len(mutated), 8):
            mutated[position] = int(rng.integers(0, 256))
        with contextlib.suppress(InvalidImage, UnsupportedImageType, PayloadTooLarge):
            load_image(bytes(mutated), RGB)


def test_spec_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="channels"):
        ImageSpec(height=4, width=4, channels=2)
    with pytest.raises(ValueError, match="resize"):
        ImageSpec(height=4, width=4, channels=3, resize="magic")
