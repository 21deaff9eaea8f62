"""Log lines: one handler on the root logger, so that the service's, uvicorn's and TensorFlow's Python
loggers share one format (`APP_LOG_FORMAT`: text, or one JSON object per line), and every line written
while a request is handled carries its request ID (`request_id`; "-" outside requests) and, with tracing on,
its trace id (`trace_id`; "-" outside traces).

TensorFlow's C++ side (and absl's) writes to file descriptor 2 directly, and some of its start-up lines
ignore TF_CPP_MIN_LOG_LEVEL. For JSON logs `python -m app` (`app.__main__`) routes that descriptor through a
pipe and turns each of its lines into a JSON record of the logger `native` (`capture_native_stderr`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.json import JsonFormatter

from app.core import tracing
from app.core.settings import Settings

_HANDLER_NAME = "app"
_NATIVE_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_real_stderr: IO[str] | None = None  # set by capture_native_stderr: where log lines go instead of fd 2


def configure(settings: Settings) -> None:
    """Install (or replace) the service's handler on the root logger."""
    handler = logging.StreamHandler(_real_stderr or sys.stderr)
    handler.addFilter(CorrelationIdFilter(name="request_id", default_value="-"))
    handler.addFilter(_trace_id)
    if settings.log_format == "json":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # effective only if TensorFlow is not loaded yet
        formatter: logging.Formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(trace_id)s %(message)s",
            rename_fields={"correlation_id": "request_id"},
        )
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s %(trace_id)s]: %(message)s"
        )
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (from an earlier create_app), never handlers the host installed.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(settings.log_level.upper())


def _trace_id(record: logging.LogRecord) -> bool:
    """Give every line the trace id of the span it is written in ("-" outside traces or with tracing off),
    so that a log search and a trace search find each other."""
    record.trace_id = tracing.trace_id() or "-"
    return True


def capture_native_stderr() -> None:
    """Send what is written to file descriptor 2 (by C++ code, or by Python outside logging) through a
    pipe into the `native` logger, and log lines themselves to the real stderr (never into the pipe
    they are read from). Call before `configure` and before TensorFlow is imported; later calls do nothing."""
    global _real_stderr
    if _real_stderr is not None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the JSON default; set before TensorFlow loads
    _real_stderr = os.fdopen(os.dup(2), "w", buffering=1)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    native = logging.getLogger("native")

    def pump() -> None:
        with os.fdopen(read_end, errors="replace") as lines:
            for line in lines:
                text = line.rstrip("\n")
                if text:
                    native.log(_NATIVE_LEVELS.get(text[:1], logging.WARNING), text)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()
