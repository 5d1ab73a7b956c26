"""The parking lot in PostgreSQL: a parked event comes back whole when due, to one worker at a
time, and is gone once done; its next attempt backs off; a second park of the same record keeps
one row."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg

from notetaker.common.parking import Parked, PostgresParking


def parked(group: str, offset: int = 0, topic: str = "recording.completed") -> Parked:
    return Parked(
        group=group,
        topic=topic,
        partition=2,
        offset=offset,
        key=b"bot-1",
        value=b'{"bot_id": "bot-1"}',
        headers=[("ce_type", b"recording.completed"), ("ce_id", b"\x00\xffid")],
        error="transient: RuntimeError('provider 502')",
    )


async def due_now(db: asyncpg.Pool, group: str) -> None:
    await db.execute(
        "UPDATE parked_events SET next_attempt_at = now() - interval '1 second'"
        " WHERE consumer_group = $1",
        group,
    )


async def test_a_parked_event_comes_back_whole_to_one_worker_when_due(db: asyncpg.Pool) -> None:
    group = f"g-{uuid.uuid4()}"
    lot = PostgresParking(db)
    event = parked(group)
    await lot.park(event)
    await lot.park(event)  # parked again after a crash before the commit: still one row
    assert await lot.waiting(group) == {"recording.completed": 1}
    assert await lot.claim(group, ["recording.completed"], 10) == []  # not due yet

    await due_now(db, group)
    claims = await asyncio.gather(
        lot.claim(group, ["recording.completed"], 10),
        lot.claim(group, ["recording.completed"], 10),
    )
    assert sorted(len(c) for c in claims) == [0, 1]  # one worker gets it
    [back] = next(c for c in claims if c)
    assert back == event
    assert await lot.claim(group, ["recording.completed"], 10) == []  # leased

    await lot.done(back)
    assert await lot.waiting(group) == {}


async def test_a_failed_retry_backs_off_and_counts_unless_it_was_an_outage(
    db: asyncpg.Pool,
) -> None:
    group = f"g-{uuid.uuid4()}"
    lot = PostgresParking(db)
    await lot.park(parked(group))
    await due_now(db, group)
    [event] = await lot.claim(group, ["recording.completed"], 10)

    await lot.failed_again(event, "transient: still 502")
    row = await db.fetchrow(
        "SELECT attempts, error, next_attempt_at - now() AS wait FROM parked_events"
        " WHERE consumer_group = $1",
        group,
    )
    assert row["attempts"] == 2
    assert row["error"] == "transient: still 502"
    assert row["wait"].total_seconds() >= 60  # doubled from the first 30 s

    await due_now(db, group)
    [event] = await lot.claim(group, ["recording.completed"], 10)
    await lot.failed_again(event, "outage: database", count=False)
    assert (
        await db.fetchval("SELECT attempts FROM parked_events WHERE consumer_group = $1", group)
        == 2
    )


async def test_a_group_claims_only_its_own_topics(db: asyncpg.Pool) -> None:
    group = f"g-{uuid.uuid4()}"
    lot = PostgresParking(db)
    await lot.park(parked(group, 1, "recording.completed"))
    await lot.park(parked(group, 1, "thumbnail.requested"))
    await lot.park(parked(f"other-{group}", 1, "recording.completed"))
    await due_now(db, group)
    await due_now(db, f"other-{group}")
    claimed = await lot.claim(group, ["recording.completed"], 10)
    assert [(e.group, e.topic) for e in claimed] == [(group, "recording.completed")]


async def test_an_event_parked_again_keeps_its_count_and_waits_longer(db: asyncpg.Pool) -> None:
    group = f"g-{uuid.uuid4()}"
    lot = PostgresParking(db)
    await lot.park(replace(parked(group), attempts=4))
    row = await db.fetchrow(
        "SELECT attempts, next_attempt_at - now() AS wait FROM parked_events"
        " WHERE consumer_group = $1",
        group,
    )
    assert row["attempts"] == 4
    assert row["wait"].total_seconds() >= 240  # 30 s doubled three times
