"""`meeting.synced` through the outbox, against the real stack (transcripts only: nothing here
asks for a thumbnail, which a later thumbnailer would try to make): published once per change of the
meetings row, also when its first publish failed after the row was updated (the retry finds no
change to make and still publishes it), and by the sweep when no retry comes; a crash between
Kafka's acknowledgement and the mark publishes the same record again, same event id. And the
connections open all at once or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from notetaker.common.envelope import from_message
from notetaker.common.events import MeetingSynced
from notetaker.common.kafka import EventPublisher
from notetaker.common.parking import PostgresParking
from notetaker.common.settings import NotetakerSettings
from notetaker.devstack.stack import Stack, free_port
from notetaker.transcript_sync import resources as resources_module
from notetaker.transcript_sync.app import Join
from notetaker.transcript_sync.resources import DependencyUnavailable, Resources
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from tests.conftest import KafkaRecord, records_up_to_marker
from tests.transcript_sync.fakes import (
    QUICK_OUTAGE,
    QUICK_RETRY,
    FaultyPool,
    Record,
    forget_group,
    make_parked_due,
    once,
    parked_rows,
    scheduled_meeting,
    transcript,
)


def join_settings(stack: Stack, **overrides: Any) -> TranscriptSyncSettings:
    base = stack.settings()
    values = {name: getattr(base, name) for name in NotetakerSettings.model_fields}
    return TranscriptSyncSettings(**(values | {"gladia_api_key": None} | overrides))


@pytest.fixture
async def join(stack: Stack, db: asyncpg.Pool) -> AsyncIterator[Join]:
    """A join whose connections are the real ones (Kafka, PostgreSQL, S3)."""
    settings = join_settings(stack, faust_app_id=f"test-outbox-{free_port()}")
    resources = Resources(settings)
    await resources.open()
    running = Join(
        settings,
        resources,
        parking=PostgresParking(db),
        retry=QUICK_RETRY,
        outage=QUICK_OUTAGE,
    )
    yield running
    await resources.close()
    await forget_group(db, running.group)


def refusing_once(join: Join, topic: str) -> None:
    """Kafka refuses the first record the join sends to `topic` (an error nobody foresaw)."""
    send = join.resources.send
    error: BaseException = kafka_errors.KafkaError("refused")
    fault = once(error, lambda t: t == topic)

    async def refusing(
        t: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if (failure := fault(t)) is not None:
            raise failure
        await send(t, key, value, headers)

    join.resources.send = refusing


async def handle(join: Join, record: Record) -> bool:
    return await join.process(
        {},
        topic=record.topic,
        partition=record.partition,
        key=record.key,
        value=record.value,
        headers=record.headers,
        offset=record.offset,
    )


async def synced(stack: Stack, bot_id: str) -> list[KafkaRecord]:
    return await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, "meeting.synced", bot_id
    )


async def unsent(db: asyncpg.Pool, bot_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE key = $1 AND sent_at IS NULL", bot_id.encode()
    )
    return count


async def test_meeting_synced_is_published_once_when_its_first_publish_failed(
    join: Join, stack: Stack, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    record = Record.of(transcript(meeting))
    refusing_once(join, "meeting.synced")  # after the row was updated

    assert await handle(join, record)  # the effect's retry found the row written, and published
    assert await handle(join, record)  # and the event again changes nothing

    (published,) = await synced(stack, meeting.bot_id)
    event = from_message(published.headers, published.key, published.value).event
    assert isinstance(event, MeetingSynced)
    assert (event.meeting_id, event.has_video, event.has_transcript) == (meeting.id, False, True)
    assert await unsent(db, meeting.bot_id) == 0


async def test_a_change_whose_event_was_parked_is_announced_by_the_sweep_once(
    join: Join, stack: Stack, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    record = Record.of(transcript(meeting))
    send = join.resources.send
    refused: BaseException = kafka_errors.KafkaError("refused")

    async def refusing(
        topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if topic == "meeting.synced":
            raise refused
        await send(topic, key, value, headers)

    join.resources.send = refusing
    assert await handle(join, record)
    assert len(await parked_rows(db, join.group)) == 1
    assert await unsent(db, meeting.bot_id) == 1
    assert await synced(stack, meeting.bot_id) == []

    join.resources.send = send
    await db.execute(
        "UPDATE event_outbox SET created_at = created_at - interval '1 minute' WHERE key = $1",
        meeting.bot_id.encode(),
    )
    assert await join.sweep_outbox() >= 1
    await make_parked_due(db, join.group)
    assert await join.republish_parked() == 1  # the parked event comes back ...
    assert await handle(join, record)  # ... and applies, with nothing left to announce

    assert len(await synced(stack, meeting.bot_id)) == 1
    assert await unsent(db, meeting.bot_id) == 0


async def test_a_crash_between_kafka_and_the_mark_sends_the_same_event_again(
    join: Join, stack: Stack, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    record = Record.of(transcript(meeting))
    database = FaultyPool(join.resources.pool)
    database.fault = once(
        ConnectionResetError("connection lost"), lambda sql: sql.startswith("UPDATE event_outbox")
    )
    join.resources.pool = database

    assert await handle(join, record)  # published, the mark lost: published again on the retry

    first, second = await synced(stack, meeting.bot_id)
    assert (first.value, dict(first.headers)["ce_id"]) == (
        second.value,
        dict(second.headers)["ce_id"],
    )  # a duplicate consumers drop by event id
    assert await unsent(db, meeting.bot_id) == 0


async def test_the_connections_open_all_or_none(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[EventPublisher] = []

    class Kept(EventPublisher):
        async def start(self) -> None:
            started.append(self)
            await super().start()

    monkeypatch.setattr(resources_module, "EventPublisher", Kept)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/notetaker"
    resources = Resources(join_settings(stack, database_url=nowhere))

    for _ in range(3):  # as the outage is waited out
        with pytest.raises(DependencyUnavailable, match="cannot open the connections"):
            await resources.open()
    assert not resources.opened
    assert len(started) == 3
    assert all(p.producer._closed for p in started)  # none left behind

    working = Resources(join_settings(stack))
    await working.open()
    assert working.opened
    await working.close()
    assert all(p.producer._closed for p in started)
