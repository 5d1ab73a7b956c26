"""The meetings row as the product sees it: one complete row whatever the order, even across a
restart of the join worker; Fathom rows untouched; playable media through presigned URLs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from notetaker.common.events import (
    Event,
    RecordingUploaded,
    ThumbnailRequested,
    TranscriptReady,
    Utterance,
)
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key
from notetaker.devstack.media import demo_recording
from notetaker.devstack.pipeline import Pipeline
from tests.conftest import eventually
from tests.e2e.conftest import Meeting, events_for, meeting_with_bot
from tests.e2e.test_pipeline import complete_row, completed_meeting


async def publish(pipeline: Pipeline, event: Event, source: str) -> None:
    publisher = EventPublisher(pipeline.stack.settings(service_name=source))
    await publisher.start()
    try:
        await publisher.publish(event)
    finally:
        await publisher.stop()


async def uploaded_event(pipeline: Pipeline, s3: S3Client, meeting: Meeting) -> RecordingUploaded:
    """What the uploader announces once a real video is stored."""
    recording_id = uuid.uuid4()
    key = recording_key(meeting.org_id, meeting.user_id, recording_id, "video", "mp4")
    video = demo_recording().video
    await s3.put_object(Bucket=pipeline.stack.s3_bucket, Key=key, Body=video)
    return RecordingUploaded(
        bot_id=meeting.bot_id,
        recording_id=recording_id,
        org_id=meeting.org_id,
        user_id=meeting.user_id,
        bucket=pipeline.stack.s3_bucket,
        video_key=key,
        size_bytes=len(video),
        checksum="c",
        provider_transcript=True,
    )


def transcript_event(bot_id: str) -> TranscriptReady:
    return TranscriptReady(
        bot_id=bot_id,
        provider="meetingbaas",
        utterances=[Utterance(speaker="Ada", start=0.5, end=1.5, text="Restarts are fine.")],
    )


async def restart_join_worker(pipeline: Pipeline) -> None:
    worker = pipeline.services.processes["transcript_sync"]
    await asyncio.to_thread(worker.kill)  # SIGKILL: whatever was in memory is gone
    worker.start()
    await asyncio.to_thread(worker.wait_ready, 90)


@pytest.mark.parametrize("first", ["upload", "transcript"])
async def test_a_restart_of_the_join_worker_between_the_two_events_loses_nothing(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client, first: str
) -> None:
    meeting = await meeting_with_bot(db, str(uuid.uuid4()))
    upload = await uploaded_event(pipeline, s3, meeting)
    transcript = transcript_event(meeting.bot_id)
    before, after = (upload, transcript) if first == "upload" else (transcript, upload)
    column = "video_url" if first == "upload" else "transcript_text"

    await publish(pipeline, before, "uploader" if first == "upload" else "ingest")

    async def first_written() -> Any:
        return await db.fetchval(f"SELECT {column} FROM meetings WHERE id = $1", meeting.id)  # noqa: S608

    await eventually(first_written, 60, f"the {first} to be written")
    await restart_join_worker(pipeline)
    await publish(pipeline, before, "replay")  # the same event again, after the restart
    await publish(pipeline, after, "uploader" if first != "upload" else "ingest")
    row = await complete_row(db, meeting, timeout=90)

    assert row["transcript_text"] == "Ada: Restarts are fine."
    assert row["video_url"] == f"s3://{upload.bucket}/{upload.video_key}"
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE bot_id = $1", meeting.bot_id) == 1
    # The join state survived the restart: the replayed upload asked for no second thumbnail.
    requests = await events_for(pipeline.stack, "thumbnail.requested", meeting.bot_id)
    assert [type(r.event) for r in requests] == [ThumbnailRequested]


async def test_a_fathom_meeting_is_never_touched(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    bot_id = f"fathom-{uuid.uuid4()}"
    org, user = uuid.uuid4(), uuid.uuid4()
    fathom_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, source, bot_id,"
        " video_url, transcript_text) VALUES ($1, $2, 'Fathom call', now(), 'fathom', $3,"
        " 'https://fathom.video/share/abc', 'Fathom transcript') RETURNING id",
        org,
        user,
        bot_id,
    )
    before = dict(await db.fetchrow("SELECT * FROM meetings WHERE id = $1", fathom_id))
    meeting = Meeting(fathom_id, org, user, bot_id)
    await publish(pipeline, await uploaded_event(pipeline, s3, meeting), "uploader")
    await publish(pipeline, transcript_event(bot_id), "ingest")

    async def dead_lettered() -> list[Any]:
        return await events_for(pipeline.stack, "transcript.ready.dlq", bot_id)

    await eventually(dead_lettered, 60, "the notetaker events about a Fathom bot to be parked")
    after = dict(await db.fetchrow("SELECT * FROM meetings WHERE id = $1", fathom_id))
    assert after == before


async def media(
    pipeline: Pipeline, meeting: Any, kind: str, org: Any, token: str | None
) -> httpx.Response:
    headers = {"x-org-id": str(org)}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    url = pipeline.services.processes["transcript_sync"].url
    async with httpx.AsyncClient() as http:
        return await http.get(f"{url}/meetings/{meeting['id']}/media/{kind}", headers=headers)


async def test_presigned_urls_serve_the_stored_bytes_and_count_the_download(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    sim = pipeline.simulator
    _, row = await completed_meeting(pipeline, db)
    token = pipeline.keys["media_token"]

    answer = await media(pipeline, row, "video", row["org_id"], token)
    assert answer.status_code == 200, answer.text
    link = answer.json()
    assert 0 < link["expires_in"] <= 3600
    async with httpx.AsyncClient() as http:
        video = await http.get(link["url"])
        thumbnail = await http.get(
            (await media(pipeline, row, "thumbnail", row["org_id"], token)).json()["url"]
        )
    assert sim.recording is not None
    assert video.content == sim.recording.video
    assert thumbnail.content[:3] == b"\xff\xd8\xff"
    assert row["video_url"].startswith("s3://")  # stored locations never expire

    assert (await media(pipeline, row, "video", uuid.uuid4(), token)).status_code == 404
    assert (await media(pipeline, row, "video", row["org_id"], None)).status_code == 401
    assert (await media(pipeline, row, "video", row["org_id"], "wrong")).status_code == 401
    assert (await media(pipeline, row, "sound", row["org_id"], token)).status_code == 404

    expected_gb = (len(video.content) + len(thumbnail.content)) / 1024**3

    async def downloads_counted() -> Any:
        return await db.fetchval(
            "SELECT value FROM s3_usage_metrics WHERE org_id = $1 AND metric_type = 'download_gb'"
            " AND value >= $2",
            row["org_id"],
            expected_gb * 0.999,
        )

    downloaded_gb = await eventually(downloads_counted, 30, "both downloads to be counted")
    assert downloaded_gb == pytest.approx(expected_gb)


async def test_a_gladia_job_whose_callback_never_comes_is_polled_to_the_same_transcript(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    sim = pipeline.simulator
    sim.config.gladia_send_callbacks = False
    try:
        bot_id = sim.create_bot(transcription=False, hold_completed=True)  # Gladia transcribes
        meeting = await meeting_with_bot(db, bot_id)
        sim.complete(bot_id)
        row = await complete_row(db, meeting, timeout=60)
    finally:
        sim.config.gladia_send_callbacks = True
    (job,) = [j for j in sim.jobs.values() if f"bot_id={bot_id}" in (j.callback_url or "")]
    assert job.callbacks == []  # no callback: the scheduler's poll found it done
    assert row["transcript_provider"] == "gladia"
    assert "The upload pipeline is live." in row["transcript_text"]
    polled = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", bot_id)
    assert polled["job_id"] == job.id
    assert polled["poll_count"] >= 1
    assert polled["completed_at"] is not None


async def test_a_bot_that_never_records_marks_its_meeting_failed(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    sim = pipeline.simulator
    bot_id = sim.create_bot(fail=True, hold_completed=True)
    meeting = await meeting_with_bot(db, bot_id)
    sim.complete(bot_id)

    async def marked() -> Any:
        return await db.fetchval(
            "SELECT recording_status FROM meetings"
            " WHERE id = $1 AND recording_status LIKE 'failed%'",
            meeting.id,
        )

    status = await eventually(marked, 30, "the meeting to show the failure")
    assert "BOT_NOT_ACCEPTED" in status
    row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.id)
    assert row["video_url"] is None
