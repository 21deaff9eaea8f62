"""The FastAPI application: `create_app()` wires settings, models (loaded in `lifespan`), routes, errors."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from app import service_version
from app.core import memory, runtimes
from app.core.errors import ServiceError, Unavailable, status_code
from app.core.metrics import Metrics
from app.core.model import ModelLoader
from app.core.service import ModelService
from app.core.settings import Settings
from app.http import admin, logs
from app.http.admission import BodyBudget, InflightBodies, ShedLoad
from app.http.middleware import BodySizeLimit, BodyTimeout, CloseWhileDraining, RequestMetrics
from app.protocols import native as routes
from app.protocols import oip as v2
from app.protocols import tfserving
from app.protocols.bodies import JsonParser

log = logging.getLogger(__name__)
_STATIC = Path(__file__).resolve().parent / "static"
_INLINE_JSON_BYTES = 64 * 1024  # JSON bodies up to this size parse on the event loop (under 1 ms)


def create_app(settings: Settings | None = None, *, loader: ModelLoader | None = None) -> FastAPI:
    """Build the app. `settings` default to the environment; `loader` (tests) replaces SavedModel loading."""
    settings = settings or Settings()
    logs.configure(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if loader is None:  # real models: a real deployment (tests with fake models start it on demand)
            _configure_tensorflow(settings)
            app.state.json_parser.warm_up()
        service = ModelService(settings, metrics, loader or runtimes.loader(settings))
        app.state.service = service
        service.start()
        background = []
        if settings.gc_freeze_after_load:
            background.append(asyncio.create_task(_freeze_heap_when_loaded(service)))
        if settings.memory_trim_s:
            background.append(
                asyncio.create_task(memory.trim_periodically(settings.memory_trim_s, lambda: app.state.bodies.admitted))
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await service.stop()
            app.state.json_parser.shutdown()

    # FastAPIOffline serves /docs and /redoc with their scripts from the package, not from a CDN.
    app = FastAPIOffline(
        title="Image classification service",
        version=service_version(),
        description='Classifies images with the TensorFlow models under models/. Errors: {"detail": reason}.',
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.json_parser = JsonParser(inline_bytes=_INLINE_JSON_BYTES)
    app.state.draining = False  # set by app.http.server on SIGTERM
    # Outermost last: metrics see every answer, refusals happen before any body byte is read.
    app.add_middleware(BodyTimeout, timeout_s=settings.body_timeout_s)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ShedLoad, admit=lambda task: app.state.service.admit(task, 1))
    app.state.bodies = BodyBudget(settings.max_inflight_body_bytes)
    app.add_middleware(
        InflightBodies,
        budget=app.state.bodies,
        max_body_bytes=settings.max_upload_bytes,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(CloseWhileDraining)
    app.add_middleware(RequestMetrics, metrics=metrics, known_task=lambda task: app.state.service.is_known(task))
    # Compress large answers for clients that accept it (documentation, big tensors).
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    # Outermost: every log line of a request, and its answer, carry its X-Request-ID (taken or made).
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=_valid_request_id)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    _install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(routes.router)
    app.include_router(v2.router)
    app.include_router(admin.router)
    app.include_router(tfserving.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(_STATIC / "index.html", media_type="text/html")

    return app


# ------------------------------------------------------------------------------------------- errors
class SafeJSONResponse(JSONResponse):
    """JSON that can encode whatever a client sent and a response echoes: a lone surrogate such as
    "\\udfff" (valid in a JSON string, not in UTF-8) is written escaped, as ASCII JSON, instead of
    failing the response with a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(path: str, status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """DESIGN.md's `{"detail": ...}`, or `{"error": ...}` under /v2/ (the Open Inference Protocol) and
    /v1/ (TensorFlow Serving's REST API), as those protocols' clients expect."""
    body = {"error": detail} if path.startswith(("/v2/", "/v1/")) else {"detail": detail}
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Unavailable) else None
        status = status_code(error)
        if status >= 500 and not isinstance(error, Unavailable):
            log.error("%s %s failed: %s", request.method, request.url.path, error)
        return error_response(request.url.path, status, str(error), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        reasons = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            reasons.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        return error_response(request.url.path, 422, "; ".join(reasons) or "malformed request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        status, detail = error.status_code, str(error.detail)
        if status == 400:  # only body parsing raises HTTPException(400); a malformed request is 422 here
            status, detail = 422, f"malformed request body ({detail.rstrip('.')}); expected multipart/form-data or JSON"
        return error_response(request.url.path, status, detail, dict(error.headers or {}) or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(request.url.path, 500, "internal error; the service log has the details")


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _valid_request_id(value: str) -> bool:
    """A client's request ID is kept if it is a plain token (no spaces, control characters or quotes
    that could forge log lines); otherwise a new one is made."""
    return _REQUEST_ID.fullmatch(value) is not None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the definitions of the request bodies that routes parse themselves, and the
    422 it adds for validated parameters described as what this service sends: `{"detail": reason}`, or
    `{"error": reason}` under /v1/ and /v2/ (see `_install_error_handlers`)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema["components"]["schemas"].update(v2.SCHEMAS)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        for path, operations in schema["paths"].items():
            body = "V2Error" if path.startswith(("/v2/", "/v1/")) else "Problem"
            for operation in operations.values():
                answer = operation.get("responses", {}).get("422")
                if answer is not None:
                    answer["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}
        app.openapi_schema = schema
    return app.openapi_schema


# ---------------------------------------------------------------------------------------- runtime set-up
async def _freeze_heap_when_loaded(service: ModelService) -> None:
    """Once the models are loaded, move every object alive (TensorFlow's and the models', ~376,000 here)
    out of the garbage collector's sight. Otherwise each full collection walks them all with the GIL held,
    stalling every request: `python -m benchmarks.variants APP_GC_FREEZE_AFTER_LOAD=false` shows the p99."""
    await service.loaded.wait()
    gc.collect()
    gc.freeze()
    log.info("garbage collector: %d startup objects frozen", gc.get_freeze_count())


def _configure_tensorflow(settings: Settings) -> None:
    import tensorflow as tf

    try:
        if settings.tf_intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.tf_intra_op_threads)
        if settings.tf_inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.tf_inter_op_threads)
    except RuntimeError as error:  # TensorFlow was initialized earlier in this process (tests)
        log.warning("TensorFlow thread settings not applied: %s", error)
