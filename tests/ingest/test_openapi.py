"""The OpenAPI schema ingest serves is true: schemathesis fuzzes every operation against the
running service, with every webhook authenticated as its provider would (Svix signature over the
exact body sent; the per-bot callback secret of the bot the body names, a bot the session gives a
meeting in the database first; the v1 API key; a Gladia callback token for the request id the
case names, a request the session gives a `transcription_jobs` row first), so the fuzz gets past
authentication into the handlers. It finds no server error and no response that contradicts the
schema, and input outside the schema is refused with a 4xx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
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
from notetaker.devstack.stack import Stack
from tests.ingest.conftest import Ingest


@pytest.fixture(scope="session")
def ingest_schema(ingest: Ingest) -> Any:
    return schemathesis.openapi.from_url(f"{ingest.url}/openapi.json")


# Cases per operation and generation mode: a few dozen in `make test`, hundreds in `make fuzz`.
EXAMPLES = int(os.environ.get("NOTETAKER_FUZZ_EXAMPLES", "30"))

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


class Database:
    """The rows a provider's callback presupposes (what the scheduler and transcript-sync write),
    written from the fuzzer's synchronous session through a connection in a thread of its own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.thread = ThreadPoolExecutor(max_workers=1)

    def fetchval(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(self.dsn)
            try:
                return await connection.fetchval(query, *args)
            finally:
                await connection.close()

        return self.thread.submit(asyncio.run, run()).result(timeout=30)

    def meeting_of(self, bot_id: str) -> uuid.UUID | None:
        """The meeting of `bot_id`, given one (a calendar row and a recording) if it is new."""
        meeting_id: uuid.UUID | None = self.fetchval(
            "WITH meeting AS (INSERT INTO meetings (org_id, owner_user_id, start_time,"
            " meeting_url, source) SELECT gen_random_uuid(), gen_random_uuid(), now(),"
            " NULL, 'notetaker'"
            " WHERE NOT EXISTS (SELECT 1 FROM recordings WHERE bot_id = $1) RETURNING id)"
            " INSERT INTO recordings (org_id, user_id, meeting_id, bot_id)"
            " SELECT gen_random_uuid(), gen_random_uuid(), id, $1 FROM meeting"
            " ON CONFLICT (bot_id) DO NOTHING RETURNING meeting_id",
            bot_id,
        )
        if meeting_id is None:  # an existing bot: whatever meeting it has, or none
            meeting_id = self.fetchval(
                "SELECT meeting_id FROM recordings WHERE bot_id = $1", bot_id
            )
        return meeting_id

    def job_for(self, request_id: str) -> None:
        """A transcription job asked for under `request_id`, Gladia's id not stored yet."""
        self.fetchval(
            "INSERT INTO transcription_jobs (request_id, bot_id, provider)"
            " VALUES ($1, $2, 'gladia') ON CONFLICT DO NOTHING",
            uuid.UUID(request_id),
            f"fuzz-{uuid.uuid4()}",
        )

    def close(self) -> None:
        self.thread.shutdown()


BOT_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
UUID = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


class ProviderSession(requests.Session):
    """Authenticates each request the fuzzer sends as the provider would, over the exact bytes
    that go out; MeetingBaaS requests take turns with the three ways MeetingBaaS authenticates.
    `answers` counts the statuses each way of authenticating got.

    A per-bot callback is signed with the secret of the meeting of the bot its body names (a new
    bot gets a meeting first); a body whose `data` is an object naming no plausible bot is given
    one, as MeetingBaaS's callbacks always name their bot. A Gladia callback is signed for the
    request id the case names (a new one gets a job row first), with a fresh expiry."""

    def __init__(self, ingest: Ingest, database: Database) -> None:
        super().__init__()
        self.ingest = ingest
        self.database = database
        self.methods = itertools.cycle(["svix", "x-mb-secret", "api-key"])
        self.answers: dict[str, Counter[int]] = {}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        method = None
        if url.path == "/webhooks/meetingbaas":
            method = self._meetingbaas(request)
        elif url.path == "/webhooks/gladia":
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            request_id = query.get("request_id", "")
            if UUID.fullmatch(request_id):  # else there is no request to mint a token for
                self.database.job_for(request_id)
                expires = int(time.time()) + 600
                subject = callback_tokens.gladia_job_subject(str(uuid.UUID(request_id)), expires)
                query["expires"] = str(expires)
                query["token"] = callback_tokens.mint(self.ingest.new_gladia_key, subject)
                request.url = urlunsplit(url._replace(query=urlencode(query)))
                method = "gladia-token"
        response = super().send(request, **kwargs)
        if method is not None:
            self.answers.setdefault(method, Counter())[response.status_code] += 1
        return response

    def _callback_secret(self, request: requests.PreparedRequest) -> str:
        body = request.body or b""
        assert isinstance(body, bytes | str)  # schemathesis sends the serialised body whole
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            return "no-bot-to-sign-for"
        bot_id = data.get("bot_id")
        if not (isinstance(bot_id, str) and BOT_ID.fullmatch(bot_id)):
            data["bot_id"] = bot_id = f"fuzz-{uuid.uuid4()}"
            request.prepare_body(json.dumps(document).encode(), None)
        meeting_id = self.database.meeting_of(bot_id)
        if meeting_id is None:
            return "bot-without-a-meeting"
        return self.ingest.callback_secret(meeting_id)

    def _meetingbaas(self, request: requests.PreparedRequest) -> str:
        for name in AUTH_HEADERS:
            request.headers.pop(name, None)
        method = next(self.methods)
        if method == "x-mb-secret":
            request.headers["x-mb-secret"] = self._callback_secret(request)
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
    query = {"token": "0" * 64, "expires": 0} if "token" in query_names else None
    return {"headers": headers or None, "query": query}


def fuzz(
    operation: Any, mode: GenerationMode, session: ProviderSession, statuses: Counter[int]
) -> None:
    """Send what schemathesis makes of `operation` in `mode`; count the statuses answered."""

    @given(case=operation.as_strategy(generation_mode=mode, **placeholders(operation)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def honours_schema(case: Any) -> None:
        response = case.call_and_validate(session=session, checks=CHECKS)
        statuses[response.status_code] += 1

    honours_schema()


@pytest.fixture
def database(stack: Stack) -> Any:
    rows = Database(stack.database_url)
    yield rows
    rows.close()


def test_every_operation_honours_its_schema_past_authentication(
    ingest_schema: Any, ingest: Ingest, database: Database
) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not support pytest 9.
    operations = [result.ok() for result in ingest_schema.get_all_operations()]
    assert len(operations) >= 4
    session = ProviderSession(ingest, database)
    seen: dict[tuple[str, str], Counter[int]] = {}
    runs = [(operation, GenerationMode.POSITIVE) for operation in operations] + [
        (operation, GenerationMode.NEGATIVE)
        for operation in operations
        if operation.body or operation.query or operation.headers  # something to get wrong
    ]
    for operation, mode in runs:
        fuzz(operation, mode, session, seen.setdefault((operation.path, mode.value), Counter()))

    answered = sum((counts for counts in seen.values()), Counter[int]())
    print(f"\nfuzzed {answered.total()} requests past authentication: {dict(answered)}")
    assert not [status for status in answered if status >= 500], answered  # only 2xx and 4xx

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
    assert {p["name"]: p["required"] for p in gladia["parameters"]} == {
        "request_id": True,
        "expires": True,
        "token": True,
    }
    assert "401" in gladia["responses"]
