"""Callbacks are bound to what we asked for, checked against the real ingest process on the
embedded stack: a MeetingBaaS bot's `x-mb-secret` opens only that bot's callbacks (derived from
its meeting under either rotated key), and a Gladia callback only passes with an unexpired token
minted for a request id that has a `transcription_jobs` row, naming that row's job. Every refusal
is a 401 with nothing published and nothing stored."""

from __future__ import annotations

import json
import time
import uuid

import asyncpg
import pytest

from notetaker.devstack.stack import Stack
from tests.ingest.conftest import (
    JSON,
    Ingest,
    assert_nothing_published,
    bot_with_meeting,
    fixture_body,
    gladia_body,
    gladia_job,
    kafka_records,
    known_bot,
    post,
)
from tests.ingest.test_webhooks_http import assert_refused, rejected_total


def callback_headers(secret: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-mb-secret": secret}


# --- MeetingBaaS per-bot callbacks -----------------------------------------------------------


@pytest.mark.parametrize("key", ["old", "new"])
async def test_a_bots_own_secret_passes_under_either_rotated_key(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, key: str
) -> None:
    bot_id, meeting_id = await bot_with_meeting(db)
    secret = ingest.callback_secret(
        meeting_id, ingest.old_callback_key if key == "old" else ingest.new_callback_key
    )
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, callback_headers(secret))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "published"
    (record,) = await kafka_records(stack, "recording.completed", bot_id)
    assert record["data"]["bot_id"] == bot_id


async def test_bot_as_secret_in_a_body_naming_bot_b_is_401_and_publishes_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_a, meeting_a = await bot_with_meeting(db)
    bot_b, _ = await bot_with_meeting(db)
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_b)
    before = await rejected_total(ingest, "unauthenticated")
    answer = await post(
        f"{ingest.url}/webhooks/meetingbaas",
        body,
        callback_headers(ingest.callback_secret(meeting_a)),
    )
    await assert_refused(answer, 401, stack, db, bot_b)
    await assert_nothing_published(stack, bot_a)
    assert await rejected_total(ingest, "unauthenticated") == before + 1


async def test_a_secret_under_a_key_ingest_does_not_hold_is_401(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id, meeting_id = await bot_with_meeting(db)
    body = fixture_body("meetingbaas/v2-bot.failed.json", bot_id)
    secret = ingest.callback_secret(meeting_id, "a-key-nobody-configured")
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, callback_headers(secret))
    await assert_refused(answer, 401, stack, db, bot_id)


