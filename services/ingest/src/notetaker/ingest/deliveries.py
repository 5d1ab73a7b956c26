"""Each provider delivery is published once: recorded and published in one transaction.

The delivery row is inserted first (a concurrent duplicate waits on it), the events are published
and acknowledged by Kafka, then the row commits. If Kafka fails the row rolls back, so the
provider's retry is processed instead of being mistaken for a duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from notetaker.common.events import Event
from notetaker.common.kafka import EventPublisher


class _Duplicate(Exception):
    """Raised inside the transaction to roll back the ids this attempt inserted."""


async def publish_once(
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    *,
    provider: str,
    delivery_ids: Sequence[str],
    event_type: str,
    bot_id: str | None,
    events: Sequence[Event],
    outcome: str,
    timeout: float,
) -> bool:
    """Publish `events` unless any of `delivery_ids` was seen; True when this delivery is new.
    The delivery is recorded with `outcome` (what was done with it: published, ignored, ...).

    Raises TimeoutError when Kafka does not acknowledge within `timeout` seconds.
    """
    try:
        async with pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetch(
                "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id,"
                " outcome) SELECT $1, d, $3, $4, $5 FROM unnest($2::text[]) AS d"
                " ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING delivery_id",
                provider,
                list(delivery_ids),
                event_type,
                bot_id,
                outcome,
            )
            if len(inserted) < len(delivery_ids):
                raise _Duplicate
            if events:
                await asyncio.wait_for(publisher.publish_all(events), timeout)
    except _Duplicate:
        return False
    return True


async def media_deleted_of(pool: asyncpg.Pool, bot_id: str) -> bool | None:
    """None for a bot without a recording (not one the scheduler deployed); else whether its
    media was deleted (its events are then acknowledged and dropped)."""
    deleted: bool | None = await pool.fetchval(
        "SELECT media_deleted_at IS NOT NULL FROM recordings WHERE bot_id = $1", bot_id
    )
    return deleted
