"""Bad input from a caller holding a valid credential is a 4xx with nothing published and
nothing stored, never a 5xx: a 503 tells the provider to retry forever, a 500 hides the cause."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import asyncpg
import httpx
import pytest

from notetaker.devstack.stack import Stack
from tests.ingest.conftest import Ingest, assert_nothing_published, gladia_job, known_bot, post


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BODIES = {
    # Python refuses to parse integers of over 4300 digits: the parser's ValueError was a 500.
    "a 5000-digit integer": lambda bot: (
        f'{{"event": "bot.status_change", "data": {{"bot_id": "{bot}", "n": {"9" * 5000}}}}}'
    ),
    # 100k levels overflow the parser's stack: RecursionError was a 500.
    "100k levels of nesting": lambda bot: (
        f'{{"event": "bot.status_change", "data": {{"bot_id": "{bot}", "x": {deep(100_000)}}}}}'
    ),
    "65 levels of nesting": lambda bot: (
        f'{{"event": "bot.status_change", "data": {{"bot_id": "{bot}", "x": {deep(65)}}}}}'
    ),
    # PostgreSQL text cannot hold NUL or a lone surrogate: the insert failed, answered 503.
    "a NUL in the event name": lambda bot: json.dumps(
        {"event": "bot.status\u0000change", "data": {"bot_id": bot}}
    ),
    "a lone surrogate in the event name": lambda bot: (
        f'{{"event": "bot.\\ud800", "data": {{"bot_id": "{bot}"}}}}'
    ),
    "a NUL deep in the data": lambda bot: json.dumps(
        {
            "event": "bot.status_change",
            "data": {"bot_id": bot, "status": {"code": "in_call\u0000recording"}},
        }
    ),
    "an integer beyond 64 bits": lambda bot: (
        f'{{"event": "bot.completed", "data": {{"bot_id": "{bot}", "duration_seconds": {2**70}}}}}'
    ),
    "a far-future timestamp": lambda bot: json.dumps(
        {
            "event": "bot.status_change",
            "data": {
                "bot_id": bot,
                "status": {"code": "in_call_recording", "created_at": "9999-12-31T23:59:59Z"},
            },
        }
    ),
}


@pytest.mark.parametrize("case", list(BODIES))
async def test_a_signed_hostile_body_gets_a_4xx_and_changes_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, case: str
) -> None:
    bot_id = await known_bot(db)
    body = BODIES[case](bot_id)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body))
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/problem+json")
    stored = await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE bot_id = $1", bot_id)
    assert stored == 0
    await assert_nothing_published(stack, bot_id)


@pytest.mark.parametrize("job_id", ["job\u0000", "../v2/pre-recorded", "a/b", "a?x=1", "%2e%2e"])
async def test_a_gladia_callback_whose_job_id_is_not_a_plain_id_gets_a_422(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, job_id: str
) -> None:
    """The job id goes into Gladia's API path with our key: only a plain id may, in either
    callback shape."""
    bot_id = await known_bot(db)
    request_id = await gladia_job(db, bot_id)  # Gladia's id not known yet: the body's counts
    for body in (
        json.dumps({"id": job_id, "event": "transcription.success"}),
        json.dumps({"event": "transcription.success", "payload": {"id": job_id}}),
    ):
        answer = await post(
            ingest.gladia_url(request_id), body, {"content-type": "application/json"}
        )
        assert answer.status_code == 422, answer.text[:300]
    stored = await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE bot_id = $1", bot_id)
    assert stored == 0
    await assert_nothing_published(stack, bot_id)


async def test_the_ranges_the_schema_states_are_where_ingest_draws_the_line(
    ingest: Ingest, db: asyncpg.Pool
) -> None:
    """The OpenAPI document states the accepted ranges of both webhook bodies; a signed body
    exactly at each bound is accepted and one step past it is refused with a 422."""
    async with httpx.AsyncClient() as http:
        schema = (await http.get(f"{ingest.url}/openapi.json")).json()
    bodies_schema = {}
    for path in ("/webhooks/meetingbaas", "/webhooks/gladia"):
        body = schema["paths"][path]["post"]["requestBody"]
        assert "422" in body["description"]
        bodies_schema[path] = body["content"]["application/json"]["schema"]
    ranges = bodies_schema["/webhooks/meetingbaas"]["x-accepted-ranges"]
    assert bodies_schema["/webhooks/gladia"]["x-accepted-ranges"] == ranges
    sent_at = bodies_schema["/webhooks/meetingbaas"]["properties"]["sent_at"]
    latest = datetime.fromisoformat(sent_at["x-latest"])
    earliest = datetime.fromisoformat(sent_at["x-earliest"])

    def status_change(bot: str, extra: str = "", sent: datetime | None = None) -> str:
        when = f', "sent_at": "{sent.isoformat()}"' if sent else ""
        return (
            f'{{"event": "bot.status_change"{when}, "data": {{"bot_id": "{bot}",'
            f' "status": {{"code": "joining_call"}}{extra}}}}}'
        )

    # the top object and `data` are two levels of nesting already
    depth = ranges["maxNestingDepth"] - 2
    cases = {
        "nesting": (f', "x": {deep(depth)}', f', "x": {deep(depth + 1)}'),
        "largest integer": (
            f', "n": {ranges["integerMaximum"]}',
            f', "n": {ranges["integerMaximum"] + 1}',
        ),
        "smallest integer": (
            f', "n": {ranges["integerMinimum"]}',
            f', "n": {ranges["integerMinimum"] - 1}',
        ),
    }
    bodies = {
        name: (status_change(await known_bot(db), at), status_change(await known_bot(db), past))
        for name, (at, past) in cases.items()
    }
    bodies["latest time"] = (
        status_change(await known_bot(db), sent=latest),
        status_change(await known_bot(db), sent=latest + timedelta(microseconds=1)),
    )
    bodies["earliest time"] = (
        status_change(await known_bot(db), sent=earliest),
        status_change(await known_bot(db), sent=earliest - timedelta(microseconds=1)),
    )
    for name, (at, past) in bodies.items():
        answer = await post(f"{ingest.url}/webhooks/meetingbaas", at, ingest.signed(at))
        assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])
        answer = await post(f"{ingest.url}/webhooks/meetingbaas", past, ingest.signed(past))
        assert answer.status_code == 422, (name, answer.status_code, answer.text[:300])
