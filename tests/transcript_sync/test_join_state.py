"""Join state stays the size of the meetings in flight: once a meeting is complete its state is
deleted (a tombstone on the changelog), and an event that comes later is decided from the rows.

In process, against the real PostgreSQL: the rows give back exactly the state the join had when
the meeting completed, so a late duplicate of any of its events writes nothing, announces
nothing, asks for no thumbnail and submits no second Gladia job.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from notetaker.common.db import create_pool
from notetaker.common.events import (
    Event,
    RecordingFailed,
    RecordingUploaded,
    RecordingUploadFailed,
    TranscriptReady,
)
from notetaker.devstack.stack import Stack
from notetaker.transcript_sync import meetings
from notetaker.transcript_sync.join import JoinState, decide
from tests.transcript_sync.fakes import (
    Fault,
    Meeting,
    Record,
    Worker,
    forget_group,
    parked_rows,
    scheduled_meeting,
    thumbnail_generated,
    transcript,
    uploaded,
    worker,
)
from tests.transcript_sync.test_gladia_jobs import GLADIA_SETTINGS, Gladia, PresigningS3

# Marking a Gladia submit as tried: the step after the job's intent was written with the video.
SUBMIT = "UPDATE transcription_jobs SET submitted_at"


@pytest.fixture
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """The pool as the service opens it (JSON columns as Python values)."""
    pool = await create_pool(stack.settings())
    yield pool
    await pool.close()


@dataclass(frozen=True)
class Transcriber:
    """Gladia's API as modelled in test_gladia_jobs.py, and the client the join reaches it by."""

    api: Gladia
    http: httpx.AsyncClient


@pytest.fixture
async def gladia(db: asyncpg.Pool) -> AsyncIterator[Transcriber]:
    api = Gladia(db)
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        yield Transcriber(api, http)


def transcribing(pool: asyncpg.Pool, gladia: Transcriber, *, configured: bool = True) -> Worker:
    """A join reaching `gladia`; `configured`: with Gladia's key (it may ask for jobs)."""
    settings = GLADIA_SETTINGS if configured else {}
    return worker(pool, s3=PresigningS3(), http=gladia.http, **settings)


