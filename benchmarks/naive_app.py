"""The naive baseline: what the tutorials do, per request, behind a minimal FastAPI endpoint.

`keras.utils.load_img` + `img_to_array` + `expand_dims` + `model.predict` on one image, as in the
"classification" tutorial, with the same SavedModel (wrapped in a TFSMLayer so `predict` works).
Run: BENCH_MODEL_DIR=models/flowers/4 uvicorn benchmarks.naive_app:app
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from fastapi import FastAPI, UploadFile

MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", "models/flowers/4"))
META = json.loads((MODEL_DIR / "metadata.json").read_text())
SIZE = (META["input"]["height"], META["input"]["width"])
inputs = keras.Input((*SIZE, 3), dtype="uint8")
outputs = keras.layers.TFSMLayer(str(MODEL_DIR), call_endpoint="serving_default")(inputs)
model = keras.Model(inputs, outputs)
app = FastAPI()


@app.post("/predict/flowers")
def predict(file: UploadFile) -> dict[str, object]:
    image = keras.utils.load_img(io.BytesIO(file.file.read()), target_size=SIZE)
    batch = tf.expand_dims(keras.utils.img_to_array(image, dtype="uint8"), 0)
    scores = model.predict(batch, verbose=0)["probabilities"][0]
    return {"label": META["labels"][int(np.argmax(scores))], "confidence": float(np.max(scores))}
