"""A bounded, seeded schemathesis run over every operation of the OpenAPI schema, against the app with the
fake model: no 5xx, and every answer conforms to the schema (status codes, bodies, content types).
`python -m stress.schema` runs the same checks, with many more cases, against a live service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.core.settings import Settings
from app.http.application import create_app
from tests.fakes import FakeLoader, write_model_dir
from tests.helpers import wait_ready


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    root = tmp_path_factory.mktemp("models")
    write_model_dir(root)
    application = create_app(Settings(model_dir=Path(root)), loader=FakeLoader())
    with TestClient(application) as client:
        wait_ready(client)
        yield application


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# Every check schemathesis has, but "schema-valid data must be accepted": any bytes are a schema-valid
# `file`, and DESIGN.md answers 400/413/415 to those that are not a decodable image of a sane size.
EXCLUDED = [positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_and_never_fails(case) -> None:
    case.call_and_validate(excluded_checks=EXCLUDED)
