"""A peer: the same SavedModel behind KServe's Python ModelServer (pip `kserve`), written as its custom-model
documentation shows: a `kserve.Model` with `load`, `preprocess`, `predict` and `postprocess`, served on the
v1 protocol (`POST /v1/models/flowers:predict` with `{"instances": [{"b64": "..."}]}`: TF Serving's
encoding of binary values, which the service's own v1 endpoint takes too). KServe batches in the agent sidecar of a Kubernetes InferenceService
(`spec.predictor.batcher`), not in this Python server, so on one machine every request is one `predict`.
gRPC is off (only HTTP is measured) and so is the per-request latency log line.

Run (in a separate virtualenv with kserve, which the benchmark creates):
    BENCH_MODEL_DIR=models/flowers/4 python -m benchmarks.kserve_service --http_port 8080
"""

from __future__ import annotations

import base64
import io
from typing import Any

import kserve
import numpy as np
from PIL import Image

from benchmarks.peer_model import PeerModel


class Classifier(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.model = PeerModel()
        self.ready = True
        return self.ready

    def preprocess(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> np.ndarray:
        images = [Image.open(io.BytesIO(base64.b64decode(instance["b64"]))) for instance in payload["instances"]]
        return np.stack([self.model.pixels(image) for image in images])

    def predict(self, batch: np.ndarray, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self.model.classify(batch)

    def postprocess(self, answers: list[dict[str, Any]], headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"predictions": answers}


if __name__ == "__main__":
    server = kserve.ModelServer(enable_grpc=False, enable_latency_logging=False, workers=1)
    server.start([Classifier("flowers")])
