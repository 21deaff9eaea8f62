"""The web page: one static HTML file that lists the served models (`GET /models`) and classifies what a
person drops on it (`POST /predict/{task}`). It knows no task: everything it shows comes from the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter()
_STATIC = Path(__file__).resolve().parent / "static"


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(_STATIC / "index.html", media_type="text/html")
