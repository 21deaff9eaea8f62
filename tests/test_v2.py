"""The Open Inference Protocol (KServe v2) surface with a fake model."""

from __future__ import annotations

import base64

import numpy as np

from tests.conftest import image_bytes, write_model_dir

BLACK = base64.b64encode(image_bytes((0, 0, 0))).decode()
WHITE = base64.b64encode(image_bytes((255, 255, 255), fmt="JPEG")).decode()


def infer(client, inputs: list[dict], task: str = "shades"):
    return client.post(f"/v2/models/{task}/infer", json={"id": "req-1", "inputs": inputs})


def test_health_and_model_metadata(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/shades/ready").json() == {"name": "shades", "ready": True}
    meta = client.get("/v2/models/shades").json()
    assert meta["name"] == "shades" and meta["versions"] == ["1"]
    assert {"datatype": "UINT8", "name": "images", "shape": [-1, 16, 16, 3]} in meta["inputs"]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
    ]


def test_infer_with_base64_encoded_files(client) -> None:
    response = infer(client, [{"name": "images", "shape": [2], "datatype": "BYTES", "data": [BLACK, WHITE]}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "shades" and body["model_version"] == "1" and body["id"] == "req-1"
    output, ood = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 2]
    probabilities = np.asarray(output["data"]).reshape(2, 2)
    assert probabilities[0].argmax() == 0 and probabilities[1].argmax() == 1
    assert ood == {"name": "ood_score", "datatype": "FP32", "shape": [2], "data": [0.0, 0.0], "parameters": None}


def test_ood_score_is_the_second_output_and_absent_for_models_without_one(make_client, model_dir) -> None:
    red = base64.b64encode(image_bytes((255, 0, 0))).decode()
    body = infer(make_client(), [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [red]}]).json()
    assert body["outputs"][1]["name"] == "ood_score" and body["outputs"][1]["data"] == [1.0]

    write_model_dir(model_dir, task="legacy", ood=None, calibration=None)
    client = make_client()
    assert [o["name"] for o in client.get("/v2/models/legacy").json()["outputs"]] == ["probabilities"]
    body = infer(client, [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [red]}], task="legacy").json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]


def test_infer_with_a_uint8_tensor(client) -> None:
    pixels = np.full((1, 16, 16, 3), 255, np.uint8)
    response = infer(
        client, [{"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}]
    )
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["outputs"][0]["data"], [0.0, 1.0])


def test_errors_use_the_protocol_error_body(client) -> None:
    cases = [
        (infer(client, [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["***not base64***"]}]), 422),
        (
            infer(
                client,
                [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"text").decode()]}],
            ),
            415,
        ),
        (infer(client, [{"name": "images", "shape": [1, 8, 8, 3], "datatype": "UINT8", "data": [0] * 192}]), 422),
        (infer(client, [{"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": [300] * 768}]), 422),
        (infer(client, [{"name": "images", "shape": [1], "datatype": "FP32", "data": [0.5]}]), 422),
        (infer(client, [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BLACK]}], task="nope"), 404),
        (client.post("/v2/models/shades/infer", json={"inputs": []}), 422),
        (
            client.post("/v2/models/shades/infer", content=b"{not json", headers={"content-type": "application/json"}),
            422,
        ),
        (client.get("/v2/models/nope"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        body = response.json()
        assert set(body) == {"error"} and body["error"], body
