"""Each provider delivery is published once: recorded and published in one transaction.

The delivery row is inserted first (a concurrent duplicate waits on it), the events are published
and acknowledged by Kafka, then the row commits. If Kafka fails the row rolls back, so the
provider's retry is processed instead of being mistaken for a duplicate.

The delivery's raw body, sealed (`KeptBody`), is written in the same transaction: a body is kept
if and only if its delivery was accepted. Not for a bot whose media was deleted: the insert reads
the bot's recordings row `FOR KEY SHARE`, so a deletion starting now (`FOR UPDATE` on that row)
waits for this transaction and then deletes the body with the rest, and a deletion already marked
leaves nothing to keep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from notetaker.common.events import Event, KeptBodyRef, TranscriptReady
from notetaker.common.kafka import EventPublisher


@dataclass(frozen=True)
class KeptBody:
    """A delivery's body as received, sealed (`SourceUrlCipher.seal_body`), and what besides the
    body re-applying it needs (`headers`: the Svix id, Gladia's request id; never a secret)."""

    sealed: bytes
    size_bytes: int
    received_at: datetime
    headers: dict[str, str] = field(default_factory=dict)


KEEP_BODY = (
    "INSERT INTO webhook_bodies (provider, delivery_id, bot_id, event_type, headers, sealed,"
    " size_bytes, received_at) SELECT $1, $2, $3, $4, $5::jsonb, $6, $7, $8"
    " WHERE coalesce((SELECT media_deleted_at IS NULL FROM recordings WHERE bot_id = $3"
    " FOR KEY SHARE), true)"
)


def pointed(
    events: Sequence[Event], provider: str, delivery_id: str, max_bytes: int
) -> list[Event]:
    """`events`, each `transcript.ready` whose inline transcript makes it larger than
    `max_bytes` (as JSON) replaced by one pointing at the kept body of `delivery_id` instead
    (`body_ref`, no utterances): a long meeting's transcript would pass Kafka's message limit.
    Only for a delivery whose body is kept (transcript-sync reads the transcript from it)."""
    out: list[Event] = []
    for event in events:
        if (
            isinstance(event, TranscriptReady)
            and event.utterances is not None
            and provider in ("meetingbaas", "gladia")
            and len(event.model_dump_json()) > max_bytes
        ):
            ref = KeptBodyRef(provider=provider, delivery_id=delivery_id)
            event = event.model_copy(update={"utterances": None, "body_ref": ref})
        out.append(event)
    return out


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
    kept: KeptBody | None = None,
    replayed_from: str | None = None,
) -> bool:
    """Publish `events` unless any of `delivery_ids` was seen; True when this delivery is new.
    The delivery is recorded with `outcome` (what was done with it: published, ignored, ...).

    `kept`: the body to keep under `delivery_ids[0]`. `replayed_from`: a re-apply's marker,
    sent with each event (`notetaker_replayed_from`).

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
            if kept is not None:
                await conn.execute(
                    KEEP_BODY,
                    provider,
                    delivery_ids[0],
                    bot_id,
                    event_type,
                    kept.headers,
                    kept.sealed,
                    kept.size_bytes,
                    kept.received_at,
                )
            if events:
                await asyncio.wait_for(
                    publisher.publish_all(events, replayed_from=replayed_from), timeout
                )
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
