"""Re-applying a kept webhook body: the delivery as it was received, run again through the same
parse, map and publish code as the endpoint, past authentication (no signature, no Svix
timestamp window: the body was authenticated when it was accepted, and is read back from our own
database, not from the network).

Every kept body belongs to an accepted delivery, so "refuse if already applied" would refuse
them all. A re-apply therefore always publishes again, marked as one: each event carries
`notetaker_replayed_from: webhook:<provider>:<delivery id>`, and the re-apply is a
`webhook_deliveries` row of its own (`reapply:<delivery id>:<n>`, outcome `reapplied`, shown by
`notetaker webhooks show`). The events are mapped from the body with the delivery's original
receipt time, so an unchanged mapping gives the same events (same ids: the consumers apply them
idempotently) and a mapping fixed since gives the corrected ones, which is what an operator
re-applies for. The delivery's `fact:` id is not consulted (it is the original's). A bot whose
media was deleted is refused: deleted stays deleted (and its bodies are gone with it anyway).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from notetaker.common.events import Event
from notetaker.common.kafka import EventPublisher
from notetaker.common.sealing import SourceUrlCipher
from notetaker.ingest.deliveries import media_deleted_of, pointed, publish_once
from notetaker.ingest.handlers import (
    gladia_mapped,
    keep_job_failure,
    parse_gladia,
    parse_meetingbaas,
    transcription_job,
)
from notetaker.ingest.problems import Problem
from notetaker.ingest.settings import IngestSettings

REAPPLY_PREFIX = "reapply:"
INLINE_TRANSCRIPT_MAX_BYTES = IngestSettings.model_fields["inline_transcript_max_bytes"].default


class NotReapplied(Exception):
    """Why a delivery cannot be re-applied (unknown, body gone, several match, deleted...)."""


@dataclass(frozen=True)
class KeptDelivery:
    provider: str
    delivery_id: str
    bot_id: str | None
    event_type: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class Reapplied:
    delivery: KeptDelivery
    reapply_id: str  # its webhook_deliveries row
    events: list[Event]


async def kept_delivery(
    pool: asyncpg.Pool,
    cipher: SourceUrlCipher,
    delivery_id: str,
    *,
    provider: str | None = None,
    bot_id: str | None = None,
) -> KeptDelivery:
    """The delivery's kept body, opened; NotReapplied says why there is none."""
    rows = await pool.fetch(
        "SELECT d.provider, d.delivery_id, d.bot_id, d.event_type, b.headers, b.sealed,"
        " b.received_at, r.media_deleted_at"
        " FROM webhook_deliveries d"
        " LEFT JOIN webhook_bodies b USING (provider, delivery_id)"
        " LEFT JOIN recordings r ON r.bot_id = d.bot_id"
        " WHERE d.delivery_id = $1 AND ($2::text IS NULL OR d.provider = $2)"
        " AND ($3::text IS NULL OR d.bot_id = $3)",
        delivery_id,
        provider,
        bot_id,
    )
    of_bot = f" for bot {bot_id}" if bot_id else ""
    if not rows:
        raise NotReapplied(
            f"no accepted delivery {delivery_id!r}{of_bot} (see `notetaker webhooks show BOT_ID`"
            " for the delivery ids of a bot)"
        )
    if len(rows) > 1:
        names = ", ".join(sorted(r["provider"] for r in rows))
        raise NotReapplied(f"delivery {delivery_id!r} is one of {names}: give --provider")
    row = rows[0]
    if row["sealed"] is None and delivery_id.startswith(REAPPLY_PREFIX):
        original = delivery_id.removeprefix(REAPPLY_PREFIX).rsplit(":", 1)[0]
        raise NotReapplied(
            f"{delivery_id!r} is a re-apply, which keeps no body of its own: use the original"
            f" delivery {original!r}"
        )
    if row["sealed"] is None:
        if row["media_deleted_at"] is not None:
            raise NotReapplied(
                f"the body of delivery {delivery_id!r} was deleted with the bot's media"
                f" ({row['media_deleted_at']:%Y-%m-%d %H:%M} UTC)"
            )
        raise NotReapplied(
            f"the body of delivery {delivery_id!r} is no longer kept: pruned after"
            " NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS, or received before bodies were kept"
            " (or while ingest had no NOTETAKER_SOURCE_URL_KEYS)"
        )
    return KeptDelivery(
        provider=row["provider"],
        delivery_id=row["delivery_id"],
        bot_id=row["bot_id"],
        event_type=row["event_type"],
        headers=dict(row["headers"]),
        body=cipher.open_body(row["sealed"]),
        received_at=row["received_at"],
    )


async def reapply(
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    delivery: KeptDelivery,
    *,
    timeout: float = 10.0,
    inline_transcript_max_bytes: int = INLINE_TRANSCRIPT_MAX_BYTES,
) -> Reapplied:
    """Run the kept body through ingest's parse, map and publish again (see the module)."""
    if delivery.bot_id is not None and await media_deleted_of(pool, delivery.bot_id):
        raise NotReapplied(f"bot {delivery.bot_id}'s media was deleted: nothing is re-applied")
    try:
        events = await _events_of(pool, delivery)
    except Problem as exc:  # a body the mapping refuses now (it changed since)
        raise NotReapplied(
            f"the body no longer maps: {exc.title}" + (f" ({exc.detail})" if exc.detail else "")
        ) from exc
    # A transcript too large to travel inline points at this very body, as the original did.
    events = pointed(events, delivery.provider, delivery.delivery_id, inline_transcript_max_bytes)
    reapply_id = f"{REAPPLY_PREFIX}{delivery.delivery_id}:{uuid.uuid4().hex[:12]}"
    await publish_once(
        pool,
        publisher,
        provider=delivery.provider,
        delivery_ids=[reapply_id],
        event_type=delivery.event_type,
        bot_id=delivery.bot_id,
        events=events,
        outcome="reapplied",
        timeout=timeout,
        replayed_from=f"webhook:{delivery.provider}:{delivery.delivery_id}",
    )
    return Reapplied(delivery, reapply_id, events)


async def _events_of(pool: asyncpg.Pool, delivery: KeptDelivery) -> list[Event]:
    if delivery.provider == "meetingbaas":
        _, _, events = parse_meetingbaas(delivery.body, delivery.received_at)
        return events
    if delivery.provider == "gladia":
        request_id = uuid.UUID(delivery.headers["request_id"])
        job = await transcription_job(pool, request_id)
        if job is None:
            raise NotReapplied(f"transcription request {request_id} is no longer known")
        callback = parse_gladia(delivery.body)
        events, failure = gladia_mapped(callback, job.bot_id)
        if failure is not None:
            await keep_job_failure(pool, request_id, *failure)
        return events
    raise NotReapplied(f"no provider {delivery.provider!r}")
