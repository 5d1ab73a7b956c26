"""Retention: the scheduler's job deletes the media of recordings past their org's retention
through the one deletion path (the same as `notetaker meetings delete`), leaves the others alone,
and finishes deletions left unfinished. The clock is the test's: a recording is made old by moving
its creation into the past, as the other scheduler tests move the times they wait for.

The bucket's lifecycle rule is only a safety net: longer than any retention."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from notetaker.common.deletion import MediaDeleter, Outcome, ProviderAccess
from notetaker.common.gladia import REQUEST_ID_METADATA
from notetaker.common.kafka import EventPublisher
from notetaker.common.retention import RetentionRefused, check_days, set_retention
from notetaker.common.s3 import S3Client
from notetaker.common.sealing import SourceUrlCipher
from notetaker.common.settings import NotetakerSettings
from notetaker.devstack.simulator import GladiaJob, ProviderSimulator
from notetaker.devstack.stack import Stack
from notetaker.scheduler.retention import WHO, apply_retention, prune_webhook_bodies
from notetaker.transcript_sync.meetings import (
    JobIntent,
    MeetingMediaDeleted,
    start_transcription_job,
)
from tests.cli.conftest import StoredMeeting, kept_bodies, stored_meeting, under_prefix
from tests.scheduler.conftest import poll_gladia


@pytest.fixture
async def deleter(
    stack: Stack, db: asyncpg.Pool, s3: S3Client, meetingbaas: ProviderSimulator
) -> AsyncIterator[MediaDeleter]:
    publisher = EventPublisher(stack.settings(service_name="scheduler"))
    await publisher.start()
    access = ProviderAccess(
        meetingbaas_api_url=meetingbaas.base_url,
        meetingbaas_api_key=meetingbaas.config.api_key,
        gladia_api_url=meetingbaas.base_url,
        gladia_api_key=meetingbaas.config.gladia_api_key,
    )
    async with aiohttp.ClientSession() as http:
        yield MediaDeleter(db, s3, stack.s3_bucket, publisher, access, http)
    await publisher.stop()


Store = Callable[..., Awaitable[StoredMeeting]]


@pytest.fixture
def store(stack: Stack, db: asyncpg.Pool, s3: S3Client, meetingbaas: ProviderSimulator) -> Store:
    """`stored_meeting` (tests/cli/conftest.py) in this test's stack, with the simulator's
    providers: `await store()`, `await store(org_id=org, created_days_ago=31)`."""
    return functools.partial(stored_meeting, stack, db, s3, meetingbaas)


async def run_round(db: asyncpg.Pool, deleter: MediaDeleter) -> None:
    async with db.acquire() as conn:
        await apply_retention(conn, deleter, default_days=90, now=datetime.now(UTC))


async def deleted_by_retention(db: asyncpg.Pool, meeting: StoredMeeting) -> bool:
    row = await db.fetchrow(
        "SELECT reason, requested_by, completed_at FROM media_deletions WHERE recording_id = $1",
        meeting.recording_id,
    )
    if row is None:
        return False
    assert (row["reason"], row["requested_by"]) == ("retention", WHO)
    assert row["completed_at"] is not None
    return True


async def meeting_whose_gladia_job(
    store: Store, db: asyncpg.Pool, job: str
) -> tuple[StoredMeeting, uuid.UUID]:
    """A stored meeting whose Gladia job's row is then set as `job` (the SET list of an UPDATE)
    says; the meeting, and the job's request id."""
    meeting = await store()
    request_id: uuid.UUID = await db.fetchval(
        f"UPDATE transcription_jobs SET {job} WHERE bot_id = $1 RETURNING request_id",  # noqa: S608
        meeting.bot_id,
    )
    return meeting, request_id


