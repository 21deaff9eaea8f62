"""TensorFlow Serving's REST API, so that its clients switch to this service by changing only the host.

- `GET /v1/models/{task}[/versions/{v}]`: `model_version_status`, as TF Serving's GetModelStatus.
- `GET /v1/models/{task}[/versions/{v}]/metadata`: the `serving_default` signature_def.
- `POST /v1/models/{task}[/versions/{v}]:predict`: the row format (`instances`) or the columnar one
  (`inputs`). An image is either `{"b64": "<encoded file>"}`, decoded exactly like an upload, or a uint8
  array of the model's exact input shape; either may be wrapped in `{"images": ...}` (the input's name).
  The answer holds every output of the signature: `predictions` (one object per image with
  `probabilities` and, if the model has one, `ood_score`) or `outputs` (one list per output).

Errors are `{"error": "..."}`, as TF Serving sends them. Batching, queue limits and metrics are those of
every other route.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request

from app.core.errors import InvalidRequest, NotFound
from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel
from app.core.registry import State
from app.core.schemas import V2Error
from app.core.service import ModelService
from app.core.tensors import Images, b64_file, nested_shape, uint8_pixels
from app.protocols.bodies import read_body
from app.protocols.native import error_responses

router = APIRouter(prefix="/v1/models", tags=["tensorflow-serving"])
VersionPath = Annotated[int, Path(ge=1, description="a model version")]
ERRORS = error_responses(V2Error)
_STATES = {State.READY: "AVAILABLE", State.LOADING: "LOADING", State.UNAVAILABLE: "END"}


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


# Predict first: Starlette answers a path that matches no route's method with the first route whose
# path matches, and `{task}` of the status route would also match `flowers:predict`.
# --------------------------------------------------------------------------------------- predict
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "signature_name": {"type": "string"},
                        "instances": {"type": "array", "items": {}},
                        "inputs": {},
                    },
                }
            }
        },
    }
}


@router.post("/{task}:predict", responses=ERRORS, openapi_extra=_PREDICT_BODY)
async def predict(request: Request, task: str) -> dict[str, Any]:
    """Classify `instances` (row format) or `inputs` (columnar) with the highest served version."""
    return await _predict(request, task, None)


@router.post("/{task}/versions/{version:int}:predict", responses=ERRORS, openapi_extra=_PREDICT_BODY)
async def predict_version(request: Request, task: str, version: VersionPath) -> dict[str, Any]:
    return await _predict(request, task, version)


async def _predict(request: Request, task: str, version: int | None) -> dict[str, Any]:
    service = _service(request)
    async with service.lease(task, version) as served:
        model = served.model
        raw = await read_body(request, service.settings.max_json_bytes, "JSON body")
        parse = partial(parse_predict_request, spec=model.spec, input_name=model.metadata.signature.input)
        parsed = await request.app.state.json_parser(raw, parse)
        if parsed.signature_name not in ("", model.metadata.signature.name):
            raise NotFound(
                f"model {task!r} has no signature {parsed.signature_name!r}; it has {model.metadata.signature.name!r}"
            )
        results = await service.run(served, parsed.images, [f"instance {i}" for i in range(len(parsed.images))])
    names = _output_names(model)
    if parsed.columnar:
        columns = {names[o]: np.stack([r[o] for r in results]).tolist() for o in model.outputs}
        return {"outputs": columns if len(columns) > 1 else next(iter(columns.values()))}
    rows = [{names[o]: r[o].tolist() for o in model.outputs} for r in results]
    return {"predictions": rows if len(names) > 1 else [next(iter(row.values())) for row in rows]}


# ---------------------------------------------------------------------------------------- status
def _status(request: Request, task: str, version: int | None) -> dict[str, Any]:
    service = _service(request)
    entries = [e for e in service.registry.index() if e.task == task and (version is None or e.version == version)]
    if not entries:
        what = f"model {task!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"{what} not found")
    return {
        "model_version_status": [
            {
                "version": str(e.version),
                "state": _STATES[e.state],
                "status": {"error_code": "UNKNOWN" if e.reason else "OK", "error_message": e.reason},
            }
            for e in sorted(entries, key=lambda e: e.version, reverse=True)
        ]
    }


@router.get("/{task}", responses=ERRORS)
async def model_status(request: Request, task: str) -> dict[str, Any]:
    """The state of every version of the model."""
    return _status(request, task, None)


@router.get("/{task}/versions/{version:int}", responses=ERRORS)
async def model_version_status(request: Request, task: str, version: VersionPath) -> dict[str, Any]:
    return _status(request, task, version)


# -------------------------------------------------------------------------------------- metadata
def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": name,
    }


def _metadata(request: Request, task: str, version: int | None) -> dict[str, Any]:
    model = _service(request).model(task, version)
    meta, info = model.metadata, model.metadata.input
    sig = meta.signature
    outputs = {sig.output: _tensor_info(f"StatefulPartitionedCall:{sig.output}", "DT_FLOAT", [-1, len(meta.labels)])}
    if meta.ood is not None:
        outputs[meta.ood.output] = _tensor_info(f"StatefulPartitionedCall:{meta.ood.output}", "DT_FLOAT", [-1])
    signature_def = {
        "inputs": {
            sig.input: _tensor_info(
                f"{sig.name}_{sig.input}:0", "DT_UINT8", [-1, info.height, info.width, info.channels]
            )
        },
        "outputs": outputs,
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return {
        "model_spec": {"name": task, "signature_name": "", "version": str(meta.version)},
        "metadata": {"signature_def": {"signature_def": {sig.name: signature_def}}},
    }


@router.get("/{task}/metadata", responses=ERRORS)
async def model_metadata(request: Request, task: str) -> dict[str, Any]:
    """The signature of the highest served version, in TF Serving's `signature_def` shape."""
    return _metadata(request, task, None)


