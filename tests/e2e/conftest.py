"""The whole pipeline for end-to-end tests: five service processes plus the provider simulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from notetaker.common.envelope import Envelope, from_message
from notetaker.devstack.pipeline import Pipeline, start_pipeline
from notetaker.devstack.stack import Stack


# Package scope: the pipeline's consumers stop before other packages start their own workers.
@pytest.fixture(scope="package")
async def pipeline(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    running = await start_pipeline(
        stack,
        Path(tmp_path_factory.mktemp("services")),
        per_service_env={
            # A join effect that keeps failing (e.g. a Fathom bot) is dead-lettered quickly here.
            "transcript_sync": {"NOTETAKER_EFFECT_ATTEMPTS": "3"},
            "scheduler": {
                "NOTETAKER_GLADIA_POLL_AFTER_SECONDS": "2",
                "NOTETAKER_GLADIA_POLL_EVERY_SECONDS": "1",
            },
        },
    )
    yield running
    await running.stop()


@dataclass(frozen=True)
class Meeting:
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bot_id: str


async def meeting_with_bot(db: asyncpg.Pool, bot_id: str) -> Meeting:
    """A calendar meeting whose bot the scheduler deployed: the meetings and recordings rows."""
    org, user = uuid.uuid4(), uuid.uuid4()
    meeting_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
        " bot_id) VALUES ($1, $2, 'e2e', $3, 'https://meet.google.com/x', 'notetaker', $4)"
        " RETURNING id",
        org,
        user,
        datetime.now(UTC),
        bot_id,
    )
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id) VALUES ($1, $2, $3, $4)",
        org,
        user,
        meeting_id,
        bot_id,
    )
    return Meeting(meeting_id, org, user, bot_id)


async def events_for(stack: Stack, topic: str, bot_id: str) -> list[Envelope]:
    """Every event about `bot_id` on `topic`, read from the start (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Envelope] = []

        async def behind() -> bool:
            for tp in partitions:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key == bot_id.encode():
                        found.append(from_message(record.headers, record.key, record.value))
        return found
    finally:
        await consumer.stop()
