"""Gladia's result as delivered, archived by the join beside the video (`archive.py`), in
process against the real PostgreSQL and S3: stored once and counted once whatever is retried or
redelivered (a re-read comes from our copy, not Gladia), an S3 outage waited out with the meeting's
row written first, and an archive stored while the media was deleted deleted again."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from botocore.exceptions import EndpointConnectionError
from pydantic import SecretStr

from notetaker.common.db import create_pool
from notetaker.common.events import KeptBodyRef, StorageUsage, TranscriptReady
from notetaker.common.s3 import S3Client, recording_prefix
from notetaker.devstack.stack import Stack
from notetaker.transcript_sync.archive import archive_gladia_result
from notetaker.transcript_sync.transcripts import archived_transcript
from tests.fixtures import PROVIDER_SAMPLES
from tests.transcript_sync.fakes import Record, Worker, forget_group, worker
from tests.transcript_sync.test_join_state import handled, recorded_upload

# What `GET /v2/pre-recorded/{id}` answers for a finished job: the callback sample's result.
SAMPLE = (PROVIDER_SAMPLES / "gladia" / "v2-callback.transcription.success.json").read_text()
PAYLOAD = SAMPLE.split('"payload": ', 1)[1].rsplit("}", 1)[0]  # as the callback has it
ANSWER = '{"id": "JOB", "status": "done", "result": ' + PAYLOAD + "}"


class GladiaApi:
    """Gladia's `GET /v2/pre-recorded/{id}`, answering `ANSWER` byte for byte."""

    def __init__(self) -> None:
        self.gets: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.gets.append(request.url.path)
        return httpx.Response(200, content=ANSWER.encode())


class FlakyS3:
    """The real S3 client, whose puts fail (`outages` times, as an unreachable endpoint) or run
    a hook after they land."""

    def __init__(self, s3: S3Client, outages: int = 0, after_put: Any = None) -> None:
        self.s3, self.outages, self.after_put = s3, outages, after_put
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    async def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.outages > 0:
            self.outages -= 1
            raise EndpointConnectionError(endpoint_url="http://s3.down")
        answer = await self.s3.put_object(**kwargs)
        if self.after_put is not None:
            await self.after_put()
        return answer


@pytest.fixture
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """The pool as the service opens it (JSON columns as Python values)."""
    pool = await create_pool(stack.settings())
    yield pool
    await pool.close()


def archiving(pool: asyncpg.Pool, stack: Stack, s3: Any, api: GladiaApi) -> Worker:
    return worker(
        pool,
        s3=s3,
        http=httpx.AsyncClient(transport=httpx.MockTransport(api)),
        s3_bucket=stack.s3_bucket,
        gladia_api_url="https://gladia.example",
        gladia_api_key=SecretStr("gladia-test-key-0123456789"),
    )


def gladia_usage(running: Worker) -> list[StorageUsage]:
    return [
        e
        for e in running.publisher.published
        if isinstance(e, StorageUsage) and e.step.startswith("gladia_result:")
    ]


async def archive_row(db: asyncpg.Pool, recording_id: uuid.UUID) -> Any:
    return await db.fetchrow(
        "SELECT * FROM recording_artifacts WHERE recording_id = $1 AND kind = 'gladia_result'",
        recording_id,
    )


