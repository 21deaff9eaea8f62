"""The committed models under models/ load in the real service and classify images."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core import runtimes
from app.core.imaging import load_image
from app.core.model import PROBABILITIES, max_difference
from app.core.repository import discover
from app.core.runtimes import openvino
from app.core.runtimes.tensorflow import load_saved_model
from app.core.settings import Settings
from app.http.application import create_app
from tests.helpers import image_bytes, wait_ready

MODELS = Path(__file__).resolve().parents[2] / "models"
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as client:
        wait_ready(client, timeout_s=300)
        yield client


def test_every_committed_model_is_ready_and_answers(client: TestClient) -> None:
    tasks = sorted(discover(MODELS))
    assert tasks, "no committed models"
    assert client.get("/readyz").json()["models"] == dict.fromkeys(tasks, "ready")
    for task in tasks:
        response = client.post(
            f"/predict/{task}", files={"file": ("gray.jpg", image_bytes((128, 128, 128), fmt="JPEG"))}
        )
        assert response.status_code == 200, response.text
        info = client.get(f"/models/{task}").json()
        assert response.json()["predictions"][0]["label"] in info["labels"]
        assert info["metrics"]["test_accuracy"] > 0.9


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real photos not found at {DATASETS}")
@pytest.mark.parametrize(
    ("task", "pattern", "label"),
    [
        ("rps", "rps_28x28/test/rock/*.png", "rock"),
        ("rps", "rps_28x28/test/scissors/*.png", "scissors"),
        ("flowers", "flower_photos/sunflowers/*.jpg", "sunflowers"),
        ("flowers", "flower_photos/daisy/*.jpg", "daisy"),
        ("cats_vs_dogs", "cats_vs_dogs/validation/cats/*.jpg", "cat"),
        ("cats_vs_dogs", "cats_vs_dogs/validation/dogs/*.jpg", "dog"),
    ],
)
def test_real_photos_get_their_label(client: TestClient, task: str, pattern: str, label: str) -> None:
    if task not in discover(MODELS):
        pytest.fail(f"no committed {task} model")
    photos = sorted(DATASETS.glob(pattern))[:8]
    files = [("file", (p.name, p.read_bytes())) for p in photos]
    response = client.post(f"/predict/{task}", files=files)
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels.count(label) >= 7, labels


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real photos not found at {DATASETS}")
@pytest.mark.parametrize(
    ("task", "pattern"),
    [
        ("flowers", "flower_photos/tulips/*.jpg"),
        ("cats_vs_dogs", "cats_vs_dogs/validation/*/*.jpg"),
        ("fashion_mnist", "flower_photos/roses/*.jpg"),  # light backgrounds: the auto-invert branch
        ("rps", "rps_28x28/test/paper/*.png"),
    ],
)
def test_the_model_served_matches_the_savedmodel(task: str, pattern: str) -> None:
    path = discover(MODELS)[task]
    frozen, plain = load_saved_model(path), load_saved_model(path, freeze=False)  # frozen if not slower
    batch = np.stack(
        [load_image(p.read_bytes(), frozen.spec, max_pixels=10**8) for p in sorted(DATASETS.glob(pattern))[:16]]
    )
    served, exported = frozen.predict(batch), plain.predict(batch)
    assert set(served) == set(exported) == set(frozen.outputs)
    for name in served:  # probabilities to 1e-5; OOD distances (in the tens) to the same relative precision
        np.testing.assert_allclose(served[name], exported[name], atol=1e-5, rtol=1e-5)
    # OpenVINO (what APP_RUNTIME=auto chooses here) on the same real photos: within the load-time 1e-4, same class
    compiled = openvino.load(path, frozen.metadata, precision="fp32", threads=0).predict(batch)
    assert max_difference(compiled, exported) <= 1e-4
    np.testing.assert_array_equal(compiled[PROBABILITIES].argmax(axis=1), exported[PROBABILITIES].argmax(axis=1))


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real photos not found at {DATASETS}")
@pytest.mark.parametrize(
    ("task", "pattern", "label"),
    [
        ("cats_vs_dogs", "cats_vs_dogs/validation/dogs/*.jpg", "dog"),
        ("flowers", "flower_photos/sunflowers/*.jpg", "sunflowers"),
        ("rps", "rps_28x28/test/rock/*.png", "rock"),
        ("fashion_mnist", "fashion_mnist/t10k-images-idx3-ubyte*", None),
    ],
)
def test_committed_int8_models_serve_with_app_precision_int8(task: str, pattern: str, label: str | None) -> None:
    """Where an int8 model is committed, APP_PRECISION=int8 serves it (its recorded drop is within 0.5 points)
    and it agrees with fp32 on real images."""
    path = discover(MODELS)[task]
    fp32 = load_saved_model(path)
    # OpenVINO named: under auto, a busy machine may time TensorFlow as faster and serve it instead.
    int8 = runtimes.load(path, settings=Settings(runtime="openvino", precision="int8"))
    assert int8.precision == "int8" and int8.runtime == "openvino", int8.why
    if label is None:  # fashion_mnist's test images, from the official idx file
        batch = _idx_images(sorted(DATASETS.glob(pattern))[0], 64)
    else:
        batch = np.stack(
            [load_image(p.read_bytes(), fp32.spec, max_pixels=10**8) for p in sorted(DATASETS.glob(pattern))[:32]]
        )
    ours, theirs = int8.predict(batch)[PROBABILITIES], fp32.predict(batch)[PROBABILITIES]
    assert np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1)) >= 0.95
    if label is not None:
        assert np.mean(ours.argmax(axis=1) == fp32.metadata.labels.index(label)) >= 0.9


def _idx_images(path: Path, count: int) -> np.ndarray:
    import gzip

    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    return np.frombuffer(data, np.uint8, offset=16)[: count * 28 * 28].reshape(count, 28, 28, 1).copy()


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real photos not found at {DATASETS}")
def test_a_tensorflow_serving_client_request_classifies_a_real_photo(client: TestClient) -> None:
    """The body TF Serving's REST documentation shows, unchanged: only the host differs."""
    photo = sorted(DATASETS.glob("flower_photos/sunflowers/*.jpg"))[0]
    body = {"signature_name": "serving_default", "instances": [{"b64": base64.b64encode(photo.read_bytes()).decode()}]}
    answer = client.post("/v1/models/flowers:predict", json=body)
    assert answer.status_code == 200, answer.text
    labels = client.get("/models/flowers").json()["labels"]
    (prediction,) = answer.json()["predictions"]
    scores = prediction["probabilities"] if isinstance(prediction, dict) else prediction
    assert labels[int(np.argmax(scores))] == "sunflowers"


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"real photos not found at {DATASETS}")
@pytest.mark.parametrize(
    ("task", "inside", "outside"),
    [
        ("cats_vs_dogs", "cats_vs_dogs/validation/cats/*.jpg", "flower_photos/daisy/*.jpg"),
        ("flowers", "flower_photos/roses/*.jpg", "cats_vs_dogs/validation/dogs/*.jpg"),
        ("rps", "rps_28x28/test/scissors/*.png", "flower_photos/tulips/*.jpg"),
        # fashion_mnist's own test split is IDX arrays, not files, so it has no "inside" here. Its OOD score
        # reads its blocks' statistics too (knn_ensemble), which is what flags photos at 28x28 grayscale.
        ("fashion_mnist", None, "rps_28x28/test/paper/*.png"),
        ("fashion_mnist", None, "cats_vs_dogs/validation/cats/*.jpg"),
        ("fashion_mnist", None, "flower_photos/daisy/*.jpg"),
    ],
)
def test_committed_models_flag_images_of_other_tasks(
    client: TestClient, task: str, inside: str | None, outside: str
) -> None:
    """Other datasets' images are flagged out of distribution; the task's own test images mostly are not
    (the threshold keeps 95% of the validation split)."""
    meta = client.get(f"/models/{task}").json()
    assert meta["ood"] is not None, f"the committed {task} model has no OOD score"

    def flagged(pattern: str) -> list[bool]:
        photos = sorted(DATASETS.glob(pattern))[:12]
        response = client.post(f"/predict/{task}", files=[("file", (p.name, p.read_bytes())) for p in photos])
        assert response.status_code == 200, response.text
        return [p["out_of_distribution"] for p in response.json()["predictions"]]

    assert sum(flagged(outside)) >= 11
    if inside is not None:
        assert sum(flagged(inside)) <= 2
