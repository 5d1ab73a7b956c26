"""Due upload retries: the database says when; the uploader is told by an event.

Marking a retry (`failed` back to `pending`) and requesting it (`recording.upload_requested`) are
one step (`notetaker.common.upload_requests`, which `notetaker recordings retry` uses too): the
row is marked in a transaction that commits only once Kafka has acknowledged the request. A crash,
a lost connection or a refused publish before that rolls the mark back, so the retry is still due
and the next round requests it; nothing is left `pending` unrequested. The uploader's first write
to the row waits for that commit (the row is locked until then), so a fast failing attempt is
recorded after the mark and is never overwritten by it. A recording whose media was deleted is
`failed` for good (no next retry), so it is never due.

An `uploading` row whose upload lease has run out (its worker died, hung, or lost its database
for longer than the lease) is requested again the same way, for the same attempt: it is marked
`pending` and its fencing token goes up in that transaction, so the worker that held it, if it
is only slow, can write nothing more and stops; the next worker resumes from the parts S3 holds.
"""

from __future__ import annotations

import asyncpg

from notetaker.common.kafka import EventPublisher
from notetaker.common.upload_requests import request_upload

_DUE_RETRY = (
    "UPDATE recordings SET s3_upload_status = 'pending',"
    " s3_upload_next_retry_at = NULL, updated_at = now()"
    " WHERE s3_upload_status = 'failed' AND id = (SELECT id FROM recordings"
    " WHERE s3_upload_status = 'failed'"
    " AND s3_upload_next_retry_at <= now() AND media_deleted_at IS NULL"
    " ORDER BY s3_upload_next_retry_at"
    " LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, bot_id, s3_upload_retry_count"
)
# A lease that has run out, or none at all (a row left `uploading` before leases existed).
_LEASE_EXPIRED = (
    "UPDATE recordings SET s3_upload_status = 'pending', s3_upload_next_retry_at = NULL,"
    " upload_lease_token = upload_lease_token + 1, upload_lease_expires_at = NULL,"
    " updated_at = now()"
    " WHERE s3_upload_status = 'uploading'"
    " AND (upload_lease_expires_at IS NULL OR upload_lease_expires_at <= now())"
    " AND id = (SELECT id FROM recordings WHERE s3_upload_status = 'uploading'"
    " AND (upload_lease_expires_at IS NULL OR upload_lease_expires_at <= now())"
    " AND media_deleted_at IS NULL"
    " ORDER BY upload_lease_expires_at NULLS FIRST LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, bot_id, s3_upload_retry_count"
)


async def request_due_retries(
    conn: asyncpg.Connection, publisher: EventPublisher, limit: int = 500
) -> int:
    """Request every due retry and every upload whose lease ran out (up to `limit`), each
    marked and published together; how many."""
    requested = await _request(conn, publisher, _DUE_RETRY, limit)
    return requested + await _request(conn, publisher, _LEASE_EXPIRED, limit - requested)


async def _request(
    conn: asyncpg.Connection, publisher: EventPublisher, mark: str, limit: int
) -> int:
    requested = 0
    while requested < limit:
        if await request_upload(conn, publisher, mark) is None:
            break
        requested += 1
    return requested
