"""gRPC beside HTTP, in process: the app's lifespan starts the gRPC server on a free port, and these tests
call it with the project's own generated stubs (`grpc` sync channels), on the fake model (probabilities
[1 - mean/255, mean/255], `ood_score` the colourfulness). The real clients (tritonclient, TF Serving's
stubs) are in tests/system/test_grpc_clients.py."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from app.protocols.grpc.generated import grpc_service_pb2 as pb
from app.protocols.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from app.protocols.grpc.generated.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from stress.process import free_port
from tests.api.test_prediction_sets import CONFORMAL
from tests.fakes import FakeLoader, write_model_dir
from tests.helpers import eventually, image_bytes, metric

WHITE, GRAY = image_bytes((255, 255, 255)), image_bytes((128, 128, 128))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model_dir(root, conformal=CONFORMAL)
    return root


class Grpc:
    """The app (TestClient, for HTTP) and a channel to its gRPC port, with the stubs."""

    def __init__(self, client: TestClient, port: int, loader: FakeLoader, **channel: Any) -> None:
        self.client, self.port, self.loader = client, port, loader
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", **channel)
        self.oip = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def app(self) -> Any:
        return self.client.app


@pytest.fixture
def make_grpc(make_client: Callable[..., TestClient], loader: FakeLoader) -> Iterator[Callable[..., Grpc]]:
    made: list[Grpc] = []

    def make(channel: dict[str, Any] | None = None, **settings: Any) -> Grpc:
        port = free_port()
        client = make_client(grpc_port=port, **settings)
        loader.batches.clear()  # the warm-up's
        made.append(Grpc(client, port, loader, **(channel or {})))
        return made[-1]

    yield make
    for each in made:
        each.channel.close()


@pytest.fixture
def rpc(make_grpc: Callable[..., Grpc]) -> Grpc:
    return make_grpc()


def infer_request(*files: bytes, raw: bool = False, **parameters: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="shades")
    for name, value in parameters.items():
        kind = (
            "double_param" if isinstance(value, float) else "string_param" if isinstance(value, str) else "int64_param"
        )
        request.parameters[name].CopyFrom(pb.InferParameter(**{kind: value}))
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[len(files)])
    if raw:
        request.raw_input_contents.append(b"".join(len(f).to_bytes(4, "little") + f for f in files))
    else:
        tensor.contents.bytes_contents.extend(files)
    return request


def pixels_request(pixels: np.ndarray, raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="shades")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=list(pixels.shape))
    if raw:
        request.raw_input_contents.append(pixels.tobytes())
    else:
        tensor.contents.uint_contents.extend(pixels.ravel().tolist())
    return request


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Name -> array, read from raw_output_contents as tritonclient reads them."""
    result = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            items, position = [], 0
            while position < len(raw):
                length = int.from_bytes(raw[position : position + 4], "little")
                items.append(raw[position + 4 : position + 4 + length].decode())
                position += 4 + length
            result[tensor.name] = np.array(items, dtype=object).reshape(list(tensor.shape))
        else:
            dtype = {"FP32": "<f4", "BOOL": np.bool_}[tensor.datatype]
            result[tensor.name] = np.frombuffer(raw, dtype).reshape(list(tensor.shape))
    return result


def rest_infer(client: TestClient, *files: bytes) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "images", "shape": [len(files)], "datatype": "BYTES",
                        "data": [base64.b64encode(f).decode() for f in files]}]}  # fmt: skip
    answer = client.post("/v2/models/shades/infer", json=body)
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in answer.json()["outputs"]}


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), error.details()