async def deleted_at_once(deleter: MediaDeleter, meeting: StoredMeeting) -> Outcome:
    """An operator's deletion of the meeting's media, complete in this one run."""
    outcome = await deleter.delete(meeting.recording_id, by="test", reason="operator")
    assert outcome is not None
    assert outcome.deletion.done, outcome.deletion.last_error
    return outcome


async def test_media_past_its_orgs_retention_is_deleted_and_media_within_it_is_kept(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    meetingbaas: ProviderSimulator,
    deleter: MediaDeleter,
    store: Store,
) -> None:
    short = uuid.uuid4()  # keeps 30 days
    await set_retention(db, short, 30, by="test", safety_net_days=400)
    past = await store(org_id=short, created_days_ago=31)
    within = await store(org_id=short, created_days_ago=29)
    # An org without its own retention keeps the default, 90 days.
    default_past = await store(created_days_ago=91)
    default_within = await store(created_days_ago=60)

    await run_round(db, deleter)

    for meeting in (past, default_past):  # deleted the same way as by an operator
        assert await deleted_by_retention(db, meeting)
        assert await under_prefix(s3, stack, meeting.prefix) == []
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.meeting_id)
        assert (row["video_url"], row["transcript_text"], row["summary"]) == (None, None, None)
        assert row["recording_status"] == "media_expired"  # an operator's deletion: `deleted`
        artifact = await db.fetchrow(
            "SELECT s3_key FROM recording_artifacts WHERE recording_id = $1", meeting.recording_id
        )
        assert artifact["s3_key"] is None  # the transcript JSON went with the prefix
        assert meeting.bot_id in meetingbaas.data_deletions
        assert meeting.gladia_job_id in meetingbaas.deleted_jobs
        assert await kept_bodies(db, meeting.bot_id) == 0  # its raw webhook body too
    # A webhook body has its own retention (30 days): 29 days old it is kept, 60 days old it
    # is pruned although the media is kept.
    assert await kept_bodies(db, within.bot_id) == 1
    assert await kept_bodies(db, default_within.bot_id) == 0
    for meeting in (within, default_within):
        assert not await deleted_by_retention(db, meeting)
        assert len(await under_prefix(s3, stack, meeting.prefix)) == 6
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.meeting_id)
        assert row["video_url"] is not None
        assert row["transcript_text"] is not None
        assert row["summary"] is not None
        assert row["media_deleted_at"] is None
        artifact = await db.fetchrow(
            "SELECT s3_key FROM recording_artifacts WHERE recording_id = $1", meeting.recording_id
        )
        assert artifact["s3_key"] == f"{meeting.prefix}transcription.json"

    # A second round finds nothing more to do for them.
    before = await db.fetch(
        "SELECT * FROM media_deletions WHERE recording_id = ANY($1::uuid[])",
        [past.recording_id, default_past.recording_id],
    )
    await run_round(db, deleter)
    assert (
        await db.fetch(
            "SELECT * FROM media_deletions WHERE recording_id = ANY($1::uuid[])",
            [past.recording_id, default_past.recording_id],
        )
        == before
    )
    assert meetingbaas.data_deletions.count(past.bot_id) == 1


async def test_an_unfinished_deletion_is_finished_by_a_later_round(
    db: asyncpg.Pool, meetingbaas: ProviderSimulator, deleter: MediaDeleter, store: Store
) -> None:
    meeting = await store()
    meetingbaas.delete_data_status = 503
    outcome = await deleter.delete(meeting.recording_id, by="ops@test", reason="operator")
    meetingbaas.delete_data_status = None
    assert outcome is not None
    assert outcome.deletion.steps_left() == ["meetingbaas"]

    await run_round(db, deleter)  # not due yet: it waits its backoff
    row = await db.fetchrow(
        "SELECT * FROM media_deletions WHERE recording_id = $1", meeting.recording_id
    )
    assert row["completed_at"] is None
    await db.execute(  # the test's clock: the wait is over
        "UPDATE media_deletions SET next_attempt_at = now() - interval '1 second'"
        " WHERE recording_id = $1",
        meeting.recording_id,
    )
    await run_round(db, deleter)
    row = await db.fetchrow(
        "SELECT * FROM media_deletions WHERE recording_id = $1", meeting.recording_id
    )
    assert row["completed_at"] is not None
    assert row["meetingbaas_outcome"] == "deleted"
    assert (row["reason"], row["requested_by"]) == ("operator", "ops@test")  # still the operator's


