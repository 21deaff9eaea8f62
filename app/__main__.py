"""`python -m app`: serve with uvicorn (guarded and draining, see `app.server`) on `Settings`."""

from __future__ import annotations

from app.config import Settings
from app.server import build


def main() -> None:
    build(Settings()).run()


if __name__ == "__main__":
    main()