class Table(dict[str, Any]):
    """The agent's table, keeping every state it was given and every key deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[str, Any]] = []
        self.deleted: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.saved.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.deleted.append(key)
        super().__delitem__(key)


async def recorded_upload(
    db: asyncpg.Pool, *, provider_transcript: bool
) -> tuple[Meeting, RecordingUploaded]:
    """A scheduled meeting, its recording's row as ingest writes it when the bot's recording
    completes, and the upload of that recording (not handled yet)."""
    meeting = await scheduled_meeting(db)
    upload = uploaded(meeting, provider_transcript=provider_transcript)
    await db.execute(
        "INSERT INTO recordings (id, org_id, user_id, meeting_id, bot_id, provider_transcript)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        upload.recording_id,
        meeting.org_id,
        meeting.user_id,
        meeting.id,
        meeting.bot_id,
        upload.provider_transcript,
    )
    return meeting, upload


def failures(meeting: Meeting, upload: RecordingUploaded) -> list[Event]:
    return [
        RecordingUploadFailed(
            bot_id=meeting.bot_id,
            recording_id=upload.recording_id,
            attempt=4,
            error="x",
            final=True,
        ),
        RecordingFailed(bot_id=meeting.bot_id, error_code="BOT_REMOVED", error_message="late"),
    ]


async def handled(running: Worker, events: list[Event]) -> JoinState:
    """Each event handled (settled, nothing dead-lettered); the state `decide` arrived at."""
    state = JoinState()
    for event in events:
        assert await running.handle(Record.of(event))
        state, _ = decide(state, event, can_transcribe=running.join.can_transcribe)
    assert running.publisher.dead_letters == []
    return state


async def row_of(db: asyncpg.Pool, meeting: Meeting) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.id)
    assert row is not None
    return dict(row)


async def outbox_of(db: asyncpg.Pool, meeting: Meeting) -> int:
    count = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE key = $1", meeting.bot_id.encode()
    )
    assert isinstance(count, int)
    return count


@pytest.mark.parametrize("events", ["upload, transcript, thumbnail", "transcript first"])
async def test_a_complete_meetings_state_is_deleted_and_the_rows_give_it_back(
    db: asyncpg.Pool, pool: asyncpg.Pool, events: str
) -> None:
    running = worker(pool)
    table = Table()
    running.table = table
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    said = transcript(meeting, "we agreed")
    order: list[Event] = [upload, said, thumbnail_generated(upload)]
    if events == "transcript first":
        order = [said, upload, thumbnail_generated(upload)]
    try:
        state = await handled(running, order[:2])
        assert table[meeting.bot_id] == state.model_dump(mode="json")  # in flight: kept
        state = await handled(running, order)  # the whole meeting, the first two again
    finally:
        await forget_group(db, running.group)

    assert state.complete()
    assert meeting.bot_id not in table
    assert table.deleted == [meeting.bot_id]
    assert await meetings.join_state(db, meeting.bot_id) == state


async def test_late_duplicates_of_a_complete_meeting_change_nothing(
    db: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    running = worker(pool)
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    events: list[Event] = [upload, transcript(meeting, "we agreed"), thumbnail_generated(upload)]
    try:
        await handled(running, events)
        assert running.table == {}
        before, announced = await row_of(db, meeting), await outbox_of(db, meeting)
        published, sent = list(running.publisher.published), list(running.sent.records)

        await handled(running, [*events, *failures(meeting, upload)])
    finally:
        await forget_group(db, running.group)

    assert await row_of(db, meeting) == before  # updated_at included: not even touched
    assert await outbox_of(db, meeting) == announced
    assert running.publisher.published == published  # no second thumbnail asked for
    assert running.sent.records == sent  # no meeting.synced
    assert running.table == {}


async def test_a_late_upload_of_a_meeting_gladia_transcribed_submits_no_second_job(
    db: asyncpg.Pool, pool: asyncpg.Pool, gladia: Transcriber
) -> None:
    running = transcribing(pool, gladia)
    meeting, upload = await recorded_upload(db, provider_transcript=False)
    try:
        await handled(running, [upload, thumbnail_generated(upload)])
        assert running.table[meeting.bot_id]["awaiting_transcript"] is True
        (job_id,) = gladia.api.jobs
        from_gladia = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=job_id)
        state = await handled(running, [upload, thumbnail_generated(upload), from_gladia])
        assert running.table == {}
        assert await meetings.join_state(db, meeting.bot_id) == state
        requests = len(gladia.api.requests)

        await handled(running, [upload, from_gladia, thumbnail_generated(upload)])
    finally:
        await forget_group(db, running.group)

    assert len(gladia.api.posts()) == 1
    assert len(gladia.api.requests) == requests  # no lookup, no fetch of the transcript again
    assert running.table == {}


async def test_a_meeting_that_failed_for_good_is_deleted_and_a_late_upload_still_lands(
    db: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    running = worker(pool)
    meeting = await scheduled_meeting(db)
    upload = uploaded(meeting, provider_transcript=False)
    (final, _) = failures(meeting, upload)
    try:
        await handled(running, [final])
        assert running.table == {}
        assert (await row_of(db, meeting))["recording_status"] == "failed: x"
        state = await handled(running, [final, upload])  # a late duplicate, then a recovery
    finally:
        await forget_group(db, running.group)

    row = await row_of(db, meeting)
    assert (row["recording_status"], row["video_url"]) == (
        "available",
        f"s3://{upload.bucket}/{upload.video_key}",
    )
    assert running.table == {meeting.bot_id: state.model_dump(mode="json")}  # thumbnail to come


async def test_a_bot_without_a_meeting_of_ours_has_the_empty_state(db: asyncpg.Pool) -> None:
    fathom = await scheduled_meeting(db, source="fathom")
    assert await meetings.join_state(db, fathom.bot_id) == JoinState()
    assert await meetings.join_state(db, str(uuid.uuid4())) == JoinState()


# --- state and rows left by the version before the tombstones ------------------------------------


def as_saved_before_the_upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A state as the previous JoinState saved it: without `awaiting_transcript`."""
    return {k: v for k, v in state.items() if k != "awaiting_transcript"}


@pytest.mark.parametrize("transcriber", ["provider", "gladia"])
async def test_a_meeting_in_flight_across_the_upgrade_keeps_its_state_until_its_transcript(
    db: asyncpg.Pool, pool: asyncpg.Pool, gladia: Transcriber, transcriber: str
) -> None:
    with_gladia = transcriber == "gladia"
    running = transcribing(pool, gladia, configured=with_gladia)
    meeting, upload = await recorded_upload(db, provider_transcript=not with_gladia)
    said = transcript(meeting, "we agreed")
    try:
        await handled(running, [upload])  # the previous version saved this state ...
        saved = running.table[meeting.bot_id]
        running.table[meeting.bot_id] = as_saved_before_the_upgrade(saved)
        await handled(running, [thumbnail_generated(upload)])  # ... and the new one goes on from it
        assert meeting.bot_id in running.table  # the transcript is still to come
        if with_gladia:
            (job_id,) = gladia.api.jobs
            said = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=job_id)
        await handled(running, [said, upload])  # the transcript, then a late duplicate
    finally:
        await forget_group(db, running.group)

    assert running.table == {}  # complete: nothing left behind
    assert len([e for e in running.publisher.published if e.type == "thumbnail.requested"]) == 1
    assert len(gladia.api.posts()) == (1 if with_gladia else 0)


