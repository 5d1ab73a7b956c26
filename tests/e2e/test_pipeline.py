"""End to end through real HTTP, Kafka, PostgreSQL and S3: webhooks in, one complete meeting out."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from notetaker.common import callback_tokens
from notetaker.common.events import MeetingSynced, RecordingUploaded
from notetaker.common.s3 import S3Client, parse_s3_location
from notetaker.devstack.pipeline import Pipeline
from notetaker.devstack.simulator import GladiaJob
from notetaker.devstack.stack import Stack
from tests.conftest import eventually
from tests.e2e.conftest import Meeting, events_for, meeting_with_bot, post_v1_webhook


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


async def gladia_job_of(pipeline: Pipeline, db: asyncpg.Pool, bot_id: str) -> GladiaJob:
    """The simulator's Gladia job transcript-sync asked for this bot: the one its job row names,
    whose callback URL names the row's request id."""
    row = await db.fetchrow(
        "SELECT request_id, job_id FROM transcription_jobs WHERE bot_id = $1", bot_id
    )
    assert row is not None, f"no transcription job for bot {bot_id}"
    job = pipeline.simulator.jobs[row["job_id"]]
    assert job.callback_url is not None
    assert httpx.URL(job.callback_url).params["request_id"] == str(row["request_id"])
    return job


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
    bot_id, row = await completed_meeting(pipeline, db, transcription=False)  # Gladia's turn

    changes = await synced(pipeline, bot_id)
    first_video = next(c for c in changes if c.has_video)
    assert not first_video.has_transcript  # the upload really came first
    assert row["transcript_provider"] == "gladia"
    assert "The upload pipeline is live." in row["transcript_text"]
    assert row["language"] == "en"  # as Gladia's result names it
    job = await gladia_job_of(pipeline, db, bot_id)
    assert job.callbacks == [200]  # its callback passed: token, request id and job id ours
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
    # The scheduler registered the bot's own callback, with the secret of its meeting: the bot
    # called ingest itself before the account webhook, and that delivery is the one published.
    deliveries = [
        (w["channel"], w["status"], w.get("outcome"))
        for w in pipeline.simulator.bot(bot_id)["webhooks"]
        if w["event"] == "bot.completed"
    ]
    assert deliveries == [("callback", 200, "published"), ("svix", 200, None)]
    video = await stored_video(s3, row)
    assert hashlib.sha256(video).hexdigest() == pipeline.simulator.bot(bot_id)["video_sha256"]
    bucket, thumb_key = parse_s3_location(row["thumbnail_url"])
    thumbnail = await (await s3.get_object(Bucket=bucket, Key=thumb_key))["Body"].read()
    assert thumbnail[:3] == b"\xff\xd8\xff"  # a JPEG
    assert thumb_key.rsplit("/", 1)[0] == parse_s3_location(row["video_url"])[1].rsplit("/", 1)[0]


