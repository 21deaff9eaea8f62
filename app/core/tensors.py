"""Images as requests carry them (`Images`: encoded files or decoded pixels), and the strict checks that
turn what the JSON protocols send into them.

The Open Inference Protocol and TensorFlow Serving's REST API send either encoded image files (base64) or
pixels as nested JSON lists. These helpers run in the JSON parser process (`app.protocols.bodies`), so their
per-element work never holds the service's GIL; every fault is `InvalidRequest` (422) naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.core.errors import InvalidRequest
from app.core.imaging import ImageSpec


@dataclass(frozen=True)
class Images:
    """What a request holds, the pipeline's input: encoded files (decoded like uploads) or pixels of the
    model's input shape. `names` name each image in errors and answers (default: "element <i>"); `noun`
    is what the request calls them in the count limit's message ("files" for uploads)."""

    files: list[bytes] | None = None
    pixels: list[np.ndarray] | None = None
    names: list[str] | None = None
    noun: str = "images"

    def __len__(self) -> int:
        return len(self.files if self.files is not None else self.pixels or [])

    def name(self, index: int) -> str:
        return self.names[index] if self.names is not None else f"element {index}"

    def named(self, prefix: str) -> Images:
        """The same images, named "<prefix> <i>" (as a protocol names the elements of its request)."""
        return Images(self.files, self.pixels, [f"{prefix} {i}" for i in range(len(self))], self.noun)


def b64_file(item: Any, where: str) -> bytes:
    """A base64 string, decoded strictly."""
    if not isinstance(item, str):
        raise InvalidRequest(f"{where} must be a base64 string")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidRequest(f"{where} is not valid base64: {error}") from error


def uint8_pixels(data: Any, shape: Sequence[int], spec: ImageSpec, what: str = "UINT8 data") -> list[np.ndarray]:
    """Nested (or flat, row-major) JSON lists as `shape[0]` images of the model's input shape. Only JSON
    integers 0..255 are pixels: a float (7.9), a string or a boolean is refused, not rounded or cast."""
    expected = [spec.height, spec.width, spec.channels]
    if len(shape) != 4 or list(shape[1:]) != expected or shape[0] < 1:
        raise InvalidRequest(f"{what} must have shape [n, {', '.join(map(str, expected))}], got {list(shape)}")
    try:
        # Nested lists become an n-d array; ragged ones fail.
        values = np.asarray(data, dtype=object).ravel()
    except ValueError as error:
        raise InvalidRequest(f"{what} is not a regular array: {error}") from error
    wrong = sorted({type(v).__name__ for v in values if type(v) is not int})
    if wrong:
        raise InvalidRequest(f"{what} must be JSON integers 0..255; found {', '.join(wrong)}")
    needed = int(np.prod(shape))
    if values.size != needed:
        raise InvalidRequest(f"{what} has {values.size} values, shape {list(shape)} needs {needed}")
    if values.size and (min(values) < 0 or max(values) > 255):
        raise InvalidRequest(f"{what} values must be in 0..255")
    return list(values.astype(np.uint8).reshape(shape))


def nested_shape(data: Any) -> list[int]:
    """The shape of a nested JSON list (its first element at each depth): [] for a scalar."""
    shape = []
    while isinstance(data, list):
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return shape


def validation_message(error: ValidationError) -> str:
    """pydantic's errors as one line: where, and what is wrong (the first five)."""
    reasons = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"])
        reasons.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(reasons)
