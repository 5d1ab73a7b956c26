"""What the in-process join tests drive `Join.process` with: Kafka kept in lists (a publisher
and a raw sender that can be made to fail), the real PostgreSQL behind a pool that can be made to
fail, and the records the agent gets."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg

from notetaker.common.envelope import to_message
from notetaker.common.events import (
    Event,
    RecordingUploaded,
    ThumbnailGenerated,
    TranscriptReady,
    Utterance,
    dead_letter_headers,
    parse,
)
from notetaker.common.failures import OutagePolicy, RetryPolicy
from notetaker.common.kafka import EventPublisher
from notetaker.common.parking import PostgresParking
from notetaker.common.s3 import recording_key
from notetaker.transcript_sync.app import Join
from notetaker.transcript_sync.resources import Resources
from notetaker.transcript_sync.settings import TranscriptSyncSettings

# Failures come quickly here: the policies' waits are a few milliseconds, never what is tested.
QUICK_RETRY = RetryPolicy(attempts=2, timeout=5.0, wait_initial=0.01, wait_max=0.02, wait_jitter=0)
QUICK_OUTAGE = OutagePolicy(wait_initial=0.01, wait_max=0.05, wait_jitter=0)

Fault = Callable[[str], BaseException | None]
"""Given what is about to happen (a topic, an SQL statement), the error to raise, or None."""


def never(_: str) -> None:
    return None


@dataclass(frozen=True)
class Record:
    """A Kafka record as the agent gets it (or as it sits on a dead-letter topic)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int = 0
    partition: int = 0

    @classmethod
    def of(cls, event: Event, offset: int = 0) -> Record:
        message = to_message(event, "/notetaker/test")
        assert isinstance(message.key, bytes)
        return cls(event.type, message.key, message.value, list(message.headers.items()), offset)

    def header(self, name: str) -> bytes:
        """The header's value (empty when the record has none)."""
        return next((v for k, v in self.headers if k == name), b"")


class Publisher(EventPublisher):
    """Keeps what the join publishes and dead-letters; `fault` decides which calls fail."""

    def __init__(self) -> None:
        self.source = "/notetaker/transcript-sync"
        self.published: list[Event] = []
        self.dead_letters: list[tuple[Record, str | None]] = []  # (record, group)
        self.fault: Fault = never
        self.calls: list[str] = []

    async def publish(self, event: Event) -> None:
        self.calls.append(event.type)
        if (error := self.fault(event.type)) is not None:
            raise error
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
        group: str | None = None,
    ) -> None:
        self.calls.append(f"{topic}.dlq")
        if (failure := self.fault(f"{topic}.dlq")) is not None:
            raise failure
        assert value is not None
        headers = dead_letter_headers(headers, error, offset)
        self.dead_letters.append((Record(topic, key, value, headers, offset), group))


@dataclass
class Sent:
    """The raw records the join sends (outbox, republished parked events)."""

    records: list[Record] = field(default_factory=list)
    fault: Fault = never

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if (error := self.fault(topic)) is not None:
            raise error
        self.records.append(Record(topic, key, value, headers))

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    def events(self, topic: str) -> list[Any]:
        return [parse(topic, json.loads(r.value)) for r in self.records if r.topic == topic]


class _Connection:
    def __init__(self, pool: FaultyPool, conn: asyncpg.Connection) -> None:
        self._pool = pool
        self._conn = conn

    def transaction(self) -> Any:
        return self._conn.transaction()

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._pool.check(sql)
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._pool.check(sql)
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._pool.check(sql)
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._pool.check(sql)
        return await self._conn.execute(sql, *args)