# ------------------------------------------------------------------------------------- OIP
def test_server_and_model_metadata_and_readiness(rpc: Grpc) -> None:
    assert rpc.oip.ServerLive(pb.ServerLiveRequest()).live is True
    assert rpc.oip.ServerReady(pb.ServerReadyRequest()).ready is True
    assert rpc.oip.ModelReady(pb.ModelReadyRequest(name="shades")).ready is True
    assert rpc.oip.ModelReady(pb.ModelReadyRequest(name="shades", version="1")).ready is True
    server = rpc.oip.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "image-classifier-service" and server.version
    model = rpc.oip.ModelMetadata(pb.ModelMetadataRequest(name="shades"))
    rest = rpc.client.get("/v2/models/shades").json()
    assert (model.name, list(model.versions), model.platform) == (rest["name"], rest["versions"], rest["platform"])
    for mine, theirs in ((model.inputs, rest["inputs"]), (model.outputs, rest["outputs"])):
        assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in mine] == theirs


def test_infer_encoded_and_decoded_typed_and_raw_answers_as_rest(rpc: Grpc) -> None:
    rest = rest_infer(rpc.client, WHITE, GRAY)
    for raw in (False, True):
        response = rpc.oip.ModelInfer(infer_request(WHITE, GRAY, raw=raw))
        assert (response.model_name, response.model_version) == ("shades", "1")
        got = outputs(response)
        assert set(got) == {"probabilities", "ood_score"}
        np.testing.assert_allclose(got["probabilities"], rest["probabilities"], rtol=1e-6)
        np.testing.assert_allclose(got["ood_score"], rest["ood_score"], rtol=1e-6)
    pixels = np.full((2, 16, 16, 3), 255, np.uint8)
    pixels[1] = 128
    for raw in (False, True):
        got = outputs(rpc.oip.ModelInfer(pixels_request(pixels, raw)))
        np.testing.assert_allclose(got["probabilities"], rest["probabilities"], atol=1e-6)


def test_parameters_top_k_coverage_version_and_requested_outputs(rpc: Grpc) -> None:
    request = infer_request(WHITE, GRAY, top_k=1, coverage=0.9)
    request.id = "call-7"
    response = rpc.oip.ModelInfer(request)
    got = outputs(response)
    assert response.id == "call-7"
    assert got["top_k"].tolist() == [["1.000000:1:light"], ["0.501961:1:light"]]  # Triton's classification format
    assert got["prediction_set"].tolist() == [[False, True], [True, True]]  # as the REST side's sets
    request = infer_request(GRAY)
    request.model_version = "1"
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    response = rpc.oip.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert outputs(response)["probabilities"].tolist() == [["0.501961:1:light", "0.498039:0:dark"]]


