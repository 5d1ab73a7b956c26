"""Gladia's result as delivered, made permanent beside the video (issue 18).

Ingest and transcript-sync map a Gladia result to utterances, its language and its summary; the
rest of it (word timings, sentences, subtitles, confidences, metadata such as the duration and
the billing time, add-on results such as summaries, chapters and entities) would be lost with the
provider's copy. So transcript-sync, when it writes a Gladia transcript to the meeting, stores
the document it read, byte for byte, at `<recording prefix>/gladia-result.json` in the
recordings bucket: the callback's body as Gladia posted it (kept by ingest in `webhook_bodies`,
read from there), or the answer of `GET /v2/pre-recorded/{id}` when only the job's id came. The
object is recorded and counted like every object written after the upload
(`notetaker.common.later_objects`): a `gladia_result` row in `recording_artifacts` and one
`storage.usage` event per change of it. The same bytes again (a retry, a redelivery) change
nothing.

Only for a bot with a recording whose media was not deleted: checked before the put and again
after it, and an object stored while the deletion ran is deleted again (as the thumbnailer does).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import asyncpg
from botocore.exceptions import ClientError

from notetaker.common.kafka import EventPublisher
from notetaker.common.later_objects import LATER_NAME_OF, record_later_object
from notetaker.common.logs import get_logger
from notetaker.common.s3 import S3Client, recording_prefix
from notetaker.transcript_sync.meetings import MeetingMediaDeleted

log = get_logger(__name__)

GLADIA_RESULT_NAME = LATER_NAME_OF["gladia_result"]

RECORDING_OF_BOT = (
    "SELECT id, org_id, user_id, media_deleted_at IS NOT NULL AS deleted FROM recordings"
    " WHERE bot_id = $1"
)


def gladia_result_key(prefix: str) -> str:
    """Where a recording's Gladia result lives, under its prefix (`recording_prefix`)."""
    return f"{prefix}{GLADIA_RESULT_NAME}"


@dataclass(frozen=True)
class Archived:
    key: str
    size: int
    checksum: str


async def archive_gladia_result(
    pool: asyncpg.Pool,
    s3: S3Client,
    publisher: EventPublisher,
    *,
    bucket: str,
    bot_id: str,
    body: bytes,
) -> Archived | None:
    """Store `body` (Gladia's document as delivered) as the bot's recording's
    `gladia-result.json`, then record and count it; None when the bot has no recording (nothing
    to keep it beside). Raises `MeetingMediaDeleted` when the recording's media is deleted
    (before the put, or meanwhile: the object is deleted again)."""
    recording = await pool.fetchrow(RECORDING_OF_BOT, bot_id)
    if recording is None:
        log.warning("gladia_result.no_recording", bot_id=bot_id, size=len(body))
        return None
    if recording["deleted"]:
        raise MeetingMediaDeleted(f"bot {bot_id}'s media was deleted")
    key = gladia_result_key(
        recording_prefix(recording["org_id"], recording["user_id"], recording["id"])
    )
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    archived = Archived(key, len(body), f"sha256:{digest}")
    held = await pool.fetchrow(
        "SELECT s3_key, checksum FROM recording_artifacts WHERE recording_id = $1"
        " AND kind = 'gladia_result'",
        recording["id"],
    )
    if held is not None and (held["s3_key"], held["checksum"]) == (key, archived.checksum):
        return archived  # stored and counted already (a retry, a redelivery)
    await s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType="application/json",
        ServerSideEncryption="AES256",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=digest,
    )
    # Checked again and recorded in one transaction holding the recording's row (FOR KEY SHARE,
    # `record_later_object`): a deletion (FOR UPDATE on that row) either marked it before, and the
    # object is deleted again here, or waits for the record and then takes off what it counted and
    # lists the object it must delete.
    recorded = await record_later_object(
        pool,
        publisher,
        bot_id=bot_id,
        org_id=recording["org_id"],
        recording_id=recording["id"],
        kind="gladia_result",
        key=key,
        size=archived.size,
        checksum=archived.checksum,
    )
    if not recorded:
        # Deleted while we stored: the deletion may have listed the prefix before the put.
        await s3.delete_object(Bucket=bucket, Key=key)
        log.info("gladia_result.media_deleted", bot_id=bot_id, key=key)
        raise MeetingMediaDeleted(f"bot {bot_id}'s media was deleted")
    log.info("gladia_result.archived", bot_id=bot_id, key=key, size=archived.size)
    return archived


async def stored_gladia_result(
    pool: asyncpg.Pool, s3: S3Client, *, bucket: str, bot_id: str
) -> bytes | None:
    """Our stored copy of the bot's Gladia result (`gladia-result.json`), if one is recorded and
    the recording's media was not deleted."""
    key = await pool.fetchval(
        "SELECT a.s3_key FROM recording_artifacts a JOIN recordings r ON r.id = a.recording_id"
        " WHERE r.bot_id = $1 AND a.kind = 'gladia_result' AND r.media_deleted_at IS NULL",
        bot_id,
    )
    if key is None:
        return None
    try:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        body: bytes = await answer["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        log.warning("gladia_result.missing", bot_id=bot_id, key=key)
        return None  # recorded but not there: read from the provider again
    return body
