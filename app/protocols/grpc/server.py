"""The gRPC server (`grpc.aio`) beside HTTP, in the same process and event loop, over the same model
service: its batchers, admission and drain are HTTP's, so a gRPC and an HTTP request for the same task can
share one batch.

`GrpcServer.start` binds `APP_GRPC_PORT` (0: no gRPC) on `APP_HOST` and serves the Open Inference Protocol
(`oip`), TF Serving's PredictionService and ModelService (`tfserving`), health (`health`) and server
reflection (`grpc.reflection.v1alpha`, which grpcurl reads). Message size limits are the HTTP body limit
(`APP_MAX_UPLOAD_BYTES`, after gzip inflation: gRPC refuses a larger message with RESOURCE_EXHAUSTED before
any handler runs); gzip- and deflate-compressed requests are accepted. While the server drains, health turns
NOT_SERVING and every new call except health, reflection and the OIP liveness and readiness calls is refused
with UNAVAILABLE (with `grpc-retry-pushback-ms`), so clients move to another replica; `stop` then lets calls
in flight finish within the grace period and cancels the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from app.core.metrics import Metrics
from app.core.service import ModelService
from app.core.settings import Settings
from app.protocols.grpc import oip, tfserving
from app.protocols.grpc.generated import grpc_service_pb2, grpc_service_pb2_grpc
from app.protocols.grpc.generated.tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from app.protocols.grpc.health import Health
from app.protocols.grpc.status import RETRY_PUSHBACK

log = logging.getLogger(__name__)
# The modules that declare the services: importing them puts the services in protobuf's descriptor pool,
# where reflection finds them (the *_grpc modules import only their messages' modules).
SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (grpc_service_pb2, "GRPCInferenceService"),
        (prediction_service_pb2, "PredictionService"),
        (model_service_pb2, "ModelService"),
    )
)
assert SERVICES == (oip.SERVICE, tfserving.PREDICTION_SERVICE, tfserving.MODEL_SERVICE)
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Answered while draining: what says the server is going away, and what tells clients where things are.
_WHILE_DRAINING = (
    f"/{HEALTH}/",
    "/grpc.reflection.",
    f"/{oip.SERVICE}/ServerLive",
    f"/{oip.SERVICE}/ServerReady",
    f"/{oip.SERVICE}/ModelReady",
)


class RefuseWhileDraining(aio.ServerInterceptor):
    """New calls get UNAVAILABLE while `draining()`, except those of `_WHILE_DRAINING`."""

    def __init__(self, draining: Callable[[], bool], retry_after_s: int) -> None:
        self._draining = draining
        self._pushback = ((RETRY_PUSHBACK, str(retry_after_s * 1000)),)
        self._refusal = grpc.unary_unary_rpc_method_handler(self._refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if self._draining() and not method.startswith(_WHILE_DRAINING):
            return self._refusal
        return await continuation(handler_call_details)

    async def _refuse(self, request: Any, context: aio.ServicerContext) -> None:
        context.set_trailing_metadata(self._pushback)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "draining: the server is shutting down; retry elsewhere")


class CallMetrics(aio.ServerInterceptor):
    """Every unary call counted by service, method and status code (`grpc_server_handled_total`) and timed
    (`grpc_server_handling_seconds`), refusals while draining included. Streams (health's Watch,
    reflection) are not: they last as long as the client likes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:  # unknown methods: gRPC answers UNIMPLEMENTED itself
            return handler
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        service, _, name = method.lstrip("/").rpartition("/")
        behavior, metrics = handler.unary_unary, self._metrics

        async def observed(request: Any, context: aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:  # an abort sets the code; anything else reaches the client as UNKNOWN
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[assignment]
                raise
            finally:
                if code is grpc.StatusCode.OK:  # returned normally, possibly with a code set
                    code = context.code() or grpc.StatusCode.OK  # type: ignore[assignment]
                metrics.grpc_handled.labels(service, name, code.name).inc()
                metrics.grpc_latency.labels(service, name).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The gRPC side of the service: build and `start` it once the service has started, `stop` it before
    the service stops."""

    def __init__(self, settings: Settings, service: ModelService) -> None:
        self.settings = settings
        self.health = Health(service, SERVICES)
        limit = settings.max_upload_bytes
        self.server = aio.server(
            interceptors=[
                CallMetrics(service.metrics),
                RefuseWhileDraining(lambda: service.draining, settings.retry_after_s),
            ],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Without this, a second server could bind the same port and silently take half the calls.
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(oip.InferenceServicer(service), self.server)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            tfserving.PredictionServicer(service), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(tfserving.ModelServicer(service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection((*SERVICES, HEALTH, reflection.SERVICE_NAME), self.server)
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and serve; the port bound. A port in use is an error (OSError), not a silent share."""
        where = address(self.settings.host, self.settings.grpc_port)
        try:
            self.port = self.server.add_insecure_port(where)
        except RuntimeError as error:
            raise OSError(f"gRPC cannot listen on {where}: {error}") from error
        await self.health.update()
        self.health.start()
        await self.server.start()
        log.info("gRPC serving on %s: %s", where, ", ".join(SERVICES))
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, no new calls, calls in flight finish within `grace_s` (then cancelled)."""
        await self.health.stop()
        await self.server.stop(grace_s)
