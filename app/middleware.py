"""Pure ASGI middleware: the request-body byte limit, and per-request Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, without reading them into memory.

    A declared Content-Length over the limit is refused before any body byte is read. Otherwise (chunked
    uploads, or a client that lies) the bytes are counted as the app reads them, and the read fails with
    413 as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body exceeds the {self.max_bytes:,}-byte limit"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(scope, send, detail)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail)  # FastAPI re-raises HTTPException from body parsing
            return message

        await self.app(scope, limited_receive, send)


async def _reject(scope: Scope, send: Send, detail: str) -> None:
    from app.main import error_response  # one place builds error bodies

    response = error_response(scope.get("path", ""), 413, detail)
    await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class RequestMetrics:
    """Count requests by route template, task and status code, and time them (pure ASGI: no extra task
    or stream per request, unlike Starlette's BaseHTTPMiddleware).

    The task label only takes names of configured tasks ("other" otherwise), so clients cannot grow the
    label set without bound."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_task: Callable[[str], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_task = known_task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            task = scope.get("path_params", {}).get("task", "")
            if task and not self.known_task(task):
                task = "other"
            if template != "/metrics":
                self.metrics.requests.labels(template, task, str(status)).inc()
                self.metrics.latency.labels(template, task).observe(time.perf_counter() - started)
