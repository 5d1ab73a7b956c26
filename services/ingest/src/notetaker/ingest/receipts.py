"""Deliveries ingest answered without keeping them as `webhook_deliveries`: duplicates and
refusals, recorded in `webhook_receipts` so `notetaker webhooks show BOT_ID` can say whether a
webhook arrived and what became of it.

Only a delivery that names a bot is recorded (a refusal's bot is what its body claims, shaped
like a bot id; nothing in it is trusted). Recording never changes the answer: it is given a
couple of seconds, and a database that does not take it is logged, not raised (the answer may
well be the 503 that says the database is down).
"""

from __future__ import annotations

import asyncio
import json

import asyncpg

from notetaker.common.logs import get_logger
from notetaker.ingest.auth import callback_bot_id

log = get_logger(__name__)

RECORD_SECONDS = 2.0


def claimed_event(body: bytes) -> str | None:
    """The `event` a body names, read before anything trusts it (None if it names none)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event = document.get("event") if isinstance(document, dict) else None
    return event[:100] if isinstance(event, str) else None


async def record(
    pool: asyncpg.Pool,
    *,
    provider: str,
    delivery_id: str | None,
    bot_id: str | None,
    event_type: str | None,
    status: int,
    outcome: str,
) -> None:
    if bot_id is None:
        return
    try:
        await asyncio.wait_for(
            pool.execute(
                "INSERT INTO webhook_receipts (provider, delivery_id, bot_id, event_type, status,"
                " outcome) VALUES ($1, $2, $3, $4, $5, $6)",
                provider,
                delivery_id[:200] if delivery_id else None,
                bot_id[:200],
                event_type,
                status,
                outcome[:200],
            ),
            RECORD_SECONDS,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning(
            "webhook.receipt_unrecorded",
            provider=provider,
            bot_id=bot_id,
            outcome=outcome,
            error=repr(exc),
        )


def refused_bot(body: bytes | None, known: str | None) -> str | None:
    """The bot a refused delivery is about: the one the handler found, else the body's claim."""
    if known is not None:
        return known
    return callback_bot_id(body) if body else None
