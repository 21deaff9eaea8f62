"""Every error answer of the HTTP shell, in one place: the status from the error tree
(`app.core.errors.status_code`) and the body of the protocol that owns the path (`app.protocols.for_path`:
`{"detail": ...}`, or `{"error": ...}` under /v1/ and /v2/). Routes raise; middleware that refuses before
a route runs calls `error_response`; nothing else writes an error body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.core.errors import ServiceError, Unavailable, status_code
from app.protocols import for_path

log = logging.getLogger(__name__)


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
    """The error answer for a request to `path`, in the body of the protocol that owns it."""
    return SafeJSONResponse(for_path(path).error_body(detail), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
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
