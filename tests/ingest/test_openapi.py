"""The OpenAPI schema ingest serves is true: schemathesis fuzzes every operation against the
running service and finds no server error and no response that contradicts the schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.ingest.conftest import Ingest


@pytest.fixture(scope="session")
def ingest_schema(ingest: Ingest) -> Any:
    return schemathesis.openapi.from_url(f"{ingest.url}/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_every_operation_honours_its_schema(ingest_schema: Any) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not support pytest 9.
    operations = [result.ok() for result in ingest_schema.get_all_operations()]
    assert len(operations) >= 4
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def honours_schema(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        honours_schema()


def test_schema_documents_the_webhooks_truthfully(ingest_schema: Any) -> None:
    raw = ingest_schema.raw_schema
    meetingbaas = raw["paths"]["/webhooks/meetingbaas"]["post"]
    body = meetingbaas["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"event", "data"}
    assert {"200", "400", "401", "404", "413", "415", "422", "503"} <= set(meetingbaas["responses"])
    assert "application/problem+json" in meetingbaas["responses"]["401"]["content"]
    gladia = raw["paths"]["/webhooks/gladia"]["post"]
    assert {p["name"] for p in gladia["parameters"]} == {"bot_id", "token"}
