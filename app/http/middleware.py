"""Pure ASGI middleware: the request-body byte limit and time limit, `Connection: close` while draining,
and per-request Prometheus metrics. Admission control (refusing work before the body is read) is in
`app.http.admission`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import Metrics
from app.http.errors import error_response


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
            await reject(scope, send, 413, detail)
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


class BodyTimeout:
    """Answer 408 (and close the connection) when a request's body takes longer than `timeout_s` to
    arrive, counting only the time spent waiting for the client: a body that trickles in at 1 KB/s, or
    a Content-Length larger than what is sent, frees its slot instead of holding it forever."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        waited = 0.0

        async def timed_receive() -> Message:
            nonlocal waited
            started = time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, self.timeout_s - waited)):
                    return await receive()
            except TimeoutError:
                detail = f"the request body did not arrive within {self.timeout_s:g} s"
                # FastAPI re-raises HTTPException from body parsing; the connection cannot be reused.
                raise HTTPException(408, detail, headers={"Connection": "close"}) from None
            finally:
                waited += time.monotonic() - started

        await self.app(scope, timed_receive, send)


class CloseWhileDraining:
    """Once the server drains (SIGTERM), every response says `Connection: close`, so keep-alive clients
    open their next connection elsewhere instead of meeting a closed socket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and getattr(scope["app"].state, "draining", False):
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


async def reject(scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer with an error body without reading the request body."""
    response = error_response(scope.get("path", ""), status, detail, headers)
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
