"""gRPC against a running service (`python -m app`) with clients no one on the project wrote:
`tritonclient.grpc` and TF Serving's stubs from `tensorflow-serving-api` in a virtualenv of their own
(tests/clients/grpc_clients.py; tritonclient needs protobuf < 7, and tensorflow-serving-api needs TensorFlow,
here tensorflow-cpu, so it is installed without its dependency on `tensorflow`), and grpcio's own
`grpc.health.v1` and reflection clients from this process, reading the services as grpcurl does."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from stress.process import ROOT, free_port, service
from stress.venvs import ensure
from tests.helpers import image_bytes

# tritonclient[grpc] 2.73 wants protobuf < 7; tensorflow-cpu 2.21 >= 6.31.1: 6.33 suits both.
CLIENTS = ["tritonclient[grpc]==2.73.0", "tensorflow-cpu==2.21.0", "protobuf==6.33.6", "pillow==13.0.0", "numpy==2.4.6"]
SERVING_API = "tensorflow-serving-api==2.21.0"  # depends on `tensorflow`; tensorflow-cpu is the same package
UPLOAD_LIMIT = 2**20
pytestmark = pytest.mark.e2e


def clients_python() -> Path:
    python = ensure("grpc-clients", CLIENTS)
    has_api = subprocess.run([str(python), "-c", "import tensorflow_serving.apis"], capture_output=True, check=False)
    if has_api.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", SERVING_API], check=True)
    return python


def test_real_grpc_clients_talk_to_the_service(real_model_dir: Path, tmp_path: Path) -> None:
    python = clients_python()
    photo = tmp_path / "gray.jpg"
    photo.write_bytes(image_bytes((120, 120, 120), size=(64, 48), fmt="JPEG"))
    port = free_port()
    env = {
        "APP_MODEL_DIR": str(real_model_dir),
        "APP_LOG_LEVEL": "warning",
        "APP_GRPC_PORT": str(port),
        "APP_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    }
    with service(env):
        script = ROOT / "tests" / "clients" / "grpc_clients.py"
        command = [str(python), str(script), "--address", f"127.0.0.1:{port}", "--task", "shades"]
        command += ["--image", str(photo), "--giant-bytes", str(2 * UPLOAD_LIMIT)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    triton, serving = report["tritonclient"], report["tf_serving"]

    assert triton["is_server_live"] is True and triton["is_server_ready"] is True and triton["is_model_ready"] is True
    assert triton["server_metadata"]["name"] == "image-classifier-service"
    assert [i["name"] for i in triton["model_metadata"]["inputs"]] == ["images"]
    assert [o["name"] for o in triton["model_metadata"]["outputs"]] == ["probabilities", "ood_score"]
    infers = {k: v for k, v in triton.items() if k.startswith("infer ") and isinstance(v, dict)}
    assert sorted(infers) == ["infer BYTES", "infer BYTES gzip", "infer UINT8", "infer UINT8 gzip"]
    predicts = {k: v for k, v in serving.items() if k.startswith("predict ")}
    answers = {(v["top"], v["confidence"], v["ood_score"]) for v in [*infers.values(), *predicts.values()]}
    assert len(answers) == 1, (infers, predicts)  # every client and encoding classified the image the same way
    (top, confidence, _) = answers.pop()
    assert triton["class_count 2"][0].endswith(f":{top}:{['dark', 'light'][top]}")
    assert float(triton["class_count 2"][0].split(":")[0]) == pytest.approx(confidence, abs=1e-4)
    assert triton["infer version 1"] == "1"

    errors = triton["errors"]
    expected = {
        "wrong dtype": ("INVALID_ARGUMENT", "BYTES (encoded images) or UINT8"),
        "wrong shape": ("INVALID_ARGUMENT", "shape must be [n, 8, 8, 3]"),
        "missing input": ("INVALID_ARGUMENT", "the request has 0"),
        "empty batch": ("INVALID_ARGUMENT", "n >= 1"),
        "not an image": ("INVALID_ARGUMENT", "element 0"),
        "giant message": ("RESOURCE_EXHAUSTED", "larger than max"),
        "unknown model": ("NOT_FOUND", "no-such-model"),
        "unknown version": ("NOT_FOUND", "version 99"),
        "unknown model ready": ("NOT_FOUND", "no-such-model"),
        "disconnect mid-call": ("DEADLINE_EXCEEDED", ""),
    }
    for case, (code, reason) in expected.items():
        assert errors[case]["code"] == f"StatusCode.{code}", (case, errors[case])
        assert reason in errors[case]["message"], (case, errors[case])
    assert triton["after the errors"]["top"] == top  # nothing stuck: the service still answers

    assert serving["classify"][0][0] == ["dark", "light"][top]
    assert serving["classify"][0][1] == pytest.approx(confidence, abs=1e-4)
    assert serving["metadata"] == {
        "inputs": {"images": ["serving_default_images:0", "uint8", [-1, 8, 8, 3]]},
        "outputs": ["ood_score", "probabilities"],
        "method_name": "tensorflow/serving/predict",
    }
    assert serving["status"] == [[1, "AVAILABLE"]]
    assert serving["predict encoded"]["model_spec"] == ["shades", 1]
    expected_serving = {
        "wrong dtype": "INVALID_ARGUMENT",
        "wrong shape": "INVALID_ARGUMENT",
        "wrong input": "INVALID_ARGUMENT",
        "not an image": "INVALID_ARGUMENT",
        "unknown model": "NOT_FOUND",
        "unknown version": "NOT_FOUND",
    }
    for case, code in expected_serving.items():
        assert serving["errors"][case]["code"] == f"StatusCode.{code}", (case, serving["errors"][case])
        assert serving["errors"][case]["message"], case


def test_health_and_reflection_clients_and_the_drain(real_model_dir: Path) -> None:
    port = free_port()
    env = {"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "warning", "APP_GRPC_PORT": str(port)}
    env["APP_DRAIN_S"] = "3"
    with service(env) as live, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService", "shades"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == 1, name
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no-such-model"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]

        # Reflection, as grpcurl uses it: list the services, then build their descriptors from the server.
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) >= {
            "inference.GRPCInferenceService",
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
            "grpc.health.v1.Health",
        }
        pool = descriptor_pool.DescriptorPool(database)
        predict = pool.FindServiceByName("tensorflow.serving.PredictionService").methods_by_name["Predict"]
        assert predict.input_type.fields_by_name["inputs"].message_type.fields_by_name[
            "value"
        ].message_type.full_name == (
            "tensorflow.TensorProto"
        )  # the TensorFlow protos it imports came over reflection too
        infer = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
        assert infer.output_type.name == "ModelInferResponse"

        # SIGTERM: the drain begins; the health Watch stream says NOT_SERVING while the process still serves.
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        live.signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert time.monotonic() - started < 2
        watch.cancel()
        assert live.process.poll() is None  # still draining
