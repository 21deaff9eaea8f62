"""A contact sheet: thumbnails of image files in a grid, each captioned with three short lines, for a person
to look through what a search found (`training.review`). A file that does not open gets a gray tile with its
caption, never an error.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font (no font file needed); its bitmap fallback where Pillow lacks FreeType."""
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened in the middle (keeping a file name's extension) until it fits in `width` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    head, tail = text[: len(text) // 2], text[len(text) // 2 :]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        candidate = f"{head}...{tail}"
        if draw.textlength(candidate, font=font) <= width:
            return candidate
    return ""


def _thumbnail(path: Path, thumbnail: int) -> Image.Image | None:
    """The image at `path` oriented, in RGB and at most `thumbnail` px a side; None if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (thumbnail, thumbnail))  # JPEG decodes at a reduced scale: big photos stay fast
            oriented = ImageOps.exif_transpose(image).convert("RGB")
            oriented.thumbnail((thumbnail, thumbnail))
            return oriented
    except Exception:
        # Any failure of any decoder (missing, truncated, not an image, a decompression bomb) must cost one gray
        # tile, not the review of a finished training run.
        return None


def contact_sheet(tiles: list[tuple[Path, tuple[str, str, str]]], thumbnail: int = 128) -> Image.Image:
    """A grid of thumbnails, each captioned with its three lines; a one-tile "nothing to review" if empty."""
    font = _font(11)
    line = 13
    pad = 6
    cell_w = thumbnail + 2 * pad
    cell_h = thumbnail + 3 * line + 3 * pad
    columns = max(1, min(8, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    if not tiles:
        draw.text((pad, pad), "Nothing to review", fill="black", font=font)
        return sheet
    for position, (path, caption) in enumerate(tiles):
        left = (position % columns) * cell_w + pad
        top = (position // columns) * cell_h + pad
        thumb = _thumbnail(path, thumbnail)
        if thumb is None:
            draw.rectangle((left, top, left + thumbnail - 1, top + thumbnail - 1), fill=(128, 128, 128))
            draw.text((left + pad, top + thumbnail // 2 - line // 2), "cannot open", fill="white", font=font)
        else:
            # Centred in its square so that the captions line up whatever the aspect ratio.
            sheet.paste(thumb, (left + (thumbnail - thumb.width) // 2, top + (thumbnail - thumb.height) // 2))
        for k, text in enumerate(caption):
            y = top + thumbnail + pad // 2 + k * line
            draw.text((left, y), _fit(draw, text, font, thumbnail), fill="black", font=font)
    return sheet