@router.get("/{task}/versions/{version:int}/metadata", responses=ERRORS)
async def model_version_metadata(request: Request, task: str, version: VersionPath) -> dict[str, Any]:
    return _metadata(request, task, version)


def _output_names(model: LoadedModel) -> dict[str, str]:
    meta = model.metadata
    names = {PROBABILITIES: meta.signature.output}
    if meta.ood is not None:
        names[OOD_SCORE] = meta.ood.output
    return names


# ------------------------------------------------------------------------------------------- parsing
@dataclass
class ParsedPredict:
    images: Images
    columnar: bool
    signature_name: str


def parse_predict_request(raw: bytes, spec: ImageSpec, input_name: str) -> ParsedPredict:
    """TF Serving's predict body -> images; every fault is `InvalidRequest` (422). Runs in the JSON
    parser process for large bodies."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"malformed JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object with "instances" or "inputs"')
    signature = body.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidRequest("signature_name must be a string")
    if ("instances" in body) == ("inputs" in body):
        raise InvalidRequest('the body must hold exactly one of "instances" (row format) or "inputs" (columnar)')
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidRequest('"instances" must be a non-empty list')
        items = [_unwrap(item, input_name, f"instance {i}") for i, item in enumerate(instances)]
        return ParsedPredict(_images(items, spec, "instances"), columnar=False, signature_name=signature)
    batch = _unwrap(body["inputs"], input_name, "inputs")
    if not isinstance(batch, list) or not batch:
        raise InvalidRequest(f'"inputs" must be a non-empty list of images (or {{"{input_name}": [...]}})')
    return ParsedPredict(_images(batch, spec, "inputs"), columnar=True, signature_name=signature)


def _unwrap(item: Any, input_name: str, where: str) -> Any:
    """`{"images": x}` -> x (the signature has one input); anything else is itself."""
    if isinstance(item, dict) and "b64" not in item:
        if set(item) != {input_name}:
            raise InvalidRequest(f"{where} names inputs {sorted(item)}; the signature's only input is {input_name!r}")
        return item[input_name]
    return item


def _images(items: list[Any], spec: ImageSpec, where: str) -> Images:
    """All `{"b64": ...}` (encoded files) or all uint8 arrays of the input shape."""
    if all(isinstance(item, dict) for item in items):
        files = []
        for i, item in enumerate(items):
            if set(item) != {"b64"}:
                raise InvalidRequest(f'{where}[{i}] must be {{"b64": "<base64 image file>"}}')
            files.append(b64_file(item["b64"], f"{where}[{i}].b64"))
        return Images(files=files)
    if any(isinstance(item, dict) for item in items):
        raise InvalidRequest(f'{where} mixes {{"b64": ...}} images and pixel arrays')
    shape = [len(items), *nested_shape(items[0])]
    return Images(pixels=uint8_pixels(items, shape, spec, f"{where} pixels"))
