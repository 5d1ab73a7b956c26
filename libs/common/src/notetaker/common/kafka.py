"""Kafka for every service: topic creation, one publisher and one consumer loop over aiokafka.

The consumer commits an offset only after the handler's effect is durable, runs handlers for
different bots concurrently (bounded; partitions are paused when full, never an unbounded queue),
keeps the order of events about one bot, and sends what it cannot parse or handle to
`<topic>.dlq` with the error, never dropping it silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.structs import OffsetAndMetadata

from notetaker.common.envelope import Envelope, EnvelopeError, from_message, to_message
from notetaker.common.events import (
    DLQ_ERROR_HEADER,
    DLQ_OFFSET_HEADER,
    TOPICS,
    Event,
    dlq_topic,
    is_dlq_topic,
)
from notetaker.common.logs import get_logger
from notetaker.common.metrics import CONSUMER_DLQ, CONSUMER_HANDLED
from notetaker.common.settings import NotetakerSettings

log = get_logger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]


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
        self.service_name = settings.service_name
        self.source = f"/notetaker/{settings.service_name}"
        self.producer = create_producer(settings)

    async def start(self) -> None:
        await self.producer.start()

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

    async def publish_all(self, events: Iterable[Event]) -> None:
        """Send a batch concurrently and wait for every acknowledgement."""
        futures = []
        for event in events:
            message = to_message(event, self.source)
            futures.append(
                await self.producer.send(
                    event.type,
                    value=message.value,
                    key=message.key if isinstance(message.key, bytes) else None,
                    headers=list(message.headers.items()),
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
            headers=[
                *headers,
                (DLQ_ERROR_HEADER, error.encode()[:4000]),
                (DLQ_OFFSET_HEADER, str(offset).encode()),
            ],
        )
        CONSUMER_DLQ.labels(group or self.service_name, topic).inc()
        log.warning("event.dead_lettered", topic=topic, offset=offset, error=error[:500])


@dataclass
class _PartitionProgress:
    """Offsets handed out and finished on one partition; the commit point is the lowest gap."""

    pending: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    committed: int = -1

    def commit_point(self) -> int | None:
        """Offset to commit (next to read) if it moved forward, else None."""
        if not self.done:
            return None
        floor = min(self.pending) if self.pending else max(self.done) + 1
        finished = sorted(o for o in self.done if o < floor)
        if not finished:
            return None
        self.done -= set(finished)
        self.committed = finished[-1] + 1
        return self.committed


class EventConsumer:
    """Runs `handler` for every event on `topics` in consumer group `group_id`."""

    def __init__(
        self,
        settings: NotetakerSettings,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        publisher: EventPublisher,
        *,
        max_in_flight: int = 16,
        handler_attempts: int = 5,
        retry_backoff_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.publisher = publisher
        self.max_in_flight = max_in_flight
        self.handler_attempts = handler_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._last_by_key: dict[bytes | None, asyncio.Task[None]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.group_id,
            client_id=f"{self.settings.service_name}-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            rebalance_timeout_ms=5_000,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self._consumer = consumer
        for topic in self.topics:
            # Series exist from the start at 0, so the first dead letter is an increase the
            # alert sees (a counter born at 1 has no increase to Prometheus).
            CONSUMER_DLQ.labels(self.group_id, topic)
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        await consumer.start()
        log.info("consumer.started", group=self.group_id, topics=self.topics)
        try:
            while not self._stopping.is_set():
                await self._poll_once(consumer)
        finally:
            await self._drain(list(self._tasks))
            await consumer.stop()
            log.info("consumer.stopped", group=self.group_id)

    def stop(self) -> None:
        self._stopping.set()

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        free = self.max_in_flight - self.in_flight
        assignment = consumer.assignment()
        if assignment:
            self.ready.set()
        if free <= 0:
            # Backpressure: stop fetching until a handler finishes; the poll loop keeps running
            # so the group membership (heartbeats, rebalances) stays healthy.
            consumer.pause(*assignment)
            await asyncio.sleep(0.05)
        else:
            consumer.resume(*consumer.paused())
            batch = await consumer.getmany(timeout_ms=200, max_records=free)
            for tp, records in batch.items():
                for record in records:
                    self._start(tp, record)
        await self._commit(consumer)

    def _start(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        progress = self._progress.setdefault(tp, _PartitionProgress())
        progress.pending.add(record.offset)
        previous = self._last_by_key.get(record.key)
        task = asyncio.create_task(self._process(tp, record, previous))
        self._tasks.setdefault(tp, set()).add(task)
        self._last_by_key[record.key] = task

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.get(tp, set()).discard(t)
            if self._last_by_key.get(record.key) is t:
                del self._last_by_key[record.key]

        task.add_done_callback(finished)

    async def _process(
        self,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:  # events about one bot are handled in their order
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        try:
            await self._handle(record)
        finally:
            progress = self._progress.get(tp)
            if progress is not None:
                progress.pending.discard(record.offset)
                progress.done.add(record.offset)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        context = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            envelope = from_message(record.headers, record.key, record.value or b"")
        except EnvelopeError as exc:
            log.error("consumer.unparseable_event", error=str(exc), **context)
            await self._dead_letter(record, f"unparseable: {exc}")
            return
        context |= {"event_id": envelope.id, "bot_id": envelope.event.bot_id}
        for attempt in range(1, self.handler_attempts + 1):
            try:
                await self.handler(envelope)
                CONSUMER_HANDLED.labels(self.group_id, record.topic).inc()
                return
            except Exception as exc:
                if attempt == self.handler_attempts:
                    log.exception("consumer.handler_failed", attempts=attempt, **context)
                    await self._dead_letter(record, f"handler failed: {exc!r}")
                    return
                delay = self.retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "consumer.handler_retry",
                    attempt=attempt,
                    retry_in_s=delay,
                    error=repr(exc),
                    **context,
                )
                await asyncio.sleep(delay)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        await self.publisher.dead_letter(
            topic=record.topic,
            key=record.key,
            value=record.value,
            headers=record.headers,
            offset=record.offset,
            error=error,
            group=self.group_id,
        )

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {}
        for tp, progress in self._progress.items():
            point = progress.commit_point()
            if point is not None:
                offsets[tp] = OffsetAndMetadata(point, "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Lost the partition in a rebalance: its new owner re-handles from the last commit,
            # which is safe because every effect is idempotent.
            log.warning("consumer.commit_failed", error=repr(exc), group=self.group_id)

    async def _drain(self, partitions: list[TopicPartition]) -> None:
        tasks = [t for tp in partitions for t in self._tasks.get(tp, set())]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if self._consumer is not None:
            await self._commit(self._consumer)
        for tp in partitions:
            self._tasks.pop(tp, None)
            self._progress.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish (or give up on) work for partitions we are losing and commit it, so the next
        # owner starts right after what we completed.
        await self.owner._drain(list(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("consumer.assigned", group=self.owner.group_id, partitions=len(assigned))
