"""The peer: the same SavedModel served by BentoML with adaptive batching, as its documentation shows:
one Service whose API is `@bentoml.api(batchable=True, max_batch_size=..., max_latency_ms=...)` over a
list of images. BentoML decodes the upload to a PIL image; we resize it exactly as the model expects.

Run (in a separate virtualenv with bentoml, which the benchmark creates):
    BENCH_MODEL_DIR=models/flowers/4 bentoml serve benchmarks.bento_service:FlowersClassifier --port 3000
"""

from __future__ import annotations

import bentoml
import numpy as np
from PIL import Image

from benchmarks.peer_model import PeerModel


@bentoml.service(workers=1, traffic={"timeout": 60})
class FlowersClassifier:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def classify(self, images: list[Image.Image]) -> list[dict[str, object]]:
        return self.model.classify(np.stack([self.model.pixels(image) for image in images]))