async def test_a_gladia_callback_for_a_request_we_never_made_is_401_and_gladia_is_not_asked(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    """A token minted right (someone holding the key) is not enough: no job row has the request
    id, so ingest refuses before publishing, and the job the body names is never fetched from
    Gladia with our key. A Gladia meeting completed afterwards shows the pipeline ran on."""
    sim = pipeline.simulator
    request_id, job_id = uuid.uuid4(), str(uuid.uuid4())
    expires = int(time.time()) + 3600
    subject = callback_tokens.gladia_job_subject(str(request_id), expires)
    token = callback_tokens.mint(pipeline.keys["callback_key"], subject)
    # The webhook shape: only the job id, so a transcript.ready would make transcript-sync fetch
    # the job from Gladia.
    body = json.dumps({"event": "transcription.success", "payload": {"id": job_id}})
    async with httpx.AsyncClient(base_url=pipeline.ingest_url) as http:
        answer = await http.post(
            f"/webhooks/gladia?request_id={request_id}&expires={expires}&token={token}",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    stored = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE delivery_id LIKE $1", f"%{job_id}%"
    )
    assert stored == 0

    bot_id, row = await completed_meeting(pipeline, db, transcription=False)  # Gladia's turn
    assert row["transcript_provider"] == "gladia"
    assert (await gladia_job_of(pipeline, db, bot_id)).callbacks == [200]
    assert [r for r in sim.gladia_requests if job_id in r[1]] == []


async def test_reading_events_from_a_topic_that_does_not_exist_fails(stack: Stack) -> None:
    # The old reader found no partitions here and returned [], so "no event" held.
    with pytest.raises(AssertionError, match=r"cannot read .*'no\.such\.topic'.*unreadable"):
        await events_for(stack, "no.such.topic", str(uuid.uuid4()))


async def test_an_audio_only_bot_becomes_a_complete_meeting_with_audio_and_transcript(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    """Issue 18, point 3: a `bot.completed` without video (`recording_mode: audio_only`) is an
    audio-only meeting, not a failure: audio in S3, the transcript, no video, no thumbnail."""
    sim = pipeline.simulator
    bot_id = sim.create_bot(hold_completed=True, transcription=True, audio_only=True)
    meeting = await meeting_with_bot(db, bot_id)
    sim.complete(bot_id)

    async def complete() -> Any:
        row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.id)
        return row if row["audio_url"] and row["transcript_text"] else None

    row = await eventually(complete, 60, f"audio-only meeting {meeting.id} to be complete")
    assert row["video_url"] is None
    assert row["recording_status"] == "available"
    assert row["transcript_provider"] == "meetingbaas"
    assert "Welcome to the weekly product sync." in row["transcript_text"]
    bucket, key = parse_s3_location(row["audio_url"])
    assert key.endswith("/audio.flac")
    audio: bytes = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    assert hashlib.sha256(audio).hexdigest() == sim.bot(bot_id)["audio_sha256"]
    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
    assert recording["s3_upload_status"] == "complete"
    assert (recording["s3_video_key"], recording["s3_audio_key"]) == (None, key)
    artifacts = sim.bot(bot_id)["artifacts"]  # the transcript JSON, the chat, ...: stored too
    people = await db.fetchval(  # and the participants and speakers it listed
        "SELECT sum(size_bytes) FROM recording_artifacts WHERE recording_id = $1"
        " AND kind IN ('participants', 'speakers')",
        recording["id"],
    )
    assert people > 0
    assert recording["s3_file_size_bytes"] == len(audio) + people + sum(
        a["size"] for a in artifacts.values()
    )
    assert sim.bot(bot_id)["downloads"] == {"audio.flac": 1}
    (uploaded,) = await events_for(pipeline.stack, "recording.uploaded", bot_id)
    assert isinstance(uploaded.event, RecordingUploaded)
    assert (uploaded.event.video_key, uploaded.event.audio_key) == (None, key)
    assert await events_for(pipeline.stack, "thumbnail.requested", bot_id) == []
    assert await events_for(pipeline.stack, "recording.failed", bot_id) == []
    assert row["thumbnail_url"] is None


async def test_a_v1_retranscription_replaces_the_meetings_transcript(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    """v1 `transcription_complete` (only the bot's id): transcript-sync fetches the new
    transcript from v1's meeting data and writes it over the one the meeting had."""
    sim = pipeline.simulator
    bot_id, row = await completed_meeting(pipeline, db, transcription=True)
    assert "Welcome to the weekly product sync." in row["transcript_text"]

    body = json.dumps({"event": "transcription_complete", "data": {"bot_id": bot_id}})
    answer = await post_v1_webhook(pipeline, body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == ["transcript.ready"]

    async def retranscribed() -> Any:
        text = await db.fetchval("SELECT transcript_text FROM meetings WHERE bot_id = $1", bot_id)
        return text if "retranscribed" in (text or "") else None

    text = await eventually(retranscribed, 30, f"bot {bot_id}'s transcript to be replaced")
    assert text == "Ada Lovelace: Welcome to the retranscribed product sync."
    assert sim.transcript_fetches == [bot_id]
