"""The join under the failure policy, in process: the real `Join.process` against the real
PostgreSQL (behind a pool that can be made to fail) with Kafka kept in lists.

What is checked is what `process` promises the agent: it returns True (the event may be
committed) only once the event is applied, dead-lettered or parked, and False (read it again)
when the worker stops meanwhile; a permanent error is dead-lettered at once under the app's
consumer group, an outage is waited out (not ready meanwhile) and never parks or dead-letters,
a transient error past the bound parks the event, and a parked event goes back on its topic
counting its attempts. The join state of an event that did not apply stays as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from notetaker.common.events import (
    DLQ_ERROR_HEADER,
    MeetingSynced,
    ThumbnailRequested,
)
from notetaker.common.parking import PARKED
from notetaker.transcript_sync.app import ATTEMPTS_HEADER
from tests.conftest import eventually
from tests.transcript_sync.fakes import (
    Record,
    Worker,
    forget_group,
    make_parked_due,
    parked_rows,
    scheduled_meeting,
    uploaded,
    worker,
)


@pytest.fixture
async def join(db: asyncpg.Pool) -> AsyncIterator[Worker]:
    running = worker(db)
    yield running
    await forget_group(db, running.group)


async def video_of(db: asyncpg.Pool, meeting_id: object) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT video_url FROM meetings WHERE id = $1", meeting_id
    )
    return value


def kafka_down() -> BaseException:
    """What aiokafka raises when the broker cannot be reached: an outage."""
    error: BaseException = kafka_errors.KafkaConnectionError("broker unreachable")
    return error


def kafka_refused() -> BaseException:
    """An error of Kafka's nobody foresaw: transient."""
    error: BaseException = kafka_errors.KafkaError("refused")
    return error


