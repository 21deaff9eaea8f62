"""What every REST protocol's routes share: the one dependency that gives a route the service, the error
bodies and their OpenAPI description, and GET routes that also answer HEAD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from app.core.service import ModelService
from app.protocols.bodies import JsonParser

F = TypeVar("F", bound=Callable[..., Any])

_ERROR_TEXTS = {
    400: "corrupt or truncated image",
    404: "unknown task or version",
    408: "the request body did not arrive in time",
    413: "too large: body, image pixels, decode memory or number of images",
    415: "not an image type (or content encoding) the service decodes",
    422: "malformed request",
    503: "model not ready, draining or overloaded (see Retry-After)",
}


# Error bodies (their docstrings would become OpenAPI descriptions): DESIGN.md's, and the one of the Open
# Inference Protocol and of TensorFlow Serving's REST API.
class Problem(BaseModel):
    detail: str


class V2Error(BaseModel):
    error: str


def get_service(request: Request) -> ModelService:
    """The service of the app serving `request` (created in its lifespan)."""
    service: ModelService = request.app.state.service
    return service


def get_json_parser(request: Request) -> JsonParser:
    parser: JsonParser = request.app.state.json_parser
    return parser


ServiceDep = Annotated[ModelService, Depends(get_service)]
JsonParserDep = Annotated[JsonParser, Depends(get_json_parser)]


def error_responses(body: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route answers (all by default), with their body model
    (`Problem` here, the protocols' `{"error": ...}` under /v1 and /v2)."""
    return {code: {"model": body, "description": _ERROR_TEXTS[code]} for code in codes or _ERROR_TEXTS}


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[F], F]:
    """Register a GET route and its HEAD twin (health checks probe with either), each with its own
    operation id in the OpenAPI schema."""

    def register(function: F) -> F:
        router.add_api_route(path, function, methods=["GET"], **options)
        router.add_api_route(path, function, methods=["HEAD"], operation_id=f"{function.__name__}_head", **options)
        return function

    return register
