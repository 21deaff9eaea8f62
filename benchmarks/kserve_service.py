"""A peer: the same SavedModel behind KServe's Python ModelServer (pip `kserve`), written as its custom-model
documentation shows: a `kserve.Model` with `load`, `preprocess`, `predict` and `postprocess`, served on the
v1 protocol (`POST /v1/models/flowers:predict` with `{"instances": [{"b64": "..."}]}`: TF Serving's
encoding of binary values, which the service's own v1 endpoint takes too). KServe batches in the agent sidecar of a Kubernetes InferenceService
(`spec.predictor.batcher`), not in this Python server, so on one machine every request is one `predict`.
gRPC is off (only HTTP is measured) and so is the per-request latency log line.

Run (in a separate virtualenv with kserve, which the benchmark creates):
    BENCH_MODEL_DIR=models/flowers/2 python -m benchmarks.kserve_service --http_port 8080
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from PIL import Image

MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", "models/flowers/2"))


class Classifier(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        import tensorflow as tf

        self.meta = json.loads((MODEL_DIR / "metadata.json").read_text())
        self.size = (self.meta["input"]["width"], self.meta["input"]["height"])
        self.serve = tf.saved_model.load(str(MODEL_DIR)).signatures["serving_default"]
        self.tf = tf
        self.ready = True
        return self.ready

    def preprocess(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> np.ndarray:
        images = []
        for instance in payload["instances"]:
            data = base64.b64decode(instance["b64"])
            image = Image.open(io.BytesIO(data)).convert("RGB").resize(self.size, Image.Resampling.BILINEAR)
            images.append(np.asarray(image))
        return np.stack(images)

    def predict(self, batch: np.ndarray, headers: dict[str, str] | None = None) -> np.ndarray:
        return self.serve(images=self.tf.constant(batch, dtype=self.tf.uint8))["probabilities"].numpy()

    def postprocess(self, scores: np.ndarray, headers: dict[str, str] | None = None) -> dict[str, Any]:
        labels = self.meta["labels"]
        return {"predictions": [{"label": labels[int(s.argmax())], "confidence": float(s.max())} for s in scores]}


if __name__ == "__main__":
    server = kserve.ModelServer(enable_grpc=False, enable_latency_logging=False, workers=1)
    server.start([Classifier("flowers")])
