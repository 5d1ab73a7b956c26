"""The one deletion path of a recording's media: `notetaker meetings delete` and the scheduler's
retention job both go through `MediaDeleter.delete`, so the S3 objects, the rows and the org's
stored level always agree.

A deletion is a row of `media_deletions`, written first, then its steps, each stamped when done:

1. **intent**, one transaction: the recording is marked (`media_deleted_at`, on `recordings` and
   its `meetings` row), its upload lease is taken away (an upload in flight can write nothing
   more), its rows are cleared (provider URLs, S3 keys, the meeting's media and transcript
   columns, its `recording_status` `deleted`, or `media_expired` when retention deletes it; events
   parked for the bot, which may carry a transcript; the raw webhook bodies kept for the bot) and
   the row is written.
   From then on every writer refuses the recording: the uploader's lease and writes,
   transcript-sync's `meetings` writes, ingest's publishing.
2. **S3**: every object under the recording's prefix, listed (not named: video, audio, thumbnail,
   transcripts, whatever else is there) and deleted, and every unfinished multipart upload there
   aborted, listing again until a pass finds nothing. A writer that stores something after the
   mark deletes it again itself, so an object written before the listing is listed and one
   written after it is removed by its writer.
3. **usage**: a `storage.usage` event (step `delete`) taking off the org's stored level the bytes
   the recording's events added, with an event id of its own so metrics applies it once: the
   upload's (the recording's size, when complete) and its later objects' (the thumbnail, Gladia's
   result: the sizes their `recording_artifacts` rows hold, `later_objects.py`). They are reckoned
   at the intent, in its transaction (`stored_bytes`), before the artifacts' keys are cleared: a
   later object is recorded under a share lock of the recording's row, so one recorded before
   the mark is in the sum, and one stored after it is counted nowhere (its producer finds the
   recording deleted, and deletes the object again if the purge missed it). A resumed deletion
   takes off what its row says, whenever it resumes.
4. **MeetingBaaS** deletes the bot's data (`provider_data.delete_bot_data`), once the bot has
   left its meeting.
5. **Gladia** deletes the transcription job, when one was asked for.

When every step is stamped, `completed_at`. A step that fails for a reason time can fix (S3,
Kafka or a provider unreachable, a 429, a job still running) leaves the row unfinished, with the
error and `next_attempt_at`: the next run of the command finishes it, and so does the scheduler,
which resumes unfinished deletions. Two runs on one recording never interleave: each holds a
PostgreSQL advisory lock on it for the whole run (freed when the run ends or its connection
dies); the second then finds the steps done. Running it again changes nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import asyncpg
from botocore.exceptions import ClientError

from notetaker.common.events import StorageUsage
from notetaker.common.kafka import EventPublisher
from notetaker.common.later_objects import later_bytes
from notetaker.common.logs import get_logger
from notetaker.common.provider_data import (
    NotYet,
    delete_bot_data,
    delete_gladia_job,
    find_gladia_job,
)
from notetaker.common.s3 import RECORDINGS_PREFIX, S3Client, recording_prefix

log = get_logger(__name__)

Reason = Literal["operator", "retention"]
# The meetings row's `recording_status` once its media is gone because it expired (deleted by
# retention, or found gone from S3 by the metrics service's reconciliation, e.g. after the
# bucket's lifecycle rule); an operator's deletion says `deleted`.
MEDIA_EXPIRED = "media_expired"

# Advisory lock namespace of deletions (the second key is the recording's hash).
_LOCK_NAMESPACE = 0x6D646C74
# A prefix this shape names one recording; never list or delete under anything shorter.
_ONE_RECORDING = re.compile(
    "^" + re.escape(RECORDINGS_PREFIX) + r"(?:[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}/){3}$"
)
# Provider events that end a bot's meeting (ingest's delivery event types, v2 and v1).
_BOT_ENDED_EVENTS = ["bot.completed", "bot.failed", "complete", "failed"]
# A bot older than this has left its meeting whatever we heard.
_BOT_SURELY_ENDED = timedelta(days=1)
# A Gladia job row without the provider's id yet may still get one this long after the request.
_GLADIA_ID_PENDING = timedelta(hours=1)
_PURGE_PASSES = 20
_LOCK_WAIT_SECONDS = 300.0  # a run waits this long for another run on the same recording
_DELETE_BATCH = 1000


class NoSuchRecording(LookupError):
    """No `recordings` row has this id."""


@dataclass(frozen=True)
class ProviderAccess:
    """Where the providers are and the keys to ask them with (None: that step is skipped)."""

    meetingbaas_api_url: str
    meetingbaas_api_key: str | None
    gladia_api_url: str
    gladia_api_key: str | None
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Deletion:
    """A `media_deletions` row."""

    recording_id: uuid.UUID
    meeting_id: uuid.UUID | None
    bot_id: str
    org_id: uuid.UUID
    s3_prefix: str
    reason: str
    requested_by: str
    requested_at: datetime
    stored_bytes: int
    deleted_keys: list[str]
    objects_deleted: int
    bytes_deleted: int
    s3_done_at: datetime | None
    usage_done_at: datetime | None
    meetingbaas_outcome: str | None
    meetingbaas_done_at: datetime | None
    gladia_job_id: str | None
    gladia_outcome: str | None
    gladia_done_at: datetime | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    completed_at: datetime | None

    @property
    def done(self) -> bool:
        return self.completed_at is not None

    def steps_left(self) -> list[str]:
        stamps = {
            "s3": self.s3_done_at,
            "usage": self.usage_done_at,
            "meetingbaas": self.meetingbaas_done_at,
            "gladia": self.gladia_done_at,
        }
        return [step for step, at in stamps.items() if at is None]

    def as_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, datetime):
                value = value.astimezone(UTC).isoformat()
            elif isinstance(value, uuid.UUID):
                value = str(value)
            values[name] = value
        return values | {"steps_left": self.steps_left()}


@dataclass(frozen=True)
class Outcome:
    """What one run did: the deletion as it stands, and whether it was complete before."""

    deletion: Deletion
    already_done: bool


@dataclass
class Purged:
    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    uploads_aborted: list[str] = field(default_factory=list)


def check_prefix(prefix: str) -> str:
    if not _ONE_RECORDING.fullmatch(prefix):
        raise ValueError(f"refusing to delete under {prefix!r}: not one recording's prefix")
    return prefix


async def purge_prefix(s3: S3Client, bucket: str, prefix: str) -> Purged:
    """Delete every object and abort every multipart upload under one recording's prefix,
    listing again until a pass finds nothing; what was removed. Raises on any S3 error."""
    check_prefix(prefix)
    purged = Purged()
    for _ in range(_PURGE_PASSES):
        uploads = await _unfinished_uploads(s3, bucket, prefix)
        for key, upload_id in uploads:
            try:
                await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                # Completed or aborted since the listing (the uploader, another purge of the
                # same prefix): gone either way; an object it completed is listed below.
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
            purged.uploads_aborted.append(upload_id)
        objects = await _objects(s3, bucket, prefix)
        for start in range(0, len(objects), _DELETE_BATCH):
            batch = objects[start : start + _DELETE_BATCH]
            answer = await s3.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": key} for key, _ in batch], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"S3 refused to delete {len(errors)} object(s) under {prefix}, e.g."
                    f" {first.get('Key')}: {first.get('Code')}"
                )
            purged.keys += [key for key, _ in batch]
            purged.bytes += sum(size for _, size in batch)
        if not uploads and not objects:
            return purged
    raise RuntimeError(f"objects keep appearing under {prefix}: something still writes there")


async def _objects(s3: S3Client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    token: str | None = None
    while True:
        page = await (
            s3.list_objects_v2(Bucket=bucket, Prefix=prefix, ContinuationToken=token)
            if token
            else s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        )
        found += [(o["Key"], o.get("Size", 0)) for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return found
        token = page.get("NextContinuationToken")


async def _unfinished_uploads(s3: S3Client, bucket: str, prefix: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    markers: dict[str, str] = {}
    while True:
        page = await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **markers)  # type: ignore[arg-type]
        found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page.get("IsTruncated"):
            return found
        markers = {
            "KeyMarker": page.get("NextKeyMarker", ""),
            "UploadIdMarker": page.get("NextUploadIdMarker", ""),
        }


async def media_deleted(conn: asyncpg.Connection | asyncpg.Pool, recording_id: uuid.UUID) -> bool:
    """Whether the recording's media was deleted (a writer checks this after it stored)."""
    return bool(
        await conn.fetchval(
            "SELECT media_deleted_at IS NOT NULL FROM recordings WHERE id = $1", recording_id
        )
    )


