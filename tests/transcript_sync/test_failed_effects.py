"""A join effect that keeps failing parks its event and leaves the join state as it was, so the
parked event, replayed once the failure is gone, still does the work (the promise at the top of
transcript_sync/app.py).

Driven in process, without a broker: the real `Join.process` with a dict for the Faust table, the
real `meetings` table in PostgreSQL (through a pool that can be switched off), and a publisher that
keeps what it is given and can refuse a topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

from notetaker.common.envelope import to_message
from notetaker.common.events import (
    DLQ_ERROR_HEADER,
    DLQ_OFFSET_HEADER,
    Event,
    MeetingSynced,
    RecordingUploaded,
    ThumbnailRequested,
)
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import recording_key
from notetaker.transcript_sync.app import Join, Resources
from notetaker.transcript_sync.settings import TranscriptSyncSettings


@dataclass(frozen=True)
class Record:
    """A Kafka record as the agent gets it (or as it sits on the dead-letter topic)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int = 0

    def replayed(self) -> Record:
        """What an operator puts back on the original topic: the record without the DLQ headers."""
        dlq = {DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER}
        return Record(
            self.topic, self.key, self.value, [(k, v) for k, v in self.headers if k not in dlq]
        )


class Publisher(EventPublisher):
    """Keeps what the join publishes and parks; refuses the topics in `refused` like a broker
    that cannot take them."""

    def __init__(self) -> None:
        self.source = "/notetaker/transcript-sync"
        self.published: list[Event] = []
        self.parked: list[Record] = []
        self.refused: set[str] = set()

    async def publish(self, event: Event) -> None:
        if event.type in self.refused:
            raise ConnectionError(f"broker refuses {event.type}")
        self.published.append(event)

    async def dead_letter(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
        offset: int,
        error: str,
    ) -> None:
        assert value is not None
        headers = [*headers, (DLQ_ERROR_HEADER, error.encode()), (DLQ_OFFSET_HEADER, b"0")]
        self.parked.append(Record(topic, key, value, headers, offset))


class SwitchablePool:
    """The real pool, or a database that is down (every call fails) while `down` is set."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database down")

    async def fetchrow(self, *args: Any) -> Any:
        self._check()
        return await self.pool.fetchrow(*args)

    async def execute(self, *args: Any) -> Any:
        self._check()
        return await self.pool.execute(*args)


@dataclass
class Worker:
    join: Join
    table: dict[str, Any]
    publisher: Publisher
    database: SwitchablePool

    async def handle(self, record: Record) -> None:
        await self.join.process(
            self.table,
            topic=record.topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            offset=record.offset,
        )


@pytest.fixture
def worker(db: asyncpg.Pool) -> Worker:
    settings = TranscriptSyncSettings(effect_attempts=2, gladia_api_key=None)
    resources = Resources(settings)
    publisher = Publisher()
    database = SwitchablePool(db)
    # What `Resources.ready()` would open, already open: it leaves them as they are.
    resources.publisher = publisher
    resources.pool = cast(asyncpg.Pool, database)
    resources.s3 = cast(Any, object())  # no effect here reaches S3 (no Gladia configured)
    return Worker(Join(settings, resources), {}, publisher, database)


@dataclass(frozen=True)
class Meeting:
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bot_id: str


async def scheduled_meeting(db: asyncpg.Pool) -> Meeting:
    """A notetaker meeting on the calendar whose bot the scheduler deployed."""
    org, user, bot_id = uuid.uuid4(), uuid.uuid4(), str(uuid.uuid4())
    meeting_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
        " bot_id) VALUES ($1, $2, 'join', $3, 'https://meet.google.com/x', 'notetaker', $4)"
        " RETURNING id",
        org,
        user,
        datetime.now(UTC),
        bot_id,
    )
    return Meeting(meeting_id, org, user, bot_id)


def uploaded(meeting: Meeting) -> tuple[RecordingUploaded, Record]:
    recording_id = uuid.uuid4()
    event = RecordingUploaded(
        bot_id=meeting.bot_id,
        recording_id=recording_id,
        org_id=meeting.org_id,
        user_id=meeting.user_id,
        bucket="recordings",
        video_key=recording_key(meeting.org_id, meeting.user_id, recording_id, "video", "mp4"),
        audio_key=recording_key(meeting.org_id, meeting.user_id, recording_id, "audio", "flac"),
        size_bytes=1000,
        checksum="c",
        provider_transcript=True,
    )
    message = to_message(event, "/notetaker/uploader")
    assert isinstance(message.key, bytes)
    return event, Record(event.type, message.key, message.value, list(message.headers.items()))


async def media(db: asyncpg.Pool, meeting: Meeting) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT video_url, audio_url, recording_status FROM meetings WHERE id = $1", meeting.id
    )
    return dict(row)


def of_type(published: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in published if isinstance(e, kind)]


async def test_a_video_announced_while_the_database_is_down_is_written_when_replayed(
    worker: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    event, record = uploaded(meeting)

    worker.database.down = True
    await worker.handle(record)

    (parked,) = worker.publisher.parked
    assert parked.value == record.value
    assert "WriteVideo failed" in dict(parked.headers)[DLQ_ERROR_HEADER].decode()
    assert worker.table.get(meeting.bot_id) is None  # the join state is as it was: nothing
    assert worker.publisher.published == []
    assert (await media(db, meeting))["video_url"] is None

    worker.database.down = False
    await worker.handle(parked.replayed())

    assert await media(db, meeting) == {
        "video_url": f"s3://recordings/{event.video_key}",
        "audio_url": f"s3://recordings/{event.audio_key}",
        "recording_status": "available",
    }
    (synced,) = of_type(worker.publisher.published, MeetingSynced)
    assert (synced.meeting_id, synced.has_video) == (meeting.id, True)
    (thumbnail,) = of_type(worker.publisher.published, ThumbnailRequested)
    assert thumbnail.video_key == event.video_key
    assert worker.table[meeting.bot_id]["video_key"] == event.video_key
    assert len(worker.publisher.parked) == 1  # the replay went through


async def test_a_thumbnail_request_kafka_refused_is_sent_when_the_event_is_replayed(
    worker: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    event, record = uploaded(meeting)

    worker.publisher.refused = {"thumbnail.requested"}
    await worker.handle(record)  # the video is written, then asking for a thumbnail fails

    (parked,) = worker.publisher.parked
    assert "RequestThumbnail failed" in dict(parked.headers)[DLQ_ERROR_HEADER].decode()
    assert worker.table.get(meeting.bot_id) is None
    assert (await media(db, meeting))["video_url"] == f"s3://recordings/{event.video_key}"
    assert of_type(worker.publisher.published, ThumbnailRequested) == []

    worker.publisher.refused = set()
    await worker.handle(parked.replayed())

    (thumbnail,) = of_type(worker.publisher.published, ThumbnailRequested)
    assert (thumbnail.video_key, thumbnail.recording_id) == (event.video_key, event.recording_id)
    assert len(of_type(worker.publisher.published, MeetingSynced)) == 1  # the video, once
    assert worker.table[meeting.bot_id]["video_key"] == event.video_key

    await worker.handle(record)  # and once done, the same event again changes nothing
    assert len(of_type(worker.publisher.published, ThumbnailRequested)) == 1
