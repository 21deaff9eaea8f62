"""The peer: the same SavedModel served by BentoML with adaptive batching, as its documentation shows:
one Service whose API is `@bentoml.api(batchable=True, max_batch_size=..., max_latency_ms=...)` over a
list of images. BentoML decodes the upload to a PIL image; we resize it exactly as the model expects.

Run (in a separate virtualenv with bentoml, which the benchmark creates):
    BENCH_MODEL_DIR=models/flowers/1 bentoml serve benchmarks.bento_service:FlowersClassifier --port 3000
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image

MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", "models/flowers/1"))


@bentoml.service(workers=1, traffic={"timeout": 60})
class FlowersClassifier:
    def __init__(self) -> None:
        import tensorflow as tf

        self.meta = json.loads((MODEL_DIR / "metadata.json").read_text())
        self.size = (self.meta["input"]["width"], self.meta["input"]["height"])
        self.serve = tf.saved_model.load(str(MODEL_DIR)).signatures["serving_default"]
        self.tf = tf

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def classify(self, images: list[Image.Image]) -> list[dict[str, object]]:
        batch = np.stack([np.asarray(i.convert("RGB").resize(self.size, Image.Resampling.BILINEAR)) for i in images])
        scores = self.serve(images=self.tf.constant(batch, dtype=self.tf.uint8))["probabilities"].numpy()
        labels = self.meta["labels"]
        return [{"label": labels[int(s.argmax())], "confidence": float(s.max())} for s in scores]