_DELETION_COLUMNS = """recording_id, meeting_id, bot_id, org_id, s3_prefix, reason, requested_by,
    requested_at, stored_bytes, deleted_keys, objects_deleted, bytes_deleted, s3_done_at,
    usage_done_at, meetingbaas_outcome, meetingbaas_done_at, gladia_job_id, gladia_outcome,
    gladia_done_at, attempts, last_error, next_attempt_at, completed_at"""


async def find_deletion(
    conn: asyncpg.Connection | asyncpg.Pool, recording_id: uuid.UUID
) -> Deletion | None:
    row = await conn.fetchrow(
        f"SELECT {_DELETION_COLUMNS} FROM media_deletions WHERE recording_id = $1",  # noqa: S608
        recording_id,
    )
    return None if row is None else Deletion(**dict(row))


async def _unlock(conn: asyncpg.Connection, recording_id: uuid.UUID) -> None:
    """Free the recording's lock; a connection that died took the lock with it."""
    if conn.is_closed():
        return
    try:
        await conn.execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_NAMESPACE, str(recording_id)
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("deletion.unlock_failed", recording_id=str(recording_id), error=repr(exc))


def retry_delay(attempts: int) -> timedelta:
    """Wait before an unfinished deletion is tried again: 5 minutes, doubling, at most 6 hours."""
    doubled: timedelta = timedelta(minutes=5) * 2 ** min(max(0, attempts - 1), 10)
    return min(doubled, timedelta(hours=6))


