"""Retention: the scheduler's job deletes the media of recordings past their org's retention
through the one deletion path (the same as `notetaker meetings delete`), leaves the others alone,
and finishes deletions left unfinished. The clock is the test's: a recording is made old by moving
its creation into the past, as the other scheduler tests move the times they wait for.

The bucket's lifecycle rule is only a safety net: longer than any retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from pydantic import ValidationError

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.kafka import EventPublisher
from notetaker.common.retention import RetentionRefused, check_days, set_retention
from notetaker.common.s3 import S3Client
from notetaker.common.settings import NotetakerSettings
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack
from notetaker.scheduler.retention import WHO, apply_retention
from tests.cli.conftest import StoredMeeting, stored_meeting, under_prefix


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


async def test_media_past_its_orgs_retention_is_deleted_and_media_within_it_is_kept(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    meetingbaas: ProviderSimulator,
    deleter: MediaDeleter,
) -> None:
    short = uuid.uuid4()  # keeps 30 days
    await set_retention(db, short, 30, by="test", safety_net_days=400)
    past = await stored_meeting(stack, db, s3, meetingbaas, org_id=short, created_days_ago=31)
    within = await stored_meeting(stack, db, s3, meetingbaas, org_id=short, created_days_ago=29)
    # An org without its own retention keeps the default, 90 days.
    default_past = await stored_meeting(stack, db, s3, meetingbaas, created_days_ago=91)
    default_within = await stored_meeting(stack, db, s3, meetingbaas, created_days_ago=60)

    await run_round(db, deleter)

    for meeting in (past, default_past):  # deleted the same way as by an operator
        assert await deleted_by_retention(db, meeting)
        assert await under_prefix(s3, stack, meeting.prefix) == []
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.meeting_id)
        assert (row["video_url"], row["transcript_text"]) == (None, None)
        assert meeting.bot_id in meetingbaas.data_deletions
        assert meeting.gladia_job_id in meetingbaas.deleted_jobs
    for meeting in (within, default_within):
        assert not await deleted_by_retention(db, meeting)
        assert len(await under_prefix(s3, stack, meeting.prefix)) == 6
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.meeting_id)
        assert row["video_url"] is not None
        assert row["transcript_text"] is not None
        assert row["media_deleted_at"] is None

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
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    meetingbaas: ProviderSimulator,
    deleter: MediaDeleter,
) -> None:
    meeting = await stored_meeting(stack, db, s3, meetingbaas)
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
