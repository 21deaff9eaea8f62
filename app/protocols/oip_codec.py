"""The Open Inference Protocol's infer messages: JSON, and the binary tensor data extension that Triton's
clients use to avoid base64 and long JSON number lists.

A request body is a JSON header, followed (when the `Inference-Header-Content-Length` header gives the
JSON's length) by the raw bytes of every input whose `parameters.binary_data_size` says so, in input order:
`UINT8` as packed bytes, `BYTES` as elements each prefixed by its length (4 bytes, little-endian).

The input is one tensor, named as the signature's input, and its datatype tells what it holds:
`BYTES` [n] are encoded image files, decoded like uploads; `UINT8` [n, H, W, C] are pixels. Outputs are
the signature's (`probabilities`, and `ood_score` where the model has one) and, when the request's
parameters ask for a `coverage` the model records, `prediction_set` (BOOL [n, classes]: whether each label,
in the model's label order, is in the image's conformal set); all of them unless the request lists some,
as JSON or, per output or for all (`binary_data_output`), as binary data after the JSON header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from app.core.errors import InvalidRequest
from app.core.imaging import ImageSpec
from app.core.pipeline import Result
from app.core.tensors import Images, b64_file, uint8_pixels, validation_message

HEADER_LENGTH = "inference-header-content-length"
ALL = "*"  # in `ParsedInfer.binary`: every output as binary data
_FLT_MAX = float(np.finfo(np.float32).max)
PREDICTION_SET = "prediction_set"  # the BOOL output a `coverage` parameter adds


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2Tensor(BaseModel):
    """A tensor of the Open Inference Protocol, in a request or an answer: `data`, or
    `parameters.binary_data_size` bytes of binary data after the JSON (the binary tensor data extension)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):  # what `infer_response` writes, for the OpenAPI document
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


@dataclass
class ParsedInfer:
    """An infer request reduced to what the pipeline needs, and how to answer it."""

    id: str | None
    images: Images
    outputs: list[str] | None = None  # requested output names (None: all)
    binary: set[str] = field(default_factory=set)  # outputs to send as binary data
    coverage: float | None = None  # the request parameter: add each image's prediction set


