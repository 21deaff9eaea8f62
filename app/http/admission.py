"""Admission control: refuse work before it is done, cheaply, with 503 and Retry-After.

- `ShedLoad`: a predict request whose model queue is already full is refused before its body is read.
- `InflightBodies`: request bodies count against a server-wide byte budget by their declared size
  (`Content-Length`, or the upload limit for a chunked body) before a byte of them is read, so 80 clients
  sending 20 MB each cannot make the service hold 1.6 GB of bodies: those beyond the budget get 503.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import Unavailable
from app.http.middleware import reject
from app.protocols import PROTOCOLS


@dataclass(frozen=True)
class _Template:
    path: str


# The routes that classify, as every protocol declares them, with the template refusals are counted under.
_PREDICT_ROUTES = tuple(route for protocol in PROTOCOLS for route in protocol.predict_routes)


def _predict_route(path: str) -> tuple[str, str] | None:
    for route in _PREDICT_ROUTES:
        if match := route.pattern.match(path):
            return match["task"], route.template
    return None


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
        found = _predict_route(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is not None:
            task, template = found
            try:
                self.admit(task)
            except Unavailable as error:
                # Label the refusal like a routed request, for the request metrics outside.
                scope["route"] = _Template(template)
                scope["path_params"] = {"task": task}
                await reject(scope, send, 503, str(error), {"Retry-After": str(error.retry_after_s)})
                return
        await self.app(scope, receive, send)


@dataclass
class BodyBudget:
    """Bytes of request bodies in flight now, out of `capacity`, and admitted ever (`app.core.memory` watches
    that to know whether there is anything to give back)."""

    capacity: int
    in_flight: int = 0
    admitted: int = 0


class InflightBodies:
    """Reserve each request's declared body size from the `budget` for as long as the request runs."""

    def __init__(self, app: ASGIApp, budget: BodyBudget, max_body_bytes: int, retry_after_s: int) -> None:
        self.app = app
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            size = int(declared)
        else:  # chunked: it may be as large as the upload limit allows (BodySizeLimit stops it beyond)
            size = self.max_body_bytes if b"chunked" in headers.get(b"transfer-encoding", b"").lower() else 0
        size = min(size, self.max_body_bytes)  # a larger declaration is refused with 413 by BodySizeLimit
        budget = self.budget
        if size and budget.in_flight + size > budget.capacity:
            detail = (
                f"{budget.in_flight / 2**20:.0f} MiB of request bodies are in flight (budget "
                f"{budget.capacity / 2**20:.0f} MiB); retry later"
            )
            await reject(scope, send, 503, detail, {"Retry-After": str(self.retry_after_s)})
            return
        budget.in_flight += size
        budget.admitted += size
        try:
            await self.app(scope, receive, send)
        finally:
            budget.in_flight -= size
