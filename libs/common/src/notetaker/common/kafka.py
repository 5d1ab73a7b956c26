"""Kafka for every service: topic creation (with explicit retention) and the publisher.

The consumer loop, with its failure policy, is `notetaker.common.consumer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from notetaker.common.envelope import to_message
from notetaker.common.events import (
    REPLAYED_FROM_HEADER,
    TOPICS,
    Event,
    dead_letter_headers,
    dlq_topic,
    is_dlq_topic,
)
from notetaker.common.logs import get_logger
from notetaker.common.metrics import CONSUMER_DLQ
from notetaker.common.runtime import until_reachable
from notetaker.common.settings import NotetakerSettings

log = get_logger(__name__)


RETENTION_CONFIG = "retention.ms"
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def topic_configs(settings: NotetakerSettings, topic: str) -> dict[str, str]:
    """Configs a topic is created with: its retention, longer for dead letters (kept until an
    operator has had time to fix the cause and replay them, `notetaker dead-letters replay`)."""
    retention = (
        settings.kafka_dead_letter_retention_ms
        if is_dlq_topic(topic)
        else settings.kafka_event_retention_ms
    )
    return {RETENTION_CONFIG: str(retention)}


async def ensure_topics(settings: NotetakerSettings, topics: Iterable[str] = TOPICS) -> None:
    """Create each topic and its dead-letter topic if missing (same partition count for all),
    with its `retention.ms` from the settings, passed in CreateTopics (Tansu and Kafka take it).

    A topic that exists already is left as it is: one whose retention differs from the settings
    is logged (`kafka.topic_retention_differs`) for an operator to change, never altered here
    (lowering a retention deletes records; Tansu has no AlterConfigs at all). A creation the
    broker refuses (bad config, policy, too few brokers) raises.
    """
    wanted = [t for topic in topics for t in (topic, dlq_topic(topic))]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        for name in missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_replication_factor,
                        topic_configs=topic_configs(settings, name),
                    )
                ]
            )
            for topic, code, *message in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):  # another process may have won
                    error = for_code(code)
                    raise error(f"cannot create topic {topic}: {message[0] if message else ''}")
        if missing:
            log.info("kafka.topics_created", topics=missing)
        await _check_retention(admin, settings, [t for t in wanted if t in existing])
    finally:
        await admin.close()


async def _check_retention(
    admin: AIOKafkaAdminClient, settings: NotetakerSettings, topics: list[str]
) -> None:
    """Log each existing topic whose retention.ms is not the one the settings give."""
    if not topics:
        return
    try:
        # Every config of each topic: Tansu 0.6 drops the connection when asked for some by name.
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    except (KafkaError, OSError) as exc:
        log.warning("kafka.topic_retention_unchecked", error=repr(exc))
        return
    for response in responses:
        for code, _message, _type, topic, entries, *_ in response.resources:
            if code != 0:
                continue
            actual = next((e[1] for e in entries if e[0] == RETENTION_CONFIG), None)
            expected = topic_configs(settings, topic)[RETENTION_CONFIG]
            if actual != expected:
                log.warning(
                    "kafka.topic_retention_differs",
                    topic=topic,
                    retention_ms=actual,
                    expected_retention_ms=expected,
                    fix=(
                        f"kafka-configs.sh --alter --entity-type topics --entity-name {topic}"
                        f" --add-config {RETENTION_CONFIG}={expected}"
                    ),
                )


def create_producer(settings: NotetakerSettings) -> AIOKafkaProducer:
    # acks=all explicitly: aiokafka defaults to acks=1. Idempotence is a setting because the
    # local Tansu broker refuses it; consumers are idempotent either way.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        linger_ms=1,
        request_timeout_ms=10_000,
        client_id=settings.service_name,
    )


class EventPublisher:
    """Publishes catalog events as CloudEvents; `publish` returns once Kafka has acknowledged."""

    def __init__(self, settings: NotetakerSettings) -> None:
        self.settings = settings
        self.service_name = settings.service_name
        self.source = f"/notetaker/{settings.service_name}"
        self.producer = create_producer(settings)

    async def start(self) -> None:
        """Start the producer, waiting while Kafka is unreachable (`runtime.until_reachable`: no
        bound; cancel to give up). Each try is a fresh producer: a failed one is stopped."""
        await until_reachable("kafka", self._try_start)

    async def _try_start(self) -> None:
        try:
            await self.producer.start()
        except Exception:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            self.producer = create_producer(self.settings)
            raise

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, event: Event) -> None:
        message = to_message(event, self.source)
        await self.producer.send_and_wait(
            event.type,
            value=message.value,
            key=message.key if isinstance(message.key, bytes) else None,
            headers=list(message.headers.items()),
        )

    async def publish_all(
        self, events: Iterable[Event], *, replayed_from: str | None = None
    ) -> None:
        """Send a batch concurrently and wait for every acknowledgement. `replayed_from` marks
        each record as a replay (`notetaker_replayed_from`: where it comes from)."""
        futures = []
        for event in events:
            message = to_message(event, self.source)
            headers = list(message.headers.items())
            if replayed_from is not None:
                headers.append((REPLAYED_FROM_HEADER, replayed_from.encode()))
            futures.append(
                await self.producer.send(
                    event.type,
                    value=message.value,
                    key=message.key if isinstance(message.key, bytes) else None,
                    headers=headers,
                )
            )
        await asyncio.gather(*futures)

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
        """Park a record on `<topic>.dlq` with the error, to be inspected and replayed
        (`notetaker dead-letters`), and count it for the dead-letter alert under `group` (the
        consumer group that gave up on it; default: this service's name)."""
        await self.producer.send_and_wait(
            dlq_topic(topic),
            value=value,
            key=key,
            headers=dead_letter_headers(headers, error, offset),
        )
        CONSUMER_DLQ.labels(group or self.service_name, topic).inc()
        log.warning("event.dead_lettered", topic=topic, offset=offset, error=error[:500])
