"""End to end through real HTTP, Kafka, PostgreSQL and S3: webhooks in, one complete meeting out."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from notetaker.common.events import MeetingSynced
from notetaker.common.s3 import S3Client, parse_s3_location
from notetaker.devstack.pipeline import Pipeline
from notetaker.devstack.stack import Stack
from tests.conftest import eventually
from tests.e2e.conftest import Meeting, events_for, meeting_with_bot


async def complete_row(db: asyncpg.Pool, meeting: Meeting, timeout: float = 60) -> Any:
    async def probe() -> Any:
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.id)
        done = row["video_url"] and row["transcript_text"] and row["thumbnail_url"]
        return row if done else None

    return await eventually(probe, timeout, f"meeting {meeting.id} to be complete")


async def completed_meeting(pipeline: Pipeline, db: asyncpg.Pool, **bot: Any) -> tuple[str, Any]:
    """A simulated bot whose meeting is on the calendar, then completes; (bot_id, final row)."""
    bot_id = pipeline.simulator.create_bot(hold_completed=True, **bot)
    meeting = await meeting_with_bot(db, bot_id)
    pipeline.simulator.complete(bot_id)
    return bot_id, await complete_row(db, meeting)


async def stored_video(s3: S3Client, row: Any) -> bytes:
    bucket, key = parse_s3_location(row["video_url"])
    body: bytes = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    return body


async def synced(pipeline: Pipeline, bot_id: str) -> list[MeetingSynced]:
    envelopes = await events_for(pipeline.stack, "meeting.synced", bot_id)
    return [e.event for e in envelopes if isinstance(e.event, MeetingSynced)]


async def test_transcript_before_upload_ends_in_one_complete_row(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    sim = pipeline.simulator
    bot_id, row = await completed_meeting(pipeline, db, transcription=True, video_delay=2.0)

    changes = await synced(pipeline, bot_id)
    first_transcript = next(c for c in changes if c.has_transcript)
    assert not first_transcript.has_video  # the transcript really came first
    assert row["transcript_provider"] == "meetingbaas"
    assert "Welcome to the weekly product sync." in row["transcript_text"]
    assert (
        hashlib.sha256(await stored_video(s3, row)).hexdigest() == sim.bot(bot_id)["video_sha256"]
    )
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE bot_id = $1", bot_id) == 1


async def test_upload_before_transcript_ends_in_one_complete_row(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    sim = pipeline.simulator
    bot_id, row = await completed_meeting(pipeline, db, transcription=False)  # Gladia's turn

    changes = await synced(pipeline, bot_id)
    first_video = next(c for c in changes if c.has_video)
    assert not first_video.has_transcript  # the upload really came first
    assert row["transcript_provider"] == "gladia"
    assert "The upload pipeline is live." in row["transcript_text"]
    (job,) = [j for j in sim.jobs.values() if f"bot_id={bot_id}" in (j.callback_url or "")]
    assert job.callbacks == [200]
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE bot_id = $1", bot_id) == 1
    assert row["audio_url"].endswith("/audio.flac")


async def test_same_completed_webhook_three_times_gives_one_upload_and_one_row(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    sim = pipeline.simulator
    bot_id, _ = await completed_meeting(pipeline, db)

    assert await sim.resend_completed(bot_id) == 200  # Svix retry: same delivery id
    assert await sim.resend_completed(bot_id, new_delivery_id=True) == 200  # same fact again
    answers = [w for w in sim.bot(bot_id)["webhooks"] if w["event"] == "bot.completed"]
    assert [w["status"] for w in answers] == [200, 200, 200]

    assert len(await events_for(pipeline.stack, "recording.completed", bot_id)) == 1
    assert len(await events_for(pipeline.stack, "recording.uploaded", bot_id)) == 1
    assert sim.bot(bot_id)["downloads"] == {"video.mp4": 1, "audio.flac": 1}
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE bot_id = $1", bot_id) == 1
    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
    assert recording["s3_upload_status"] == "complete"
    assert recording["s3_upload_retry_count"] == 0


async def test_unauthenticated_webhook_gets_401_and_produces_no_event(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    bot_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "event": "bot.completed",
            "data": {"bot_id": bot_id, "video": "http://127.0.0.1:9/video.mp4"},
            "sent_at": datetime.now(UTC).isoformat(),
        }
    )
    forged = {
        "content-type": "application/json",
        "svix-id": "msg_forged",
        "svix-timestamp": str(int(datetime.now(UTC).timestamp())),
        "svix-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    }
    async with httpx.AsyncClient(base_url=pipeline.ingest_url) as http:
        unsigned = await http.post(
            "/webhooks/meetingbaas", content=body, headers={"content-type": "application/json"}
        )
        bad = await http.post("/webhooks/meetingbaas", content=body, headers=forged)
    for answer in (unsigned, bad):
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == 401
        assert "signature" not in answer.text.lower()  # the reason is logged, not disclosed
    for topic in ("bot.status", "recording.completed", "recording.failed", "transcript.ready"):
        assert await events_for(pipeline.stack, topic, bot_id) == [], topic
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE bot_id = $1", bot_id) == 0
    )


async def test_scheduled_meeting_becomes_a_stored_recording_with_thumbnail(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    meeting_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source)"
        " VALUES ($1, $2, 'scheduled', $3, 'https://meet.google.com/s', 'notetaker')"
        " RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        datetime.now(UTC) + timedelta(seconds=30),
    )

    async def bot_deployed() -> str | None:
        bot: str | None = await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting_id)
        return bot

    bot_id = await eventually(bot_deployed, 30, "the scheduler to deploy a bot")
    row = await complete_row(db, Meeting(meeting_id, uuid.uuid4(), uuid.uuid4(), bot_id))
    video = await stored_video(s3, row)
    assert hashlib.sha256(video).hexdigest() == pipeline.simulator.bot(bot_id)["video_sha256"]
    bucket, thumb_key = parse_s3_location(row["thumbnail_url"])
    thumbnail = await (await s3.get_object(Bucket=bucket, Key=thumb_key))["Body"].read()
    assert thumbnail[:3] == b"\xff\xd8\xff"  # a JPEG
    assert thumb_key.rsplit("/", 1)[0] == parse_s3_location(row["video_url"])[1].rsplit("/", 1)[0]


async def test_reading_events_from_a_topic_that_does_not_exist_fails(stack: Stack) -> None:
    # The old reader found no partitions here and returned [], so "no event" held.
    with pytest.raises(AssertionError, match=r"cannot read .*'no\.such\.topic'.*unreadable"):
        await events_for(stack, "no.such.topic", str(uuid.uuid4()))
