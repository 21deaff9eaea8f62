"""Pydantic models of `metadata.json` and of the HTTP API (DESIGN.md), including the KServe v2 surface."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


# ------------------------------------------------------------------------------------ metadata.json
class InputInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]
    resize: Literal["nearest", "bilinear", "bicubic", "lanczos", "area"] = "bilinear"


class SignatureInfo(BaseModel):
    name: str = "serving_default"
    input: str
    output: str


class ModelMetadata(BaseModel):
    """The fields DESIGN.md requires; extra fields are kept and shown by `GET /models`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    task: str
    version: int = Field(gt=0)
    labels: list[str] = Field(min_length=2)
    input: InputInfo
    signature: SignatureInfo
    architecture: str
    metrics: dict[str, Any]
    dataset: dict[str, Any]
    training: dict[str, Any]
    created_at: str


# ------------------------------------------------------------------------------------------- REST
class LabelConfidence(BaseModel):
    label: str
    confidence: float


class Prediction(BaseModel):
    filename: str | None
    label: str
    confidence: float
    top_k: list[LabelConfidence]


class PredictResponse(BaseModel):
    task: str
    model_version: int
    predictions: list[Prediction]


class ModelSummary(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    task: str
    version: int
    labels: list[str]
    input: InputInfo
    architecture: str
    metrics: dict[str, Any]
    metadata: dict[str, Any]


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    models: dict[str, str] = Field(default_factory=dict)


# ------------------------------------------------------------------------------- KServe v2 (OIP)
class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2Error(BaseModel):
    error: str
