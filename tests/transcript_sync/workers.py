"""Real transcript-sync processes for the tests that need the whole worker (Faust, its consumer
group, its web endpoints): each in a consumer group of its own that starts where the topics end
now, so it handles what its test publishes and nothing of the run's history."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from notetaker.common.events import Event
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from notetaker.transcript_sync.app import SOURCE_TOPICS
from tests.transcript_sync.fakes import Meeting

DEAD_LETTERED = "notetaker_consumer_events_dead_lettered_total"


async def catch_up(stack: Stack, group: str) -> None:
    """Commit the end of every topic the join reads as `group`'s position. An empty partition
    gets no commit (its beginning is its end): the worker seeks such partitions to their
    beginning when its recovery ends, as a new deployment's worker does."""
    count = stack.settings().kafka_topic_partitions
    partitions = [TopicPartition(t, p) for t in SOURCE_TOPICS for p in range(count)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        written = {tp: end for tp, end in ends.items() if end > 0}
        if written:
            await consumer.commit(written)
    finally:
        await consumer.stop()


def worker_process(stack: Stack, logdir: Path, group: str, name: str, **env: str) -> ServiceProcess:
    port = free_port()
    values = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "NOTETAKER_LOG_FORMAT": "json",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_FAUST_APP_ID": group,
        "NOTETAKER_FAUST_DATA_DIR": str(logdir / f"faust-{name}"),
        **env,
    }
    return ServiceProcess("transcript_sync", values, port, logdir / f"{name}.log")


async def new_group(stack: Stack) -> str:
    group = f"test-transcript-sync-{uuid.uuid4().hex[:12]}"
    await catch_up(stack, group)
    return group


async def readiness(process: ServiceProcess) -> tuple[int, dict[str, Any]] | None:
    """/readyz's status and body, or None while the worker does not answer yet."""
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            answer = await http.get(f"{process.url}/readyz")
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.json()


async def dead_lettered(process: ServiceProcess, group: str, topic: str) -> float:
    """The worker's dead-letter count for `topic` under its group, scraped from /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{process.url}/metrics")).text
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == DEAD_LETTERED and sample.labels == {"group": group, "topic": topic}
    ]
    assert len(values) == 1, f"no dead-letter series for {group} and {topic}"
    return values[0]


class Publisher:
    """Publishes catalog events as the upstream services do."""

    def __init__(self, stack: Stack) -> None:
        self._publisher = EventPublisher(stack.settings(service_name="ingest"))

    async def __aenter__(self) -> Publisher:
        await self._publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.stop()

    async def publish(self, event: Event) -> None:
        await self._publisher.publish(event)


async def without_transcript(db: asyncpg.Pool, meetings: list[Meeting]) -> list[Meeting]:
    """The meetings whose transcript is not in their row yet."""
    rows = await db.fetch(
        "SELECT id FROM meetings WHERE id = ANY($1::uuid[]) AND transcript_text IS NULL",
        [m.id for m in meetings],
    )
    missing = {r["id"] for r in rows}
    return [m for m in meetings if m.id in missing]


async def stop(process: ServiceProcess) -> None:
    await asyncio.to_thread(process.stop)
