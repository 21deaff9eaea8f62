"""Fakes for the runtimes and real model directories around them, so that unit and API tests need no
trained model.

The fake model lives in a real model directory (`<tmp>/models/<task>/<version>/metadata.json`), so the
service's discovery and metadata validation run for real; only the model call is replaced (`FakeCompiled`,
a `Compiled` as a runtime makes one). Its prediction is readable: class 0 ("dark") has probability
1 - mean/255 and class 1 ("light") mean/255. Its out-of-distribution score is how colourful the image is (0
for grays, 1 for pure red): shades of gray are what it "was trained on", and anything above
`OOD_THRESHOLD` is flagged. `export_tiny_model` makes a real SavedModel with the training exporter, from
an untrained graph, for tests that load models for real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel, Outputs, read_metadata

LABELS = ["dark", "light"]
OOD_THRESHOLD = 0.2


def metadata(task: str = "shades", version: int = 1, **overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "task": task,
        "version": version,
        "labels": LABELS,
        "input": {"height": 16, "width": 16, "channels": 3, "resize": "bilinear"},
        "signature": {"name": "serving_default", "input": "images", "output": "probabilities"},
        "architecture": "fake",
        "metrics": {"test_accuracy": 0.5, "test_examples": 2, "split": "none"},
        "dataset": {"name": "fake", "train_examples": 0, "validation_examples": 0},
        "training": {"epochs": 0, "seconds": 0.0, "command": "none", "tensorflow": "none"},
        "created_at": "2026-01-01T00:00:00+00:00",
        "calibration": {"method": "temperature", "temperature": 1.0},
        "ood": {"method": "colourfulness", "output": "ood_score", "threshold": OOD_THRESHOLD},
        "subject": "a shade of gray",
    }
    meta.update(overrides)
    return meta


def write_model_dir(root: Path, task: str = "shades", version: int = 1, **overrides: Any) -> Path:
    path = root / task / str(version)
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps(metadata(task, version, **overrides)))
    return path


def export_tiny_model(
    root: Path, task: str = "shades", version: int = 1, *, with_ood: bool = True, size: int = 8, **overrides: Any
) -> Path:
    """A real SavedModel from the training exporter (mean colour -> 2 classes, calibrated, with an energy
    OOD score when `with_ood`), for tests that load models for real or start `python -m app`."""
    import keras

    from training.export import export
    from training.model import classifier, heads
    from training.ood import Detector

    inputs = keras.Input((size, size, 3))
    features = keras.layers.GlobalAveragePooling2D(name="features")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, classifier(features, len(LABELS)))
    path = root / task / str(version)
    spec = ImageSpec(height=size, width=size, channels=3)
    detector = Detector("energy") if with_ood else None
    signature = export(heads(model), path, spec, auto_invert=False, temperature=2.0, detector=detector)
    meta = metadata(task, version, input={"height": size, "width": size, "channels": 3, "resize": "bilinear"})
    meta["signature"] = signature
    if with_ood:
        meta["ood"] = {"method": "energy", "output": "ood_score", "threshold": 0.0}
    else:
        meta["ood"] = None
    meta.update(overrides)
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def brightness(batch: np.ndarray) -> np.ndarray:
    light = batch.reshape(len(batch), -1).mean(axis=1) / 255.0
    return np.stack([1 - light, light], axis=1).astype(np.float32)


def colourfulness(batch: np.ndarray) -> np.ndarray:
    """Mean of (max - min channel) / 255 per image: 0 for any gray, 1 for a saturated primary colour."""
    spread = batch.max(axis=-1).astype(np.float32) - batch.min(axis=-1)
    return (spread.reshape(len(batch), -1).mean(axis=1) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class FakeCompiled:
    """A runtime's compiled model (`app.core.model.Compiled`) that runs a Python function."""

    function: Callable[[np.ndarray], Outputs]

    def run(self, batch: np.ndarray) -> Outputs:
        return self.function(batch)

    def describe(self) -> dict[str, Any]:
        return {"precision": "fp32", "frozen": False, "batch_sizes": None}


def fake_model(path: Path, predict: Callable[[np.ndarray], Outputs]) -> LoadedModel:
    """The version at `path` (its metadata read for real) served by `predict`, as TensorFlow would serve it."""
    meta = read_metadata(path)
    threshold = meta.ood.threshold if meta.ood is not None else None
    return LoadedModel(meta, path, FakeCompiled(predict), "tensorflow", "", threshold, meta.conformal)


class FakeLoader:
    """Loads metadata for real; `predict` is `brightness` unless a test swaps it, plus `colourfulness` as
    `ood_score` when the metadata declares `ood`. Records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.predict: Callable[[np.ndarray], np.ndarray] = brightness
        self.delay_s = 0.0

    def __call__(self, path: Path) -> LoadedModel:
        meta = read_metadata(path)

        def predict(batch: np.ndarray) -> Outputs:
            self.batches.append(len(batch))
            if self.delay_s:
                time.sleep(self.delay_s)
            outputs = {PROBABILITIES: self.predict(batch)}
            if meta.ood is not None:
                outputs[OOD_SCORE] = colourfulness(batch)
            return outputs

        return fake_model(path, predict)
