"""A peer: the same SavedModel behind Ray Serve (pip `ray[serve]`), batched as its documentation shows:
one deployment whose `@serve.batch` method takes a list of decoded images, with `max_ongoing_requests`
above `max_batch_size` so that a batch can fill. It takes multipart uploads (field `file`) like the service.

Run (in a separate virtualenv with ray[serve], which the benchmark creates):
    BENCH_MODEL_DIR=models/flowers/4 BENCH_PORT=8000 python -m benchmarks.ray_service
GET / answers once the deployment is up (the benchmark's readiness check).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from typing import Any

import numpy as np
from PIL import Image
from ray import serve
from starlette.requests import Request

from benchmarks.peer_model import PeerModel

MAX_BATCH_SIZE = 32


@serve.deployment(num_replicas=1, max_ongoing_requests=2 * MAX_BATCH_SIZE)
class Classifier:
    def __init__(self) -> None:
        self.model = PeerModel()

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        return self.model.classify(np.stack(images))

    async def __call__(self, request: Request) -> Any:
        if request.method == "GET":
            return "ready"
        form = await request.form()
        upload = form["file"]
        data = await upload.read()  # type: ignore[union-attr]
        return await self.classify(self.model.pixels(Image.open(io.BytesIO(data))))


app = Classifier.bind()  # type: ignore[attr-defined]

if __name__ == "__main__":
    # SIGTERM ends the driver through SystemExit, so that Ray's exit hook stops the local cluster it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ.get("BENCH_PORT", "8000"))})
    serve.run(app, name="flowers", route_prefix="/")
    while True:  # serve.run returns once deployed; the process keeps the local Ray cluster alive
        time.sleep(3600)