class MediaDeleter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        s3: S3Client,
        bucket: str,
        publisher: EventPublisher,
        providers: ProviderAccess,
        http: aiohttp.ClientSession,
    ) -> None:
        self.pool = pool
        self.s3 = s3
        self.bucket = bucket
        self.publisher = publisher
        self.providers = providers
        self.http = http

    async def delete(
        self, recording_id: uuid.UUID, *, by: str, reason: Reason, wait: bool = True
    ) -> Outcome | None:
        """Delete the recording's media (or finish deleting it); None when `wait` is False and
        another run holds the recording. Raises NoSuchRecording for an unknown id; S3, Kafka and
        database errors of a step are recorded on the row and raised."""
        async with self.pool.acquire() as conn:
            if wait:
                try:
                    await conn.execute(
                        "SELECT pg_advisory_lock($1, hashtext($2))",
                        _LOCK_NAMESPACE,
                        str(recording_id),
                        timeout=_LOCK_WAIT_SECONDS,
                    )
                except TimeoutError as exc:
                    raise TimeoutError(
                        f"another deletion of recording {recording_id} has run for over"
                        f" {_LOCK_WAIT_SECONDS:.0f} s: try again once it is over"
                    ) from exc
            elif not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, str(recording_id)
            ):
                return None
            try:
                return await self._delete(conn, recording_id, by, reason)
            finally:
                await _unlock(conn, recording_id)

    async def _delete(
        self, conn: asyncpg.Connection, recording_id: uuid.UUID, by: str, reason: Reason
    ) -> Outcome:
        deletion = await self._intent(conn, recording_id, by, reason)
        if deletion.done:
            return Outcome(deletion, already_done=True)
        errors: list[str] = []
        try:
            if deletion.s3_done_at is None:
                await self._purge(conn, deletion)
            if deletion.usage_done_at is None:
                await self._take_off_usage(conn, deletion)
        except Exception as exc:
            # Our own S3, Kafka or database: recorded (when the database answers), then raised.
            try:
                await self._unfinished(conn, recording_id, [f"{type(exc).__name__}: {exc}"])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as unrecorded:
                log.warning(
                    "deletion.error_unrecorded",
                    recording_id=str(recording_id),
                    error=repr(unrecorded),
                )
            raise
        current = await find_deletion(conn, recording_id)
        assert current is not None
        if current.meetingbaas_done_at is None:
            errors += await self._meetingbaas(conn, current)
        if current.gladia_done_at is None:
            errors += await self._gladia(conn, current)
        if errors:
            await self._unfinished(conn, recording_id, errors)
        else:
            await conn.execute(
                "UPDATE media_deletions SET completed_at = now(), last_error = NULL,"
                " next_attempt_at = NULL WHERE recording_id = $1",
                recording_id,
            )
        final = await find_deletion(conn, recording_id)
        assert final is not None
        log.info(
            "deletion.run",
            recording_id=str(recording_id),
            bot_id=final.bot_id,
            reason=final.reason,
            done=final.done,
            steps_left=final.steps_left(),
            objects_deleted=final.objects_deleted,
        )
        return Outcome(final, already_done=False)

    async def _intent(
        self, conn: asyncpg.Connection, recording_id: uuid.UUID, by: str, reason: Reason
    ) -> Deletion:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT r.id, r.org_id, r.user_id, r.bot_id, r.media_deleted_at,"
                " r.s3_upload_status::text AS status, coalesce(r.s3_file_size_bytes, 0) AS size,"
                " coalesce(r.meeting_id, (SELECT m.id FROM meetings m WHERE m.bot_id = r.bot_id"
                " AND m.source = 'notetaker')) AS meeting_id"
                " FROM recordings r WHERE r.id = $1 FOR UPDATE",
                recording_id,
            )
            if row is None:
                raise NoSuchRecording(f"no recording {recording_id}")
            if row["media_deleted_at"] is None:
                await self._mark(conn, row, by, reason)
        deletion = await find_deletion(conn, recording_id)
        if deletion is None:  # marked without a row: only by hand; start the row now
            async with conn.transaction():
                await self._write_intent(conn, row, by, reason)
            deletion = await find_deletion(conn, recording_id)
        assert deletion is not None
        return deletion

    async def _mark(
        self, conn: asyncpg.Connection, row: asyncpg.Record, by: str, reason: Reason
    ) -> None:
        await self._write_intent(conn, row, by, reason)
        await conn.execute(
            "UPDATE recordings SET media_deleted_at = now(),"
            " upload_lease_token = upload_lease_token + 1, upload_lease_expires_at = NULL,"
            " upload_lease_holder = NULL, provider_video_url = NULL, provider_audio_url = NULL,"
            " provider_participants = NULL, provider_speakers = NULL,"
            " s3_video_key = NULL, s3_audio_key = NULL, s3_upload_next_retry_at = NULL,"
            " s3_upload_error_message = CASE WHEN s3_upload_status = 'complete'"
            "   THEN s3_upload_error_message ELSE 'media deleted before the upload finished' END,"
            " s3_upload_status = CASE WHEN s3_upload_status = 'complete'"
            "   THEN s3_upload_status ELSE 'failed' END,"
            " updated_at = now() WHERE id = $1",
            row["id"],
        )
        await conn.execute(
            "UPDATE meetings SET media_deleted_at = now(), video_url = NULL, audio_url = NULL,"
            " thumbnail_url = NULL, transcript_text = NULL, transcript_json = NULL,"
            " transcript_provider = NULL, transcript_ref = NULL, recording_status = $2,"
            " participants = NULL, speakers = NULL, summary = NULL,"
            " updated_at = now() WHERE bot_id = $1 AND source = 'notetaker'",
            row["bot_id"],
            MEDIA_EXPIRED if reason == "retention" else "deleted",
        )
        # The artifacts' rows stay as the record of what was kept; where they were is gone.
        await conn.execute(
            "UPDATE recording_artifacts SET provider_url = NULL, s3_key = NULL, updated_at = now()"
            " WHERE recording_id = $1",
            row["id"],
        )
        # Events parked for a retry may carry the transcript; they would also write it again.
        await conn.execute("DELETE FROM parked_events WHERE key = $1", row["bot_id"].encode())
        # The kept webhook bodies carry the provider's URLs, transcripts and names. Ingest keeps
        # a body only while the recording row (locked FOR UPDATE above) is not marked, so none
        # is written after this.
        await conn.execute("DELETE FROM webhook_bodies WHERE bot_id = $1", row["bot_id"])

    async def _write_intent(
        self, conn: asyncpg.Connection, row: asyncpg.Record, by: str, reason: Reason
    ) -> None:
        await conn.execute(
            "INSERT INTO media_deletions (recording_id, meeting_id, bot_id, org_id, s3_prefix,"
            " reason, requested_by, stored_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (recording_id) DO NOTHING",
            row["id"],
            row["meeting_id"],
            row["bot_id"],
            row["org_id"],
            recording_prefix(row["org_id"], row["user_id"], row["id"]),
            reason,
            by[:200],
            (row["size"] if row["status"] == "complete" else 0)
            + await later_bytes(conn, row["id"]),
        )

    async def _purge(self, conn: asyncpg.Connection, deletion: Deletion) -> None:
        purged = await purge_prefix(self.s3, self.bucket, deletion.s3_prefix)
        async with conn.transaction():
            if purged.uploads_aborted:
                await conn.execute(
                    "DELETE FROM upload_parts WHERE upload_id = ANY($1::text[])",
                    purged.uploads_aborted,
                )
            await conn.execute(
                "UPDATE media_deletions SET deleted_keys = deleted_keys || $2::text[],"
                " objects_deleted = objects_deleted + $3, bytes_deleted = bytes_deleted + $4,"
                " s3_done_at = now() WHERE recording_id = $1",
                deletion.recording_id,
                purged.keys,
                len(purged.keys),
                purged.bytes,
            )

    async def _take_off_usage(self, conn: asyncpg.Connection, deletion: Deletion) -> None:
        if deletion.stored_bytes > 0:
            await self.publisher.publish(
                StorageUsage(
                    bot_id=deletion.bot_id,
                    org_id=deletion.org_id,
                    recording_id=deletion.recording_id,
                    step="delete",
                    bytes_stored=-deletion.stored_bytes,
                    occurred_at=datetime.now(UTC),
                )
            )
        await conn.execute(
            "UPDATE media_deletions SET usage_done_at = now() WHERE recording_id = $1",
            deletion.recording_id,
        )

    async def _meetingbaas(self, conn: asyncpg.Connection, deletion: Deletion) -> list[str]:
        key = self.providers.meetingbaas_api_key
        if key is None:
            outcome = "skipped: NOTETAKER_MEETINGBAAS_API_KEY is not set"
        else:
            if not await self._bot_ended(conn, deletion.bot_id):
                return ["MeetingBaaS: the bot is still in its meeting; asked once it has left"]
            try:
                outcome = await delete_bot_data(
                    self.http,
                    self.providers.meetingbaas_api_url,
                    key,
                    deletion.bot_id,
                    self.providers.timeout_seconds,
                )
            except NotYet as exc:
                return [str(exc)]
        await conn.execute(
            "UPDATE media_deletions SET meetingbaas_outcome = $2, meetingbaas_done_at = now()"
            " WHERE recording_id = $1",
            deletion.recording_id,
            outcome,
        )
        return []

    async def _bot_ended(self, conn: asyncpg.Connection, bot_id: str) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE bot_id = $1"
                " AND event_type = ANY($2::text[]))"
                " OR EXISTS (SELECT 1 FROM recordings WHERE bot_id = $1"
                " AND (provider_urls_received_at IS NOT NULL OR s3_upload_status = 'complete'"
                " OR created_at < now() - $3::interval))",
                bot_id,
                _BOT_ENDED_EVENTS,
                _BOT_SURELY_ENDED,
            )
        )

    async def _gladia(self, conn: asyncpg.Connection, deletion: Deletion) -> list[str]:
        async with conn.transaction():
            # Under the row's lock, which transcript-sync takes before it marks a submit as
            # tried: an intent (written with the video) never tried is closed here for good, and
            # transcript-sync, finding it closed or the media deleted, never submits it.
            job = await conn.fetchrow(
                "SELECT request_id, job_id, requested_at, submitted_at FROM transcription_jobs"
                " WHERE bot_id = $1 FOR UPDATE",
                deletion.bot_id,
            )
            never_tried = job is not None and job["job_id"] is None and job["submitted_at"] is None
            if never_tried:
                await self._close_job(conn, deletion.bot_id)
        job_id: str | None = job["job_id"] if job is not None else None
        key = self.providers.gladia_api_key
        if job is not None and job_id is None and not never_tried and key is not None:
            # A submit was tried and its id never stored (the answer lost, the database failing
            # after the POST): Gladia may hold the job under our request id.
            try:
                job_id = await find_gladia_job(
                    self.http,
                    self.providers.gladia_api_url,
                    key,
                    str(job["request_id"]),
                    self.providers.timeout_seconds,
                )
            except NotYet as exc:
                return [str(exc)]
        if job is None:
            outcome = "no job"
        elif never_tried:
            outcome = "no job (intent never submitted)"
        elif job_id is None:
            if job["requested_at"] > datetime.now(UTC) - _GLADIA_ID_PENDING:
                return ["Gladia: a job was requested and its id is not known yet"]
            outcome = "no job (requested, never created)"
        elif key is None:
            outcome = "skipped: NOTETAKER_GLADIA_API_KEY is not set"
        else:
            try:
                outcome = await delete_gladia_job(
                    self.http,
                    self.providers.gladia_api_url,
                    key,
                    job_id,
                    self.providers.timeout_seconds,
                )
            except NotYet as exc:
                return [str(exc)]
            except ValueError as exc:  # not a plain job id: never put into a URL
                outcome = f"not asked: {exc}"
        # The job is over for us: the scheduler's poller stops asking about it.
        await self._close_job(conn, deletion.bot_id)
        await conn.execute(
            "UPDATE media_deletions SET gladia_job_id = $2, gladia_outcome = $3,"
            " gladia_done_at = now() WHERE recording_id = $1",
            deletion.recording_id,
            job_id,
            outcome,
        )
        return []

    async def _close_job(self, conn: asyncpg.Connection, bot_id: str) -> None:
        await conn.execute(
            "UPDATE transcription_jobs SET completed_at = coalesce(completed_at, now()),"
            " status = 'deleted' WHERE bot_id = $1",
            bot_id,
        )

    async def _unfinished(
        self, conn: asyncpg.Connection, recording_id: uuid.UUID, errors: Sequence[str]
    ) -> None:
        attempts = await conn.fetchval(
            "UPDATE media_deletions SET attempts = attempts + 1, last_error = $2"
            " WHERE recording_id = $1 RETURNING attempts",
            recording_id,
            "; ".join(errors)[:2000],
        )
        await conn.execute(
            "UPDATE media_deletions SET next_attempt_at = now() + $2::interval"
            " WHERE recording_id = $1",
            recording_id,
            retry_delay(attempts or 1),
        )
