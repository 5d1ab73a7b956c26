"""The parking lot: where a consumer puts an event that keeps failing transiently, so that its
partition moves on, and from where the event is retried until it succeeds.

An event is parked (with its error) only after the failure policy's in-place retries are spent
(`notetaker.common.failures`); its offset is committed once the row is written, never before.
A parked event is claimed by one worker at a time (the claim pushes its next attempt out by a
lease, so a worker that dies mid-retry gives it back), retried with a growing backoff, and
deleted once its effect is durable or it has been dead-lettered. `notetaker_consumer_parked_events`
shows how many wait, per group and topic.

`PostgresParking` is the lot every service uses; `MemoryParking` is the same contract in memory,
for the broker-less consumer tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import asyncpg
from prometheus_client import Counter, Gauge

PARKED = Gauge(
    "notetaker_consumer_parked_events",
    "Events a consumer group parked after its retries were spent and still retries, by topic.",
    ["group", "topic"],
)
PARKED_TOTAL = Counter(
    "notetaker_consumer_events_parked_total",
    "Events a consumer group parked after its retries were spent.",
    ["group", "topic"],
)


class Consumed(Protocol):
    """A consumed record, as any of our consumers holds it (aiokafka's `ConsumerRecord`,
    transcript-sync's `Record`, a `Parked` event)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class Parked:
    """A consumed record and why it is parked."""

    group: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    error: str
    attempts: int = 1

    @classmethod
    def of(
        cls,
        record: Consumed,
        *,
        group: str,
        error: str,
        attempts: int = 1,
        headers: Iterable[tuple[str, bytes]] | None = None,
    ) -> Parked:
        """`record` parked by `group` for `error` (with `headers` instead of its own, if given)."""
        return cls(
            group=group,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=list(record.headers if headers is None else headers),
            error=error,
            attempts=attempts,
        )


async def show_waiting(parking: Parking, group: str, topics: Iterable[str]) -> None:
    """Set `notetaker_consumer_parked_events` of `group` for each of `topics` (0 for none)."""
    waiting = await parking.waiting(group)
    for topic in topics:
        PARKED.labels(group, topic).set(waiting.get(topic, 0))


def next_wait(attempts: int, first: float = 30.0, longest: float = 3600.0) -> float:
    """Seconds before a parked event's next attempt: doubling from `first` up to `longest`,
    with up to 20% jitter so events parked together do not come back together."""
    wait: float = min(longest, first * 2.0 ** max(0, attempts - 1))
    return wait * (1 + random.random() * 0.2)


class Parking(Protocol):
    async def park(self, event: Parked) -> None:
        """Keep `event` with its attempts so far (a second park of the same record updates its
        error); its next attempt backs off from there."""

    async def claim(self, group: str, topics: Iterable[str], limit: int) -> list[Parked]:
        """Parked events of `group` on `topics` that are due, each claimed for a lease."""

    async def done(self, event: Parked) -> None:
        """Forget `event`: its effect is durable, or it was dead-lettered."""

    async def failed_again(self, event: Parked, error: str, count: bool = True) -> None:
        """Schedule the next attempt; `count=False` for an outage (not the event's fault)."""

    async def waiting(self, group: str) -> dict[str, int]:
        """How many events of `group` are parked, by topic."""


class PostgresParking:
    """The parking lot in the `parked_events` table."""

    def __init__(self, pool: asyncpg.Pool, lease_seconds: float = 300.0) -> None:
        self.pool = pool
        self.lease_seconds = lease_seconds

    async def park(self, event: Parked) -> None:
        await self.pool.execute(
            'INSERT INTO parked_events (consumer_group, topic, partition, "offset", key, value,'
            " header_names, header_values, error, attempts, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11,"
            " now() + make_interval(secs => $10))"
            ' ON CONFLICT (consumer_group, topic, partition, "offset")'
            " DO UPDATE SET error = EXCLUDED.error",
            event.group,
            event.topic,
            event.partition,
            event.offset,
            event.key,
            event.value,
            [name for name, _ in event.headers],
            [value for _, value in event.headers],
            event.error[:4000],
            next_wait(event.attempts),
            event.attempts,
        )
        PARKED_TOTAL.labels(event.group, event.topic).inc()

    async def claim(self, group: str, topics: Iterable[str], limit: int) -> list[Parked]:
        rows = await self.pool.fetch(
            "UPDATE parked_events SET next_attempt_at = now() + make_interval(secs => $4)"
            ' WHERE (consumer_group, topic, partition, "offset") IN ('
            '   SELECT consumer_group, topic, partition, "offset" FROM parked_events'
            "   WHERE consumer_group = $1 AND topic = ANY($2::text[])"
            "   AND next_attempt_at <= now()"
            "   ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " RETURNING *",
            group,
            list(topics),
            limit,
            self.lease_seconds,
        )
        return [
            Parked(
                group=r["consumer_group"],
                topic=r["topic"],
                partition=r["partition"],
                offset=r["offset"],
                key=r["key"],
                value=r["value"],
                headers=list(zip(r["header_names"], r["header_values"], strict=True)),
                error=r["error"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    async def done(self, event: Parked) -> None:
        await self.pool.execute(
            "DELETE FROM parked_events WHERE consumer_group = $1 AND topic = $2"
            ' AND partition = $3 AND "offset" = $4',
            event.group,
            event.topic,
            event.partition,
            event.offset,
        )

    async def failed_again(self, event: Parked, error: str, count: bool = True) -> None:
        attempts = event.attempts + 1 if count else event.attempts
        await self.pool.execute(
            "UPDATE parked_events SET error = $5, attempts = $6,"
            " next_attempt_at = now() + make_interval(secs => $7)"
            ' WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND "offset" = $4',
            event.group,
            event.topic,
            event.partition,
            event.offset,
            error[:4000],
            attempts,
            next_wait(attempts) if count else next_wait(1, first=5.0),
        )

    async def waiting(self, group: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT topic, count(*) AS n FROM parked_events WHERE consumer_group = $1"
            " GROUP BY topic",
            group,
        )
        return {r["topic"]: r["n"] for r in rows}


@dataclass
class _Slot:
    event: Parked
    due: float


class MemoryParking:
    """The same contract in memory (for tests that run a consumer without a broker or
    database); `now` can be moved forward to make parked events due."""

    def __init__(self, lease_seconds: float = 300.0) -> None:
        self.slots: dict[tuple[str, str, int, int], _Slot] = {}
        self.lease_seconds = lease_seconds
        self.offset_seconds = 0.0
        self.unreachable = 0  # the next this many claims fail (the database gone)

    def now(self) -> float:
        return time.monotonic() + self.offset_seconds

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds

    @staticmethod
    def _key(event: Parked) -> tuple[str, str, int, int]:
        return (event.group, event.topic, event.partition, event.offset)

    async def park(self, event: Parked) -> None:
        key = self._key(event)
        if key in self.slots:
            self.slots[key].event = replace(self.slots[key].event, error=event.error)
            return
        self.slots[key] = _Slot(event, self.now() + next_wait(event.attempts))
        PARKED_TOTAL.labels(event.group, event.topic).inc()

    async def claim(self, group: str, topics: Iterable[str], limit: int) -> list[Parked]:
        if self.unreachable:
            self.unreachable -= 1
            raise ConnectionRefusedError("the parking lot's database is gone")
        wanted = set(topics)
        due = sorted(
            (
                s
                for s in self.slots.values()
                if s.event.group == group and s.event.topic in wanted and s.due <= self.now()
            ),
            key=lambda s: s.due,
        )[:limit]
        for slot in due:
            slot.due = self.now() + self.lease_seconds
        return [slot.event for slot in due]

    async def done(self, event: Parked) -> None:
        self.slots.pop(self._key(event), None)

    async def failed_again(self, event: Parked, error: str, count: bool = True) -> None:
        slot = self.slots[self._key(event)]
        attempts = event.attempts + 1 if count else event.attempts
        slot.event = replace(slot.event, error=error, attempts=attempts)
        slot.due = self.now() + (next_wait(attempts) if count else next_wait(1, first=5.0))

    async def waiting(self, group: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot in self.slots.values():
            if slot.event.group == group:
                counts[slot.event.topic] = counts.get(slot.event.topic, 0) + 1
        return counts