async def test_the_bucket_rule_is_a_safety_net_longer_than_any_retention(
    stack: Stack, s3: S3Client
) -> None:
    rules = (await s3.get_bucket_lifecycle_configuration(Bucket=stack.s3_bucket))["Rules"]
    (expiry,) = [r for r in rules if "Expiration" in r]
    assert expiry["Expiration"]["Days"] == 400
    settings = NotetakerSettings()
    assert settings.media_retention_days == 90 < settings.s3_lifecycle_expiration_days == 400
    with pytest.raises(ValidationError, match="only a safety net"):
        NotetakerSettings(media_retention_days=400)
    assert check_days(399, 400) == 399
    for days in (400, 1000, 0):
        with pytest.raises(RetentionRefused):
            check_days(days, 400)


async def test_a_gladia_intent_never_submitted_is_closed_by_the_deletion_and_never_submitted(
    db: asyncpg.Pool, deleter: MediaDeleter, store: Store
) -> None:
    """The Gladia job's intent was written with the video and its submit not tried yet when the
    media is deleted: the deletion completes at once (it does not wait an hour for a job id that
    will never come), closing the intent, and transcript-sync then submits nothing."""
    meeting, _ = await meeting_whose_gladia_job(
        store,
        db,
        "job_id = NULL, completed_at = NULL, status = 'requested', submitted_at = NULL,"
        " requested_at = now()",
    )

    outcome = await deleted_at_once(deleter, meeting)

    assert outcome.deletion.gladia_outcome == "no job (intent never submitted)"
    job = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", meeting.bot_id)
    assert (job["status"], job["job_id"]) == ("deleted", None)
    assert job["completed_at"] is not None
    intent = JobIntent("gladia", uuid.uuid4(), datetime.now(UTC))
    with pytest.raises(MeetingMediaDeleted):
        await start_transcription_job(db, meeting.bot_id, intent)
    assert (
        await db.fetchval(
            "SELECT submitted_at FROM transcription_jobs WHERE bot_id = $1", meeting.bot_id
        )
    ) is None


async def test_the_gladia_job_of_deleted_media_is_closed_and_never_polled(
    db: asyncpg.Pool, deleter: MediaDeleter, store: Store
) -> None:
    """A job still open when its media is deleted (its callback overdue): the deletion deletes it
    at Gladia and closes its row, and the scheduler's poller never asks Gladia about it again
    (before, it polled the deleted job every round for ever)."""
    meeting, _ = await meeting_whose_gladia_job(
        store,
        db,
        "completed_at = NULL, status = 'requested', submitted_at = '2000-01-01',"
        " requested_at = '2000-01-01'",
    )
    await deleted_at_once(deleter, meeting)
    job = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", meeting.bot_id)
    assert job["status"] == "deleted"
    assert job["completed_at"] is not None
    # A row of a deletion from before this fix, still open: not polled either.
    await db.execute(
        "UPDATE transcription_jobs SET completed_at = NULL, status = 'requested' WHERE bot_id = $1",
        meeting.bot_id,
    )
    asked: list[str] = []

    def gladia(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"status": "queued"})

    await poll_gladia(db, deleter.publisher, gladia)
    assert f"/v2/pre-recorded/{meeting.gladia_job_id}" not in asked
    polled = await db.fetchval(
        "SELECT poll_count FROM transcription_jobs WHERE bot_id = $1", meeting.bot_id
    )
    assert polled == 0


