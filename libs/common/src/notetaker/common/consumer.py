"""The consumer loop every aiokafka service runs (the uploader, the thumbnailer, the metrics
recorder), with the one failure policy of `notetaker.common.failures`.

What it promises:
- **Nothing lost.** An offset is committed only once the event's effect is durable, or its dead
  letter is acknowledged by Kafka, or it is parked in the database. The commit point of a
  partition is its lowest unfinished offset, so an event that is still running holds back the
  commit of every later one.
- **Nothing dead-lettered for an outage.** A permanent error dead-letters the event at once; an
  outage of our own dependencies (database, Kafka, S3) pauses every partition, reports not-ready
  and retries the event until the dependency is back; any other error is retried with jittered
  backoff up to a bound, then the event is parked and retried from the database, so one bot
  never holds up its partition.
- **Order per bot, bounded concurrency.** Events with the same key (the bot id) are handled in
  their order; events of different bots run concurrently, at most `max_in_flight` at once (the
  partitions are paused while that many run, never an unbounded queue).
- **Drain on revoke.** Partitions being taken away finish (or give up) their events and commit
  what finished before the next owner starts.

The Kafka consumer is a `Source`: `AIOKafkaConsumer` in the services, `LocalBroker`'s consumer
(`notetaker.common.local_broker`) in tests that need no broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from notetaker.common.envelope import Envelope, EnvelopeError, from_message
from notetaker.common.failures import Kind, OutagePolicy, RetryPolicy, attempts, classify
from notetaker.common.logs import get_logger
from notetaker.common.metrics import CONSUMER_DLQ, CONSUMER_HANDLED
from notetaker.common.parking import (
    PARKED,
    PARKED_TOTAL,
    Consumed,
    Parked,
    Parking,
    show_waiting,
)
from notetaker.common.runtime import until_reachable
from notetaker.common.settings import NotetakerSettings

log = get_logger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Source(Protocol):
    """What the loop needs of a Kafka consumer (aiokafka's `AIOKafkaConsumer` has it all)."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]: ...
    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class DeadLetters(Protocol):
    """Where an event that can never succeed goes (`EventPublisher.dead_letter`)."""

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
    ) -> None: ...


async def dead_letter(
    dead_letters: DeadLetters, record: Consumed, *, error: str, group: str
) -> None:
    """Send `record` as it was consumed to its topic's dead letters, given up by `group`."""
    await dead_letters.dead_letter(
        topic=record.topic,
        key=record.key,
        value=record.value,
        headers=record.headers,
        offset=record.offset,
        error=error,
        group=group,
    )


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


def kafka_source(settings: NotetakerSettings, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        client_id=f"{settings.service_name}-{group_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=1_000,
    )


