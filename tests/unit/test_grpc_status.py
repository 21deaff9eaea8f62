"""The one mapping from the error tree to gRPC status codes (`app.protocols.grpc.status`)."""

from __future__ import annotations

import grpc
import pytest

from app.core import errors
from app.protocols.grpc.status import status_code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidImage("corrupt"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnsupportedImageType("text"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidRequest("bad tensor"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnsupportedEncoding("br"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("version 9"), grpc.StatusCode.NOT_FOUND),
        (errors.UnknownTask("nope"), grpc.StatusCode.NOT_FOUND),
        (errors.PayloadTooLarge("33 images"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Overloaded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NotReady("draining"), grpc.StatusCode.UNAVAILABLE),
        (errors.Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Forbidden("token"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.LoadFailed("broken"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InferenceError("model failed"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_has_its_status(error: errors.ServiceError, code: grpc.StatusCode) -> None:
    assert status_code(error) == code


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_nothing_a_client_causes_is_internal() -> None:
    """Every client and availability error of the tree has a code of its own: INTERNAL only for the model."""
    for cls in _subclasses(errors.ServiceError):
        if cls in (errors.ServiceError, errors.InferenceError) or not cls.__module__.startswith("app."):
            continue
        assert status_code(cls("x")) != grpc.StatusCode.INTERNAL, cls
