"""Preprocessing parity: the arrays training feeds the model equal the arrays the service feeds it,
for the same files (JPEG, PNG, grayscale, RGBA, palette, EXIF-rotated, CMYK, WebP).

Training decodes through `training.images.load_image_folder`; the service through `POST /predict`.
The fake model records the exact uint8 batch it receives, which is compared with training's array.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel, Outputs
from app.core.settings import Settings
from app.http.application import create_app
from tests.fakes import fake_model, metadata
from tests.helpers import wait_ready
from training.images import load_image_folder


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))

    def save(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 255, (300, 420), dtype=np.uint8)))
    return {
        "photo.jpg": save(photo, "JPEG", quality=90),
        "rotated.jpg": save(photo, "JPEG", exif=exif.tobytes()),
        "photo.png": save(photo, "PNG"),
        "gray.png": save(photo.convert("L"), "PNG"),
        "rgba.png": save(rgba, "PNG"),
        "palette.png": save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=3),
        "cmyk.jpg": save(photo.convert("CMYK"), "JPEG"),
        "photo.webp": save(photo, "WEBP"),
    }


@pytest.mark.parametrize("channels", [3, 1])
def test_training_and_serving_feed_the_model_identical_arrays(tmp_path: Path, channels: int) -> None:
    files = _files()
    spec = ImageSpec(height=24, width=32, channels=channels)
    dataset = tmp_path / "data"
    for name, data in files.items():
        (dataset / "only_class").mkdir(parents=True, exist_ok=True)
        (dataset / "only_class" / name).write_bytes(data)
    trained, _, skipped = load_image_folder(dataset, ["only_class"], spec)
    assert skipped == 0
    names = sorted(files)  # load_image_folder reads files in sorted order

    model_dir = tmp_path / "models" / "parity" / "1"
    model_dir.mkdir(parents=True)
    meta = metadata("parity", input={"height": 24, "width": 32, "channels": channels, "resize": "bilinear"})
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    received: list[np.ndarray] = []

    def loader(path: Path) -> LoadedModel:
        def predict(batch: np.ndarray) -> Outputs:
            received.extend(batch)
            return {
                PROBABILITIES: np.full((len(batch), 2), 0.5, np.float32),
                OOD_SCORE: np.zeros(len(batch), np.float32),
            }

        return fake_model(path, predict)

    with TestClient(create_app(Settings(model_dir=tmp_path / "models", max_batch_size=1), loader=loader)) as client:
        wait_ready(client)
        received.clear()  # drop the warm-up batches
        for name in names:
            response = client.post("/predict/parity", files={"file": (name, files[name])})
            assert response.status_code == 200, response.text
    assert len(received) == len(names)
    for name, served, train in zip(names, received, trained, strict=True):
        assert served.dtype == train.dtype == np.uint8
        np.testing.assert_array_equal(served, train, err_msg=f"{name}: serving differs from training")