async def test_an_unknown_bot_or_one_without_a_meeting_is_401_like_a_wrong_secret(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    """401, not the 404 an unknown bot gets over Svix, and the same answer as a wrong secret:
    the caller learns nothing about which bots exist."""
    some_meeting = uuid.uuid4()
    unknown = str(uuid.uuid4())
    without_meeting = await known_bot(db)  # has a recording, no meeting
    with_meeting, _ = await bot_with_meeting(db)
    answers = []
    for bot_id in (unknown, without_meeting, with_meeting):
        body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
        secret = ingest.callback_secret(some_meeting)
        answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, callback_headers(secret))
        await assert_refused(answer, 401, stack, db, bot_id)
        answers.append(answer.json())
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize(
    "body",
    ["not json", '{"event": "bot.completed", "data": {', '{"event": "bot.completed", "data": []}'],
)
async def test_a_callback_whose_body_names_no_bot_is_401(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, body: str
) -> None:
    _, meeting_id = await bot_with_meeting(db)
    answer = await post(
        f"{ingest.url}/webhooks/meetingbaas",
        body,
        callback_headers(ingest.callback_secret(meeting_id)),
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


# --- Gladia callbacks ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["old", "new"])
async def test_a_valid_token_for_our_request_publishes_for_the_rows_bot(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, key: str
) -> None:
    bot_id = await known_bot(db)
    job_id = str(uuid.uuid4())
    request_id = await gladia_job(db, bot_id, job_id)
    url = ingest.gladia_url(
        request_id, key=ingest.old_gladia_key if key == "old" else ingest.new_gladia_key
    )
    answer = await post(url, gladia_body(job_id), JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "published", "events": ["transcript.ready"]}
    (record,) = await kafka_records(stack, "transcript.ready", bot_id)
    assert record["data"]["bot_id"] == bot_id  # the row's bot: the URL names none
    assert record["data"]["job_id"] == job_id
    assert record["data"]["utterances"][0]["text"] == "Hello Alan."
    stored = await db.fetchval(
        "SELECT delivery_id FROM webhook_deliveries WHERE provider = 'gladia' AND bot_id = $1",
        bot_id,
    )
    assert stored == f"{request_id}:{job_id}:transcription.success"


async def test_before_gladia_answered_the_bodys_job_id_is_taken(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    """Gladia may call back before transcript-sync stored the job id Gladia gave it."""
    bot_id = await known_bot(db)
    request_id = await gladia_job(db, bot_id)  # no job id yet
    body = fixture_body("gladia/v2-webhook.transcription.success.json", bot_id)
    answer = await post(ingest.gladia_url(request_id), body, JSON)
    assert answer.status_code == 200, answer.text
    (record,) = await kafka_records(stack, "transcript.ready", bot_id)
    assert record["data"]["job_id"] == json.loads(body)["payload"]["id"]


async def test_an_expired_token_is_401(ingest: Ingest, db: asyncpg.Pool, stack: Stack) -> None:
    bot_id = await known_bot(db)
    job_id = str(uuid.uuid4())
    request_id = await gladia_job(db, bot_id, job_id)
    url = ingest.gladia_url(request_id, expires=int(time.time()) - 1)  # minted right, expired
    answer = await post(url, gladia_body(job_id), JSON)
    await assert_refused(answer, 401, stack, db, bot_id)


async def test_a_token_for_another_request_is_401(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id, other_bot = await known_bot(db), await known_bot(db)
    job_id = str(uuid.uuid4())
    request_id = await gladia_job(db, bot_id, job_id)
    other_request = await gladia_job(db, other_bot)
    stolen = ingest.gladia_url(other_request).replace(str(other_request), str(request_id))
    answer = await post(stolen, gladia_body(job_id), JSON)
    await assert_refused(answer, 401, stack, db, bot_id)
    await assert_nothing_published(stack, other_bot)


async def test_a_valid_token_for_a_request_id_with_no_row_is_401(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    """A token alone is not enough: the request must be one we made (transcript-sync writes the
    row before it asks Gladia). tests/e2e shows no request then reaches Gladia."""
    request_id = uuid.uuid4()
    job_id = str(uuid.uuid4())
    answer = await post(ingest.gladia_url(request_id), gladia_body(job_id), JSON)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    stored = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE delivery_id LIKE $1", f"%{job_id}%"
    )
    assert stored == 0


@pytest.mark.parametrize("shape", ["callback", "webhook", "no id"])
async def test_a_job_id_other_than_the_rows_is_401(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, shape: str
) -> None:
    bot_id = await known_bot(db)
    request_id = await gladia_job(db, bot_id, str(uuid.uuid4()))
    other_job = str(uuid.uuid4())
    body = {
        "callback": gladia_body(other_job),
        "webhook": json.dumps({"event": "transcription.success", "payload": {"id": other_job}}),
        "no id": json.dumps({"event": "transcription.success", "payload": {}}),
    }[shape]
    answer = await post(ingest.gladia_url(request_id), body, JSON)
    await assert_refused(answer, 401, stack, db, bot_id)


@pytest.mark.parametrize(
    "query",
    [
        "request_id=not-a-uuid&expires={expires}&token={token}",
        "request_id={request_id}&expires=soon&token={token}",
        "request_id={request_id}&expires=-1&token={token}",
        "request_id={request_id}&expires=99999999999999999999999&token={token}",
        "request_id={request_id}&expires={expires}&token=abc",
        "request_id={request_id}&expires={expires}&token={token}00",
        "request_id={request_id}&token={token}",
        "expires={expires}&token={token}",
        "request_id={request_id}&expires={expires}",
        "bot_id={bot_id}&token={token}",  # the URL of old
    ],
)
async def test_malformed_callback_parameters_are_a_4xx(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, query: str
) -> None:
    bot_id = await known_bot(db)
    request_id = await gladia_job(db, bot_id)
    expires = int(time.time()) + 3600
    token = ingest.gladia_url(request_id, expires=expires).rsplit("token=", 1)[1]
    filled = query.format(request_id=request_id, expires=expires, token=token, bot_id=bot_id)
    answer = await post(f"{ingest.url}/webhooks/gladia?{filled}", gladia_body(), JSON)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    await assert_nothing_published(stack, bot_id)