async def test_a_late_duplicate_of_a_transcript_written_before_the_upgrade_changes_nothing(
    db: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    running = worker(pool)
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    said = transcript(meeting, "we agreed")
    try:
        await handled(running, [upload, said])
        # Written by the previous version: before migration 0008, without transcript_ref.
        await db.execute("UPDATE meetings SET transcript_ref = NULL WHERE id = $1", meeting.id)
        running.table[meeting.bot_id] = as_saved_before_the_upgrade(running.table[meeting.bot_id])
        await handled(running, [thumbnail_generated(upload)])  # complete: its state deleted
        assert running.table == {}
        before, announced = await row_of(db, meeting), await outbox_of(db, meeting)
        sent = list(running.sent.records)

        await handled(running, [said])  # a late duplicate (a replay, a redelivery)
    finally:
        await forget_group(db, running.group)

    assert await row_of(db, meeting) == before
    assert await outbox_of(db, meeting) == announced
    assert running.sent.records == sent  # no meeting.synced
    assert running.table == {}


def failing_twice(when: Callable[[str], bool]) -> Fault:
    """A fault failing the first two matching calls: past the in-place retry, the event parks."""
    left = 2

    def fault(what: str) -> BaseException | None:
        nonlocal left
        if left and when(what):
            left -= 1
            return RuntimeError("unforeseen")
        return None

    return fault


async def republished(running: Worker, db: asyncpg.Pool) -> None:
    """The group's parked events, put back on their topics and handled again."""
    rows = await parked_rows(db, running.group)
    await forget_group(db, running.group)
    for row in rows:
        headers = list(zip(row["header_names"], row["header_values"], strict=True))
        assert await running.handle(Record(row["topic"], row["key"], row["value"], headers))


async def test_a_late_bot_failure_while_the_upload_waits_parked_does_not_leave_the_meeting_failed(
    db: asyncpg.Pool, pool: asyncpg.Pool, gladia: Transcriber
) -> None:
    running = transcribing(pool, gladia)
    meeting, upload = await recorded_upload(db, provider_transcript=False)
    (_, bot_removed) = failures(meeting, upload)
    try:
        # The video and its Gladia intent written, the thumbnail asked for, then marking the
        # Gladia submit fails: parked.
        running.database.fault = failing_twice(lambda sql: sql.startswith(SUBMIT))
        assert await running.handle(Record.of(upload))
        assert len(await parked_rows(db, running.group)) == 1
        # Meanwhile the thumbnail comes, and the bot reports it was removed (late).
        assert await running.handle(Record.of(thumbnail_generated(upload)))
        assert await running.handle(Record.of(bot_removed))
        await republished(running, db)  # the upload, due again
        assert running.publisher.dead_letters == []
        row = await row_of(db, meeting)
        assert row["recording_status"] == "available"
        assert row["video_url"] == f"s3://{upload.bucket}/{upload.video_key}"
        (job_id,) = gladia.api.jobs  # Gladia asked, once
        from_gladia = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=job_id)
        await handled(
            running, [thumbnail_generated(upload), from_gladia]
        )  # the thumbnail asked again
    finally:
        await forget_group(db, running.group)

    row = await row_of(db, meeting)
    assert (row["recording_status"], row["transcript_provider"]) == ("available", "gladia")
    assert running.table == {}


async def test_an_upload_parked_before_its_gladia_job_still_gets_its_transcript(
    db: asyncpg.Pool, pool: asyncpg.Pool, gladia: Transcriber
) -> None:
    running = transcribing(pool, gladia)
    meeting, upload = await recorded_upload(db, provider_transcript=False)
    try:
        # The video and its Gladia intent written, the thumbnail asked for, then marking the
        # Gladia submit fails: parked.
        running.database.fault = failing_twice(lambda sql: sql.startswith(SUBMIT))
        assert await running.handle(Record.of(upload))
        # The thumbnail is written, then its meeting.synced cannot be sent: parked too.
        running.sent.fault = failing_twice(lambda topic: topic == "meeting.synced")
        assert await running.handle(Record.of(thumbnail_generated(upload)))
        assert len(await parked_rows(db, running.group)) == 2
        await republished(running, db)
    finally:
        await forget_group(db, running.group)

    assert running.publisher.dead_letters == []
    assert len(gladia.api.jobs) == 1  # the transcript owed is asked for
    assert meeting.bot_id in running.table  # and awaited
