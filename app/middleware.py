"""Pure ASGI middleware: the request-body byte limit, load shedding before the body is read, and
per-request Prometheus metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Unavailable
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
            await _reject(scope, send, 413, detail)
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


async def _reject(scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer with an error body without reading the request body."""
    from app.main import error_response  # one place builds error bodies

    response = error_response(scope.get("path", ""), status, detail, headers)
    await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


@dataclass(frozen=True)
class _Template:
    path: str


_PREDICT_PATH = re.compile(r"^/(?:predict/([^/]+)|v2/models/([^/]+)/infer)$")


class ShedLoad:
    """Answer 503 to a predict request whose model queue is already full *before* its body is read.

    Under overload most requests are refused; refusing them before multipart parsing and decoding keeps
    the refusals cheap, so they do not steal CPU from the requests being served. `admit(task)` raises
    `Unavailable` when the task cannot take one more image (unknown tasks pass through, to get a 404).
    """

    def __init__(self, app: ASGIApp, admit: Callable[[str], None]) -> None:
        self.app = app
        self.admit = admit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and (match := _PREDICT_PATH.match(scope["path"])):
            task = match.group(1) or match.group(2)
            try:
                self.admit(task)
            except Unavailable as error:
                # Label the refusal like a routed request, for the request metrics outside.
                scope["route"] = _Template("/predict/{task}" if match.group(1) else "/v2/models/{task}/infer")
                scope["path_params"] = {"task": task}
                await _reject(scope, send, 503, str(error), {"Retry-After": str(error.retry_after_s)})
                return
        await self.app(scope, receive, send)


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