BAD_INFERS: list[tuple[str, Callable[[], pb.ModelInferRequest], grpc.StatusCode, str]] = [
    ("wrong dtype", lambda: _retyped("FP32"), grpc.StatusCode.INVALID_ARGUMENT, "BYTES (encoded images) or UINT8"),
    (
        "wrong shape",
        lambda: pixels_request(np.zeros((1, 8, 8, 3), np.uint8), True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape must be [n, 16, 16, 3]",
    ),
    (
        "UINT8 out of range",
        lambda: _with_uint([300] * 768),
        grpc.StatusCode.INVALID_ARGUMENT,
        "0..255",
    ),
    ("missing input", lambda: pb.ModelInferRequest(model_name="shades"), grpc.StatusCode.INVALID_ARGUMENT, "has 0"),
    ("empty batch", lambda: infer_request(), grpc.StatusCode.INVALID_ARGUMENT, "n >= 1"),
    ("no data", lambda: _without_data(), grpc.StatusCode.INVALID_ARGUMENT, "no data"),
    ("not an image", lambda: infer_request(b"plain text, not an image"), grpc.StatusCode.INVALID_ARGUMENT, "element 0"),
    (
        "corrupt image",
        lambda: infer_request(image_bytes(fmt="JPEG")[:200]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "element 0",
    ),
    ("unknown model", lambda: _for_model("nope", ""), grpc.StatusCode.NOT_FOUND, "no model serves task 'nope'"),
    ("unknown version", lambda: _for_model("shades", "9"), grpc.StatusCode.NOT_FOUND, "does not serve version 9"),
    ("bad version", lambda: _for_model("shades", "latest"), grpc.StatusCode.INVALID_ARGUMENT, "positive integer"),
    ("bad top_k", lambda: infer_request(WHITE, top_k=0), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    ("unrecorded coverage", lambda: infer_request(WHITE, coverage=0.5), grpc.StatusCode.INVALID_ARGUMENT, "0.8, 0.9"),
    ("coverage as text", lambda: infer_request(WHITE, coverage="0.9"), grpc.StatusCode.INVALID_ARGUMENT, "coverage"),
    ("unknown output", lambda: _asking("logits"), grpc.StatusCode.INVALID_ARGUMENT, "unknown output"),
    ("too many images", lambda: infer_request(*[WHITE] * 33), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 32"),
]


def _retyped(datatype: str) -> pb.ModelInferRequest:
    request = infer_request(WHITE)
    request.inputs[0].datatype = datatype
    return request


def _with_uint(values: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="shades")
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 16, 16, 3]).contents.uint_contents.extend(values)
    return request


def _without_data() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="shades")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    return request


def _for_model(name: str, version: str) -> pb.ModelInferRequest:
    request = infer_request(WHITE)
    request.model_name, request.model_version = name, version
    return request


def _asking(output: str) -> pb.ModelInferRequest:
    request = infer_request(WHITE)
    request.outputs.add(name=output)
    return request


@pytest.mark.parametrize(("case", "make", "code", "reason"), BAD_INFERS, ids=[c[0] for c in BAD_INFERS])
def test_bad_input_gets_its_precise_status_and_never_sticks_a_batch(
    rpc: Grpc, case: str, make: Callable[[], pb.ModelInferRequest], code: grpc.StatusCode, reason: str
) -> None:
    got, details = code_of(lambda: rpc.oip.ModelInfer(make()))
    assert got == code, (case, details)
    assert reason in details, details
    assert outputs(rpc.oip.ModelInfer(infer_request(WHITE)))["probabilities"].shape == (1, 2)  # still serving


def test_a_message_over_the_upload_limit_is_refused_before_any_handler(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(max_upload_bytes=64 * 1024)
    code, details = code_of(lambda: rpc.oip.ModelInfer(infer_request(b"x" * 100_000)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details, details
    assert rpc.loader.batches == []
    assert rpc.oip.ModelInfer(infer_request(WHITE)).outputs  # a message within the limit is served


def test_gzip_requests_are_accepted_and_held_to_the_limit_once_inflated(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(channel={"compression": grpc.Compression.Gzip}, max_upload_bytes=64 * 1024)
    assert outputs(rpc.oip.ModelInfer(infer_request(WHITE)))["probabilities"].tolist() == [[0.0, 1.0]]
    code, details = code_of(lambda: rpc.oip.ModelInfer(infer_request(bytes(200_000))))  # zeros: tiny gzipped
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details


def test_a_full_queue_is_resource_exhausted_with_a_retry_delay(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(max_queue_size=1, max_batch_size=1)
    rpc.loader.delay_s = 0.5
    first = rpc.oip.ModelInfer.future(infer_request(WHITE))  # the model runs it
    _wait_for(lambda: rpc.loader.batches == [1] or (_queued(rpc) == 0 and rpc.loader.batches != []))
    second = rpc.oip.ModelInfer.future(infer_request(WHITE))  # waits in the queue
    _wait_for(lambda: _queued(rpc) == 1)
    with pytest.raises(grpc.RpcError) as caught:
        rpc.oip.ModelInfer(infer_request(WHITE))
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in error.details()
    assert ("grpc-retry-pushback-ms", "1000") in tuple(error.trailing_metadata())
    assert first.result().outputs and second.result().outputs


def _queued(rpc: Grpc) -> int:
    service = rpc.app.state.service
    return int(service.registry.served("shades").batcher.queue_depth)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_passed_deadline_is_deadline_exceeded_and_its_image_is_not_run(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(max_batch_size=1)
    rpc.loader.delay_s = 0.4
    busy = rpc.oip.ModelInfer.future(infer_request(WHITE))
    _wait_for(lambda: len(rpc.loader.batches) == 1)
    code, details = code_of(lambda: rpc.oip.ModelInfer(infer_request(GRAY), timeout=0.1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
    assert busy.result().outputs
    time.sleep(0.1)
    assert rpc.loader.batches == [1]  # the late request never reached the model
    rpc.loader.delay_s = 0
    assert rpc.oip.ModelInfer(infer_request(WHITE)).outputs


def test_a_cancelled_call_frees_its_batch_slot(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(max_batch_size=1, max_queue_size=1)
    rpc.loader.delay_s = 0.4
    busy = rpc.oip.ModelInfer.future(infer_request(WHITE))
    _wait_for(lambda: len(rpc.loader.batches) == 1)
    gone = rpc.oip.ModelInfer.future(infer_request(GRAY))
    _wait_for(lambda: _queued(rpc) == 1)
    assert gone.cancel()  # the client goes away mid-call
    assert busy.result().outputs
    rpc.loader.delay_s = 0
    assert rpc.oip.ModelInfer(infer_request(WHITE)).outputs  # the queue (size 1) has room again
    assert rpc.loader.batches == [1, 1]  # the cancelled image was never run
    assert _queued(rpc) == 0


def test_grpc_and_http_requests_share_one_batch(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(max_wait_s=0.05)
    rpc.loader.delay_s = 0.3
    busy = rpc.oip.ModelInfer.future(infer_request(WHITE))
    _wait_for(lambda: len(rpc.loader.batches) == 1)
    answers: dict[str, Any] = {}
    http = threading.Thread(
        target=lambda: answers.update(http=rpc.client.post("/predict/shades", files={"file": ("g.png", GRAY)}))
    )
    http.start()
    _wait_for(lambda: _queued(rpc) == 1)
    grpc_call = rpc.oip.ModelInfer.future(infer_request(GRAY))
    http.join(10)
    assert busy.result().outputs and grpc_call.result().outputs
    assert answers["http"].status_code == 200
    assert rpc.loader.batches == [1, 2]  # the HTTP and the gRPC image in one model call


def test_while_draining_calls_are_unavailable_and_health_not_serving(rpc: Grpc) -> None:
    overall = health_pb2.HealthCheckRequest(service="")
    watch = rpc.health.Watch(overall)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    rpc.app.state.draining = True
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # streamed as it changes
    watch.cancel()
    assert rpc.health.Check(overall).status == health_pb2.HealthCheckResponse.NOT_SERVING
    code, details = code_of(lambda: rpc.oip.ModelInfer(infer_request(WHITE)))
    assert code == grpc.StatusCode.UNAVAILABLE and "draining" in details
    code, _ = code_of(lambda: rpc.predict.Predict(_predict_request(_strings(WHITE))))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert rpc.oip.ServerLive(pb.ServerLiveRequest()).live is True
    assert rpc.oip.ServerReady(pb.ServerReadyRequest()).ready is False
    assert rpc.oip.ModelReady(pb.ModelReadyRequest(name="shades")).ready is False


def test_calls_are_counted_by_method_and_status_code_and_timed(rpc: Grpc) -> None:
    oip = {"grpc_service": "inference.GRPCInferenceService", "grpc_method": "ModelInfer"}
    rpc.oip.ModelInfer(infer_request(WHITE))
    rpc.oip.ModelInfer(infer_request(GRAY))
    code, _ = code_of(lambda: rpc.oip.ModelInfer(infer_request(b"not an image")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    missing = pb.ModelInferRequest(model_name="nope")
    missing.inputs.add(name="images", datatype="BYTES", shape=[1]).contents.bytes_contents.append(WHITE)
    assert code_of(lambda: rpc.oip.ModelInfer(missing))[0] == grpc.StatusCode.NOT_FOUND
    rpc.predict.Predict(_predict_request(_strings(WHITE)))
    handled = "grpc_server_handled_total"
    assert metric(rpc.app.state.metrics, handled, **oip, grpc_code="OK") == 2
    # An abort sends its status before the interceptor's count runs: those counts may come a moment later.
    eventually(lambda: metric(rpc.app.state.metrics, handled, **oip, grpc_code="INVALID_ARGUMENT") == 1)
    eventually(lambda: metric(rpc.app.state.metrics, handled, **oip, grpc_code="NOT_FOUND") == 1)
    predict = {"grpc_service": "tensorflow.serving.PredictionService", "grpc_method": "Predict"}
    assert metric(rpc.app.state.metrics, handled, **predict, grpc_code="OK") == 1
    eventually(lambda: metric(rpc.app.state.metrics, "grpc_server_handling_seconds_count", **oip) == 4)
    rpc.app.state.draining = True  # refusals while draining are counted too
    assert code_of(lambda: rpc.oip.ModelInfer(infer_request(WHITE)))[0] == grpc.StatusCode.UNAVAILABLE
    eventually(lambda: metric(rpc.app.state.metrics, handled, **oip, grpc_code="UNAVAILABLE") == 1)


def test_health_overall_per_service_and_per_model(make_grpc: Callable[..., Grpc]) -> None:
    rpc = make_grpc(admin_token="secret")
    for name in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService", "shades"):
        assert rpc.health.Check(health_pb2.HealthCheckRequest(service=name)).status == 1, name
    code, _ = code_of(lambda: rpc.health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    unloaded = rpc.client.post("/v2/repository/models/shades/unload", headers={"Authorization": "Bearer secret"})
    assert unloaded.status_code == 200, unloaded.text
    watch = rpc.health.Watch(health_pb2.HealthCheckRequest(service="shades"))
    statuses = [next(watch).status]
    if statuses[0] == health_pb2.HealthCheckResponse.SERVING:
        statuses.append(next(watch).status)
    watch.cancel()
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_and_describes_the_services(rpc: Grpc) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(rpc.channel)
    (listed,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in listed.list_services_response.service}
    assert names >= {
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.PredictionService")
    (described,) = stub.ServerReflectionInfo(iter([request]))
    files = described.file_descriptor_response.file_descriptor_proto
    assert files  # what grpcurl needs to build requests (tensor.proto and the rest are served on demand)
    assert descriptor_pool.Default().FindServiceByName("tensorflow.serving.PredictionService")


def test_port_zero_serves_no_grpc(make_client: Callable[..., TestClient]) -> None:
    client = make_client(grpc_port=0)
    assert not hasattr(client.app.state, "grpc_port")
    assert client.get("/v2/health/ready").status_code == 200


# ------------------------------------------------------------------------------------ TF Serving
def _strings(*files: bytes) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(files))])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=list(files))


def _uint8(pixels: np.ndarray, packed: bool = True) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in pixels.shape]
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    if packed:
        tensor.tensor_content = pixels.tobytes()
    else:
        tensor.int_val.extend(pixels.ravel().tolist())
    return tensor


def _predict_request(tensor: tensor_pb2.TensorProto, name: str = "images", **spec: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("model", "shades")
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    request.model_spec.signature_name = spec.pop("signature", "")
    request.inputs[name].CopyFrom(tensor)
    return request


def _floats(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    assert tensor.dtype == types_pb2.DT_FLOAT
    return np.frombuffer(tensor.tensor_content, "<f4").reshape([d.size for d in tensor.tensor_shape.dim])


def test_tf_serving_predict_answers_as_its_rest_api(rpc: Grpc) -> None:
    rest = rpc.client.post(
        "/v1/models/shades:predict",
        json={"instances": [{"b64": base64.b64encode(f).decode()} for f in (WHITE, GRAY)]},
    ).json()["predictions"]
    response = rpc.predict.Predict(_predict_request(_strings(WHITE, GRAY), version=1, signature="serving_default"))
    assert (response.model_spec.name, response.model_spec.version.value) == ("shades", 1)
    np.testing.assert_allclose(
        _floats(response.outputs["probabilities"]), [r["probabilities"] for r in rest], rtol=1e-6
    )
    np.testing.assert_allclose(_floats(response.outputs["ood_score"]), [r["ood_score"] for r in rest], rtol=1e-6)
    pixels = np.full((1, 16, 16, 3), 128, np.uint8)
    for packed in (True, False):
        request = _predict_request(_uint8(pixels, packed))
        request.output_filter.append("probabilities")
        response = rpc.predict.Predict(request)
        assert list(response.outputs) == ["probabilities"]
        np.testing.assert_allclose(_floats(response.outputs["probabilities"]), [rest[1]["probabilities"]], atol=1e-6)


BAD_PREDICTS = [
    ("wrong dtype", lambda: _predict_request(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)), "INVALID_ARGUMENT", "DT_FLOAT"),
    ("wrong shape", lambda: _predict_request(_uint8(np.zeros((1, 4, 4, 3), np.uint8))), "INVALID_ARGUMENT", "shape"),
    ("wrong input name", lambda: _predict_request(_strings(WHITE), name="x"), "INVALID_ARGUMENT", "only input is 'images'"),
    ("empty batch", lambda: _predict_request(_strings()), "INVALID_ARGUMENT", "n >= 1"),
    ("not an image", lambda: _predict_request(_strings(b"nope")), "INVALID_ARGUMENT", "element 0"),
    ("unknown model", lambda: _predict_request(_strings(WHITE), model="nope"), "NOT_FOUND", "nope"),
    ("unknown version", lambda: _predict_request(_strings(WHITE), version=4), "NOT_FOUND", "version 4"),
    ("unknown signature", lambda: _predict_request(_strings(WHITE), signature="x"), "NOT_FOUND", "no signature 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "code", "reason"), BAD_PREDICTS, ids=[c[0] for c in BAD_PREDICTS])
def test_tf_serving_bad_predicts(rpc: Grpc, case: str, make: Callable[[], Any], code: str, reason: str) -> None:
    got, details = code_of(lambda: rpc.predict.Predict(make()))
    assert got.name == code and reason in details, (case, got, details)


def test_tf_serving_classify_metadata_and_status(rpc: Grpc) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "shades"
    for image in (WHITE, GRAY):
        request.input.example_list.examples.add().features.feature["images"].bytes_list.value.append(image)
    result = rpc.predict.Classify(request).result
    assert [[(c.label, round(c.score, 4)) for c in k.classes] for k in result.classifications] == [
        [("light", 1.0), ("dark", 0.0)],
        [("light", 0.502), ("dark", 0.498)],
    ]
    empty = classification_pb2.ClassificationRequest()
    empty.model_spec.name = "shades"
    assert code_of(lambda: rpc.predict.Classify(empty))[0] == grpc.StatusCode.INVALID_ARGUMENT

    asked = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    asked.model_spec.name = "shades"
    metadata = rpc.predict.GetModelMetadata(asked)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    signature: meta_graph_pb2.SignatureDef = signatures.signature_def["serving_default"]
    rest = rpc.client.get("/v1/models/shades/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert signature.inputs["images"].name == rest["serving_default"]["inputs"]["images"]["name"]
    assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [-1, 16, 16, 3]
    assert set(signature.outputs) == {"probabilities", "ood_score"}
    asked.metadata_field[:] = []
    assert code_of(lambda: rpc.predict.GetModelMetadata(asked))[0] == grpc.StatusCode.INVALID_ARGUMENT

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "shades"
    (version,) = rpc.models.GetModelStatus(status).model_version_status
    assert (version.version, version.state, version.status.error_code) == (1, 30, 0)  # AVAILABLE, OK
    status.model_spec.name = "nope"
    assert code_of(lambda: rpc.models.GetModelStatus(status))[0] == grpc.StatusCode.NOT_FOUND
