"""The wire formats the service speaks, one module each, every one translating its requests and errors to
and from the predict pipeline (`app.core.pipeline`). A new protocol is one module that declares a
`RestProtocol` (`app.protocols.base`) and one line in `PROTOCOLS`.
"""

from __future__ import annotations

from app.protocols import native, oip, tfserving
from app.protocols.base import RestProtocol

PROTOCOLS: tuple[RestProtocol, ...] = (native.PROTOCOL, oip.PROTOCOL, tfserving.PROTOCOL)
DEFAULT = native.PROTOCOL  # answers errors for paths no other protocol owns (/, /docs, unknown paths)


def for_path(path: str) -> RestProtocol:
    """The protocol whose error body a response to `path` takes."""
    return next((p for p in PROTOCOLS if p.owns(path)), DEFAULT)
