"""Upload retries end to end: the uploader as a process with its shipped retry settings, a
provider URL that keeps failing, and the scheduler requesting each retry when it is due. The
clock is the test's: each wait is checked where it is scheduled (`s3_upload_next_retry_at`) and
then declared over by moving that time into the past, so minutes of waiting take none.

Requesting a retry is one step: the row is marked in the transaction that commits once Kafka has
the request; a crash on either side of Kafka's acknowledgement, or an attempt that fails at once,
strands nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from notetaker.common.events import (
    Event,
    RecordingCompleted,
    RecordingUploadFailed,
    RecordingUploadRequested,
)
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.devstack.stack import Stack, free_port
from notetaker.scheduler.leadership import CONNECTION_ERRORS
from notetaker.scheduler.retries import request_due_retries
from notetaker.uploader.settings import UploaderSettings
from tests.conftest import eventually
from tests.e2e.conftest import events_for

# What the uploader ships with: the first attempt, then retries 2, 5 and 10 minutes later.
ATTEMPTS: int = UploaderSettings.model_fields["upload_max_attempts"].default
DELAYS: list[int] = UploaderSettings.model_fields["upload_retry_delays_seconds"].default
# The uploader computes a retry time just before it writes the failure, on the same host.
SLACK = timedelta(seconds=2)


def service(stack: Stack, logdir: Path, name: str, **env: str) -> ServiceProcess:
    port = free_port()
    environment = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_LOG_FORMAT": "json",
        "NOTETAKER_HTTP_PORT": str(port),
        **env,
    }
    return ServiceProcess(name, environment, port, logdir / f"{name}-{port}.log")


@dataclass
class Uploads:
    stack: Stack
    source: RecordingSource
    publisher: EventPublisher
    logdir: Path
    uploader: ServiceProcess


@pytest.fixture(scope="module")
async def uploads(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Uploads]:
    source = RecordingSource()
    await source.start()
    publisher = EventPublisher(stack.settings(service_name="ingest"))
    await publisher.start()
    logdir = tmp_path_factory.mktemp("retries")
    uploader = service(stack, logdir, "uploader")  # with the shipped retry settings
    uploader.start()
    try:
        await asyncio.to_thread(uploader.wait_ready)
        yield Uploads(stack, source, publisher, logdir, uploader)
    finally:
        await asyncio.to_thread(uploader.stop)
        await publisher.stop()
        await source.stop()


async def failing_recording(db: asyncpg.Pool, uploads: Uploads) -> tuple[str, uuid.UUID]:
    """A deployed bot whose provider says its recording is ready at a URL that answers 500 to
    every request; (bot id, recording id)."""
    bot_id = str(uuid.uuid4())
    name = f"{bot_id}.mp4"
    uploads.source.files[name] = b"never served"
    uploads.source.faults[name] = Fault(status=500)
    recording_id: uuid.UUID = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3) RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    await uploads.publisher.publish(
        RecordingCompleted(
            bot_id=bot_id, video_url=uploads.source.url(name), urls_received_at=datetime.now(UTC)
        )
    )
    return bot_id, recording_id


async def after_attempt(db: asyncpg.Pool, recording_id: uuid.UUID, attempt: int) -> Any:
    """The row once the attempt has failed (recorded, not in flight)."""

    async def probe() -> Any:
        row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", recording_id)
        failed = row["s3_upload_status"] == "failed"
        return row if failed and row["s3_upload_retry_count"] == attempt else None

    return await eventually(probe, 60, f"attempt {attempt} of recording {recording_id} to fail")


async def wait_is_over(db: asyncpg.Pool, recording_id: uuid.UUID) -> None:
    """The test clock: the retry's wait has passed."""
    await db.execute(
        "UPDATE recordings SET s3_upload_next_retry_at = now() - interval '1 second'"
        " WHERE id = $1 AND s3_upload_status = 'failed'",
        recording_id,
    )


async def requested_attempts(stack: Stack, bot_id: str) -> list[int]:
    events = await events_for(stack, RecordingUploadRequested.type, bot_id)
    return [e.event.attempt for e in events if isinstance(e.event, RecordingUploadRequested)]


async def test_a_first_attempt_and_three_retries_wait_2_5_and_10_minutes_then_fail_for_good(
    uploads: Uploads, db: asyncpg.Pool, stack: Stack
) -> None:
    assert (ATTEMPTS, DELAYS) == (4, [120, 300, 600])
    scheduler = service(
        stack, uploads.logdir, "scheduler", NOTETAKER_SCHEDULER_INTERVAL_SECONDS="0.2"
    )
    scheduler.start()
    try:
        await asyncio.to_thread(scheduler.wait_ready)
        bot_id, recording_id = await failing_recording(db, uploads)
        for attempt, delay in enumerate(DELAYS, start=1):
            row = await after_attempt(db, recording_id, attempt)
            waits = row["s3_upload_next_retry_at"] - row["s3_upload_last_retry_at"]
            assert abs(waits - timedelta(seconds=delay)) < SLACK, (attempt, waits)
            await wait_is_over(db, recording_id)
        final = await after_attempt(db, recording_id, ATTEMPTS)
    finally:
        await asyncio.to_thread(scheduler.stop)
    assert final["s3_upload_next_retry_at"] is None  # failed for good
    assert "HTTP 500" in final["s3_upload_error_message"]
    assert await requested_attempts(stack, bot_id) == [2, 3, 4]
    failures = [
        e.event
        for e in await events_for(stack, RecordingUploadFailed.type, bot_id)
        if isinstance(e.event, RecordingUploadFailed)
    ]
    assert [(f.attempt, f.final) for f in failures] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    name = f"{bot_id}.mp4"
    assert sum(1 for asked, _ in uploads.source.requests if asked == name) == ATTEMPTS