class EventConsumer:
    """Runs `handler` for every event on `topics` in consumer group `group_id`."""

    def __init__(
        self,
        settings: NotetakerSettings,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        dead_letters: DeadLetters,
        *,
        parking: Parking,
        max_in_flight: int = 16,
        retry: RetryPolicy | None = None,
        outage: OutagePolicy | None = None,
        source: Source | None = None,
        parked_interval_seconds: float = 5.0,
        drain_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.dead_letters = dead_letters
        self.parking = parking
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.outage = outage or OutagePolicy()
        self.parked_interval_seconds = parked_interval_seconds
        self.drain_seconds = (
            settings.kafka_consumer_drain_seconds if drain_seconds is None else drain_seconds
        )
        self._source = source
        self._source_given = source is not None
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._last_by_key: dict[bytes | None, asyncio.Task[None]] = {}
        self._outages = 0
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    @property
    def in_outage(self) -> bool:
        """A dependency is down: the partitions are paused until it is back."""
        return self._outages > 0

    def is_ready(self) -> bool:
        """Joined the group, and no dependency is down (what /readyz reports)."""
        return self.assigned.is_set() and not self.in_outage

    async def run(self) -> None:
        for topic in self.topics:
            # Series exist from the start at 0, so the first dead letter or parked event is an
            # increase the alerts see (a counter born at 1 has no increase to Prometheus).
            CONSUMER_DLQ.labels(self.group_id, topic)
            PARKED.labels(self.group_id, topic)
            PARKED_TOTAL.labels(self.group_id, topic)
        # A consumer started while Kafka is unreachable waits for it (stopping ends the wait).
        source = await until_reachable("kafka", self._start_source, self._stopping)
        if source is None:
            return
        log.info("consumer.started", group=self.group_id, topics=self.topics)
        parked = asyncio.create_task(self._retry_parked())
        try:
            while not self._stopping.is_set():
                await self._poll_once(source)
        finally:
            parked.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await parked
            await self._drain(list(self._tasks))
            await source.stop()
            log.info("consumer.stopped", group=self.group_id)

    def stop(self) -> None:
        self._stopping.set()

    async def _start_source(self) -> Source:
        """Subscribe and start the source; one that fails to start is stopped, and the next try
        gets a fresh one (unless the source was given: tests)."""
        given = self._source_given
        source = (
            self._source if given and self._source else kafka_source(self.settings, self.group_id)
        )
        self._source = source
        source.subscribe(self.topics, listener=_Rebalance(self))
        try:
            await source.start()
        except Exception:
            with contextlib.suppress(Exception):
                await source.stop()
            if not given:
                self._source = None
            raise
        return source

    async def _poll_once(self, source: Source) -> None:
        assignment = source.assignment()
        if assignment:
            self.assigned.set()
        if self.in_outage or self.in_flight >= self.max_in_flight:
            # An outage, or backpressure: fetch nothing until it ends; the loop keeps running
            # so the group membership (heartbeats, rebalances) stays healthy.
            source.pause(*assignment)
            await asyncio.sleep(0.05)
        else:
            source.resume(*source.paused())
            free = self.max_in_flight - self.in_flight
            batch = await source.getmany(timeout_ms=200, max_records=free)
            for tp, records in batch.items():
                for record in records:
                    self._start(tp, record)
        await self._commit(source)

    def _start(self, tp: TopicPartition, record: Record) -> None:
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
        self, tp: TopicPartition, record: Record, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # events about one bot are handled in their order
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        await self._handle(record)
        # Only now is the event settled (handled, dead-lettered or parked): a task cancelled
        # or failed before this line leaves its offset pending, never committed.
        progress = self._progress.get(tp)
        if progress is not None:
            progress.pending.discard(record.offset)
            progress.done.add(record.offset)

    async def _handle(self, record: Record) -> None:
        context = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            envelope = from_message(record.headers, record.key, record.value or b"")
        except EnvelopeError as exc:
            log.error("consumer.unparseable_event", error=str(exc), **context)
            await self._dead_letter(record, f"unparseable: {exc}")
            return
        context |= {"event_id": envelope.id, "bot_id": envelope.event.bot_id}
        try:
            async for attempt in attempts(self.retry):
                with attempt:
                    await self.handler(envelope)
        except Exception as exc:
            await self._settle(record, envelope, exc, context)
            return
        CONSUMER_HANDLED.labels(self.group_id, record.topic).inc()

    async def _settle(
        self, record: Record, envelope: Envelope, exc: Exception, context: dict[str, Any]
    ) -> None:
        """After the policy's retries: dead-letter, wait out an outage, or park."""
        kind = classify(exc)
        if kind is Kind.OUTAGE:
            after = await self._wait_out(envelope, exc, context)
            if after is None:
                CONSUMER_HANDLED.labels(self.group_id, record.topic).inc()
                return
            exc, kind = after, classify(after)
        if kind is Kind.PERMANENT:
            log.error("consumer.event_refused", error=repr(exc), **context)
            await self._dead_letter(record, f"permanent: {exc!r}")
            return
        log.warning("consumer.event_parked", error=repr(exc), **context)
        await self._park(record, f"transient: {exc!r}")

    async def _wait_out(
        self, envelope: Envelope, first: Exception, context: dict[str, Any]
    ) -> Exception | None:
        """Retry while a dependency is down, with the partitions paused; the error that ended
        the outage without success (not an outage), or None once handled."""
        self._outages += 1
        log.warning("consumer.outage", group=self.group_id, error=repr(first), **context)
        try:
            async for attempt in attempts(self.outage):
                with attempt:
                    await self.handler(envelope)
        except Exception as exc:
            return exc
        finally:
            self._outages -= 1
            log.info("consumer.outage_over", group=self.group_id, **context)
        return None

    async def _dead_letter(self, record: Record, error: str) -> None:
        """Dead-letter `record`, waiting out a Kafka outage: it is settled only once acked."""
        async for attempt in attempts(self.outage):
            with attempt:
                await dead_letter(self.dead_letters, record, error=error, group=self.group_id)

    async def _park(self, record: Record, error: str) -> None:
        parked = Parked.of(record, group=self.group_id, error=error)
        async for attempt in attempts(self.outage):
            with attempt:
                await self.parking.park(parked)

    async def _retry_parked(self) -> None:
        """Retry this group's parked events when they are due, one try each per round."""
        while True:
            try:
                await self._retry_parked_once(self.parking)
            except Exception as exc:  # the database down: try again next round
                log.warning("consumer.parked_unavailable", group=self.group_id, error=repr(exc))
            await asyncio.sleep(self.parked_interval_seconds)

    async def _retry_parked_once(self, parking: Parking) -> None:
        for event in await parking.claim(self.group_id, self.topics, self.max_in_flight):
            record_context = {"topic": event.topic, "offset": event.offset}
            try:
                envelope = from_message(event.headers, event.key, event.value)
                await self.handler(envelope)
            except Exception as exc:
                kind = classify(exc)
                if kind is Kind.PERMANENT:
                    await dead_letter(
                        self.dead_letters, event, error=f"permanent: {exc!r}", group=self.group_id
                    )
                    await parking.done(event)
                else:
                    await parking.failed_again(
                        event, f"{kind.value}: {exc!r}", count=kind is not Kind.OUTAGE
                    )
                    log.warning(
                        "consumer.parked_retry_failed",
                        error=repr(exc),
                        attempts=event.attempts,
                        **record_context,
                    )
                continue
            await parking.done(event)
            CONSUMER_HANDLED.labels(self.group_id, event.topic).inc()
            log.info("consumer.parked_event_handled", attempts=event.attempts, **record_context)
        await show_waiting(parking, self.group_id, self.topics)

    async def _commit(self, source: Source) -> None:
        offsets = dict(self._uncommitted)  # what a failed commit left, unless moved on since
        for tp, progress in self._progress.items():
            point = progress.commit_point()
            if point is not None:
                offsets[tp] = OffsetAndMetadata(point, "")
        if not offsets:
            return
        try:
            await source.commit(offsets)
        except KafkaError as exc:
            # Tried again with the next commit. A partition lost in a rebalance is dropped from
            # it at the revoke: its new owner re-handles from the last commit, which is safe
            # because every effect is idempotent.
            self._uncommitted = offsets
            log.warning("consumer.commit_failed", error=repr(exc), group=self.group_id)
            return
        self._uncommitted = {}

    async def _drain(self, partitions: list[TopicPartition]) -> None:
        """Let the events of `partitions` finish (for at most `drain_seconds`), commit what
        finished, and stop what did not (its offset stays uncommitted: the next owner redoes
        it)."""
        tasks = [t for tp in partitions for t in self._tasks.get(tp, set())]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.drain_seconds)
            for task in late:
                task.cancel()
        if self._source is not None:
            await self._commit(self._source)
        for tp in partitions:
            self._tasks.pop(tp, None)
            self._progress.pop(tp, None)
            self._uncommitted.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish (or give up on) work for partitions we are losing and commit it, so the next
        # owner starts right after what we completed.
        await self.owner._drain(list(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("consumer.assigned", group=self.owner.group_id, partitions=len(assigned))
