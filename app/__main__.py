"""`python -m app`: serve with uvicorn (guarded and draining, see `app.http.server`) on `Settings`."""

from __future__ import annotations

from app.core.settings import Settings
from app.http.server import build


def main() -> None:
    build(Settings()).run()


if __name__ == "__main__":
    main()
