"""The REST API of DESIGN.md: predict, model listing, health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel

from app.core.errors import NotFound, NotReady, PayloadTooLarge
from app.core.model import LoadedModel
from app.core.schemas import Health, ModelSummary, PredictResponse, Problem
from app.core.service import ModelService, postprocess

router = APIRouter()
F = TypeVar("F", bound=Callable[..., Any])
Version = Annotated[int | None, Query(ge=1, description="a served version (default: the highest served)")]

_ERROR_TEXTS = {
    400: "corrupt or truncated image",
    404: "unknown task or version",
    408: "the request body did not arrive in time",
    413: "too large: body, image pixels, decode memory or number of images",
    415: "not an image type (or content encoding) the service decodes",
    422: "malformed request",
    503: "model not ready, draining or overloaded (see Retry-After)",
}


def error_responses(body: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route answers (all by default), with their body model
    (`Problem` here, the protocols' `{"error": ...}` under /v1 and /v2)."""
    return {code: {"model": body, "description": _ERROR_TEXTS[code]} for code in codes or _ERROR_TEXTS}


_ERRORS = error_responses(Problem)


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[F], F]:
    """Register a GET route and its HEAD twin (health checks probe with either), each with its own
    operation id in the OpenAPI schema."""

    def register(function: F) -> F:
        router.add_api_route(path, function, methods=["GET"], **options)
        router.add_api_route(path, function, methods=["HEAD"], operation_id=f"{function.__name__}_head", **options)
        return function

    return register


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


@router.post("/predict/{task}", response_model=PredictResponse, responses=_ERRORS, tags=["predict"])
async def predict(
    request: Request,
    task: str,
    file: Annotated[list[UploadFile], File(min_length=1, description="one or more image files (repeat the field)")],
    top_k: Annotated[int | None, Query(ge=1, description="labels per image (default: all classes)")] = None,
    version: Version = None,
) -> PredictResponse:
    """Classify one or more images; results come back in upload order."""
    service = _service(request)
    async with service.lease(task, version) as served:
        limit = service.settings.max_files_per_request
        if len(file) > limit:
            raise PayloadTooLarge(f"{len(file)} files in one request; the limit is {limit}")
        served.batcher.check_capacity(len(file))
        spec = served.model.spec
        contents = [await upload.read() for upload in file]
        images = await asyncio.gather(
            *(
                service.preprocess(task, data, spec, upload.filename or "file")
                for upload, data in zip(file, contents, strict=True)
            )
        )
        outputs = await service.infer(served, images)
    meta = served.model.metadata
    k = min(top_k or len(meta.labels), len(meta.labels))
    threshold = served.model.ood_threshold
    return PredictResponse(
        task=task,
        model_version=meta.version,
        predictions=[
            postprocess(o, meta.labels, k, upload.filename, threshold) for o, upload in zip(outputs, file, strict=True)
        ],
    )


@router.get("/models", response_model=list[ModelSummary], tags=["models"])
async def list_models(request: Request) -> list[ModelSummary]:
    """Every served model with its labels, input size, version and test metrics."""
    return [_summary(m) for m in _service(request).models()]


@router.get("/models/{task}", response_model=ModelSummary, responses=_ERRORS, tags=["models"])
async def get_model(request: Request, task: str, version: Version = None) -> ModelSummary:
    """A served model (`version`, or the highest served)."""
    return _summary(_service(request).model(task, version))


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
        metadata=meta.model_dump(),
    )


@router.get(
    "/models/{task}/plots/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": Problem, "description": "no such plot"}},
    tags=["models"],
)
async def get_plot(request: Request, task: str, name: str, version: Version = None) -> FileResponse:
    """A plot of a served model version, drawn at training time (see `plots` in `GET /models/{task}`)."""
    model = _service(request).model(task, version)
    path = model.path / PLOTS[name] if name in PLOTS else None
    if path is None or not path.is_file():
        raise NotFound(
            f"model {task!r} version {model.metadata.version} has no plot {name!r}; it has {sorted(_summary(model).plots)}"
        )
    return FileResponse(path, media_type="image/png")


@get_and_head(router, "/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """Liveness: the process runs and answers (also while draining)."""
    return Health(status="alive")


@get_and_head(router, "/readyz", response_model=Health, responses={503: {"model": Problem}}, tags=["health"])
async def readyz(request: Request) -> Health:
    """Readiness: 200 once every model is loaded and warmed up (refused models are reported, not awaited);
    503 again from the moment the server drains (SIGTERM)."""
    service = _service(request)
    if request.app.state.draining:
        raise NotReady("draining: the service is shutting down", service.settings.retry_after_s)
    if not service.ready:
        status = "; ".join(f"{t}: {s}" for t, s in service.status().items()) or "no models found"
        raise NotReady(f"not ready ({status})", service.settings.retry_after_s)
    return Health(status="ready", models=service.status())


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
