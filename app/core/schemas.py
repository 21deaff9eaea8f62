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


class CalibrationInfo(BaseModel):
    """How `probabilities` were calibrated inside the graph (temperature scaling); figures are kept."""

    model_config = ConfigDict(extra="allow")

    method: str
    temperature: float | None = Field(None, gt=0)


class OodInfo(BaseModel):
    """The out-of-distribution output of the signature and its decision threshold (flag when above)."""

    model_config = ConfigDict(extra="allow")

    method: str
    output: str = "ood_score"
    threshold: float = Field(allow_inf_nan=False)


class ModelMetadata(BaseModel):
    """The fields DESIGN.md requires; extra fields are kept and shown by `GET /models`. `calibration`
    and `ood` are required from this project's version 2 models on, optional for models from elsewhere."""

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
    calibration: CalibrationInfo | None = None
    ood: OodInfo | None = None
    subject: str | None = None


# ------------------------------------------------------------------------------------------- REST
class LabelConfidence(BaseModel):
    label: str
    confidence: float


class Prediction(BaseModel):
    filename: str | None
    label: str
    confidence: float = Field(description="calibrated probability of `label` (temperature scaling in the model)")
    top_k: list[LabelConfidence]
    out_of_distribution: bool | None = Field(
        description="true when `ood_score` is above the model's threshold: the image does not look like what "
        "the model was trained on (`label` is still the most probable class); null if the model has no OOD score"
    )
    ood_score: float | None = Field(description="higher means less like the training images; null if none")


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
    calibration: dict[str, Any] | None = Field(description="temperature scaling and its test-split figures")
    ood: dict[str, Any] | None = Field(description="out-of-distribution method, threshold and figures")
    subject: str | None = Field(description='what the model expects to see, e.g. "a cat or a dog"')
    plots: dict[str, str] = Field(description="plot name -> URL of the PNG (training curves, reliability, ...)")
    runtime: dict[str, Any] = Field(description="what runs the model (tensorflow, openvino), its precision, and why")
    metadata: dict[str, Any]


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    models: dict[str, str] = Field(default_factory=dict)


# ------------------------------------------------------------------------------- KServe v2 (OIP)
class V2Tensor(BaseModel):
    """A tensor of the Open Inference Protocol: `data`, or `parameters.binary_data_size` bytes of binary
    data after the JSON (the binary tensor data extension)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


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
