"""The worker as it runs: a transcript-sync process in a consumer group of its own.

Events published while it starts (before, during and after its recovery) are all handled, and
/readyz answers 200 only once events published then are read; a poison record is dead-lettered
once and counted under the worker's group in its /metrics. (How Faust used to drop events read
as the recovery ended is pinned down in test_transport.py: this start does not always hit it.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from confluent_kafka import Producer

from notetaker.common.events import dlq_topic
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack
from tests.conftest import eventually, records_up_to_marker
from tests.transcript_sync.fakes import Meeting, scheduled_meeting, transcript
from tests.transcript_sync.workers import (
    Publisher,
    dead_lettered,
    new_group,
    readiness,
    stop,
    without_transcript,
    worker_process,
)


@dataclass
class Started:
    process: ServiceProcess
    group: str
    meetings: list[Meeting]  # their transcripts published while it started, and right after


@pytest.fixture(scope="module")
async def started(
    stack: Stack, db: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Started]:
    """A worker started while transcripts keep coming: one every 0.2 s from the moment its
    process starts until its /readyz answers 200 (six at once when it joins its group, as its
    recovery begins), and three more then."""
    group = await new_group(stack)
    process = worker_process(stack, tmp_path_factory.mktemp("worker"), group, "starting")
    meetings: list[Meeting] = []
    async with Publisher(stack) as publisher:

        async def publish_one() -> None:
            meeting = await scheduled_meeting(db)
            await publisher.publish(transcript(meeting, f"said at startup {len(meetings)}"))
            meetings.append(meeting)

        process.start()
        try:
            burst = False
            for _ in range(300):  # a minute at most
                answer = await readiness(process)
                if answer is not None and answer[0] == 200:
                    break
                if answer is not None and answer[1]["assigned"] and not burst:
                    burst = True
                    for _ in range(5):
                        await publish_one()
                await publish_one()
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"the worker never got ready; log:\n{process.tail()}")
            for _ in range(3):
                await publish_one()
            yield Started(process, group, meetings)
        finally:
            await stop(process)


async def test_every_event_published_while_the_worker_starts_is_handled(
    started: Started, db: asyncpg.Pool
) -> None:
    async def all_written() -> bool:
        return not await without_transcript(db, started.meetings)

    await eventually(all_written, 60, "every transcript published during the start")
    _, body = await readiness_of(started)
    assert body == {
        "ready": True,
        "assigned": True,
        "recovered": True,
        "connections": True,
        "outage": False,
    }


async def readiness_of(started: Started) -> tuple[int, dict[str, object]]:
    answer = await readiness(started.process)
    assert answer is not None
    return answer


def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0


async def test_a_poison_record_is_dead_lettered_once_and_counted_under_the_group(
    started: Started, stack: Stack
) -> None:
    topic = "transcript.ready"
    before = await dead_lettered(started.process, started.group, topic)
    key = f"poison-{uuid.uuid4()}".encode()
    await asyncio.to_thread(
        produce, stack.kafka_bootstrap_servers, topic, key, b"\x00 not a CloudEvent"
    )

    async def counted() -> float | None:
        now = await dead_lettered(started.process, started.group, topic)
        return now if now > before else None

    assert await eventually(counted, 60, "the dead letter to be counted") == before + 1
    (dead,) = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, dlq_topic(topic), key.decode()
    )
    assert dead.value == b"\x00 not a CloudEvent"
    assert dict(dead.headers)["notetaker_error"].startswith(b"unparseable: ")
    assert await dead_lettered(started.process, started.group, topic) == before + 1
