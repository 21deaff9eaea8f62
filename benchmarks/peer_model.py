"""What every peer server in `benchmarks.serving` runs per image, so that they all do the same work: the image
converted to RGB and resized bilinearly to the model's input, the SavedModel's serving signature on a uint8
batch, and each answer labelled `{"label", "confidence"}`. Imports only what a peer's virtualenv holds
(TensorFlow, Pillow, numpy); the model directory comes from `BENCH_MODEL_DIR`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", "models/flowers/4"))


class PeerModel:
    def __init__(self, model_dir: Path = MODEL_DIR) -> None:
        import tensorflow as tf

        self.meta = json.loads((model_dir / "metadata.json").read_text())
        self.size = (self.meta["input"]["width"], self.meta["input"]["height"])
        self._serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
        self._tf = tf

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One decoded image as the model's uint8 input."""
        return np.asarray(image.convert("RGB").resize(self.size, Image.Resampling.BILINEAR))

    def classify(self, batch: np.ndarray) -> list[dict[str, Any]]:
        """The best label and its confidence for each image of a uint8 batch."""
        scores = self._serve(images=self._tf.constant(batch, dtype=self._tf.uint8))["probabilities"].numpy()
        labels = self.meta["labels"]
        return [{"label": labels[int(s.argmax())], "confidence": float(s.max())} for s in scores]