async def test_a_gladia_result_is_archived_and_counted_once_whatever_comes_again(
    db: asyncpg.Pool, pool: asyncpg.Pool, stack: Stack, s3: S3Client
) -> None:
    api = GladiaApi()
    running = archiving(pool, stack, s3, api)
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    job = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=str(uuid.uuid4()))
    try:
        await handled(running, [upload, job])
        assert len(api.gets) == 1
        row = await archive_row(db, upload.recording_id)
        prefix = recording_prefix(meeting.org_id, meeting.user_id, upload.recording_id)
        assert row["s3_key"] == f"{prefix}gladia-result.json"
        stored = await s3.get_object(Bucket=stack.s3_bucket, Key=row["s3_key"])
        body = await stored["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(ANSWER.encode()).digest()
        (usage,) = gladia_usage(running)
        assert (usage.step, usage.bytes_stored) == (row["usage_step"], len(body))

        # Redelivered with the join's state lost: read again from our copy, not from Gladia.
        running.table.clear()
        assert await running.handle(Record.of(job))
        assert len(api.gets) == 1
        # The same bytes stored again (a retry after the put): nothing counted twice.
        await archive_gladia_result(
            pool,
            s3,
            running.publisher,
            bucket=stack.s3_bucket,
            bot_id=meeting.bot_id,
            body=body,
        )
        assert len(gladia_usage(running)) == 1
        assert dict(await archive_row(db, upload.recording_id))["checksum"] == row["checksum"]
        text = await db.fetchval("SELECT transcript_text FROM meetings WHERE id = $1", meeting.id)
        assert text == "Speaker 0: Hello Alan.\nSpeaker 1: Hello Ada."
    finally:
        await forget_group(db, running.group)


async def test_an_s3_outage_is_waited_out_after_the_meetings_row_is_written(
    db: asyncpg.Pool, pool: asyncpg.Pool, stack: Stack, s3: S3Client
) -> None:
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    rows_at_put: list[Any] = []

    flaky = FlakyS3(s3, outages=3)
    original = flaky.put_object

    async def put_object(**kwargs: Any) -> Any:
        rows_at_put.append(
            await db.fetchval("SELECT transcript_text FROM meetings WHERE id = $1", meeting.id)
        )
        return await original(**kwargs)

    flaky.put_object = put_object  # type: ignore[method-assign]
    running = archiving(pool, stack, flaky, GladiaApi())
    job = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=str(uuid.uuid4()))
    try:
        await handled(running, [upload, job])
    finally:
        await forget_group(db, running.group)
    assert flaky.puts == 4  # three failed for the outage, then stored
    assert all(rows_at_put)  # the row held the transcript before any put
    assert (await archive_row(db, upload.recording_id))["s3_key"] is not None
    assert len(gladia_usage(running)) == 1
    assert running.publisher.dead_letters == []


async def test_an_archive_stored_while_the_media_was_deleted_is_deleted_again(
    db: asyncpg.Pool, pool: asyncpg.Pool, stack: Stack, s3: S3Client
) -> None:
    meeting, upload = await recorded_upload(db, provider_transcript=True)

    async def deleted_meanwhile() -> None:
        await db.execute(
            "UPDATE recordings SET media_deleted_at = now() WHERE id = $1", upload.recording_id
        )

    running = archiving(pool, stack, FlakyS3(s3, after_put=deleted_meanwhile), GladiaApi())
    job = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", job_id=str(uuid.uuid4()))
    try:
        await handled(running, [upload, job])
    finally:
        await forget_group(db, running.group)
    prefix = recording_prefix(meeting.org_id, meeting.user_id, upload.recording_id)
    listed = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix)
    assert listed.get("Contents", []) == []
    assert await archive_row(db, upload.recording_id) is None
    assert gladia_usage(running) == []
    assert running.table == {}  # dropped, as any event about deleted media


def test_an_archived_callback_and_an_archived_answer_read_as_when_they_came() -> None:
    bot_id = str(uuid.uuid4())
    event = TranscriptReady(bot_id=bot_id, provider="gladia", job_id=str(uuid.uuid4()))
    from_callback = archived_transcript(event, SAMPLE.encode())
    from_answer = archived_transcript(event, ANSWER.encode())
    assert from_callback == from_answer
    assert [(u.speaker, u.text) for u in from_callback.utterances] == [
        ("Speaker 0", "Hello Alan."),
        ("Speaker 1", "Hello Ada."),
    ]
    assert (from_callback.language, from_callback.delivered) == ("en", None)


async def test_a_pointer_to_a_pruned_body_is_read_from_the_archive(
    db: asyncpg.Pool, pool: asyncpg.Pool, stack: Stack, s3: S3Client
) -> None:
    api = GladiaApi()
    running = archiving(pool, stack, s3, api)
    meeting, upload = await recorded_upload(db, provider_transcript=True)
    ref = KeptBodyRef(provider="gladia", delivery_id="pruned-after-30-days")
    pointer = TranscriptReady(bot_id=meeting.bot_id, provider="gladia", body_ref=ref)
    try:
        await handled(running, [upload])
        await archive_gladia_result(
            pool,
            s3,
            running.publisher,
            bucket=stack.s3_bucket,
            bot_id=meeting.bot_id,
            body=SAMPLE.encode(),
        )
        await handled(running, [pointer])  # not refused: the body is gone, our copy is not
    finally:
        await forget_group(db, running.group)
    row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.id)
    assert row["transcript_text"] == "Speaker 0: Hello Alan.\nSpeaker 1: Hello Ada."
    assert (row["transcript_provider"], row["language"]) == ("gladia", "en")
    assert api.gets == []
    assert len(gladia_usage(running)) == 1  # the archive's own count, nothing more
