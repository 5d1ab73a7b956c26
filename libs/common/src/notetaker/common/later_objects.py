"""Objects written under a recording's prefix after its upload, by their own producers: the
thumbnail (the uploader's thumbnailer) and Gladia's result as delivered (transcript-sync).

Each is recorded in `recording_artifacts` (kind, key, size, checksum) and counted in the stored
level by one `storage.usage` event per change of the object, so the level, the deletion path
(which takes off what the rows hold) and reconciliation (which reads from the row whether the
object's event is applied yet) all see it.

The event's step names the change, `<kind>:<previous checksum or ->><checksum>`, and its bytes
are the difference in size (kept in the row's `usage_bytes`): a replaced object (a regenerated
thumbnail) moves the level by the difference once, and A → B → A are three changes, not two.

The event is published inside the transaction that writes the row, which holds two locks: one on
the recording's object of that kind (two producers of the same object, a redelivery handled
twice at once, never both count a change from the same previous object), and a share lock on the
recording's row, which the deletion path takes exclusively as it marks the recording. So an
object is either recorded before the mark (and the deletion, which reckons the bytes to take off
from these rows as it marks, takes it off) or finds the recording deleted and counts nothing (its
producer deletes what it stored). A producer killed after publishing and before the commit
publishes the same change again on its retry (the row still names the previous object), which
the metrics service applies once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from notetaker.common.events import StorageUsage
from notetaker.common.kafka import EventPublisher

LaterKind = Literal["thumbnail", "gladia_result"]
LATER_KINDS: tuple[LaterKind, ...] = ("thumbnail", "gladia_result")
# The name of each kind's object under the recording's prefix (reconciliation tells a later
# object in a listing from the upload's objects by it, before any row names it).
LATER_NAMES: dict[str, LaterKind] = {
    "thumbnail.jpg": "thumbnail",
    "gladia-result.json": "gladia_result",
}
LATER_NAME_OF: dict[LaterKind, str] = {kind: name for name, kind in LATER_NAMES.items()}

# Advisory lock namespace of the record of one recording's later object (the second key hashes
# the recording and the kind).
_LOCK_NAMESPACE = 0x6C617472


def later_kind(key: str) -> LaterKind | None:
    """The later object kind `key` holds, from its name; None for any other object."""
    return LATER_NAMES.get(key.rsplit("/", 1)[-1])


def change_step(kind: LaterKind, previous: str | None, checksum: str) -> str:
    """The usage step of the change of a recording's `kind` object from `previous` (its checksum;
    None: there was none) to `checksum`."""
    return f"{kind}:{previous or '-'}>{checksum}"


async def record_later_object(
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    *,
    bot_id: str,
    org_id: uuid.UUID,
    recording_id: uuid.UUID,
    kind: LaterKind,
    key: str,
    size: int,
    checksum: str,
) -> bool:
    """Count and record the object just stored at `key` (call after it is written, and after
    checking the recording's media was not deleted meanwhile). False, counting nothing, when the
    recording's media was deleted (or expired) meanwhile, or the recording has no row (none to
    keep media for): the caller deletes the object again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            _LOCK_NAMESPACE,
            f"{recording_id}:{kind}",
        )
        kept = await conn.fetchval(
            "SELECT media_deleted_at IS NULL FROM recordings WHERE id = $1 FOR KEY SHARE",
            recording_id,
        )
        if not kept:  # deleted, or no row
            return False
        row = await conn.fetchrow(
            "SELECT s3_key, size_bytes, checksum FROM recording_artifacts"
            " WHERE recording_id = $1 AND kind = $2",
            recording_id,
            kind,
        )
        held = row is not None and row["s3_key"] is not None and row["checksum"] is not None
        if held and row["s3_key"] == key and row["checksum"] == checksum:
            return True  # this object is counted already (a redelivery, or the same bytes again)
        previous = row["checksum"] if held else None
        previous_size = int(row["size_bytes"] or 0) if held else 0
        step = change_step(kind, previous, checksum)
        await publisher.publish(
            StorageUsage(
                bot_id=bot_id,
                org_id=org_id,
                recording_id=recording_id,
                step=step,
                bytes_stored=size - previous_size,
                bytes_uploaded=size,
                put_requests=1,
                occurred_at=datetime.now(UTC),
            )
        )
        await conn.execute(
            "INSERT INTO recording_artifacts (recording_id, kind, s3_key, size_bytes, checksum,"
            " stored_at, usage_step, usage_bytes) VALUES ($1, $2, $3, $4, $5, now(), $6, $7)"
            " ON CONFLICT (recording_id, kind) DO UPDATE SET s3_key = EXCLUDED.s3_key,"
            " size_bytes = EXCLUDED.size_bytes, checksum = EXCLUDED.checksum, stored_at = now(),"
            " usage_step = EXCLUDED.usage_step, usage_bytes = EXCLUDED.usage_bytes,"
            " error = NULL, updated_at = now()",
            recording_id,
            kind,
            key,
            size,
            checksum,
            step,
            size - previous_size,
        )
        return True


async def later_bytes(conn: asyncpg.Connection | asyncpg.Pool, recording_id: uuid.UUID) -> int:
    """The bytes the recording's later objects add to the stored level (what their rows hold,
    for those stored): what a deletion takes off beside the upload's."""
    total = await conn.fetchval(
        "SELECT coalesce(sum(size_bytes), 0) FROM recording_artifacts WHERE recording_id = $1"
        " AND kind = ANY($2::text[]) AND s3_key IS NOT NULL AND usage_step IS NOT NULL",
        recording_id,
        list(LATER_KINDS),
    )
    return int(total)
