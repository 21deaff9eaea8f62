"""Open Inference Protocol (KServe v2) surface, so standard clients can use the service.

`POST /v2/models/{task}/infer` takes one input tensor: `BYTES` of base64-encoded image files (shape [n])
decoded exactly like uploads, or `UINT8` pixels of the model's exact input shape [n, H, W, C]. It returns
an `FP32` tensor of calibrated probabilities [n, classes] and, for models with an out-of-distribution
score, an `FP32` tensor `ood_score` [n] (flag an image when it is above the threshold of
`GET /models/{task}`). Errors are `{"error": "..."}` as the protocol says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

import numpy as np
from fastapi import APIRouter, Request

from app.errors import InvalidRequest, NotReady, PayloadTooLarge
from app.registry import OOD_SCORE, PROBABILITIES, LoadedModel
from app.schemas import V2InferRequest, V2InferResponse, V2ModelMetadata, V2Tensor, V2TensorMetadata
from app.service import ModelService

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
_FLT_MAX = float(np.finfo(np.float32).max)


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    service = _service(request)
    if not service.ready:
        raise NotReady("models are still loading", service.settings.retry_after_s)
    return {"ready": True}


@router.get("/models/{task}", response_model=V2ModelMetadata)
async def model_metadata(request: Request, task: str) -> V2ModelMetadata:
    model = _service(request).model(task)
    info, sig = model.metadata.input, model.metadata.signature
    outputs = [V2TensorMetadata(name=sig.output, datatype="FP32", shape=[-1, len(model.metadata.labels)])]
    if model.metadata.ood is not None:
        outputs.append(V2TensorMetadata(name=model.metadata.ood.output, datatype="FP32", shape=[-1]))
    return V2ModelMetadata(
        name=task,
        versions=[str(model.metadata.version)],
        platform="tensorflow_savedmodel",
        inputs=[
            V2TensorMetadata(name=sig.input, datatype="BYTES", shape=[-1]),
            V2TensorMetadata(name=sig.input, datatype="UINT8", shape=[-1, info.height, info.width, info.channels]),
        ],
        outputs=outputs,
    )


@router.get("/models/{task}/ready")
async def model_ready(request: Request, task: str) -> dict[str, object]:
    _service(request).model(task)  # 404 unknown, 503 loading
    return {"name": task, "ready": True}


@router.post("/models/{task}/infer", response_model=V2InferResponse)
async def infer(request: Request, task: str, body: V2InferRequest) -> V2InferResponse:
    service = _service(request)
    model = service.model(task)
    tensor = body.inputs[0]
    if tensor.datatype == "BYTES":
        images = await _decode_bytes(service, task, model, tensor)
    elif tensor.datatype == "UINT8":
        _check_count(service, task, tensor.shape[0] if tensor.shape else 0)
        images = _pixels(model, tensor)
    else:
        raise InvalidRequest(f"input datatype must be BYTES (encoded images) or UINT8 (pixels), got {tensor.datatype}")
    results = await service.infer(task, images)
    meta = model.metadata
    names = {PROBABILITIES: meta.signature.output, OOD_SCORE: meta.ood.output if meta.ood else OOD_SCORE}
    tensors = []
    for ours in model.outputs:
        # JSON has no NaN or infinity: a non-finite score is sent as the largest float32 (flagged).
        stacked = np.nan_to_num(np.stack([r[ours] for r in results]), nan=_FLT_MAX, posinf=_FLT_MAX, neginf=-_FLT_MAX)
        tensors.append(
            V2Tensor(name=names[ours], datatype="FP32", shape=list(stacked.shape), data=stacked.ravel().tolist())
        )
    return V2InferResponse(model_name=task, model_version=str(meta.version), id=body.id, outputs=tensors)


def _check_count(service: ModelService, task: str, count: int) -> None:
    if count < 1:
        raise InvalidRequest("the input tensor holds no image")
    if count > service.settings.max_files_per_request:
        raise PayloadTooLarge(f"{count} images in one request; the limit is {service.settings.max_files_per_request}")
    service.admit(task, count)


async def _decode_bytes(service: ModelService, task: str, model: LoadedModel, tensor: V2Tensor) -> list[np.ndarray]:
    if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data):
        raise InvalidRequest(
            f"BYTES input shape must be [{len(tensor.data)}] for {len(tensor.data)} images, got {tensor.shape}"
        )
    _check_count(service, task, len(tensor.data))
    files: list[bytes] = []
    for index, item in enumerate(tensor.data):
        if not isinstance(item, str):
            raise InvalidRequest(f"BYTES element {index} must be a base64 string")
        try:
            files.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as error:
            raise InvalidRequest(f"BYTES element {index} is not valid base64: {error}") from error

    return list(
        await asyncio.gather(
            *(service.preprocess(task, data, model.spec, f"element {i}") for i, data in enumerate(files))
        )
    )


def _pixels(model: LoadedModel, tensor: V2Tensor) -> list[np.ndarray]:
    info = model.metadata.input
    expected = [info.height, info.width, info.channels]
    if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
        raise InvalidRequest(f"UINT8 input shape must be [n, {', '.join(map(str, expected))}], got {tensor.shape}")
    try:
        flat = np.asarray(tensor.data, dtype=np.int64).ravel()
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidRequest(f"UINT8 data must be integers: {error}") from error
    if flat.size != int(np.prod(tensor.shape)):
        raise InvalidRequest(
            f"UINT8 data has {flat.size} values, shape {tensor.shape} needs {int(np.prod(tensor.shape))}"
        )
    if flat.size and (flat.min() < 0 or flat.max() > 255):
        raise InvalidRequest("UINT8 values must be in 0..255")
    return list(flat.astype(np.uint8).reshape(tensor.shape))
