"""What a REST protocol declares once, so the HTTP shell needs nothing else to serve it.

A protocol module translates one wire format to pipeline calls (`app.core.pipeline`) and back. Besides its
router it declares, in one `RestProtocol`:

- the path prefixes it owns (`prefixes`), under which every error, whoever raises it (a route, the
  admission middleware, request validation), is answered in its error body: `{error_key: reason}`,
  documented by `error_model` in the OpenAPI document;
- its predict routes (`predict_routes`), which admission control refuses before their body is read
  when the task's queue is full;
- request body schemas that its routes parse themselves (`schemas`, added to the OpenAPI components).

The registration table is `app.protocols.PROTOCOLS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel


@dataclass(frozen=True)
class PredictRoute:
    """A predict path (`pattern`, with a `task` group) and the route template its refusals are counted under."""

    pattern: re.Pattern[str]
    template: str


@dataclass(frozen=True)
class RestProtocol:
    name: str
    router: APIRouter
    error_model: type[BaseModel]
    error_key: str = "detail"
    prefixes: tuple[str, ...] = ()
    predict_routes: tuple[PredictRoute, ...] = ()
    schemas: dict[str, Any] = field(default_factory=dict)

    def owns(self, path: str) -> bool:
        return path.startswith(self.prefixes)

    def error_body(self, detail: str) -> dict[str, str]:
        return {self.error_key: detail}
