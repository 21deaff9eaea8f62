"""The Open Inference Protocol (KServe v2) surface with a fake model."""

from __future__ import annotations

import base64
import gzip
import importlib.metadata
import json
import zlib

import numpy as np
import pytest

from tests.fakes import write_model_dir
from tests.helpers import image_bytes

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
    assert meta["inputs"] == [{"datatype": "UINT8", "name": "images", "shape": [-1, 16, 16, 3]}]  # one per name
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
    assert ood == {"name": "ood_score", "datatype": "FP32", "shape": [2], "data": [0.0, 0.0]}


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


def test_server_metadata_names_the_extensions(client) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "image-classifier-service" and meta["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    # the installed package's version, also in the OpenAPI document (it said 1.0.0 after the package was 2.0.0)
    assert meta["version"] == importlib.metadata.version("image-classifier-service")
    assert client.get("/openapi.json").json()["info"]["version"] == meta["version"]


def test_json_without_a_content_type_is_accepted(client) -> None:
    body = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BLACK]}]})
    response = client.post("/v2/models/shades/infer", content=body.encode(), headers={"content-type": ""})
    assert response.status_code == 200, response.text


def test_compressed_requests_are_inflated_within_the_limit(make_client) -> None:
    client = make_client(max_upload_bytes=2**20)
    body = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BLACK]}]}).encode()
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        response = client.post("/v2/models/shades/infer", content=packed, headers={"content-encoding": encoding})
        assert response.status_code == 200, (encoding, response.text)
    bomb = gzip.compress(b"{" + b" " * (4 * 2**20) + b"}")  # 4 KB that inflate to 4 MiB
    assert len(bomb) < 10_000
    refused = client.post("/v2/models/shades/infer", content=bomb, headers={"content-encoding": "gzip"})
    assert refused.status_code == 413 and "decompresses to more than" in refused.json()["error"]
    other = client.post("/v2/models/shades/infer", content=body, headers={"content-encoding": "br"})
    assert other.status_code == 415


def _binary_request(header: dict, blob: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + blob, {"inference-header-content-length": str(len(raw)), "content-type": "application/octet-stream"}


def _binary_response(response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_tensor_extension_in_and_out(client) -> None:
    files = [image_bytes((0, 0, 0)), image_bytes((255, 0, 0))]
    blob = b"".join(len(f).to_bytes(4, "little") + f for f in files)
    header = {
        "inputs": [
            {"name": "images", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}
        ],
        "outputs": [{"name": "ood_score", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
    }
    body, headers = _binary_request(header, blob)
    response = client.post("/v2/models/shades/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    meta, data = _binary_response(response)
    assert [o["name"] for o in meta["outputs"]] == ["ood_score", "probabilities"]
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 8} and "data" not in meta["outputs"][0]
    assert np.frombuffer(data, "<f4").tolist() == [0.0, 1.0]  # gray, then pure red
    assert np.argmax(np.reshape(meta["outputs"][1]["data"], (2, 2)), axis=1).tolist() == [0, 0]

    pixels = np.full((1, 16, 16, 3), 255, np.uint8)
    header = {
        "inputs": [
            {
                "name": "images",
                "shape": [1, 16, 16, 3],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": pixels.size},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = _binary_request(header, pixels.tobytes())
    meta, data = _binary_response(client.post("/v2/models/shades/infer", content=body, headers=headers))
    assert [o["parameters"]["binary_data_size"] for o in meta["outputs"]] == [8, 4]
    assert np.frombuffer(data[:8], "<f4").tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("header", "blob", "message"),
    [
        (
            {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]},
            b"\x05\0\0\0ab",
            "declares binary_data_size 9",
        ),
        (
            {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]},
            b"\x05\0\0\0ab",
            "cut short",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "images",
                        "shape": [1, 16, 16, 3],
                        "datatype": "UINT8",
                        "parameters": {"binary_data_size": 3},
                    }
                ]
            },
            b"abc",
            "needs 768",
        ),
        (
            {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BLACK]}]},
            b"extra",
            "no input declares them",
        ),
    ],
)
def test_malformed_binary_requests_are_422(client, header: dict, blob: bytes, message: str) -> None:
    body, headers = _binary_request(header, blob)
    response = client.post("/v2/models/shades/infer", content=body, headers=headers)
    assert response.status_code == 422 and message in response.json()["error"], response.text


def test_asking_for_an_unknown_output_is_422(client) -> None:
    body = {
        "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [BLACK]}],
        "outputs": [{"name": "logits"}],
    }
    response = client.post("/v2/models/shades/infer", json=body)
    assert response.status_code == 422 and "unknown output(s) ['logits']" in response.json()["error"]
