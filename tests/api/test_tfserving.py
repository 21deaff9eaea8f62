"""TensorFlow Serving's REST API with the fake model: status, metadata, predict in both formats with
encoded images and pixel arrays, and TF Serving's error bodies."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.fakes import write_model_dir
from tests.helpers import image_bytes

BLACK = {"b64": base64.b64encode(image_bytes((0, 0, 0))).decode()}
WHITE = {"b64": base64.b64encode(image_bytes((255, 255, 255), fmt="JPEG")).decode()}


def test_model_status_lists_every_version(make_client, model_dir) -> None:
    write_model_dir(model_dir, version=2)
    client = make_client()
    assert client.get("/v1/models/shades").json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {
                "version": "1",
                "state": "END",
                "status": {"error_code": "UNKNOWN", "error_message": "not among the latest 1 served"},
            },
        ]
    }
    assert client.get("/v1/models/shades/versions/2").json()["model_version_status"][0]["state"] == "AVAILABLE"
    missing = client.get("/v1/models/shades/versions/7")
    assert missing.status_code == 404 and missing.json() == {"error": "model 'shades' version 7 not found"}


def test_metadata_has_tf_servings_signature_def_shape(client) -> None:
    meta = client.get("/v1/models/shades/metadata").json()
    assert meta["model_spec"] == {"name": "shades", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "16", "16", "3"]
    assert set(signature["outputs"]) == {"probabilities", "ood_score"}


def test_predict_row_format_with_encoded_images(client) -> None:
    answer = client.post("/v1/models/shades:predict", json={"instances": [BLACK, {"images": WHITE}]})
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["predictions"]
    assert set(first) == {"probabilities", "ood_score"}
    assert np.argmax(first["probabilities"]) == 0 and np.argmax(second["probabilities"]) == 1
    pinned = client.post(
        "/v1/models/shades/versions/1:predict", json={"signature_name": "serving_default", "instances": [BLACK]}
    )
    assert pinned.status_code == 200


def test_predict_columnar_format_with_pixel_arrays(client) -> None:
    pixels = np.full((2, 16, 16, 3), 255, np.uint8)
    pixels[0] = 0
    answer = client.post("/v1/models/shades:predict", json={"inputs": {"images": pixels.tolist()}})
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert np.allclose(outputs["probabilities"], [[1, 0], [0, 1]]) and outputs["ood_score"] == [0.0, 0.0]


def test_a_model_with_one_output_answers_bare_values(make_client, model_dir) -> None:
    write_model_dir(model_dir, task="legacy", ood=None)
    client = make_client()
    rows = client.post("/v1/models/legacy:predict", json={"instances": [BLACK]}).json()
    assert np.allclose(rows["predictions"], [[1, 0]])
    columns = client.post("/v1/models/legacy:predict", json={"inputs": [BLACK]}).json()
    assert np.allclose(columns["outputs"], [[1, 0]])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 422, "malformed JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"instances": []}', 422, "non-empty list"),
        (b'{"instances": [1], "inputs": [1]}', 422, "exactly one of"),
        (b'{"instances": [{"b64": 5}]}', 422, "must be a base64 string"),
        (b'{"instances": [{"b64": "***"}]}', 422, "not valid base64"),
        (b'{"instances": [{"pixels": [1]}]}', 422, "only input is 'images'"),
        (b'{"instances": [[[[1.5]]]]}', 422, "must have shape [n, 16, 16, 3]"),
        (b'{"instances": [{"b64": "aGVsbG8="}]}', 415, "not a supported image"),
        (b'{"signature_name": "other", "instances": [{"b64": "aGVsbG8="}]}', 404, "no signature 'other'"),
    ],
)
def test_malformed_requests_get_tf_servings_error_body(client, body: bytes, status: int, message: str) -> None:
    answer = client.post("/v1/models/shades:predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and message in answer.json()["error"]


def test_unknown_model_is_404_with_an_error_body(client) -> None:
    answer = client.post("/v1/models/unicorns:predict", json={"instances": [BLACK]})
    assert answer.status_code == 404 and "unicorns" in answer.json()["error"]
