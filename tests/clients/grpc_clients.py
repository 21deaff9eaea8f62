"""Real gRPC clients against a live service: NVIDIA's `tritonclient.grpc` (the Open Inference Protocol) and
TF Serving's own stubs from `tensorflow-serving-api` (PredictionService, ModelService). Runs in a
virtualenv of its own (tritonclient needs protobuf < 7); prints one JSON object: what each call returned,
and for each bad request the status code and message the client raised.

    python tests/clients/grpc_clients.py --address 127.0.0.1:8001 --task flowers --image rose.jpg
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
import tritonclient.grpc as triton
from PIL import Image
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.utils import InferenceServerException


def _pixels(image: bytes, height: int, width: int) -> np.ndarray:
    decoded = Image.open(io.BytesIO(image)).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(decoded, dtype=np.uint8)[None]


def _summary(probabilities: np.ndarray, ood: np.ndarray | None) -> dict[str, Any]:
    top = int(np.argmax(probabilities[0]))
    return {
        "shape": list(probabilities.shape),
        "top": top,
        "confidence": round(float(probabilities[0, top]), 4),
        "ood_score": None if ood is None else round(float(ood[0]), 4),
    }


def _triton_error(call: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        call()
    except InferenceServerException as error:
        return {"code": str(error.status()), "message": error.message(), "s": round(time.perf_counter() - started, 3)}
    return {"code": "OK"}


def _grpc_error(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        call()
    except grpc.RpcError as error:
        return {"code": str(error.code()), "message": error.details()}  # type: ignore[attr-defined]
    return {"code": "OK"}


def run_tritonclient(address: str, task: str, image: bytes, giant_bytes: int) -> dict[str, Any]:
    client = triton.InferenceServerClient(url=address)
    report: dict[str, Any] = {
        "is_server_live": client.is_server_live(),
        "is_server_ready": client.is_server_ready(),
        "is_model_ready": client.is_model_ready(task),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata(task, as_json=True),
    }
    model = report["model_metadata"]
    (source,) = model["inputs"]
    height, width = int(source["shape"][1]), int(source["shape"][2])
    outputs = [o["name"] for o in model["outputs"]]

    def infer(datatype: str, data: np.ndarray, **options: Any) -> triton.InferResult:
        tensor = triton.InferInput(source["name"], list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        return client.infer(task, [tensor], outputs=[triton.InferRequestedOutput(n) for n in outputs], **options)

    encoded = np.array([image], dtype=np.object_)
    for datatype, data in (("BYTES", encoded), ("UINT8", _pixels(image, height, width))):
        for compression in (None, "gzip"):
            result = infer(datatype, data, compression_algorithm=compression)
            ood = result.as_numpy("ood_score") if "ood_score" in outputs else None
            key = f"infer {datatype}{' gzip' if compression else ''}"
            report[key] = _summary(result.as_numpy(outputs[0]), ood)
            report[key]["model_version"] = result.get_response(as_json=True)["model_version"]
    # Triton's classification extension (class_count): the top classes as "score:index:label".
    tensor = triton.InferInput(source["name"], [1], "BYTES")
    tensor.set_data_from_numpy(encoded)
    classified = client.infer(task, [tensor], outputs=[triton.InferRequestedOutput(outputs[0], class_count=2)])
    report["class_count 2"] = [v.decode() for v in classified.as_numpy(outputs[0]).ravel()]
    report["infer version 1"] = infer("BYTES", encoded, model_version="1").get_response(as_json=True)["model_version"]

    def bad(datatype: str, data: np.ndarray, model: str = task, **options: Any) -> Callable[[], Any]:
        def call() -> Any:
            tensor = triton.InferInput(source["name"], list(data.shape), datatype)
            tensor.set_data_from_numpy(data)
            return client.infer(model, [tensor], **options)

        return call

    report["errors"] = {
        "wrong dtype": _triton_error(bad("FP32", np.zeros((1, height, width, 3), np.float32))),
        "wrong shape": _triton_error(bad("UINT8", np.zeros((1, height + 1, width, 3), np.uint8))),
        "missing input": _triton_error(lambda: client.infer(task, [])),
        "empty batch": _triton_error(bad("BYTES", np.array([], dtype=np.object_))),
        "not an image": _triton_error(bad("BYTES", np.array([b"these bytes are not an image"], dtype=np.object_))),
        "giant message": _triton_error(bad("BYTES", np.array([bytes(giant_bytes)], dtype=np.object_))),
        "unknown model": _triton_error(bad("BYTES", encoded, model="no-such-model")),
        "unknown version": _triton_error(bad("BYTES", encoded, model_version="99")),
        "unknown model ready": _triton_error(lambda: client.get_model_metadata("no-such-model")),
        # The client gives up after 1 ms: the call is cancelled mid-flight (its deadline passes).
        "disconnect mid-call": _triton_error(
            bad("BYTES", np.array([image] * 16, dtype=np.object_), client_timeout=0.001)
        ),
    }
    report["after the errors"] = _summary(infer("BYTES", encoded).as_numpy(outputs[0]), None)
    client.close()
    return report


def run_tf_serving(address: str, task: str, image: bytes, height: int, width: int) -> dict[str, Any]:
    channel = grpc.insecure_channel(address)
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    report: dict[str, Any] = {}

    def predict(tensor: Any, **spec: Any) -> predict_pb2.PredictResponse:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = spec.get("name", task)
        if "version" in spec:
            request.model_spec.version.value = spec["version"]
        request.model_spec.signature_name = "serving_default"
        request.inputs[spec.get("input", "images")].CopyFrom(tensor)
        return prediction.Predict(request, timeout=30)

    for name, tensor in (
        ("encoded", tf.make_tensor_proto([image])),
        ("pixels", tf.make_tensor_proto(_pixels(image, height, width))),
    ):
        response = predict(tensor)
        arrays = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
        report[f"predict {name}"] = _summary(arrays["probabilities"], arrays.get("ood_score"))
        report[f"predict {name}"]["model_spec"] = [response.model_spec.name, response.model_spec.version.value]

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = task
    example = request.input.example_list.examples.add()
    example.features.feature["images"].bytes_list.value.append(image)
    result = prediction.Classify(request, timeout=30).result
    report["classify"] = [[c.label, round(c.score, 4)] for c in result.classifications[0].classes]

    asked = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    asked.model_spec.name = task
    signatures = get_model_metadata_pb2.SignatureDefMap()
    prediction.GetModelMetadata(asked, timeout=30).metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    report["metadata"] = {
        "inputs": {k: [v.name, tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim]] for k, v in signature.inputs.items()},
        "outputs": sorted(signature.outputs),
        "method_name": signature.method_name,
    }  # fmt: skip

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = task
    report["status"] = [
        [s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state)]
        for s in models.GetModelStatus(status, timeout=30).model_version_status
    ]
    report["errors"] = {
        "wrong dtype": _grpc_error(lambda: predict(tf.make_tensor_proto(np.zeros((1, height, width, 3), np.float32)))),
        "wrong shape": _grpc_error(lambda: predict(tf.make_tensor_proto(np.zeros((1, 2, 2, 3), np.uint8)))),
        "wrong input": _grpc_error(lambda: predict(tf.make_tensor_proto([image]), input="pixels")),
        "not an image": _grpc_error(lambda: predict(tf.make_tensor_proto([b"not an image"]))),
        "unknown model": _grpc_error(lambda: predict(tf.make_tensor_proto([image]), name="no-such-model")),
        "unknown version": _grpc_error(lambda: predict(tf.make_tensor_proto([image]), version=99)),
    }
    channel.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="host:port of the gRPC server")
    parser.add_argument("--task", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--giant-bytes", type=int, default=32 * 2**20, help="a BYTES element above the limit")
    args = parser.parse_args()
    with open(args.image, "rb") as file:
        image = file.read()
    triton_report = run_tritonclient(args.address, args.task, image, args.giant_bytes)
    (source,) = triton_report["model_metadata"]["inputs"]
    height, width = int(source["shape"][1]), int(source["shape"][2])
    serving_report = run_tf_serving(args.address, args.task, image, height, width)
    print(json.dumps({"tritonclient": triton_report, "tf_serving": serving_report}, indent=2, default=str))


if __name__ == "__main__":
    main()
