"""A real trace receiver for the tests and benchmarks: Arize Phoenix (PyPI), which takes OTLP over HTTP and
gRPC and answers span queries, in a virtualenv of its own (`stress.venvs`).

Jaeger and the OpenTelemetry Collector are Go programs that cannot be built on these machines (no Go module
source is reachable); Phoenix is a Python package. It keeps its spans in memory (SQLite `:memory:`), with
telemetry and external resources off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stress.process import Live, free_port, service
from stress.venvs import ensure

PHOENIX = ["arize-phoenix==20.26.1"]


@contextmanager
def phoenix(working_dir: Path, log_path: Path | None = None) -> Iterator[Live]:
    """A Phoenix on a free loopback port, ready (its /healthz answers); its `url` is the OTLP/HTTP endpoint
    (`OTEL_EXPORTER_OTLP_ENDPOINT`; the exporter appends /v1/traces) and the span API's base."""
    python = ensure("phoenix", PHOENIX)
    port = free_port()
    env = {
        "PHOENIX_WORKING_DIR": str(working_dir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_SQL_DATABASE_URL": "sqlite:///:memory:",
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_LOG_MIGRATIONS": "false",
        "PHOENIX_LOGGING_LEVEL": "warning",
    }
    command = [str(python.parent / "phoenix"), "serve"]
    with service(env, command=command, port=port, ready_path="/healthz", timeout_s=120, log_path=log_path) as live:
        yield live