def probe(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`condition` as a probe for `eventually`."""

    async def check() -> bool:
        return condition()

    return check


async def test_a_record_that_is_not_an_event_is_dead_lettered_once_under_the_group(
    join: Worker,
) -> None:
    poison = Record("recording.uploaded", b"bot-x", b"not a cloud event", [("x", b"1")], 41)

    assert await join.handle(poison)

    ((letter, group),) = join.publisher.dead_letters
    assert (letter.value, letter.key, letter.offset) == (poison.value, b"bot-x", 41)
    assert group == join.group
    assert letter.header(DLQ_ERROR_HEADER).startswith(b"unparseable: ")
    assert letter.header("x") == b"1"  # the original headers kept
    assert join.table == {}


async def test_an_event_about_a_meeting_that_is_not_ours_is_dead_lettered_without_a_retry(
    join: Worker, db: asyncpg.Pool
) -> None:
    fathom = await scheduled_meeting(db, source="fathom")
    record = Record.of(uploaded(fathom))

    assert await join.handle(record)

    ((letter, group),) = join.publisher.dead_letters
    assert group == join.group
    error = letter.header(DLQ_ERROR_HEADER)
    assert error.startswith(b"permanent: WriteVideo failed: MeetingNotFound")
    assert join.database.ran("UPDATE meetings") == 1  # permanent: never tried twice
    assert await video_of(db, fathom.id) is None
    assert await parked_rows(db, join.group) == []
    assert join.table == {}


async def test_a_database_outage_is_waited_out_not_ready_meanwhile_never_parked(
    join: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    event = uploaded(meeting)
    join.database.down = True

    handling = asyncio.create_task(join.handle(Record.of(event)))
    await eventually(probe(lambda: join.join.in_outage), 10, "the join to wait out the outage")
    assert not join.join.ready()
    tried = len(join.database.statements)
    await eventually(
        probe(lambda: len(join.database.statements) > tried + 2),
        10,
        "the join to try the database again, more than its retry bound",
    )
    assert not handling.done()
    join.database.down = False

    assert await handling
    assert join.join.ready()
    assert await video_of(db, meeting.id) == f"s3://recordings/{event.video_key}"
    assert join.publisher.dead_letters == []
    assert await parked_rows(db, join.group) == []
    assert join.table[meeting.bot_id]["video_key"] == event.video_key


async def test_an_event_waiting_out_an_outage_is_left_unsettled_when_the_worker_stops(
    join: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    join.database.down = True
    handling = asyncio.create_task(join.handle(Record.of(uploaded(meeting))))
    await eventually(probe(lambda: join.join.in_outage), 10, "the outage")

    join.join.interrupted.set()  # what the consumer does when Faust stops the flow

    assert await handling is False  # read again later, never committed
    assert not join.join.in_outage
    assert join.publisher.dead_letters == []
    assert await parked_rows(db, join.group) == []
    assert join.table == {}


async def test_a_dead_letter_kafka_does_not_take_is_retried_until_it_does(
    join: Worker,
) -> None:
    refusals = 3

    def unreachable(what: str) -> BaseException | None:
        nonlocal refusals
        if what.endswith(".dlq") and refusals:
            refusals -= 1
            return kafka_down()
        return None

    join.publisher.fault = unreachable
    poison = Record("transcript.ready", b"bot-y", b"{", [])

    assert await join.handle(poison)

    assert join.publisher.calls.count("transcript.ready.dlq") == 4
    assert len(join.publisher.dead_letters) == 1


async def test_a_dead_letter_that_keeps_failing_leaves_the_event_unsettled(
    join: Worker,
) -> None:
    join.publisher.fault = lambda what: ValueError("too large") if what.endswith(".dlq") else None
    assert await join.handle(Record("transcript.ready", b"bot-z", b"{", [])) is False
    assert join.publisher.dead_letters == []


async def test_a_transient_failure_past_the_bound_parks_the_event_and_it_comes_back_counting(
    join: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    event = uploaded(meeting)
    record = Record.of(event, offset=7)
    failing = True
    join.publisher.fault = lambda topic: (
        kafka_refused() if failing and topic == "thumbnail.requested" else None
    )

    assert await join.handle(record)  # settled: parked

    (row,) = await parked_rows(db, join.group)
    assert (row["topic"], row["offset"], row["attempts"], row["value"]) == (
        "recording.uploaded",
        7,
        1,
        record.value,
    )
    assert row["error"].startswith("transient: RequestThumbnail failed: KafkaError")
    assert join.publisher.calls.count("thumbnail.requested") == 2  # the retry bound
    assert join.table == {}  # not applied: its retry redoes the work
    assert await video_of(db, meeting.id) == f"s3://recordings/{event.video_key}"

    # Due: back on its topic with its key, value and headers, and an attempts header.
    await make_parked_due(db, join.group)
    assert await join.join.republish_parked() == 1
    (back,) = join.sent.on("recording.uploaded")
    assert (back.topic, back.key, back.value) == (record.topic, record.key, record.value)
    assert back.headers == [*record.headers, (ATTEMPTS_HEADER, b"1")]
    assert await parked_rows(db, join.group) == []
    assert PARKED.labels(join.group, "recording.uploaded")._value.get() == 0

    # Still failing: parked again, its attempts counted on.
    assert await join.handle(Record(back.topic, back.key, back.value, back.headers, 9))
    (again,) = await parked_rows(db, join.group)
    assert (again["offset"], again["attempts"]) == (9, 2)
    assert ATTEMPTS_HEADER not in again["header_names"]
    await join.join.republish_parked()  # not due yet: nothing goes back
    assert len(join.sent.on("recording.uploaded")) == 1
    assert PARKED.labels(join.group, "recording.uploaded")._value.get() == 1

    # Fixed: the retry applies it, once.
    failing = False
    await make_parked_due(db, join.group)
    await join.join.republish_parked()
    second = join.sent.on("recording.uploaded")[1]
    assert second.header(ATTEMPTS_HEADER) == b"2"
    assert await join.handle(Record(second.topic, second.key, second.value, second.headers, 11))
    (thumbnail,) = join.publisher.published
    assert isinstance(thumbnail, ThumbnailRequested)
    assert thumbnail.video_key == event.video_key
    assert join.table[meeting.bot_id]["video_key"] == event.video_key
    synced = join.sent.events("meeting.synced")
    assert [type(s) for s in synced] == [MeetingSynced]  # the video's change, announced once
    assert await parked_rows(db, join.group) == []
    assert join.publisher.dead_letters == []


async def test_a_permanent_failure_found_on_a_parked_events_retry_dead_letters_it(
    join: Worker, db: asyncpg.Pool
) -> None:
    meeting = await scheduled_meeting(db)
    record = Record.of(uploaded(meeting))
    join.publisher.fault = lambda topic: kafka_refused() if topic == "thumbnail.requested" else None
    assert await join.handle(record)
    await make_parked_due(db, join.group)
    await join.join.republish_parked()
    (back,) = join.sent.on("recording.uploaded")
    await db.execute("UPDATE meetings SET source = 'fathom' WHERE id = $1", meeting.id)

    assert await join.handle(Record(back.topic, back.key, back.value, back.headers, 3))

    ((letter, group),) = join.publisher.dead_letters
    assert (letter.value, group) == (record.value, join.group)
    assert await parked_rows(db, join.group) == []
