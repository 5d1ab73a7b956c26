"""The OpenAPI schema ingest serves is true: schemathesis fuzzes every operation against the
running service, with every webhook authenticated as its provider would (Svix signature over the
exact body sent, per-bot callback secret, v1 API key, Gladia callback token for the bot), so the
fuzz gets past authentication into the handlers. It finds no server error and no response that
contradicts the schema, and input outside the schema is refused with a 4xx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import negative_data_rejection

from notetaker.common import callback_tokens
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
    negative_data_rejection,  # a request outside the schema gets a 4xx
]

# The provider's credentials, which the session sets on every request (the fuzzer's own values
# of these headers and of `token` are placeholders, replaced before sending).
AUTH_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-mb-secret",
    "x-meeting-baas-api-key",
)


def svix_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Svix's signature over the bytes sent (standardwebhooks' `sign` takes text only)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


class ProviderSession(requests.Session):
    """Authenticates each request the fuzzer sends as the provider would, over the exact bytes
    that go out; MeetingBaaS requests take turns with the three ways MeetingBaaS authenticates.
    `answers` counts the statuses each way of authenticating got."""

    def __init__(self, ingest: Ingest) -> None:
        super().__init__()
        self.ingest = ingest
        self.methods = itertools.cycle(["svix", "x-mb-secret", "api-key"])
        self.answers: dict[str, Counter[int]] = {}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        method = None
        if url.path == "/webhooks/meetingbaas":
            method = self._meetingbaas(request)
        elif url.path == "/webhooks/gladia":
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            if query.get("bot_id"):  # without one there is nothing to mint a token for
                query["token"] = callback_tokens.mint(self.ingest.gladia_key, query["bot_id"])
                request.url = urlunsplit(url._replace(query=urlencode(query)))
                method = "gladia-token"
        response = super().send(request, **kwargs)
        if method is not None:
            self.answers.setdefault(method, Counter())[response.status_code] += 1
        return response

    def _meetingbaas(self, request: requests.PreparedRequest) -> str:
        for name in AUTH_HEADERS:
            request.headers.pop(name, None)
        method = next(self.methods)
        if method == "x-mb-secret":
            request.headers["x-mb-secret"] = self.ingest.callback_secret
        elif method == "api-key":
            request.headers["x-meeting-baas-api-key"] = self.ingest.api_key
        else:
            body = request.body or b""
            assert isinstance(body, bytes | str)  # schemathesis sends the serialised body whole
            msg_id, now = f"msg_fuzz_{uuid.uuid4().hex}", str(int(datetime.now(UTC).timestamp()))
            request.headers["svix-id"] = msg_id
            request.headers["svix-timestamp"] = now
            request.headers["svix-signature"] = svix_signature(
                self.ingest.new_secret,
                msg_id,
                now,
                body.encode() if isinstance(body, str) else body,
            )
        return method


def placeholders(operation: Any) -> dict[str, Any]:
    """Fixed values for the credentials the session sets, so the fuzzer neither varies them nor
    builds a 'bad' request out of one that the session then makes good."""
    names = {p.name.lower() for p in operation.headers} if operation.headers else set()
    headers = {name: "placeholder" for name in AUTH_HEADERS if name in names}
    query_names = {p.name for p in operation.query} if operation.query else set()
    query = {"token": "0"} if "token" in query_names else None
    return {"headers": headers or None, "query": query}


def fuzz(
    operation: Any, mode: GenerationMode, session: ProviderSession, statuses: Counter[int]
) -> None:
    """Send what schemathesis makes of `operation` in `mode`; count the statuses answered."""

    @given(case=operation.as_strategy(generation_mode=mode, **placeholders(operation)))
    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def honours_schema(case: Any) -> None:
        response = case.call_and_validate(session=session, checks=CHECKS)
        statuses[response.status_code] += 1

    honours_schema()


def test_every_operation_honours_its_schema_past_authentication(
    ingest_schema: Any, ingest: Ingest
) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not support pytest 9.
    operations = [result.ok() for result in ingest_schema.get_all_operations()]
    assert len(operations) >= 4
    session = ProviderSession(ingest)
    seen: dict[tuple[str, str], Counter[int]] = {}
    runs = [(operation, GenerationMode.POSITIVE) for operation in operations] + [
        (operation, GenerationMode.NEGATIVE)
        for operation in operations
        if operation.body or operation.query or operation.headers  # something to get wrong
    ]
    for operation, mode in runs:
        fuzz(operation, mode, session, seen.setdefault((operation.path, mode.value), Counter()))

    def reached(path: str, mode: str) -> set[int]:
        """Statuses only a handler past authentication answers."""
        return set(seen[(path, mode)]) - {401, 413, 415}

    # Each way of authenticating got requests into the handler (answers other than 401) ...
    for method in ("svix", "x-mb-secret", "api-key", "gladia-token"):
        assert set(session.answers.get(method, {})) - {401}, (method, session.answers)
    # ... where authenticated, well-formed deliveries are taken (ignored or published) or the bot is
    # unknown; malformed ones are refused by the handler's validation, not by authentication.
    assert reached("/webhooks/meetingbaas", "positive") & {200, 404}, seen
    assert reached("/webhooks/meetingbaas", "negative") & {400, 422}, seen
    assert reached("/webhooks/gladia", "positive") & {200}, seen
    assert reached("/webhooks/gladia", "negative") & {400, 422}, seen


def test_schema_documents_the_webhooks_truthfully(ingest_schema: Any) -> None:
    raw = ingest_schema.raw_schema
    meetingbaas = raw["paths"]["/webhooks/meetingbaas"]["post"]
    body = meetingbaas["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"event", "data"}
    assert {"200", "400", "401", "404", "413", "415", "422", "503"} <= set(meetingbaas["responses"])
    assert "application/problem+json" in meetingbaas["responses"]["401"]["content"]
    gladia = raw["paths"]["/webhooks/gladia"]["post"]
    assert {p["name"] for p in gladia["parameters"]} == {"bot_id", "token"}
