"""Objects written under a recording's prefix after its upload, by their own producers: the
thumbnail (the uploader's thumbnailer) and Gladia's result as delivered (transcript-sync).

Each is recorded in `recording_artifacts` (kind, key, size, checksum) and counted in the stored
level by one `storage.usage` event per change of the object, so the level, the deletion path
(which takes off what the rows hold) and reconciliation (which reads from the row whether the
object's event is applied yet) all see it.

The event's step names the change, `<kind>:<previous checksum or ->><checksum>`, and its bytes
are the difference in size: a replaced object (a regenerated thumbnail) moves the level by the
difference once, and A → B → A are three changes, not two. The event is published before the
row is written: a producer killed in between publishes the same change again on its retry (the
row still names the previous object), which the metrics service applies once.
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
) -> None:
    """Count and record the object just stored at `key` (call after it is written, and after
    checking the recording's media was not deleted meanwhile)."""
    row = await pool.fetchrow(
        "SELECT s3_key, size_bytes, checksum FROM recording_artifacts"
        " WHERE recording_id = $1 AND kind = $2",
        recording_id,
        kind,
    )
    held = row is not None and row["s3_key"] is not None and row["checksum"] is not None
    if held and row["s3_key"] == key and row["checksum"] == checksum:
        return  # this object is counted already (a redelivery, or the same bytes again)
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
    await pool.execute(
        "INSERT INTO recording_artifacts (recording_id, kind, s3_key, size_bytes, checksum,"
        " stored_at, usage_step) VALUES ($1, $2, $3, $4, $5, now(), $6)"
        " ON CONFLICT (recording_id, kind) DO UPDATE SET s3_key = EXCLUDED.s3_key,"
        " size_bytes = EXCLUDED.size_bytes, checksum = EXCLUDED.checksum, stored_at = now(),"
        " usage_step = EXCLUDED.usage_step, error = NULL, updated_at = now()",
        recording_id,
        kind,
        key,
        size,
        checksum,
        step,
    )