def parse_infer_request(header: bytes, spec: ImageSpec, binary: bytes = b"") -> ParsedInfer:
    """Validate the JSON header and convert the one input tensor (from JSON data, or from `binary`);
    every fault is `InvalidRequest` (422). Runs in the JSON parser process for large headers."""
    try:
        body = InferRequest.model_validate_json(header)
    except ValidationError as error:
        raise InvalidRequest(validation_message(error)) from error
    if len(body.inputs) != 1:
        raise InvalidRequest(f"the model takes one input tensor; the request has {len(body.inputs)}")
    tensor = body.inputs[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise InvalidRequest(f"input {tensor.name!r} has both data and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise InvalidRequest(
                f"input {tensor.name!r} declares binary_data_size {size!r}; the body holds {len(binary)} bytes"
            )
        images = binary_images(tensor, binary, spec)
    elif binary:
        raise InvalidRequest(f"{len(binary)} bytes of binary data follow the header, but no input declares them")
    elif tensor.data is None:
        raise InvalidRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
    else:
        images = _json_images(tensor, spec)
    coverage = parse_coverage((body.parameters or {}).get("coverage"))
    # Binary outputs: those asked for one by one, else all when the request-level parameter says so.
    default = (body.parameters or {}).get("binary_data_output", False) is True
    if not body.outputs:
        return ParsedInfer(body.id, images, None, {ALL} if default else set(), coverage)
    binary_outputs = {o.name for o in body.outputs if (o.parameters or {}).get("binary_data", default) is True}
    return ParsedInfer(body.id, images, [o.name for o in body.outputs], binary_outputs, coverage)


def parse_coverage(value: Any) -> float | None:
    """The `coverage` request parameter: absent, or a number in (0, 1) (whether the model records it is
    the pipeline's to say)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InvalidRequest(f"parameter coverage must be a number in (0, 1), got {value!r}")
    return float(value)


def _json_images(tensor: V2Tensor, spec: ImageSpec) -> Images:
    assert tensor.data is not None
    if tensor.datatype == "BYTES":
        if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data) or not tensor.data:
            raise InvalidRequest(
                f"BYTES input shape must be [n] for n >= 1 images, got {tensor.shape} for {len(tensor.data)} elements"
            )
        return Images(files=[b64_file(x, f"BYTES element {i}") for i, x in enumerate(tensor.data)])
    if tensor.datatype == "UINT8":
        return Images(pixels=uint8_pixels(tensor.data, tensor.shape, spec, "UINT8 data"))
    raise InvalidRequest(f"input datatype must be BYTES (encoded images) or UINT8 (pixels), got {tensor.datatype}")


def binary_images(tensor: V2Tensor, data: bytes, spec: ImageSpec) -> Images:
    if tensor.datatype == "UINT8":
        expected = [spec.height, spec.width, spec.channels]
        if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
            raise InvalidRequest(f"UINT8 input shape must be [n, {', '.join(map(str, expected))}], got {tensor.shape}")
        if len(data) != int(np.prod(tensor.shape)):
            raise InvalidRequest(
                f"UINT8 binary data has {len(data)} bytes, shape {tensor.shape} needs {int(np.prod(tensor.shape))}"
            )
        return Images(pixels=list(np.frombuffer(data, np.uint8).reshape(tensor.shape)))
    if tensor.datatype == "BYTES":
        files, position = [], 0
        while position < len(data):
            if position + 4 > len(data):
                raise InvalidRequest("BYTES binary data ends inside an element's length prefix")
            length = int.from_bytes(data[position : position + 4], "little")
            files.append(data[position + 4 : position + 4 + length])
            if len(files[-1]) != length:
                raise InvalidRequest(f"BYTES binary element {len(files) - 1} is cut short")
            position += 4 + length
        if len(tensor.shape) != 1 or tensor.shape[0] != len(files) or not files:
            raise InvalidRequest(f"BYTES input shape must be [n] for its {len(files)} elements, got {tensor.shape}")
        return Images(files=files)
    raise InvalidRequest(f"input datatype must be BYTES (encoded images) or UINT8 (pixels), got {tensor.datatype}")


def output_arrays(result: Result, coverage: float | None) -> dict[str, np.ndarray]:
    """A result's v2 outputs by tensor name: each of the model's outputs stacked over the images, and, when a
    coverage was asked of a model that records sets, `prediction_set` BOOL [n, classes]."""
    model = result.model
    tensors = model.output_tensors()
    outputs = {tensors[name].name: values for name, values in result.stacked().items()}
    if coverage is not None and model.conformal is not None:
        labels = model.metadata.labels
        outputs[PREDICTION_SET] = np.array(
            [[label in (p.prediction_set or []) for label in labels] for p in result.predictions], dtype=bool
        )
    return outputs


def finite_fp32(values: np.ndarray) -> np.ndarray:
    """Scores as little-endian float32, a non-finite one as the largest float32 (flagged): JSON has no NaN or
    infinity, and gRPC sends what REST sends."""
    return np.nan_to_num(values, nan=_FLT_MAX, posinf=_FLT_MAX, neginf=-_FLT_MAX).astype("<f4")


def infer_response(
    model_name: str, version: int, request_id: str | None, outputs: dict[str, np.ndarray], parsed: ParsedInfer
) -> Response:
    """The response for `outputs` (name -> stacked array: FP32, or BOOL for a bool array): the requested
    ones, each as JSON data or binary data after the JSON header."""
    if parsed.outputs is not None:
        unknown = sorted(set(parsed.outputs) - set(outputs))
        if unknown:
            raise InvalidRequest(f"unknown output(s) {unknown}; the model has {sorted(outputs)}")
    names = parsed.outputs if parsed.outputs is not None else list(outputs)
    tensors, blobs = [], []
    for name in names:
        if outputs[name].dtype == np.bool_:
            values, datatype = outputs[name], "BOOL"
        else:
            values, datatype = finite_fp32(outputs[name]), "FP32"
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if name in parsed.binary or ALL in parsed.binary:
            blob = values.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values.ravel().tolist()
        tensors.append(tensor)
    body = {"model_name": model_name, "model_version": str(version), "outputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    header = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
