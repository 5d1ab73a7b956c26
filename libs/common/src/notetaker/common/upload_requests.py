"""Requesting an upload attempt: the row is marked and `recording.upload_requested` published as
one step (the scheduler's due retries, an operator's `notetaker recordings retry`).

The mark is made in a transaction that commits only once Kafka has acknowledged the request: a
crash, a lost connection or a refused publish before that rolls the mark back, so nothing is left
`pending` unrequested. The uploader's first write to the row waits for that commit (the row is
locked until then). The request names the attempt after the recording's last one
(`s3_upload_retry_count + 1`), the only one the uploader will take; a retry (an attempt after the
first) asks MeetingBaaS for fresh recording URLs before it copies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from notetaker.common.events import RecordingUploadRequested
from notetaker.common.kafka import EventPublisher


@dataclass(frozen=True)
class Requested:
    recording_id: uuid.UUID
    bot_id: str
    attempt: int


async def request_upload(
    conn: asyncpg.Connection, publisher: EventPublisher, mark: str, *args: object
) -> Requested | None:
    """Run `mark` (an UPDATE of one row RETURNING id, bot_id, s3_upload_retry_count) and
    publish the request for that row in the same transaction; None when it marked nothing."""
    async with conn.transaction():
        row = await conn.fetchrow(mark, *args)
        if row is None:
            return None
        requested = Requested(row["id"], row["bot_id"], row["s3_upload_retry_count"] + 1)
        await publisher.publish(
            RecordingUploadRequested(
                bot_id=requested.bot_id,
                recording_id=requested.recording_id,
                attempt=requested.attempt,
            )
        )
    return requested


# An operator's retry of a failed recording, now, whether its next retry was due or it failed
# for good; never one whose media was deleted.
RETRY_FAILED = (
    "UPDATE recordings SET s3_upload_status = 'pending', s3_upload_next_retry_at = NULL,"
    " updated_at = now()"
    " WHERE id = $1 AND s3_upload_status = 'failed' AND media_deleted_at IS NULL"
    " RETURNING id, bot_id, s3_upload_retry_count"
)


async def retry_failed(
    conn: asyncpg.Connection, publisher: EventPublisher, recording_id: uuid.UUID
) -> Requested | None:
    """Request the next attempt of a failed recording; None if it is not failed (any more)."""
    return await request_upload(conn, publisher, RETRY_FAILED, recording_id)