async def test_a_gladia_job_submitted_whose_id_was_never_stored_is_found_and_deleted(
    db: asyncpg.Pool, meetingbaas: ProviderSimulator, deleter: MediaDeleter, store: Store
) -> None:
    """Gladia created the job but its id never reached the row (the database failed after the
    POST) and the media was deleted before transcript-sync's retry looked it up: the deletion
    finds the job by our request id and deletes it, instead of calling it never submitted once
    an hour has passed and leaving the transcript at Gladia."""
    meeting, request_id = await meeting_whose_gladia_job(
        store,
        db,
        "job_id = NULL, completed_at = NULL, status = 'requested',"
        " submitted_at = now() - interval '2 hours', requested_at = now() - interval '2 hours'",
    )
    job = meetingbaas.jobs[meeting.gladia_job_id]
    job.custom_metadata = {REQUEST_ID_METADATA: str(request_id), "bot_id": meeting.bot_id}
    other = GladiaJob("other-job", "https://s3.example/audio", None, status="done")
    other.custom_metadata = {REQUEST_ID_METADATA: str(uuid.uuid4())}
    meetingbaas.jobs[other.id] = other

    outcome = await deleted_at_once(deleter, meeting)

    assert (outcome.deletion.gladia_job_id, outcome.deletion.gladia_outcome) == (
        meeting.gladia_job_id,
        "deleted",
    )
    assert meetingbaas.deleted_jobs == [meeting.gladia_job_id]
    assert "other-job" in meetingbaas.jobs


SEALER = SourceUrlCipher([SecretStr(Fernet.generate_key().decode())])


async def kept_body(db: asyncpg.Pool, bot_id: str, days_ago: float) -> str:
    """An accepted delivery for `bot_id` whose body ingest kept `days_ago` days ago."""
    delivery_id = f"msg_{uuid.uuid4().hex}"
    received = datetime.now(UTC) - timedelta(days=days_ago)
    await db.execute(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id, outcome,"
        " received_at) VALUES ('meetingbaas', $1, 'bot.status_change', $2, 'published', $3)",
        delivery_id,
        bot_id,
        received,
    )
    await db.execute(
        "INSERT INTO webhook_bodies (provider, delivery_id, bot_id, event_type, sealed,"
        " size_bytes, received_at) VALUES ('meetingbaas', $1, $2, 'bot.status_change',"
        " $3, 2, $4)",
        delivery_id,
        bot_id,
        SEALER.seal_body(b"{}"),
        received,
    )
    return delivery_id


async def test_webhook_bodies_past_their_retention_are_pruned_in_batches_and_again_is_a_no_op(
    db: asyncpg.Pool,
) -> None:
    bot_id = str(uuid.uuid4())
    old = [await kept_body(db, bot_id, days) for days in (31, 45, 400)]
    recent = [await kept_body(db, bot_id, days) for days in (29, 0)]
    cutoff = datetime.now(UTC) - timedelta(days=30)

    async with db.acquire() as conn:
        # Batches of one: every old body goes however many batches it takes.
        await prune_webhook_bodies(conn, before=cutoff, deadline=time.monotonic() + 60, batch=1)
        left = await conn.fetch("SELECT delivery_id FROM webhook_bodies WHERE bot_id = $1", bot_id)
        assert sorted(r["delivery_id"] for r in left) == sorted(recent)
        # The deliveries stay listed (that they arrived): only their bodies go.
        deliveries = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE delivery_id = ANY($1::text[])", old
        )
        assert deliveries == len(old)
        # A second run (another scheduler, a round after) finds nothing of ours to delete.
        await prune_webhook_bodies(conn, before=cutoff, deadline=time.monotonic() + 60)
        again = await conn.fetch("SELECT delivery_id FROM webhook_bodies WHERE bot_id = $1", bot_id)
        assert sorted(r["delivery_id"] for r in again) == sorted(recent)
