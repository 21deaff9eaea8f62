"""The HTTP shell's application: `create_app()` wires settings, the service (models load in `lifespan`),
the middleware, every protocol of `app.protocols.PROTOCOLS`, the admin routes and the web page."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from app import service_version
from app.core import memory, runtimes, tracing
from app.core.metrics import Metrics
from app.core.model import ModelLoader
from app.core.service import ModelService
from app.core.settings import Settings
from app.http import admin, logs, web
from app.http.admission import BodyBudget, InflightBodies, ShedLoad
from app.http.errors import SafeJSONResponse, install_error_handlers
from app.http.middleware import BodySizeLimit, BodyTimeout, CloseWhileDraining, RequestMetrics
from app.protocols import PROTOCOLS, for_path
from app.protocols.bodies import JsonParser
from app.protocols.grpc.server import GrpcServer

log = logging.getLogger(__name__)
_INLINE_JSON_BYTES = 64 * 1024  # JSON bodies up to this size parse on the event loop (under 1 ms)


def create_app(
    settings: Settings | None = None,
    *,
    loader: ModelLoader | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the app. `settings` default to the environment; `loader` (tests) replaces SavedModel loading;
    `tracer_provider` (tests) replaces the one the OTEL_* variables describe."""
    settings = settings or Settings()
    logs.configure(settings)
    metrics = Metrics()
    # Traces only when OTEL_EXPORTER_OTLP_ENDPOINT (or its traces variant) is set (app.core.tracing).
    if tracer_provider is None:
        tracer_provider = tracing.from_environment(on_dropped=lambda n, why: metrics.spans_dropped.labels(why).inc(n))
    tracing.install(tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if loader is None:  # real models: a real deployment (tests with fake models start it on demand)
            _configure_tensorflow(settings)
            app.state.json_parser.warm_up()
        service = ModelService(
            settings, metrics, loader or runtimes.loader(settings), draining=lambda: bool(app.state.draining)
        )
        app.state.service = service
        service.start()
        background = []
        if settings.gc_freeze_after_load:
            background.append(asyncio.create_task(_freeze_heap_when_loaded(service)))
        if settings.memory_trim_s:
            background.append(
                asyncio.create_task(memory.trim_periodically(settings.memory_trim_s, lambda: app.state.bodies.admitted))
            )
        # gRPC beside HTTP, on the same service and batchers (app.protocols.grpc); APP_GRPC_PORT=0: none.
        grpc_server = GrpcServer(settings, service) if settings.grpc_port else None
        try:
            if grpc_server is not None:
                app.state.grpc_port = await grpc_server.start()
            yield
        finally:
            for task in background:
                task.cancel()
            if grpc_server is not None:  # its calls in flight finish (within the grace) while the models still run
                await grpc_server.stop(settings.graceful_timeout_s)
            await service.stop()
            app.state.json_parser.shutdown()
            if tracer_provider is not None:  # sends what is queued, within OTEL_BSP_EXPORT_TIMEOUT
                tracer_provider.shutdown()

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
    app.add_middleware(ShedLoad, admit=lambda task: app.state.service.pipeline.admit(task, 1))
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
    if tracer_provider is not None:
        # Outermost of all: one server span per request, continuing the client's W3C `traceparent` (a
        # malformed one starts a new trace); ASGI's per-message send/receive spans would only be noise.
        FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"])
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    for protocol in PROTOCOLS:
        app.include_router(protocol.router)
    app.include_router(admin.router)
    app.include_router(web.router)
    return app


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _valid_request_id(value: str) -> bool:
    """A client's request ID is kept if it is a plain token (no spaces, control characters or quotes
    that could forge log lines); otherwise a new one is made."""
    return _REQUEST_ID.fullmatch(value) is not None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the definitions of the request bodies that routes parse themselves, and the
    422 it adds for validated parameters described as what this service sends: the error body of the
    protocol that owns the path (see `app.http.errors`)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for protocol in PROTOCOLS:
            schema["components"]["schemas"].update(protocol.schemas)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        for path, operations in schema["paths"].items():
            body = for_path(path).error_model.__name__
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
