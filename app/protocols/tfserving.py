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

import re
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request

from app.core.errors import InvalidRequest, NotFound
from app.core.imaging import ImageSpec
from app.core.model import LoadedModel, TensorInfo
from app.core.pipeline import Options
from app.core.registry import State
from app.core.tensors import Images, b64_file, nested_shape, uint8_pixels
from app.protocols.base import PredictRoute, RestProtocol
from app.protocols.bodies import read_body
from app.protocols.rest import JsonParserDep, ServiceDep, V2Error, error_responses

router = APIRouter(prefix="/v1/models", tags=["tensorflow-serving"])
VersionPath = Annotated[int, Path(ge=1, description="a model version")]
ERRORS = error_responses(V2Error)
_STATES = {State.READY: "AVAILABLE", State.LOADING: "LOADING", State.UNAVAILABLE: "END"}


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
async def predict(request: Request, service: ServiceDep, parser: JsonParserDep, task: str) -> dict[str, Any]:
    """Classify `instances` (row format) or `inputs` (columnar) with the highest served version."""
    return await _predict(request, service, parser, task, None)


@router.post("/{task}/versions/{version:int}:predict", responses=ERRORS, openapi_extra=_PREDICT_BODY)
async def predict_version(
    request: Request, service: ServiceDep, parser: JsonParserDep, task: str, version: VersionPath
) -> dict[str, Any]:
    return await _predict(request, service, parser, task, version)


async def _predict(
    request: Request, service: ServiceDep, parser: JsonParserDep, task: str, version: int | None
) -> dict[str, Any]:
    pipeline = service.pipeline
    async with pipeline.lease(task, version) as served:
        model = served.model
        raw = await read_body(request, service.settings.max_json_bytes, "JSON body")
        parse = partial(parse_predict_request, spec=model.spec, input_name=model.metadata.signature.input)
        parsed = await parser(raw, parse)
        if parsed.signature_name not in ("", model.metadata.signature.name):
            raise NotFound(
                f"model {task!r} has no signature {parsed.signature_name!r}; it has {model.metadata.signature.name!r}"
            )
        result = await pipeline.run(served, parsed.images.named("instance"), Options(version=version))
    tensors = model.output_tensors()
    if parsed.columnar:
        columns = {tensors[name].name: values.tolist() for name, values in result.stacked().items()}
        return {"outputs": columns if len(columns) > 1 else next(iter(columns.values()))}
    rows = [{tensors[name].name: row[name].tolist() for name in model.outputs} for row in result.outputs]
    return {"predictions": rows if len(tensors) > 1 else [next(iter(row.values())) for row in rows]}


# ---------------------------------------------------------------------------------------- status
def _status(service: ServiceDep, task: str, version: int | None) -> dict[str, Any]:
    entries = [e for e in service.index(task) if version is None or e.version == version]
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
async def model_status(service: ServiceDep, task: str) -> dict[str, Any]:
    """The state of every version of the model."""
    return _status(service, task, None)


@router.get("/{task}/versions/{version:int}", responses=ERRORS)
async def model_version_status(service: ServiceDep, task: str, version: VersionPath) -> dict[str, Any]:
    return _status(service, task, version)


# -------------------------------------------------------------------------------------- metadata
_DTYPES = {"UINT8": "DT_UINT8", "FP32": "DT_FLOAT"}


def _tensor_info(name: str, tensor: TensorInfo) -> dict[str, Any]:
    return {
        "dtype": _DTYPES[tensor.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in tensor.shape], "unknown_rank": False},
        "name": name,
    }


def _metadata(model: LoadedModel) -> dict[str, Any]:
    meta, sig = model.metadata, model.metadata.signature
    source = model.input_tensor()
    signature_def = {
        "inputs": {source.name: _tensor_info(f"{sig.name}_{source.name}:0", source)},
        # The names TensorFlow gives a SavedModel signature's outputs, as TF Serving reports them.
        "outputs": {
            t.name: _tensor_info(f"StatefulPartitionedCall:{t.name}", t) for t in model.output_tensors().values()
        },
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return {
        "model_spec": {"name": meta.task, "signature_name": "", "version": str(meta.version)},
        "metadata": {"signature_def": {"signature_def": {sig.name: signature_def}}},
    }


@router.get("/{task}/metadata", responses=ERRORS)
async def model_metadata(service: ServiceDep, task: str) -> dict[str, Any]:
    """The signature of the highest served version, in TF Serving's `signature_def` shape."""
    return _metadata(service.model(task))


@router.get("/{task}/versions/{version:int}/metadata", responses=ERRORS)
async def model_version_metadata(service: ServiceDep, task: str, version: VersionPath) -> dict[str, Any]:
    return _metadata(service.model(task, version))


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


PROTOCOL = RestProtocol(
    name="tfserving",
    router=router,
    error_model=V2Error,
    error_key="error",
    prefixes=("/v1/",),
    predict_routes=(
        PredictRoute(
            re.compile(r"^/v1/models/(?P<task>[^/]+?)(?:/versions/\d+)?:predict$"), "/v1/models/{task}:predict"
        ),
    ),
)
