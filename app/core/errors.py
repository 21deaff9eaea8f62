"""Domain exceptions of the service and the one place that maps them to HTTP status codes.

Everything raised for a request is a `ServiceError`; its class says what went wrong, its message why, in
words a client can act on. Protocols map the classes to their own status codes (`status_code` for HTTP;
each protocol module states its mapping once), never by matching messages.

Hierarchy::

    ServiceError                      base of everything the service raises on purpose
    ├── ClientError                   the request is at fault (4xx)
    │   ├── InvalidImage              400 corrupt or truncated image
    │   ├── LoadFailed                400 a model asked for (repository API) does not load
    │   ├── Forbidden                 403 an admin operation without the admin token
    │   ├── NotFound                  404 no such resource
    │   │   └── UnknownTask           404 no model serves this task
    │   ├── PayloadTooLarge           413 too many bytes, pixels or files
    │   ├── UnsupportedImageType      415 not an image format the service decodes
    │   ├── UnsupportedEncoding       415 a Content-Encoding other than gzip or deflate
    │   └── InvalidRequest            422 malformed request (bad tensor shape, bad base64, ...)
    ├── Unavailable                   503 with Retry-After
    │   ├── NotReady                  the model is still loading, or the service is stopping
    │   └── Overloaded                the model's queue is full
    ├── DeadlineExceeded              504 the caller's deadline passed before the model ran
    └── InferenceError                500 the model itself failed (never caused by client input)

    ModelLoadError                    a model version cannot be served (logged and shown in the
                                      repository index; never a request's answer by itself)

`imaging` and `training` raise these too, so they carry no web framework dependency.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; `str(error)` is the human-readable reason returned to the client."""


class ClientError(ServiceError):
    """The request is at fault."""


class InvalidImage(ClientError):
    """The bytes look like a supported image but cannot be decoded (corrupt or truncated)."""


class LoadFailed(ClientError):
    """A load asked for through the repository API failed; the message gives each version's reason."""


class Forbidden(ClientError):
    """The request needs the admin token (`APP_ADMIN_TOKEN`) and did not carry it."""


class NotFound(ClientError):
    """The requested resource (a model version, a plot) does not exist."""


class UnknownTask(NotFound):
    """No model is configured for the requested task."""


class PayloadTooLarge(ClientError):
    """The upload exceeds a byte, pixel or file-count limit."""


class UnsupportedImageType(ClientError):
    """The upload is not an image format the service decodes."""


class UnsupportedEncoding(ClientError):
    """The request body is compressed with a coding the service does not decompress."""


class InvalidRequest(ClientError):
    """The request is well-formed HTTP but its content is malformed."""


class Unavailable(ServiceError):
    """The service cannot answer now; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(Unavailable):
    """The model is not loaded yet, or the service is shutting down."""


class Overloaded(Unavailable):
    """The model's request queue is full."""


class DeadlineExceeded(ServiceError):
    """The request's deadline passed while it waited; it was not run (its batch slot went to others)."""


class InferenceError(ServiceError):
    """The model call failed; only the requests of that batch are affected."""


_STATUS: tuple[tuple[type[ServiceError], int], ...] = (
    (InvalidImage, 400),
    (LoadFailed, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (UnsupportedImageType, 415),
    (UnsupportedEncoding, 415),
    (InvalidRequest, 422),
    (Unavailable, 503),
    (DeadlineExceeded, 504),
    (InferenceError, 500),
)


def status_code(error: ServiceError) -> int:
    """The HTTP status code for `error` (500 for anything not listed, which is a bug)."""
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code
    return 500


class ModelLoadError(Exception):
    """A model version directory cannot be served; the message says why in one sentence."""
