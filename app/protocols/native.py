"""The service's own REST API (DESIGN.md): predict with uploads, the model cards and their plots, health
and metrics. Errors are `{"detail": "<reason>"}`.

`POST /predict/{task}` reads the uploads, hands them to the pipeline as encoded files, and renders each
image's `Prediction` as the JSON object DESIGN.md describes.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from app.core import guarantees
from app.core.errors import NotFound, NotReady
from app.core.metadata import InputInfo
from app.core.model import LoadedModel
from app.core.pipeline import Options
from app.core.tensors import Images
from app.protocols.base import PredictRoute, RestProtocol
from app.protocols.rest import Problem, ServiceDep, error_responses, get_and_head

router = APIRouter()
Version = Annotated[int | None, Query(ge=1, description="a served version (default: the highest served)")]
_ERRORS = error_responses(Problem)


# -------------------------------------------------------------------------------------------- schemas
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
    prediction_set: list[str] | None = Field(
        None,
        description="with `coverage`: the labels (most probable first) of a split-conformal set that holds the "
        "true label with probability at least `coverage`; null if the model records no conformal quantiles "
        "(`GET /models/{task}` says why); absent without `coverage`",
    )


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
    guarantees: dict[str, Any] = Field(
        description="prediction sets (coverages, test coverage and set size) and the out-of-distribution flag's "
        "false-flag bound, in figures and words; or why the model gives none"
    )
    metadata: dict[str, Any]


class Health(BaseModel):
    status: str
    models: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------- predict
@router.post(
    "/predict/{task}",
    response_model=PredictResponse,
    response_model_exclude_unset=True,  # `prediction_set` only when a coverage was asked
    responses=_ERRORS,
    tags=["predict"],
)
async def predict(
    service: ServiceDep,
    task: str,
    file: Annotated[list[UploadFile], File(min_length=1, description="one or more image files (repeat the field)")],
    top_k: Annotated[int | None, Query(ge=1, description="labels per image (default: all classes)")] = None,
    version: Version = None,
    coverage: Annotated[
        float | None,
        Query(gt=0, lt=1, description="add each image's prediction set at this coverage (one the model records)"),
    ] = None,
) -> PredictResponse:
    """Classify one or more images; results come back in upload order."""
    pipeline = service.pipeline
    async with pipeline.lease(task, version) as served:
        contents = [await upload.read() for upload in file]
        images = Images(files=contents, names=[upload.filename or "file" for upload in file], noun="files")
        result = await pipeline.run(served, images, Options(version=version, top_k=top_k, coverage=coverage))
    predictions = []
    for p, upload in zip(result.predictions, file, strict=True):
        fields = {**asdict(p), "filename": upload.filename}
        if coverage is None:
            del fields["prediction_set"]
        predictions.append(Prediction(**fields))
    return PredictResponse(task=task, model_version=result.model.version, predictions=predictions)


# ---------------------------------------------------------------------------------------------- models
@router.get("/models", response_model=list[ModelSummary], tags=["models"])
async def list_models(service: ServiceDep) -> list[ModelSummary]:
    """Every served model with its labels, input size, version and test metrics."""
    return [_summary(m) for m in service.models()]


@router.get("/models/{task}", response_model=ModelSummary, responses=_ERRORS, tags=["models"])
async def get_model(service: ServiceDep, task: str, version: Version = None) -> ModelSummary:
    """A served model (`version`, or the highest served)."""
    return _summary(service.model(task, version))


@router.get("/models/{task}/drift", responses=_ERRORS, tags=["models"])
async def get_drift(service: ServiceDep, task: str, version: Version = None) -> dict[str, Any]:
    """Whether the recent traffic of a served version differs from what it was validated on: its flagged share
    against the guarantee's, its OOD scores against the calibration images', its class mix against training's
    (each with its test statistic and p-value), and its estimated accuracy (see `app.core.drift`)."""
    model = service.model(task, version)
    return await asyncio.to_thread(service.monitor.assess, model)  # scipy's tests: off the event loop


# The plots training writes beside the SavedModel (training/plots.py), served from the version directory.
PLOTS = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "reliability": "reliability.png",
    "ood_scores": "ood_scores.png",
    "test_predictions": "test_predictions.png",
}


def _summary(model: LoadedModel) -> ModelSummary:
    meta = model.metadata
    return ModelSummary(
        task=meta.task,
        version=meta.version,
        labels=meta.labels,
        input=meta.input,
        architecture=meta.architecture,
        metrics=meta.metrics,
        calibration=meta.calibration.model_dump() if meta.calibration else None,
        ood=meta.ood.model_dump() if meta.ood else None,
        subject=meta.subject,
        plots={
            name: f"/models/{meta.task}/plots/{name}" for name, file in PLOTS.items() if (model.path / file).is_file()
        },
        runtime=model.describe(),
        guarantees=guarantees.describe(model),
        metadata=meta.model_dump(),
    )


@router.get(
    "/models/{task}/plots/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": Problem, "description": "no such plot"}},
    tags=["models"],
)
async def get_plot(service: ServiceDep, task: str, name: str, version: Version = None) -> FileResponse:
    """A plot of a served model version, drawn at training time (see `plots` in `GET /models/{task}`)."""
    model = service.model(task, version)
    path = model.path / PLOTS[name] if name in PLOTS else None
    if path is None or not path.is_file():
        raise NotFound(
            f"model {task!r} version {model.metadata.version} has no plot {name!r}; it has {sorted(_summary(model).plots)}"
        )
    return FileResponse(path, media_type="image/png")


# ------------------------------------------------------------------------------------ health and metrics
@get_and_head(router, "/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """Liveness: the process runs and answers (also while draining)."""
    return Health(status="alive")


@get_and_head(router, "/readyz", response_model=Health, responses={503: {"model": Problem}}, tags=["health"])
async def readyz(service: ServiceDep) -> Health:
    """Readiness: 200 once every model is loaded and warmed up (refused models are reported, not awaited);
    503 again from the moment the server drains (SIGTERM)."""
    if service.draining:
        raise NotReady("draining: the service is shutting down", service.settings.retry_after_s)
    if not service.ready:
        status = "; ".join(f"{t}: {s}" for t, s in service.status().items()) or "no models found"
        raise NotReady(f"not ready ({status})", service.settings.retry_after_s)
    return Health(status="ready", models=service.status())


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


PROTOCOL = RestProtocol(
    name="native",
    router=router,
    error_model=Problem,
    error_key="detail",
    predict_routes=(PredictRoute(re.compile(r"^/predict/(?P<task>[^/]+)$"), "/predict/{task}"),),
)
