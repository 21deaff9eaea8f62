"""The one mapping from the service's error tree (`app.core.errors`) to gRPC status codes, and the abort
every servicer answers an error with.

A request's fault is INVALID_ARGUMENT (a bad tensor, an undecodable image, a malformed parameter), NOT_FOUND
(an unknown model, version or signature) or RESOURCE_EXHAUSTED (too many images or pixels; a full queue, as
gRPC's own message size limit answers too); UNAVAILABLE while loading or draining, with the retry delay in
`grpc-retry-pushback-ms` (gRPC's retry policy reads it); DEADLINE_EXCEEDED when the caller's deadline passed
before the model ran. INTERNAL only when the model itself failed, never for anything a client sent.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc import aio

from app.core import errors

_CODES: tuple[tuple[type[errors.ServiceError], grpc.StatusCode], ...] = (
    (errors.InvalidImage, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.LoadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnsupportedImageType, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UnsupportedEncoding, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ClientError, grpc.StatusCode.INVALID_ARGUMENT),  # any other fault of the request
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.InferenceError, grpc.StatusCode.INTERNAL),
)
RETRY_PUSHBACK = "grpc-retry-pushback-ms"


def status_code(error: errors.ServiceError) -> grpc.StatusCode:
    """The gRPC status code for `error` (INTERNAL for anything not listed, which is a bug)."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def abort(context: aio.ServicerContext, error: errors.ServiceError) -> NoReturn:
    """End the call with `error`'s status code and its message (and, for UNAVAILABLE and a full queue, when
    to retry)."""
    if isinstance(error, errors.Unavailable):
        context.set_trailing_metadata(((RETRY_PUSHBACK, str(error.retry_after_s * 1000)),))
    await context.abort(status_code(error), str(error))
    raise AssertionError("context.abort returned")  # it always raises; this tells the type checker


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def answers_errors(method: Handler) -> Handler:
    """Wrap a servicer method `(self, request, context)` so that a `ServiceError` it raises ends the call
    with its status code (see `abort`)."""

    @functools.wraps(method)
    async def wrapped(self: Any, request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except errors.ServiceError as error:
            await abort(context, error)

    return wrapped  # type: ignore[return-value]


def deadline(context: aio.ServicerContext) -> float | None:
    """The caller's deadline as event-loop time (what `Options.deadline` holds), None without one;
    `DeadlineExceeded` if it has passed already, so that such a call is never run."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise errors.DeadlineExceeded("the call's deadline passed before it could run")
    return asyncio.get_running_loop().time() + remaining
