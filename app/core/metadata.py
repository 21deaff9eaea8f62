"""`metadata.json`, the one file of a model version the service reads besides the SavedModel (DESIGN.md).

`read_metadata` validates it and checks that it names the task and version of the directory it lives in.
Every field DESIGN.md requires is declared here; extra fields are kept (`extra="allow"`) and shown by
`GET /models/{task}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.core.conformal import coverage_key
from app.core.errors import ModelLoadError
from app.core.imaging import ImageSpec


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
    guarantee: OodGuarantee | None = None


class OodGuarantee(BaseModel):
    """The threshold's training-conditional bound: with probability at least 1 - `delta` over the draw of the
    `calibration_examples`, at most `alpha` of genuine images are flagged (`holds`: whether the calibration
    split was large enough for any threshold to give it)."""

    model_config = ConfigDict(extra="allow")

    alpha: float = Field(gt=0, lt=1)
    delta: float = Field(gt=0, lt=1)
    calibration_examples: int = Field(ge=0)
    holds: bool = True


class ConformalInfo(BaseModel):
    """Split-conformal sets (`app.core.conformal`): the method, RAPS's `penalty` and `k_reg` (0 for APS), and
    the calibration scores' quantile per recorded coverage ("0.9" -> quantile)."""

    model_config = ConfigDict(extra="allow")

    method: Literal["aps", "raps"]
    score_quantiles: dict[str, float] = Field(min_length=1)
    penalty: float = Field(0.0, ge=0)
    k_reg: int = Field(0, ge=0)

    @field_validator("score_quantiles")
    @classmethod
    def _coverages(cls, quantiles: dict[str, float]) -> dict[str, float]:
        for key in quantiles:
            try:
                coverage = float(key)
            except ValueError as error:
                raise ValueError(f"coverage {key!r} is not a number") from error
            if not 0 < coverage < 1 or coverage_key(coverage) != key:
                raise ValueError(f"coverage {key!r} must be written like 0.9, in (0, 1)")
        return quantiles


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
    conformal: ConformalInfo | None = None
    subject: str | None = None

    @property
    def spec(self) -> ImageSpec:
        """The images the model takes, as the decoder produces them."""
        info = self.input
        return ImageSpec(height=info.height, width=info.width, channels=info.channels, resize=info.resize)


def read_metadata(version_dir: Path) -> ModelMetadata:
    """`version_dir/metadata.json`, validated, naming the task and version of its directory; raises
    `ModelLoadError` with one sentence otherwise."""
    path = version_dir / "metadata.json"
    try:
        metadata = ModelMetadata.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise ModelLoadError(f"{path} is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
        first = str(error).splitlines()
        raise ModelLoadError(f"{path} is invalid: {' '.join(first[:3])}") from error
    if metadata.task != version_dir.parent.name or metadata.version != int(version_dir.name):
        raise ModelLoadError(
            f"{path} says task {metadata.task!r} version {metadata.version}, "
            f"but lives in {version_dir.parent.name}/{version_dir.name}"
        )
    return metadata
