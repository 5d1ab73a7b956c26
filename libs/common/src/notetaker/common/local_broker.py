"""A Kafka broker in memory, for testing consumers without one (in the spirit of arroyo's
`LocalBroker` and FastStream's `TestKafkaBroker`): topics of partitions, consumer groups'
committed offsets, pause/resume, revocation, and dead letters that can be made to fail.

Only what `notetaker.common.consumer` uses is here; records are aiokafka `ConsumerRecord`s, so
a handler sees exactly what it sees in production.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata

from notetaker.common.envelope import to_message
from notetaker.common.events import (
    Event,
    dead_letter_headers,
    dlq_topic,
)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass
class LocalBroker:
    partitions: int = 1
    topics: dict[str, list[list[Record]]] = field(default_factory=dict)
    committed: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    dead_letters_down: bool = False  # while True, every dead-letter publish fails (Kafka down)
    dead_letter_groups: list[str | None] = field(default_factory=list)  # who gave up, in order

    def _log(self, topic: str) -> list[list[Record]]:
        return self.topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Record:
        log = self._log(topic)
        if partition is None:
            partition = zlib.crc32(key or b"") % self.partitions
        record: Record = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log[partition]),
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            headers=tuple(headers),
        )
        log[partition].append(record)
        return record

    def publish(self, event: Event, source: str = "/notetaker/tests") -> Record:
        """A catalog event, encoded as the services encode it, on its topic."""
        message = to_message(event, source)
        key = message.key if isinstance(message.key, bytes) else None
        return self.produce(event.type, message.value, key, list(message.headers.items()))

    def records(self, topic: str) -> list[Record]:
        return [r for partition in self._log(topic) for r in partition]

    def consumer(self, group: str) -> LocalConsumer:
        return LocalConsumer(self, group)

    def committed_offset(self, group: str, topic: str, partition: int = 0) -> int | None:
        return self.committed.get((group, TopicPartition(topic, partition)))

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
        """What `EventPublisher.dead_letter` does, into this broker."""
        await asyncio.sleep(0)
        if self.dead_letters_down:
            raise KafkaConnectionError("the local broker is down for dead letters")
        self.dead_letter_groups.append(group)
        self.produce(
            dlq_topic(topic),
            value or b"",
            key,
            dead_letter_headers(headers, error, offset),
        )


class LocalConsumer:
    """One member of a consumer group: it is assigned every partition of its topics."""

    def __init__(self, broker: LocalBroker, group: str) -> None:
        self.broker = broker
        self.group = group
        self.topics: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._position: dict[TopicPartition, int] = {}
        self.pauses = 0  # how often `pause` was called with partitions (backpressure, outages)
        self.failing_commits = 0  # the next this many commits fail (as after a lost partition)
        self.failing_starts = 0  # the next this many starts fail (Kafka unreachable)
        self.subscribes = 0
        self.stops = 0

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.subscribes += 1
        self.topics = list(topics)
        self.listener = listener

    async def start(self) -> None:
        if self.failing_starts:
            self.failing_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap from the local broker")
        assigned = {
            TopicPartition(topic, p) for topic in self.topics for p in range(self.broker.partitions)
        }
        for tp in assigned:
            self.broker._log(tp.topic)
            self._position[tp] = self.broker.committed.get((self.group, tp), 0)
        self._assigned = assigned
        if self.listener is not None:
            await self.listener.on_partitions_assigned(assigned)

    async def stop(self) -> None:
        self.stops += 1
        self._assigned = set()

    async def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Take `partitions` away, as a rebalance does: the listener drains them first."""
        revoked = set(partitions) & self._assigned
        if self.listener is not None:
            await self.listener.on_partitions_revoked(revoked)
        self._assigned -= revoked

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        if partitions:
            self.pauses += 1
        self._paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused -= set(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        budget = max_records if max_records is not None else 1 << 30
        batch: dict[TopicPartition, list[Record]] = {}
        for tp in sorted(self._assigned - self._paused):
            log = self.broker._log(tp.topic)[tp.partition]
            start = self._position[tp]
            taken = log[start : start + budget]
            if taken:
                batch[tp] = taken
                self._position[tp] = start + len(taken)
                budget -= len(taken)
        if not batch:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return batch

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self.failing_commits:
            self.failing_commits -= 1
            raise CommitFailedError("the group rebalanced")
        for tp, meta in offsets.items():
            self.broker.committed[(self.group, tp)] = meta.offset
