"""The Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService` (KServe's `grpc_predict_v2`
as Triton defines it, so `tritonclient.grpc` and KServe's client work unmodified).

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, as the REST side
(`app.protocols.oip`) answers them. ModelInfer takes one input tensor, named as the model's input, whose
datatype tells what it holds: `BYTES` [n] encoded image files (decoded like uploads) or `UINT8` [n, H, W, C]
pixels, in typed contents (`bytes_contents`, `uint_contents`) or in `raw_input_contents` (BYTES elements
each prefixed by its 4-byte little-endian length, UINT8 packed), decoded by the REST side's codec
(`app.protocols.oip_codec`). Parameters: `top_k` (int), `coverage` (double, one the model records) and
the version in `model_version`. Outputs, all unless some are asked for, in `raw_output_contents` (as Triton
sends them): `probabilities` FP32 [n, classes], `ood_score` FP32 [n] where the model has one,
`prediction_set` BOOL [n, classes] with a coverage, and with `top_k` a `top_k` BYTES [n, k] of
"score:index:label" (Triton's classification format, which an output asked for with the `classification`
parameter, tritonclient's `class_count`, also takes). The other Triton RPCs answer UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from grpc import aio

from app import DISTRIBUTION, service_version
from app.core.errors import InvalidRequest, NotReady
from app.core.imaging import ImageSpec
from app.core.model import LoadedModel
from app.core.pipeline import Options, Result
from app.core.service import ModelService
from app.core.tensors import Images
from app.protocols.grpc.generated import grpc_service_pb2 as pb
from app.protocols.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from app.protocols.grpc.status import answers_errors, deadline
from app.protocols.oip_codec import V2Tensor, binary_images, finite_fp32, output_arrays, parse_coverage

SERVICE = "inference.GRPCInferenceService"
TOP_K = "top_k"  # the BYTES output the top_k parameter adds
_CONTENTS = {"BYTES": "bytes_contents", "UINT8": "uint_contents"}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over the model service."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready and not self.service.draining)

    @answers_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        """ready=false while the model loads or the server drains; NOT_FOUND for an unknown model or version."""
        try:
            self.service.model(request.name, _version(request.version))
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.service.draining)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=DISTRIBUTION, version=service_version(), extensions=["classification"])

    @answers_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self.service.model(request.name, _version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.metadata.task,
            versions=[str(v) for v in self.service.versions(request.name)],
            platform="tensorflow_savedmodel",
            # The model's own input (pixels); a BYTES [n] tensor under the same name holds encoded files.
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in [model.input_tensor()]],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.output_tensors().values()],
        )

    @answers_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        version = _version(request.model_version)
        parameters = _parameters(request.parameters)
        pipeline = self.service.pipeline
        async with pipeline.lease(request.model_name, version) as served:
            images = parse_inputs(request, served.model.spec)
            options = Options(
                version=version,
                top_k=_top_k(parameters.get("top_k")),
                coverage=parse_coverage(parameters.get("coverage")),
                deadline=deadline(context),
            )
            result = await pipeline.run(served, images.named("element"), options)
        return infer_response(request, result, options)


def _version(text: str) -> int | None:
    """The `version` string of a request: "" for the highest served, else a positive integer."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"model version must be a positive integer, got {text!r}")
    return int(text)


def _parameters(parameters: Any) -> dict[str, Any]:
    """A protobuf map of `InferParameter` -> name: Python value (whichever of the oneof is set)."""
    values = {}
    for name, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[name] = None if which is None else getattr(parameter, which)
    return values


def _top_k(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"parameter top_k must be a positive integer, got {value!r}")
    return value


