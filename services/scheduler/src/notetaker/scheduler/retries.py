"""Due upload retries: the database says when; the uploader is told by an event."""

from __future__ import annotations

import asyncpg

from notetaker.common.events import RecordingUploadRequested
from notetaker.common.kafka import EventPublisher


async def request_due_retries(pool: asyncpg.Pool, publisher: EventPublisher) -> int:
    rows = await pool.fetch(
        "SELECT id, bot_id, s3_upload_retry_count FROM recordings"
        " WHERE s3_upload_status = 'failed' AND s3_upload_next_retry_at <= now()"
        " ORDER BY s3_upload_next_retry_at LIMIT 500"
    )
    for row in rows:
        await publisher.publish(
            RecordingUploadRequested(
                bot_id=row["bot_id"],
                recording_id=row["id"],
                attempt=row["s3_upload_retry_count"] + 1,
            )
        )
        # Queued: pending again, so it is neither re-requested nor mistaken for a final failure.
        await pool.execute(
            "UPDATE recordings SET s3_upload_status = 'pending', s3_upload_next_retry_at = NULL,"
            " updated_at = now() WHERE id = $1 AND s3_upload_status = 'failed'",
            row["id"],
        )
    return len(rows)
