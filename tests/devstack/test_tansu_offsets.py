"""Why the embedded stack sends transcript-sync's changelog a record a batch.

Faust rebuilds the join's table by reading its changelog up to the end offsets the broker
reports. Tansu counts a batch of several records short in those offsets, so a worker restarted
on it would recover part of the join state; sent a record a batch, the offsets are true. The
stack's environment sets the worker's producer so (`NOTETAKER_FAUST_PRODUCER_MAX_BATCH_BYTES`).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from notetaker.devstack.stack import Stack
from notetaker.transcript_sync.app import create_app
from notetaker.transcript_sync.settings import TranscriptSyncSettings

RECORDS = 200


async def end_offsets_after_writing(stack: Stack, max_batch_size: int) -> int:
    """Write RECORDS records to a new topic as fast as the producer batches them; the sum of
    the end offsets the broker reports then."""
    topic = f"test-offsets-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=max_batch_size,
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, b"state %d" % n, key=b"meeting %d" % n)
            for n in range(RECORDS)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_tansu_reports_true_end_offsets_for_records_sent_one_a_batch(stack: Stack) -> None:
    assert "kafka" in stack.processes  # the embedded broker: this is about Tansu
    assert await end_offsets_after_writing(stack, max_batch_size=1) == RECORDS
    batched = await end_offsets_after_writing(stack, max_batch_size=16384)
    assert batched < RECORDS  # the flaw the setting works around; if Tansu fixes it, drop both


def test_the_stacks_workers_send_their_changelog_a_record_a_batch(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started with the stack's environment, as the stack starts it."""
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    app = create_app(TranscriptSyncSettings())
    assert app.conf.producer_max_batch_size == 1
