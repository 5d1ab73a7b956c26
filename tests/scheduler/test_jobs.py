"""The scheduler's jobs against a real database: which meetings get bots (and the callback each
bot is registered with), which retries are due, which overdue Gladia jobs are polled."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from notetaker.common import gladia as gladia_ids
from notetaker.common.events import RecordingUploadRequested, TranscriptReady
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.stack import Stack
from notetaker.scheduler.bots import DueMeeting, MeetingBaaS, create_bot, due_meetings, link_bot
from notetaker.scheduler.retries import request_due_retries
from tests.e2e.conftest import events_for
from tests.fixtures import PROVIDER_SAMPLES
from tests.scheduler.conftest import add_meeting, poll_gladia

SECOND = timedelta(seconds=1)


async def test_only_upcoming_notetaker_meetings_without_a_bot_are_due(db: asyncpg.Pool) -> None:
    soon = await add_meeting(db, timedelta(seconds=60))
    later = await add_meeting(db, timedelta(hours=2))
    long_past = await add_meeting(db, timedelta(hours=-3))
    has_bot = await add_meeting(db, timedelta(seconds=30), bot_id=str(uuid.uuid4()))
    fathom = await add_meeting(db, timedelta(seconds=30), source="fathom")
    no_url = await add_meeting(db, timedelta(seconds=30), meeting_url=None)
    backing_off = await add_meeting(db, timedelta(seconds=30))
    backed_off = await add_meeting(db, timedelta(seconds=30))
    for meeting_id, next_try in [(backing_off, timedelta(minutes=1)), (backed_off, -SECOND)]:
        await db.execute(
            "INSERT INTO bot_deploys (meeting_id, attempts, next_attempt_at)"
            " VALUES ($1, 1, now() + $2)",
            meeting_id,
            next_try,
        )
    due = {m.id for m in await due_meetings(db, lead_seconds=120, limit=1000)}
    assert {soon, backed_off} <= due
    assert not due & {later, long_past, has_bot, fathom, no_url, backing_off}


async def test_linking_a_bot_creates_its_recording_once_and_the_meeting_is_no_longer_due(
    db: asyncpg.Pool,
) -> None:
    org, owner = uuid.uuid4(), uuid.uuid4()
    meeting_id = await add_meeting(db, timedelta(seconds=60), org_id=org, owner_user_id=owner)
    (meeting,) = [m for m in await due_meetings(db, 120, 1000) if m.id == meeting_id]
    winner, loser = f"bot-{uuid.uuid4()}", f"bot-{uuid.uuid4()}"
    async with db.acquire() as conn:
        assert await link_bot(conn, meeting, winner)
        assert await link_bot(conn, meeting, winner)  # linking it again changes nothing
        assert not await link_bot(conn, meeting, loser)  # the meeting has its bot
    assert await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting_id) == winner
    rows = await db.fetch(
        "SELECT bot_id, org_id, user_id FROM recordings WHERE meeting_id = $1", meeting_id
    )
    assert [(r["bot_id"], r["org_id"], r["user_id"]) for r in rows] == [(winner, org, owner)]
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE bot_id = $1", loser) == 0
    assert meeting_id not in {m.id for m in await due_meetings(db, 120, 1000)}
    linked = await db.fetchrow("SELECT * FROM bot_deploys WHERE meeting_id = $1", meeting_id)
    assert (linked["bot_id"], linked["next_attempt_at"]) == (winner, None)


@pytest.fixture
async def publisher(stack: Stack) -> AsyncIterator[EventPublisher]:
    events = EventPublisher(stack.settings(service_name="scheduler-test"))
    await events.start()
    yield events
    await events.stop()


async def test_a_due_retry_is_requested_once_and_one_not_yet_due_is_not(
    db: asyncpg.Pool, stack: Stack, publisher: EventPublisher
) -> None:
    bot_id = f"retry-{uuid.uuid4()}"
    recording_id = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id, s3_upload_status, s3_upload_retry_count,"
        " s3_upload_next_retry_at) VALUES ($1, $2, $3, 'failed', 1, now() - interval '1 second')"
        " RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    not_yet = f"later-{uuid.uuid4()}"
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id, s3_upload_status, s3_upload_retry_count,"
        " s3_upload_next_retry_at) VALUES ($1, $2, $3, 'failed', 1, now() + interval '5 minutes')",
        uuid.uuid4(),
        uuid.uuid4(),
        not_yet,
    )
    async with db.acquire() as conn:
        assert await request_due_retries(conn, publisher) >= 1
        assert await request_due_retries(conn, publisher) == 0  # requested: no longer due

    requests = [e.event for e in await events_for(stack, "recording.upload_requested", bot_id)]
    expected = RecordingUploadRequested(bot_id=bot_id, recording_id=recording_id, attempt=2)
    assert requests == [expected]
    assert await events_for(stack, "recording.upload_requested", not_yet) == []
    status = await db.fetchval(
        "SELECT s3_upload_status FROM recordings WHERE id = $1", recording_id
    )
    assert status == "pending"


# --- what MeetingBaaS is asked for, and the poller of overdue Gladia jobs ------------------------


def meetingbaas(answers: list[str], sent: list[dict[str, Any]]) -> httpx.AsyncClient:
    """MeetingBaaS's `POST /v2/bots`, recording each request body and answering the next id."""

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"success": True, "data": {"bot_id": answers.pop(0)}})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def due(meeting_id: uuid.UUID) -> DueMeeting:
    return DueMeeting(
        id=meeting_id,
        org_id=uuid.uuid4(),
        owner_user_id=uuid.uuid4(),
        meeting_url="https://meet.google.com/abc-defg-hij",
        start_time=datetime.now(UTC),
    )


