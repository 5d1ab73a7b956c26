"""The outbox of `meeting.synced`: written with the change to `meetings`, published from here.

A change to a meetings row and its `meeting.synced` record are one transaction (`add`), so an
announced change is always a committed one and a committed change is always announced: `flush`
publishes a bot's unsent records in order and marks them sent once Kafka acknowledged them, in
one transaction holding their row locks (a concurrent flush of the same bot waits, then finds them
sent). The join flushes the bot after each write, so the retry of an event whose publish failed
publishes what the first try committed; `sweep` publishes what no retry came back for.

Each record gets its own event id when it is written (a uuid): one id per change of the row,
kept across every publish of that record. The only duplicate is a record published again after a
crash between Kafka's acknowledgement and the commit of its mark; it carries the same id and the
same bytes, so consumers dedupe `meeting.synced` by event id.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from notetaker.common.envelope import to_message
from notetaker.common.events import Event

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
"""Publish one record (topic, key, value, headers) and return once Kafka acknowledged it."""

ID_HEADER = "ce_id"  # the CloudEvents id in the Kafka binary binding


async def add(conn: asyncpg.Connection, event: Event, source: str) -> str:
    """Write `event` to the outbox in the caller's transaction; its event id."""
    message = to_message(event, source)
    event_id = str(uuid.uuid4())
    headers = [(k, v) for k, v in message.headers.items() if k != ID_HEADER]
    headers.insert(0, (ID_HEADER, event_id.encode()))
    key = message.key if isinstance(message.key, bytes) else None
    await conn.execute(
        "INSERT INTO event_outbox (source, topic, key, value, header_names, header_values,"
        " event_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        source,
        event.type,
        key,
        message.value,
        [name for name, _ in headers],
        [value for _, value in headers],
        event_id,
    )
    return event_id


async def flush(pool: asyncpg.Pool, send: Send, source: str, key: bytes) -> int:
    """Publish the unsent records of `key` (a bot) in the order they were written; how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, topic, key, value, header_names, header_values FROM event_outbox"
            " WHERE source = $1 AND key = $2 AND sent_at IS NULL ORDER BY id FOR UPDATE",
            source,
            key,
        )
        for row in rows:
            headers = list(zip(row["header_names"], row["header_values"], strict=True))
            await send(row["topic"], row["key"], row["value"], headers)
        if rows:
            await conn.execute(
                "UPDATE event_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
    return len(rows)


async def sweep(
    pool: asyncpg.Pool, send: Send, source: str, older_than_seconds: float = 10.0
) -> int:
    """Publish every record of `source` left unsent for longer than `older_than_seconds` (its
    event was dead-lettered or parked after the change, or the worker died), and forget records
    sent over a week ago; how many were published."""
    keys = await pool.fetch(
        "SELECT DISTINCT key FROM event_outbox WHERE source = $1 AND sent_at IS NULL"
        " AND created_at < now() - make_interval(secs => $2)",
        source,
        older_than_seconds,
    )
    published = 0
    for row in keys:
        published += await flush(pool, send, source, row["key"])
    await pool.execute(
        "DELETE FROM event_outbox WHERE source = $1 AND sent_at < now() - interval '7 days'",
        source,
    )
    return published
