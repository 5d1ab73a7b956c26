"""Finding the recording an operator names: by its id, its meeting's id or its bot's id.

Whatever is typed is only ever a query parameter; a UUID may be any of the three (MeetingBaaS
bot ids are UUIDs too), anything else only a bot id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from notetaker.cli.connections import checked_ref
from notetaker.cli.events import Stop


@dataclass(frozen=True)
class RecordingRow:
    id: uuid.UUID
    bot_id: str
    org_id: uuid.UUID
    user_id: uuid.UUID
    meeting_id: uuid.UUID | None
    status: str  # s3_upload_status
    state: str  # status, or failed_final, or deleted
    retries: int
    next_retry_at: datetime | None
    error: str | None
    size_bytes: int | None
    video_key: str | None
    audio_key: str | None
    urls_received_at: datetime | None
    created_at: datetime
    updated_at: datetime
    media_deleted_at: datetime | None


# `state` says what an operator asks about: deleted media first, then failed for good.
COLUMNS = """r.id, r.bot_id, r.org_id, r.user_id,
    coalesce(r.meeting_id, (SELECT m.id FROM meetings m WHERE m.bot_id = r.bot_id)) AS meeting_id,
    r.s3_upload_status::text AS status,
    CASE WHEN r.media_deleted_at IS NOT NULL THEN 'deleted'
         WHEN r.s3_upload_status = 'failed' AND r.s3_upload_next_retry_at IS NULL
         THEN 'failed_final'
         ELSE r.s3_upload_status::text END AS state,
    r.s3_upload_retry_count AS retries, r.s3_upload_next_retry_at AS next_retry_at,
    r.s3_upload_error_message AS error, r.s3_file_size_bytes AS size_bytes,
    r.s3_video_key AS video_key, r.s3_audio_key AS audio_key,
    r.provider_urls_received_at AS urls_received_at, r.created_at, r.updated_at,
    r.media_deleted_at"""


async def find_recording(conn: asyncpg.Pool | asyncpg.Connection, ref: str) -> RecordingRow:
    """The one recording `ref` names; Stop (exit 1) when none, or more than one, does."""
    checked_ref(ref)
    try:
        as_uuid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        as_uuid = None
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM recordings r WHERE r.bot_id = $1"  # noqa: S608 - fixed columns
        " OR r.id = $2 OR r.meeting_id = $2"
        " OR r.bot_id = (SELECT m.bot_id FROM meetings m WHERE m.id = $2)",
        ref,
        as_uuid,
    )
    if not rows:
        raise Stop(f"no recording has the id, meeting id or bot id {ref!r}")
    if len(rows) > 1:
        ids = ", ".join(str(r["id"]) for r in rows)
        raise Stop(f"{ref!r} names several recordings ({ids}): give a recording id")
    return RecordingRow(**dict(rows[0]))