async def test_a_bot_is_deployed_with_the_callback_secret_of_its_meeting() -> None:
    meeting = due(uuid.uuid4())
    sent: list[dict[str, Any]] = []
    async with meetingbaas(["bot-1"], sent) as http:
        provider = MeetingBaaS(
            http,
            api_url="https://meetingbaas.example",
            api_key=SecretStr("api-key-of-enough-length"),
            timeout_seconds=10,
            bot_name="60 Notetaker",
            transcription=False,
            callback_url="https://ingest.example/webhooks/meetingbaas",
            callback_key=SecretStr("callback-key-that-signs"),
        )
        bot_id = await create_bot(provider, meeting)
    assert bot_id == "bot-1"
    (request,) = sent
    # The shape of tests/fixtures/providers/meetingbaas/v2-create-bot.request.json ...
    sample = json.loads((PROVIDER_SAMPLES / "meetingbaas/v2-create-bot.request.json").read_text())
    assert sample.keys() <= request.keys()
    assert request["callback_config"].keys() == sample["callback_config"].keys()
    # ... with the secret derived for this meeting (the bot id is not known yet).
    subject = f"meetingbaas-callback:{meeting.id}"
    expected = hmac.new(b"callback-key-that-signs", subject.encode(), hashlib.sha256).hexdigest()
    assert request["callback_config"] == {
        "url": "https://ingest.example/webhooks/meetingbaas",
        "method": "POST",
        "secret": expected,
    }
    assert request["extra"] == {"meeting_id": str(meeting.id), "org_id": str(meeting.org_id)}


async def test_two_meetings_get_two_secrets_and_no_key_means_no_callback() -> None:
    sent: list[dict[str, Any]] = []
    async with meetingbaas(["bot-1", "bot-2", "bot-3"], sent) as http:
        for key in ("callback-key-that-signs", "callback-key-that-signs", None):
            provider = MeetingBaaS(
                http,
                api_url="https://meetingbaas.example",
                api_key=SecretStr("api-key-of-enough-length"),
                timeout_seconds=10,
                bot_name="60 Notetaker",
                transcription=True,
                callback_url="https://ingest.example/webhooks/meetingbaas",
                callback_key=SecretStr(key) if key else None,
            )
            await create_bot(provider, due(uuid.uuid4()))
    first, second, without = sent
    assert first["callback_config"]["secret"] != second["callback_config"]["secret"]
    assert "callback_config" not in without


async def test_overdue_gladia_jobs_are_polled_by_their_plain_job_id_only(
    db: asyncpg.Pool, stack: Stack, publisher: EventPublisher
) -> None:
    """Rows as transcript-sync writes them now: the one whose job id Gladia has not given yet
    is left alone, one whose job id is not plain is closed without a request, a done one is
    announced."""
    rows = {}
    for name, job_id in [("done", f"job-{uuid.uuid4()}"), ("no id yet", None), ("bad", "../x")]:
        bot_id = f"poll-{uuid.uuid4()}"
        rows[name] = (bot_id, job_id)
        await db.execute(
            "INSERT INTO transcription_jobs (request_id, bot_id, provider, job_id, requested_at,"
            " token_expires_at) VALUES ($1, $2, 'gladia', $3, '2000-01-01', now())",
            uuid.uuid4(),
            bot_id,
            job_id,
        )
    asked: list[str] = []

    def gladia(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        done = request.url.path.endswith(str(rows["done"][1]))
        return httpx.Response(200, json={"status": "done" if done else "queued"})

    await poll_gladia(db, publisher, gladia)
    done_bot, done_job = rows["done"]
    assert f"/v2/pre-recorded/{done_job}" in asked
    # every request named a plain job id (other tests' overdue rows may be polled too)
    assert all(gladia_ids.is_job_id(path.removeprefix("/v2/pre-recorded/")) for path in asked)
    announced = [e.event for e in await events_for(stack, "transcript.ready", done_bot)]
    assert announced == [TranscriptReady(bot_id=done_bot, provider="gladia", job_id=done_job)]
    polled = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", done_bot)
    assert (polled["poll_count"], polled["status"]) == (1, "done")
    waiting = await db.fetchrow(
        "SELECT * FROM transcription_jobs WHERE bot_id = $1", rows["no id yet"][0]
    )
    assert (waiting["poll_count"], waiting["completed_at"]) == (0, None)
    bad = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", rows["bad"][0])
    assert bad["status"] == "error"
    assert bad["completed_at"] is not None
    assert bad["poll_count"] == 0


async def test_a_job_gladia_failed_is_closed_with_its_error_code_beside_the_callbacks_reason(
    db: asyncpg.Pool, publisher: EventPublisher
) -> None:
    """The poller finds the job in `error`: the row is closed with the result's `error_code`,
    and the message an error callback left (ingest) stays; nothing is announced."""
    bot_id, job_id = f"poll-{uuid.uuid4()}", f"job-{uuid.uuid4()}"
    await db.execute(
        "INSERT INTO transcription_jobs (request_id, bot_id, provider, job_id, requested_at,"
        " token_expires_at, error_message) VALUES ($1, $2, 'gladia', $3, '2000-01-01', now(),"
        " 'audio_url could not be downloaded')",
        uuid.uuid4(),
        bot_id,
        job_id,
    )

    def gladia(request: httpx.Request) -> httpx.Response:
        failed = request.url.path.endswith(job_id)
        body = {"status": "error", "error_code": 422} if failed else {"status": "queued"}
        return httpx.Response(200, json=body)

    announced = await poll_gladia(db, publisher, gladia)
    row = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", bot_id)
    assert (row["status"], row["error_code"]) == ("error", "422")
    assert row["error_message"] == "audio_url could not be downloaded"
    assert row["completed_at"] is not None
    assert announced == 0
