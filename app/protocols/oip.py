"""Open Inference Protocol (KServe v2) surface, so standard clients (NVIDIA's `tritonclient`, the `kserve`
SDK) can use the service.

`POST /v2/models/{task}[/versions/{v}]/infer` takes one input tensor named as the signature's input; its
datatype tells what it holds: `BYTES` [n] encoded image files (base64 in JSON, or raw with the binary
tensor data extension), decoded exactly like uploads, or `UINT8` [n, H, W, C] pixels. It returns `FP32`
calibrated probabilities [n, classes] and, for models with an out-of-distribution score, `ood_score` [n]
(flag an image when it is above the threshold of `GET /models/{task}`). The body is JSON whatever its
Content-Type says, may be gzip- or deflate-compressed, and follows the binary tensor data extension
(`app.protocols.oip_codec`) when `Inference-Header-Content-Length` is set. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from app import DISTRIBUTION, service_version
from app.core.errors import InvalidRequest, NotReady, PayloadTooLarge
from app.core.model import LoadedModel, TensorInfo
from app.core.pipeline import Options
from app.protocols.base import PredictRoute, RestProtocol
from app.protocols.bodies import read_body
from app.protocols.oip_codec import (
    HEADER_LENGTH,
    InferRequest,
    V2InferResponse,
    infer_response,
    output_arrays,
    parse_infer_request,
)
from app.protocols.rest import JsonParserDep, ServiceDep, V2Error, error_responses, get_and_head

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
ERRORS = error_responses(V2Error)
MODEL_ERRORS = error_responses(V2Error, 404, 503)
# The request body is read and parsed by the route itself (off the event loop when large), so its schema is
# declared here, and its definitions join the document's components (`app.http.application` adds SCHEMAS).
_REQUEST = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS = {**_REQUEST.pop("$defs", {}), "InferRequest": _REQUEST}
INFER_REQUEST_SCHEMA = {"$ref": "#/components/schemas/InferRequest"}


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]

    @classmethod
    def of(cls, tensor: TensorInfo) -> V2TensorMetadata:
        return cls(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


@router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> V2ServerMetadata:
    """Server metadata: name, version and the protocol extensions served."""
    return V2ServerMetadata(
        name=DISTRIBUTION, version=service_version(), extensions=["binary_tensor_data", "model_repository"]
    )


@get_and_head(router, "/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@get_and_head(router, "/health/ready", responses={503: ERRORS[503]})
async def ready(service: ServiceDep) -> dict[str, bool]:
    if service.draining:
        raise NotReady("draining: the service is shutting down", service.settings.retry_after_s)
    if not service.ready:
        raise NotReady("models are still loading", service.settings.retry_after_s)
    return {"ready": True}


def _metadata(model: LoadedModel, versions: list[int]) -> V2ModelMetadata:
    return V2ModelMetadata(
        name=model.metadata.task,
        versions=[str(v) for v in versions],
        platform="tensorflow_savedmodel",
        # One entry per input: the model's own (pixels). A BYTES tensor of shape [n] under the same name,
        # holding encoded image files, is accepted too: the request's datatype tells which it is.
        inputs=[V2TensorMetadata.of(model.input_tensor())],
        outputs=[V2TensorMetadata.of(tensor) for tensor in model.output_tensors().values()],
    )


VersionPath = Annotated[int, Path(ge=1, description="a served version")]


@router.get("/models/{task}", response_model=V2ModelMetadata, responses=MODEL_ERRORS)
async def model_metadata(service: ServiceDep, task: str) -> V2ModelMetadata:
    """The task's highest served version: inputs, outputs, and every version served."""
    return _metadata(service.model(task), service.versions(task))


@router.get("/models/{task}/versions/{version:int}", response_model=V2ModelMetadata, responses=MODEL_ERRORS)
async def model_version_metadata(service: ServiceDep, task: str, version: VersionPath) -> V2ModelMetadata:
    return _metadata(service.model(task, version), service.versions(task))


@router.get("/models/{task}/ready", responses=MODEL_ERRORS)
async def model_ready(service: ServiceDep, task: str) -> dict[str, object]:
    service.model(task)  # 404 unknown, 503 loading
    return {"name": task, "ready": True}


@router.get("/models/{task}/versions/{version:int}/ready", responses=MODEL_ERRORS)
async def model_version_ready(service: ServiceDep, task: str, version: VersionPath) -> dict[str, object]:
    service.model(task, version)
    return {"name": task, "version": str(version), "ready": True}


_INFER_OPTIONS: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"model": V2InferResponse, "content": {"application/octet-stream": {}}}, **ERRORS},
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST_SCHEMA}}}
    },
}


@router.post("/models/{task}/infer", **_INFER_OPTIONS)
async def infer(request: Request, service: ServiceDep, parser: JsonParserDep, task: str) -> Response:
    """Classify a batch: a `BYTES` tensor of image files, or a `UINT8` tensor of pixels."""
    return await _infer(request, service, parser, task, None)


@router.post("/models/{task}/versions/{version:int}/infer", **_INFER_OPTIONS)
async def infer_version(
    request: Request, service: ServiceDep, parser: JsonParserDep, task: str, version: VersionPath
) -> Response:
    """`infer` on one served version."""
    return await _infer(request, service, parser, task, version)


async def _infer(
    request: Request, service: ServiceDep, parser: JsonParserDep, task: str, version: int | None
) -> Response:
    settings, pipeline = service.settings, service.pipeline
    async with pipeline.lease(task, version) as served:
        spec = served.model.spec
        raw = await read_body(request, settings.max_upload_bytes)
        header, binary = _split(raw, request.headers.get(HEADER_LENGTH))
        if len(header) > settings.max_json_bytes:
            raise PayloadTooLarge(f"JSON of {len(header):,} bytes exceeds the {settings.max_json_bytes:,}-byte limit")
        parsed = await parser(header, partial(parse_infer_request, spec=spec, binary=binary))
        options = Options(version=version, coverage=parsed.coverage)
        result = await pipeline.run(served, parsed.images.named("element"), options)
    return infer_response(task, result.model.version, parsed.id, output_arrays(result, parsed.coverage), parsed)


def _split(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it (binary tensor data extension)."""
    if header_length is None:
        return raw, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(raw):
        raise InvalidRequest(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(raw)}-byte body")
    return raw[: int(header_length)], raw[int(header_length) :]


PROTOCOL = RestProtocol(
    name="oip",
    router=router,
    error_model=V2Error,
    error_key="error",
    prefixes=("/v2/",),
    predict_routes=(
        PredictRoute(re.compile(r"^/v2/models/(?P<task>[^/]+)(?:/versions/\d+)?/infer$"), "/v2/models/{task}/infer"),
    ),
    schemas=SCHEMAS,
)