class FaultyPool:
    """The real pool; while `down` every statement fails as a refused connection does, and
    `fault` may fail a chosen statement. `statements` keeps what was attempted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down = False
        self.fault: Fault = never
        self.statements: list[str] = []

    def check(self, sql: str) -> None:
        self.statements.append(sql)
        if self.down:
            raise ConnectionRefusedError("database down")
        if (error := self.fault(sql)) is not None:
            raise error

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Connection]:
        self.check("-- acquire")
        async with self.pool.acquire() as conn:
            yield _Connection(self, conn)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.check(sql)
        return await self.pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.check(sql)
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.check(sql)
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self.check(sql)
        return await self.pool.execute(sql, *args)

    def ran(self, prefix: str) -> int:
        return sum(1 for s in self.statements if s.startswith(prefix))


def once(error: BaseException, when: Callable[[str], bool]) -> Fault:
    """A fault that raises `error` the first time `when` holds, never again."""
    spent = False

    def fault(what: str) -> BaseException | None:
        nonlocal spent
        if not spent and when(what):
            spent = True
            return error
        return None

    return fault


@dataclass
class Worker:
    """One `Join` as the agent runs it, with a dict for its table."""

    join: Join
    table: dict[str, Any]
    publisher: Publisher
    sent: Sent
    database: FaultyPool
    group: str

    async def handle(self, record: Record) -> bool:
        return await self.join.process(
            self.table,
            topic=record.topic,
            partition=record.partition,
            key=record.key,
            value=record.value,
            headers=record.headers,
            offset=record.offset,
        )


def worker(db: asyncpg.Pool, *, s3: Any = None, http: Any = None, **settings: Any) -> Worker:
    group = f"test-join-{uuid.uuid4()}"
    config = TranscriptSyncSettings(faust_app_id=group, **({"gladia_api_key": None} | settings))
    publisher, sent, database = Publisher(), Sent(), FaultyPool(db)
    resources = Resources.given(
        config, publisher=publisher, pool=database, send=sent, s3=s3, http=http, sources=None
    )
    join = Join(
        config,
        resources,
        parking=PostgresParking(cast(asyncpg.Pool, database)),
        retry=QUICK_RETRY,
        outage=QUICK_OUTAGE,
    )
    return Worker(join, {}, publisher, sent, database, group)


@dataclass(frozen=True)
class Meeting:
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bot_id: str


async def scheduled_meeting(db: asyncpg.Pool, source: str = "notetaker") -> Meeting:
    """A meeting on the calendar whose bot the scheduler deployed (`fathom`: a Fathom row)."""
    org, user, bot_id = uuid.uuid4(), uuid.uuid4(), str(uuid.uuid4())
    meeting_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
        " bot_id) VALUES ($1, $2, 'join', $3, 'https://meet.google.com/x', $4, $5) RETURNING id",
        org,
        user,
        datetime.now(UTC),
        source,
        bot_id,
    )
    return Meeting(meeting_id, org, user, bot_id)


def transcript(meeting: Meeting, *texts: str) -> TranscriptReady:
    """The provider's transcript, inline (nothing to fetch)."""
    return TranscriptReady(
        bot_id=meeting.bot_id,
        provider="meetingbaas",
        utterances=[
            Utterance(speaker="Ada", start=i, end=i + 1, text=t)
            for i, t in enumerate(texts or ("hello",))
        ],
    )


def uploaded(meeting: Meeting, provider_transcript: bool = True) -> RecordingUploaded:
    recording_id = uuid.uuid4()
    return RecordingUploaded(
        bot_id=meeting.bot_id,
        recording_id=recording_id,
        org_id=meeting.org_id,
        user_id=meeting.user_id,
        bucket="recordings",
        video_key=recording_key(meeting.org_id, meeting.user_id, recording_id, "video", "mp4"),
        audio_key=recording_key(meeting.org_id, meeting.user_id, recording_id, "audio", "flac"),
        size_bytes=1000,
        checksum="c",
        provider_transcript=provider_transcript,
    )


def thumbnail_generated(upload: RecordingUploaded) -> ThumbnailGenerated:
    """The thumbnail the uploader makes of `upload`, under the recording's prefix."""
    key = recording_key(upload.org_id, upload.user_id, upload.recording_id, "thumbnail", "jpg")
    return ThumbnailGenerated(
        bot_id=upload.bot_id,
        recording_id=upload.recording_id,
        bucket=upload.bucket,
        thumbnail_key=key,
        width=320,
        height=180,
        size_bytes=100,
    )


async def parked_rows(db: asyncpg.Pool, group: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM parked_events WHERE consumer_group = $1 ORDER BY parked_at", group
    )
    return [dict(r) for r in rows]


async def make_parked_due(db: asyncpg.Pool, group: str) -> None:
    """Bring the group's parked events' next attempt to now (instead of waiting 30 s)."""
    await db.execute(
        "UPDATE parked_events SET next_attempt_at = now() WHERE consumer_group = $1", group
    )


async def forget_group(db: asyncpg.Pool, group: str) -> None:
    await db.execute("DELETE FROM parked_events WHERE consumer_group = $1", group)
