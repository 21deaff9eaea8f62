"""Open Inference Protocol (KServe v2) surface, so standard clients can use the service.

`POST /v2/models/{task}/infer` takes one input tensor: `BYTES` of base64-encoded image files (shape [n])
decoded exactly like uploads, or `UINT8` pixels of the model's exact input shape [n, H, W, C]. It returns
an `FP32` tensor of calibrated probabilities [n, classes] and, for models with an out-of-distribution
score, an `FP32` tensor `ood_score` [n] (flag an image when it is above the threshold of
`GET /models/{task}`). Errors are `{"error": "..."}` as the protocol says.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from pydantic import ValidationError

from app.bodies import read_body
from app.errors import InvalidRequest, NotReady
from app.imaging import ImageSpec
from app.model import OOD_SCORE, PROBABILITIES
from app.routes import get_and_head
from app.schemas import V2Error, V2InferRequest, V2InferResponse, V2ModelMetadata, V2Tensor, V2TensorMetadata
from app.service import ModelService
from app.tensors import Images, b64_file, uint8_pixels, validation_message

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
_FLT_MAX = float(np.finfo(np.float32).max)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": text}
    for code, text in {
        400: "corrupt or truncated image",
        404: "unknown task",
        408: "the request body did not arrive in time",
        413: "body, image or decode too large",
        415: "not an image type the service decodes",
        422: "malformed request",
        503: "not ready, draining or overloaded (see Retry-After)",
    }.items()
}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {code: ERRORS[code] for code in (404, 503)}
# The request body is read and parsed by the route itself (off the event loop when large), so its schema is
# declared here; V2Tensor reaches the components through the response model.
INFER_REQUEST_SCHEMA = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
INFER_REQUEST_SCHEMA.pop("$defs", None)


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


@get_and_head(router, "/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@get_and_head(router, "/health/ready", responses={503: ERRORS[503]})
async def ready(request: Request) -> dict[str, bool]:
    service = _service(request)
    if request.app.state.draining:
        raise NotReady("draining: the service is shutting down", service.settings.retry_after_s)
    if not service.ready:
        raise NotReady("models are still loading", service.settings.retry_after_s)
    return {"ready": True}


def _metadata(request: Request, task: str, version: int | None) -> V2ModelMetadata:
    service = _service(request)
    model = service.model(task, version)
    meta, info, sig = model.metadata, model.metadata.input, model.metadata.signature
    outputs = [V2TensorMetadata(name=sig.output, datatype="FP32", shape=[-1, len(meta.labels)])]
    if meta.ood is not None:
        outputs.append(V2TensorMetadata(name=meta.ood.output, datatype="FP32", shape=[-1]))
    return V2ModelMetadata(
        name=task,
        versions=[str(v) for v in service.registry.versions(task)],
        platform="tensorflow_savedmodel",
        inputs=[
            V2TensorMetadata(name=sig.input, datatype="BYTES", shape=[-1]),
            V2TensorMetadata(name=sig.input, datatype="UINT8", shape=[-1, info.height, info.width, info.channels]),
        ],
        outputs=outputs,
    )


VersionPath = Annotated[int, Path(ge=1, description="a served version")]


@router.get("/models/{task}", response_model=V2ModelMetadata, responses=MODEL_ERRORS)
async def model_metadata(request: Request, task: str) -> V2ModelMetadata:
    """The task's highest served version: inputs, outputs, and every version served."""
    return _metadata(request, task, None)


@router.get("/models/{task}/versions/{version:int}", response_model=V2ModelMetadata, responses=MODEL_ERRORS)
async def model_version_metadata(request: Request, task: str, version: VersionPath) -> V2ModelMetadata:
    return _metadata(request, task, version)


@router.get("/models/{task}/ready", responses=MODEL_ERRORS)
async def model_ready(request: Request, task: str) -> dict[str, object]:
    _service(request).model(task)  # 404 unknown, 503 loading
    return {"name": task, "ready": True}


@router.get("/models/{task}/versions/{version:int}/ready", responses=MODEL_ERRORS)
async def model_version_ready(request: Request, task: str, version: VersionPath) -> dict[str, object]:
    _service(request).model(task, version)
    return {"name": task, "version": str(version), "ready": True}


_INFER_OPTIONS: dict[str, Any] = {
    "response_model": V2InferResponse,
    "responses": ERRORS,
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST_SCHEMA}}}
    },
}


@router.post("/models/{task}/infer", **_INFER_OPTIONS)
async def infer(request: Request, task: str) -> V2InferResponse:
    """Classify a batch: a `BYTES` tensor of base64 image files, or a `UINT8` tensor of pixels."""
    return await _infer(request, task, None)


@router.post("/models/{task}/versions/{version:int}/infer", **_INFER_OPTIONS)
async def infer_version(request: Request, task: str, version: VersionPath) -> V2InferResponse:
    """`infer` on one served version."""
    return await _infer(request, task, version)


async def _infer(request: Request, task: str, version: int | None) -> V2InferResponse:
    service = _service(request)
    async with service.lease(task, version) as served:
        spec = served.model.spec
        raw = await read_body(request, service.settings.max_json_bytes, "JSON body")
        parsed = await request.app.state.json_parser(raw, partial(parse_infer_request, spec=spec))
        results = await service.run(served, parsed.images, [f"element {i}" for i in range(len(parsed.images))])
    meta = served.model.metadata
    names = {PROBABILITIES: meta.signature.output, OOD_SCORE: meta.ood.output if meta.ood else OOD_SCORE}
    tensors = []
    for ours in served.model.outputs:
        # JSON has no NaN or infinity: a non-finite score is sent as the largest float32 (flagged).
        stacked = np.nan_to_num(np.stack([r[ours] for r in results]), nan=_FLT_MAX, posinf=_FLT_MAX, neginf=-_FLT_MAX)
        tensors.append(
            V2Tensor(name=names[ours], datatype="FP32", shape=list(stacked.shape), data=stacked.ravel().tolist())
        )
    return V2InferResponse(model_name=task, model_version=str(meta.version), id=parsed.id, outputs=tensors)


# ------------------------------------------------------------------------------ request parsing
@dataclass
class ParsedInfer:
    """An infer request reduced to what the pipeline needs."""

    id: str | None
    images: Images


def parse_infer_request(raw: bytes, spec: ImageSpec) -> ParsedInfer:
    """Validate the JSON body and convert its one input tensor; every fault is `InvalidRequest` (422).
    Runs in the JSON parser process for large bodies, so all of the per-element work happens here."""
    try:
        body = V2InferRequest.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidRequest(validation_message(error)) from error
    tensor = body.inputs[0]
    if tensor.datatype == "BYTES":
        if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data) or not tensor.data:
            raise InvalidRequest(
                f"BYTES input shape must be [n] for n >= 1 images, got {tensor.shape} for {len(tensor.data)} elements"
            )
        return ParsedInfer(
            body.id, Images(files=[b64_file(x, f"BYTES element {i}") for i, x in enumerate(tensor.data)])
        )
    if tensor.datatype == "UINT8":
        return ParsedInfer(body.id, Images(pixels=uint8_pixels(tensor.data, tensor.shape, spec, "UINT8 data")))
    raise InvalidRequest(f"input datatype must be BYTES (encoded images) or UINT8 (pixels), got {tensor.datatype}")