class CrashingPublisher:
    """A scheduler that dies while requesting the retry of one recording: its connection to
    PostgreSQL is cut (through `proxy`) before the request reaches Kafka, or just after Kafka
    acknowledged it. Retries of other recordings (other tests' rows) go out as usual."""

    def __init__(
        self,
        publisher: EventPublisher,
        proxy: OutageProxy,
        recording_id: uuid.UUID,
        after_ack: bool,
    ) -> None:
        self.publisher = publisher
        self.proxy = proxy
        self.recording_id = recording_id
        self.after_ack = after_ack

    async def publish(self, event: Event) -> None:
        if getattr(event, "recording_id", None) != self.recording_id:
            await self.publisher.publish(event)
            return
        if self.after_ack:
            await self.publisher.publish(event)
        self.proxy.down()
        raise ConnectionResetError("the scheduler died here")


@pytest.fixture
async def proxy(stack: Stack) -> AsyncIterator[OutageProxy]:
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    outage = OutageProxy(database.hostname, database.port)
    await outage.start()
    yield outage
    await outage.stop()


async def crash_while_requesting(
    stack: Stack,
    proxy: OutageProxy,
    publisher: EventPublisher,
    recording_id: uuid.UUID,
    after_ack: bool,
) -> None:
    conn = await asyncpg.connect(proxy.url_for(stack.database_url))
    try:
        crashing = CrashingPublisher(publisher, proxy, recording_id, after_ack)
        with pytest.raises((ConnectionResetError, *CONNECTION_ERRORS)):
            await request_due_retries(conn, crashing)  # type: ignore[arg-type]
    finally:
        conn.terminate()
        proxy.restore()


async def test_a_crash_between_marking_a_retry_and_requesting_it_strands_nothing(
    uploads: Uploads, db: asyncpg.Pool, stack: Stack, proxy: OutageProxy
) -> None:
    bot_id, recording_id = await failing_recording(db, uploads)
    first = await after_attempt(db, recording_id, 1)
    await wait_is_over(db, recording_id)
    due_at = await db.fetchval(
        "SELECT s3_upload_next_retry_at FROM recordings WHERE id = $1", recording_id
    )

    # Dead before Kafka had the request: the mark is rolled back, the retry is still due ...
    await crash_while_requesting(stack, proxy, uploads.publisher, recording_id, after_ack=False)
    row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", recording_id)
    assert (row["s3_upload_status"], row["s3_upload_next_retry_at"]) == ("failed", due_at)
    assert row["s3_upload_retry_count"] == first["s3_upload_retry_count"]
    assert await requested_attempts(stack, bot_id) == []
    # ... and the next round requests it.
    async with db.acquire() as conn:
        assert await request_due_retries(conn, uploads.publisher) >= 1
    await after_attempt(db, recording_id, 2)
    assert await requested_attempts(stack, bot_id) == [2]

    # Dead just after Kafka had it: the mark is rolled back, but the request is out, and the
    # attempt runs once the dead connection's lock is gone.
    await wait_is_over(db, recording_id)
    await crash_while_requesting(stack, proxy, uploads.publisher, recording_id, after_ack=True)
    third = await after_attempt(db, recording_id, 3)
    assert third["s3_upload_next_retry_at"] > datetime.now(UTC)  # its own next wait
    assert await requested_attempts(stack, bot_id) == [2, 3]


class CommitsLate:
    """Publishes, then holds the scheduler's transaction open until the uploader, handed the
    request, has tried to write the row (and waits on its lock), or has already recorded its
    failed attempt (`attempt`), as a scheduler that is slow after Kafka's acknowledgement."""

    def __init__(
        self,
        publisher: EventPublisher,
        db: asyncpg.Pool,
        conn: asyncpg.Connection,
        recording_id: uuid.UUID,
        attempt: int,
    ) -> None:
        self.publisher = publisher
        self.db = db
        self.backend = conn.get_server_pid()
        self.recording_id = recording_id
        self.attempt = attempt
        self.published: list[Event] = []

    async def publish(self, event: Event) -> None:
        await self.publisher.publish(event)
        self.published.append(event)

        async def uploader_got_there() -> bool:
            blocked = await self.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                self.backend,
            )
            recorded = await self.db.fetchval(
                "SELECT s3_upload_retry_count FROM recordings WHERE id = $1", self.recording_id
            )
            return bool(blocked) or recorded >= self.attempt

        if getattr(event, "recording_id", None) == self.recording_id:
            await eventually(uploader_got_there, 60, "the uploader to take the request")


async def test_an_attempt_that_fails_at_once_is_not_overwritten_by_the_retrys_mark(
    uploads: Uploads, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id, recording_id = await failing_recording(db, uploads)
    await after_attempt(db, recording_id, 1)
    await wait_is_over(db, recording_id)
    async with db.acquire() as conn:
        late = CommitsLate(uploads.publisher, db, conn, recording_id, attempt=2)
        await request_due_retries(conn, late)  # type: ignore[arg-type]
    second = await after_attempt(db, recording_id, 2)
    # Its failure stands, with its own next wait: not `pending` with no retry ever coming.
    assert second["s3_upload_next_retry_at"] is not None
    assert await requested_attempts(stack, bot_id) == [2]
