"""The model repository extension of the Open Inference Protocol (Triton's), for operators:

- `POST /v2/repository/index`: every task and version found, with its state (READY, LOADING, UNAVAILABLE
  and why); `{"ready": true}` lists only what serves.
- `POST /v2/repository/models/{task}/load` and `/unload`: serve a task's versions from disk now, or stop
  serving it (requests in flight finish). These change what is served, so they answer 403 unless the
  service was started with `APP_ADMIN_TOKEN` and the request carries it as `Authorization: Bearer ...`.
  An unloaded task stays unloaded until it is loaded again, also while the directory is polled.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from app.core.errors import Forbidden, InvalidRequest, LoadFailed, UnknownTask
from app.core.registry import State
from app.core.service import ModelService
from app.core.tensors import validation_message
from app.protocols.bodies import read_body
from app.protocols.rest import ServiceDep, V2Error

router = APIRouter(prefix="/v2/repository", tags=["kserve-v2-repository"])
_SMALL_BODY_BYTES = 64 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "the task has no version that loads"},
    403: {"model": V2Error, "description": "no admin token configured, or the request does not carry it"},
    404: {"model": V2Error, "description": "no such task on disk"},
}


class IndexRequest(BaseModel):
    ready: bool = False


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str = ""


def _authorize(request: Request, service: ModelService) -> None:
    """403 unless the service has an admin token and the request carries it (compared in constant time)."""
    token = service.settings.admin_token
    if token is None:
        raise Forbidden("loading and unloading models is disabled: start the service with APP_ADMIN_TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise Forbidden("loading and unloading models needs the admin token: Authorization: Bearer <token>")


@router.post("/index", response_model=list[IndexEntry], responses={422: {"model": V2Error}})
async def index(request: Request, service: ServiceDep) -> list[IndexEntry]:
    """Every version of every task, on disk or served, and its state."""
    raw = await read_body(request, _SMALL_BODY_BYTES, "index request")
    try:
        options = IndexRequest.model_validate_json(raw) if raw.strip() else IndexRequest()
    except ValidationError as error:
        raise InvalidRequest(validation_message(error)) from error
    entries = service.index()
    return [
        IndexEntry(name=e.task, version=str(e.version), state=e.state, reason=e.reason)
        for e in entries
        if not options.ready or e.state is State.READY
    ]


@router.post("/models/{task}/load", responses=ERRORS)
async def load(request: Request, service: ServiceDep, task: str) -> dict[str, Any]:
    """Load the task's latest versions from disk (retrying any that failed before); answers when done."""
    _authorize(request, service)
    if not service.on_disk(task):
        raise UnknownTask(f"no directory for task {task!r} in {service.settings.model_dir}")
    statuses = await service.load_task(task)
    if not service.versions(task):
        reasons = "; ".join(f"v{s.version}: {s.reason}" for s in statuses if s.reason) or "no version"
        raise LoadFailed(f"failed to load {task!r}: {reasons}")
    return {}


@router.post("/models/{task}/unload", responses=ERRORS)
async def unload(request: Request, service: ServiceDep, task: str) -> dict[str, Any]:
    """Stop serving the task: new requests get 404, those in flight finish."""
    _authorize(request, service)
    if not service.is_known(task):
        raise UnknownTask(f"no model serves task {task!r}")
    service.unload_task(task)
    return {}
