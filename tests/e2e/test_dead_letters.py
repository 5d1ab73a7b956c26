"""Dead letters across the running pipeline: a poison record on each consumed topic is
dead-lettered once and counted by the service that gave up on it (scraped from that service's
/metrics); an event dead-lettered for a reason since fixed is replayed with `notetaker
dead-letters replay` and applied once, however often it is replayed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from notetaker.common.envelope import event_id, to_message
from notetaker.common.events import StorageUsage, dlq_topic
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.pipeline import Pipeline
from tests.cli.test_events import cli_env, notetaker
from tests.conftest import eventually, records_up_to_marker

DEAD_LETTERED = "notetaker_consumer_events_dead_lettered_total"

# topic -> the service that consumes it
CONSUMED = {
    "recording.completed": "uploader",
    "thumbnail.requested": "uploader",
    "storage.usage": "metrics",
    "recording.uploaded": "transcript_sync",
}


async def dead_lettered(pipeline: Pipeline, service: str, topic: str) -> float:
    """The service's dead-letter count for `topic`, over its consumer groups."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{pipeline.services.processes[service].url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == DEAD_LETTERED and sample.labels.get("topic") == topic
    )


def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0


@pytest.mark.parametrize("topic", list(CONSUMED))
async def test_a_poison_record_is_dead_lettered_once_and_counted_by_the_service_that_gave_up(
    pipeline: Pipeline, topic: str
) -> None:
    service = CONSUMED[topic]
    before = await dead_lettered(pipeline, service, topic)
    key = f"poison-{uuid.uuid4()}"
    bootstrap = pipeline.stack.kafka_bootstrap_servers
    await asyncio.to_thread(produce, bootstrap, topic, key.encode(), b"\x00 not a CloudEvent")

    async def counted() -> float | None:
        now = await dead_lettered(pipeline, service, topic)
        return now if now > before else None

    assert await eventually(counted, 60, f"{service} to count the dead letter") == before + 1
    dead = await asyncio.to_thread(records_up_to_marker, bootstrap, dlq_topic(topic), key)
    assert len(dead) == 1
    assert dead[0].value == b"\x00 not a CloudEvent"


async def test_a_dead_letter_replayed_after_the_fix_is_applied_once(
    pipeline: Pipeline, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A usage event dead-lettered (as by a metrics release that refused it) is replayed by the
    command, twice: the org's usage counts it once."""
    org = uuid.uuid4()
    event = StorageUsage(
        bot_id=f"replay-{uuid.uuid4()}",
        org_id=org,
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=3 * 1024**3,
        bytes_uploaded=3 * 1024**3,
        put_requests=3,
        occurred_at=datetime.now(UTC),
    )
    message = to_message(event, "/notetaker/metrics")
    publisher = EventPublisher(pipeline.stack.settings(service_name="metrics"))
    await publisher.start()
    try:
        await publisher.dead_letter(
            topic=event.type,
            key=message.key if isinstance(message.key, bytes) else None,
            value=message.value,
            headers=list(message.headers.items()),
            offset=0,
            error="permanent: a pricing rule that has since been fixed",
            group="notetaker-metrics",
        )
    finally:
        await publisher.stop()

    env = cli_env(pipeline.stack.env())

    async def usage() -> Decimal | None:
        value = await db.fetchval(
            "SELECT sum(value) FROM s3_usage_metrics WHERE org_id = $1 AND metric_type ="
            " 'upload_gb'",
            org,
        )
        return Decimal(str(value)) if value is not None else None

    for _ in range(2):
        result = await notetaker(
            env, "dead-letters", "replay", event.type, "--event-id", event_id(event), cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    stored = await eventually(usage, 60, "the replayed usage to be applied")
    assert stored == Decimal(3)
    applied = await db.fetchval(
        "SELECT count(*) FROM usage_events_applied WHERE event_id = $1", event_id(event)
    )
    assert applied == 1
