"""`grpc.health.v1.Health` for the service, kept in step with it: what Kubernetes' gRPC probes and load
balancers read.

Service names: "" (the server as a whole) and each served gRPC service are SERVING once the models are
loaded (readiness, as `GET /readyz`) and NOT_SERVING while loading or draining; each task by its name
("flowers") is SERVING while a version of it serves and the server does not drain. An unknown name is
NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as the health protocol says. Check, and the first answer of
Watch, read the service as it is at the call; Watch then streams each change within `_POLL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from app.core.service import ModelService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_POLL_S = 0.25  # how soon a change (a model ready, a drain begun) shows; a probe every few seconds reads it


class _CurrentHealthServicer(HealthServicer):  # type: ignore[misc]
    """grpc-health's servicer, with its statuses refreshed before each Check and Watch begins: a probe right
    after the models load must not read the status of the last poll."""

    def __init__(self, refresh: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self._refresh = refresh

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        await self._refresh()
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        await self._refresh()
        await super().Watch(request, context)


class Health:
    """The health servicer and the task that keeps its statuses in step with `service`."""

    def __init__(self, service: ModelService, services: Iterable[str]) -> None:
        self.service = service
        self.servicer = _CurrentHealthServicer(self.update)
        self._services = ["", *services]
        self._tasks: set[str] = set()
        self._watching: asyncio.Task[None] | None = None

    async def update(self) -> None:
        """Set every status from the service as it is now."""
        serving = not self.service.draining
        overall = SERVING if serving and self.service.ready else NOT_SERVING
        for name in self._services:
            await self.servicer.set(name, overall)
        states = self.service.status()
        self._tasks |= set(states)  # a task that stops being served stays known, as NOT_SERVING
        for task in sorted(self._tasks):
            await self.servicer.set(task, SERVING if serving and states.get(task) == "ready" else NOT_SERVING)

    def start(self) -> None:
        self._watching = asyncio.get_running_loop().create_task(self._watch(), name="grpc-health")

    async def _watch(self) -> None:
        while True:
            await self.update()
            await asyncio.sleep(_POLL_S)

    async def stop(self) -> None:
        """Every status NOT_SERVING from now on (the server is going away)."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        await self.servicer.enter_graceful_shutdown()