def parse_inputs(request: pb.ModelInferRequest, spec: ImageSpec) -> Images:
    """The request's one input tensor as images; every fault is `InvalidRequest` naming it."""
    if len(request.inputs) != 1:
        raise InvalidRequest(f"the model takes one input tensor; the request has {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype not in _CONTENTS:
        raise InvalidRequest(
            f"input datatype must be BYTES (encoded images) or UINT8 (pixels), got {tensor.datatype or 'none'}"
        )
    shape = list(tensor.shape)
    if not shape or shape[0] < 1:  # an empty batch holds no data, which proto3 cannot tell from missing data
        raise InvalidRequest(f"{tensor.datatype} input shape must start with n >= 1 images, got {shape}")
    given = [field.name for field, _ in tensor.contents.ListFields()]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidRequest(f"raw_input_contents holds {len(request.raw_input_contents)} tensors; 1 input")
        if given:
            raise InvalidRequest(f"input {tensor.name!r} has both contents and raw_input_contents")
        return binary_images(
            V2Tensor(name=tensor.name, shape=shape, datatype=tensor.datatype), request.raw_input_contents[0], spec
        )
    expected = _CONTENTS[tensor.datatype]
    if given != [expected]:
        raise InvalidRequest(
            f"{tensor.datatype} input {tensor.name!r} must hold its data in contents.{expected} or "
            f"raw_input_contents; it has {', '.join(given) or 'no data'}"
        )
    if tensor.datatype == "BYTES":
        files = list(tensor.contents.bytes_contents)
        if len(shape) != 1 or shape[0] != len(files):
            raise InvalidRequest(f"BYTES input shape must be [n] for its {len(files)} elements, got {shape}")
        return Images(files=files)
    values = np.asarray(tensor.contents.uint_contents, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise InvalidRequest("UINT8 values must be in 0..255")
    return binary_images(
        V2Tensor(name=tensor.name, shape=shape, datatype="UINT8"), values.astype(np.uint8).tobytes(), spec
    )


def infer_response(request: pb.ModelInferRequest, result: Result, options: Options) -> pb.ModelInferResponse:
    """The outputs of `result` the request asks for (all by default), as raw little-endian contents."""
    model = result.model
    tensors = model.output_tensors()
    outputs = output_arrays(result, options.coverage)
    probabilities = outputs[tensors[next(iter(tensors))].name]
    if options.top_k is not None:
        outputs[TOP_K] = _classification(probabilities, model, options.top_k)
    asked = [(o.name, _parameters(o.parameters).get("classification")) for o in request.outputs]
    unknown = sorted({name for name, _ in asked} - set(outputs))
    if unknown:
        raise InvalidRequest(f"unknown output(s) {unknown}; the model has {sorted(outputs)}")
    response = pb.ModelInferResponse(model_name=model.metadata.task, model_version=str(model.version), id=request.id)
    for name, classes in asked or [(name, None) for name in outputs]:
        values = outputs[name]
        if classes is not None:  # Triton's classification extension: the top `classes` of this output
            if values.dtype == np.bool_ or values.ndim != 2:
                raise InvalidRequest(f"output {name!r} is not a score per class; it cannot be classified")
            values = _classification(values, model, _top_k(classes) or 1)
        datatype, raw = _raw(values)
        response.outputs.add(name=name, datatype=datatype, shape=values.shape)
        response.raw_output_contents.append(raw)
    return response


def _classification(scores: np.ndarray, model: LoadedModel, k: int) -> np.ndarray:
    """Each row's `k` highest scores as Triton's "score:index:label" strings, highest first."""
    labels = model.metadata.labels
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = [[f"{row[i]:f}:{i}:{labels[i]}".encode() for i in top] for row, top in zip(scores, order, strict=True)]
    return np.array(rows, dtype=object)


def _raw(values: np.ndarray) -> tuple[str, bytes]:
    """An output's datatype and raw contents (BYTES elements length-prefixed, as on the wire)."""
    if values.dtype == np.object_:
        return "BYTES", b"".join(len(v).to_bytes(4, "little") + v for v in values.ravel())
    if values.dtype == np.bool_:
        return "BOOL", values.astype(np.bool_).tobytes()
    return "FP32", finite_fp32(values).tobytes()
