"""The HTTP server: uvicorn, plus the guards a public endpoint needs that uvicorn lacks, and a drain.

- **Header timeout** (`header_timeout_s`): uvicorn waits for a request's headers for as long as the client
  likes, so 300 half-sent headers hold 300 connections forever. Here a connection whose headers have not
  all arrived within the timeout (from connecting, or from the first byte of the next keep-alive request)
  gets 408 and is closed. The body has its own timeout (`app.http.middleware.BodyTimeout`); idle keep-alive
  connections close after `keep_alive_s` (uvicorn's own timer).
- **Connection cap** (`max_connections`): a connection beyond it is answered 503 with Retry-After at once
  and closed, instead of queueing without bound.
- **Drain** (`drain_s`): on SIGTERM, readiness turns 503 at once while the service goes on serving for
  `drain_s`, so that load balancers and Kubernetes take it out of rotation; responses meanwhile carry
  `Connection: close`, so clients move their next request elsewhere. Then uvicorn's graceful shutdown:
  stop accepting, answer every request already accepted (up to `graceful_timeout_s`), close idle
  connections. A second SIGTERM (or Ctrl-C) skips the rest of the drain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.settings import Settings
from app.http.application import create_app

log = logging.getLogger(__name__)
_LINGER_S = 1.0


def _raw_response(status: int, reason: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a connection cap. Reads its limits from
    `config.guards` (a `Guards`), so the class stays importable by name."""

    header_timer: asyncio.TimerHandle | None = None
    refused = False

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guards: Guards = self.config.guards  # type: ignore[attr-defined]
        if len(self.connections) > guards.max_connections:
            self.refused = True
            detail = f"the server holds its maximum of {guards.max_connections} connections; retry later"
            transport.write(
                _raw_response(503, "Service Unavailable", detail, f"retry-after: {guards.retry_after_s}\r\n")
            )
            # Drop what the client still sends for a moment before closing: closing with its request
            # unread would reset the connection, and the client would lose the answer.
            self.loop.call_later(_LINGER_S, transport.close)
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.cycle is None or self.cycle.response_complete:  # the first bytes of a new request
            self._arm_header_timer()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self.header_timer is None:
            timeout = self.config.guards.header_timeout_s  # type: ignore[attr-defined]
            self.header_timer = self.loop.call_later(timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            timeout = self.config.guards.header_timeout_s  # type: ignore[attr-defined]
            self.transport.write(
                _raw_response(408, "Request Timeout", f"the request headers did not arrive within {timeout:g} s")
            )
            self.transport.close()


class Guards:
    """The limits `GuardedHttpToolsProtocol` reads from uvicorn's config."""

    def __init__(self, settings: Settings) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.max_connections = settings.max_connections
        self.retry_after_s = settings.retry_after_s


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain of `drain_s` seconds before its graceful shutdown on SIGTERM."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_s = drain_s
        self.drain_deadline: float | None = None
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None and self.drain_s > 0 and sig == signal.SIGTERM and not self.should_exit:
            # Runs in the signal handler: set plain attributes only.
            self.drain_deadline = time.monotonic() + self.drain_s
            self.app.state.draining = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None:
            if not self._drain_logged:  # logged here, not in the signal handler, where logging can deadlock
                self._drain_logged = True
                log.info("SIGTERM: draining, readiness is 503; serving for %g s more, then shutting down", self.drain_s)
            if time.monotonic() >= self.drain_deadline:
                self.should_exit = True
        return await super().on_tick(counter)


def build(settings: Settings) -> DrainingServer:
    """The server for `settings`, with its app (models load in the app's lifespan, when it runs). With JSON
    logs, the caller routes fd 2 into them first (`app.http.logs.capture_native_stderr`, as `python -m app`
    does before importing this module, which loads TensorFlow)."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # the app configures logging (text or JSON) itself
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
    )
    config.guards = Guards(settings)  # type: ignore[attr-defined]
    return DrainingServer(config, app, settings.drain_s)
