"""`python -m app`: serve with uvicorn (guarded and draining, see `app.http.server`) on `Settings`."""

from __future__ import annotations

from app.core.settings import Settings
from app.http import logs


def main() -> None:
    settings = Settings()
    if settings.log_format == "json":
        # Before the server's import: it imports TensorFlow (TF Serving's gRPC messages are TensorFlow's own
        # protos), whose C++ side writes to fd 2 as it loads; those lines must reach the pipe already.
        logs.capture_native_stderr()
    from app.http.server import build

    build(settings).run()


if __name__ == "__main__":
    main()
