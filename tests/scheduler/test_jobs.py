"""The scheduler's jobs against a real database: which meetings get bots, which retries are due."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from notetaker.common.events import RecordingUploadRequested
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.stack import Stack
from notetaker.scheduler.bots import due_meetings, link_bot
from notetaker.scheduler.retries import request_due_retries
from tests.e2e.conftest import events_for


async def add_meeting(db: asyncpg.Pool, starts_in: timedelta, **columns: object) -> uuid.UUID:
    values = {
        "org_id": uuid.uuid4(),
        "owner_user_id": uuid.uuid4(),
        "start_time": datetime.now(UTC) + starts_in,
        "meeting_url": "https://meet.google.com/x",
        "source": "notetaker",
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    meeting_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO meetings ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608
        *values.values(),
    )
    return meeting_id


async def test_only_upcoming_notetaker_meetings_without_a_bot_are_due(db: asyncpg.Pool) -> None:
    soon = await add_meeting(db, timedelta(seconds=60))
    later = await add_meeting(db, timedelta(hours=2))
    long_past = await add_meeting(db, timedelta(hours=-3))
    has_bot = await add_meeting(db, timedelta(seconds=30), bot_id=str(uuid.uuid4()))
    fathom = await add_meeting(db, timedelta(seconds=30), source="fathom")
    no_url = await add_meeting(db, timedelta(seconds=30), meeting_url=None)
    due = {m.id for m in await due_meetings(db, lead_seconds=120, limit=1000)}
    assert soon in due
    assert not due & {later, long_past, has_bot, fathom, no_url}


async def test_linking_a_bot_creates_its_recording_once_and_the_meeting_is_no_longer_due(
    db: asyncpg.Pool,
) -> None:
    org, owner = uuid.uuid4(), uuid.uuid4()
    meeting_id = await add_meeting(db, timedelta(seconds=60), org_id=org, owner_user_id=owner)
    (meeting,) = [m for m in await due_meetings(db, 120, 1000) if m.id == meeting_id]
    winner, loser = f"bot-{uuid.uuid4()}", f"bot-{uuid.uuid4()}"
    assert await link_bot(db, meeting, winner)
    assert not await link_bot(db, meeting, loser)  # a second deploy lost the race
    assert await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting_id) == winner
    rows = await db.fetch(
        "SELECT bot_id, org_id, user_id FROM recordings WHERE meeting_id = $1", meeting_id
    )
    assert [(r["bot_id"], r["org_id"], r["user_id"]) for r in rows] == [(winner, org, owner)]
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE bot_id = $1", loser) == 0
    assert meeting_id not in {m.id for m in await due_meetings(db, 120, 1000)}


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
    assert await request_due_retries(db, publisher) >= 1
    assert await request_due_retries(db, publisher) == 0  # requested: no longer due

    requests = [e.event for e in await events_for(stack, "recording.upload_requested", bot_id)]
    expected = RecordingUploadRequested(bot_id=bot_id, recording_id=recording_id, attempt=2)
    assert requests == [expected]
    assert await events_for(stack, "recording.upload_requested", not_yet) == []
    status = await db.fetchval(
        "SELECT s3_upload_status FROM recordings WHERE id = $1", recording_id
    )
    assert status == "pending"
