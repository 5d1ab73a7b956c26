"""The uploader's rows: `recordings` and its s3_* columns, moved through their states.

Every write is refused for a recording whose media was deleted (`media_deleted_at`): a deletion
also takes the upload lease away, so a fenced write raises `LeaseLost` either way, and the
uploader then removes what it stored (`upload.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from notetaker.common.events import ArtifactKind, RecordingCompleted, StoredArtifact
from notetaker.common.meetingbaas import Api
from notetaker.uploader.keys import SourceUrlCipher
from notetaker.uploader.lease import UploadLease


@dataclass(frozen=True)
class Recording:
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bot_id: str
    status: str
    provider_api: Api  # the MeetingBaaS API that delivered it (a CHECK keeps it v1 or v2)
    video_url: str | None
    audio_url: str | None
    urls_received_at: datetime | None
    provider_transcript: bool
    retry_count: int
    video_key: str | None
    audio_key: str | None
    size_bytes: int | None
    checksum: str | None
    error: str | None
    next_retry_at: datetime | None
    deleted: bool = False  # its media was deleted: nothing more is stored or announced for it
    # The provider's artifacts (`recording_artifacts`): URLs to copy, and where they were stored.
    artifact_urls: Mapping[ArtifactKind, str] = field(default_factory=dict)
    artifacts: tuple[StoredArtifact, ...] = ()
    duration_seconds: float | None = None
    participants: list[dict[str, Any]] | None = None
    speakers: list[dict[str, Any]] | None = None


_COLUMNS = """id, org_id, user_id, bot_id, s3_upload_status::text AS status, provider_api,
    provider_video_url AS video_url, provider_audio_url AS audio_url,
    provider_urls_received_at AS urls_received_at, provider_transcript,
    s3_upload_retry_count AS retry_count,
    s3_video_key AS video_key, s3_audio_key AS audio_key, s3_file_size_bytes AS size_bytes,
    s3_checksum AS checksum, s3_upload_error_message AS error,
    s3_upload_next_retry_at AS next_retry_at, media_deleted_at IS NOT NULL AS deleted,
    provider_duration_seconds AS duration_seconds, provider_participants AS participants,
    provider_speakers AS speakers"""
_SELECT_BY_BOT = f"SELECT {_COLUMNS} FROM recordings WHERE bot_id = $1"  # noqa: S608 - constant


async def find_by_bot(pool: asyncpg.Pool, bot_id: str, cipher: SourceUrlCipher) -> Recording | None:
    row = await pool.fetchrow(_SELECT_BY_BOT, bot_id)
    if row is None:
        return None
    values = dict(row)
    values["video_url"] = cipher.open(values["video_url"])
    values["audio_url"] = cipher.open(values["audio_url"])
    urls: dict[ArtifactKind, str] = {}
    stored: list[StoredArtifact] = []
    for artifact in await pool.fetch(
        "SELECT kind, provider_url, s3_key, size_bytes, checksum FROM recording_artifacts"
        " WHERE recording_id = $1 ORDER BY kind",
        values["id"],
    ):
        url = cipher.open(artifact["provider_url"])
        if url is not None:
            urls[artifact["kind"]] = url
        if artifact["s3_key"] is not None:
            stored.append(
                StoredArtifact(
                    kind=artifact["kind"],
                    key=artifact["s3_key"],
                    size_bytes=artifact["size_bytes"],
                    checksum=artifact["checksum"],
                )
            )
    return Recording(**values, artifact_urls=urls, artifacts=tuple(stored))


async def save_source(
    pool: asyncpg.Pool, event: RecordingCompleted, cipher: SourceUrlCipher
) -> None:
    """Remember the provider URLs (for retries, sealed: they carry the provider's signature)
    and the API that sent them (which signs them again) unless the upload is already done; the
    artifacts' URLs (sealed too) and what the provider said about the meeting with them."""
    async with pool.acquire() as conn, conn.transaction():
        recording_id = await conn.fetchval(
            "UPDATE recordings SET provider_video_url = $2, provider_audio_url = $3,"
            " provider_urls_received_at = $4, provider_transcript = $5, provider_api = $6,"
            " provider_duration_seconds = $7, provider_participants = $8,"
            " provider_speakers = $9, updated_at = now()"
            " WHERE bot_id = $1 AND s3_upload_status <> 'complete' AND media_deleted_at IS NULL"
            " RETURNING id",
            event.bot_id,
            cipher.seal(event.video_url),
            cipher.seal(event.audio_url),
            event.urls_received_at,
            event.provider_transcript,
            event.provider_api,
            event.duration_seconds,
            event.participants,
            event.speakers,
        )
        if recording_id is not None:
            await _save_artifact_urls(conn, recording_id, cipher, event.artifact_urls)


async def _save_artifact_urls(
    conn: asyncpg.Connection,
    recording_id: uuid.UUID,
    cipher: SourceUrlCipher,
    urls: Mapping[ArtifactKind, str],
) -> None:
    """The artifacts' URLs, as the provider last signed them (a kind it no longer names keeps
    the URL it had)."""
    for kind, url in urls.items():
        await conn.execute(
            "INSERT INTO recording_artifacts (recording_id, kind, provider_url) VALUES ($1, $2, $3)"
            " ON CONFLICT (recording_id, kind) DO UPDATE SET provider_url = excluded.provider_url,"
            " updated_at = now()",
            recording_id,
            kind,
            cipher.seal(url),
        )


async def mark_complete(
    pool: asyncpg.Pool,
    lease: UploadLease,
    *,
    video_key: str | None,
    audio_key: str | None,
    size_bytes: int,
    checksum: str,
    artifacts: list[StoredArtifact] | None = None,
    missing: Mapping[ArtifactKind, str] | None = None,
) -> None:
    """The recording complete, with where each of its objects went (`size_bytes` counts them
    all, the artifacts and the people lists too), in one transaction fenced by the lease."""
    async with pool.acquire() as conn, conn.transaction():
        written = await conn.fetchval(
            "UPDATE recordings SET s3_upload_status = 'complete', s3_video_key = $2,"
            " s3_audio_key = $3, s3_file_size_bytes = $4, s3_checksum = $5,"
            " s3_upload_error_message = NULL, s3_upload_next_retry_at = NULL,"
            " upload_lease_expires_at = NULL, updated_at = now()"
            " WHERE id = $1 AND upload_lease_token = $6 AND media_deleted_at IS NULL RETURNING 1",
            lease.recording_id,
            video_key,
            audio_key,
            size_bytes,
            checksum,
            lease.token,
        )
        if written is None:
            raise lease.lost()
        for artifact in artifacts or []:
            # A people list has no row until now (no URL to keep): it is written here.
            await conn.execute(
                "INSERT INTO recording_artifacts (recording_id, kind, s3_key, size_bytes,"
                " checksum, stored_at) VALUES ($1, $2, $3, $4, $5, now())"
                " ON CONFLICT (recording_id, kind) DO UPDATE SET s3_key = excluded.s3_key,"
                " size_bytes = excluded.size_bytes, checksum = excluded.checksum,"
                " stored_at = excluded.stored_at, error = NULL, updated_at = now()",
                lease.recording_id,
                artifact.kind,
                artifact.key,
                artifact.size_bytes,
                artifact.checksum,
            )
        for kind, why in (missing or {}).items():
            await conn.execute(
                "UPDATE recording_artifacts SET error = $3, updated_at = now()"
                " WHERE recording_id = $1 AND kind = $2",
                lease.recording_id,
                kind,
                why,
            )


async def mark_failed(
    pool: asyncpg.Pool,
    lease: UploadLease,
    *,
    error: str,
    retry_count: int,
    next_retry_at: datetime | None,
) -> None:
    """Record a failed attempt; `next_retry_at` None means failed for good. Hands the lease
    back: the row waits for the scheduler, not for a worker."""
    written = await pool.fetchval(
        "UPDATE recordings SET s3_upload_status = 'failed', s3_upload_error_message = $2,"
        " s3_upload_retry_count = $3, s3_upload_last_retry_at = now(),"
        " s3_upload_next_retry_at = $4, upload_lease_expires_at = NULL, updated_at = now()"
        " WHERE id = $1 AND s3_upload_status <> 'complete' AND upload_lease_token = $5"
        " AND media_deleted_at IS NULL RETURNING 1",
        lease.recording_id,
        error[:2000],
        retry_count,
        next_retry_at,
        lease.token,
    )
    if written is None:
        raise lease.lost()


async def save_fresh_source(
    pool: asyncpg.Pool,
    lease: UploadLease,
    cipher: SourceUrlCipher,
    *,
    video_url: str | None,
    audio_url: str | None,
    received_at: datetime,
    artifact_urls: Mapping[ArtifactKind, str] | None = None,
) -> None:
    """Keep the URLs the provider signed again (sealed), under the upload's lease."""
    async with pool.acquire() as conn, conn.transaction():
        written = await conn.fetchval(
            "UPDATE recordings SET provider_video_url = $2, provider_audio_url = $3,"
            " provider_urls_received_at = $4, updated_at = now()"
            " WHERE id = $1 AND upload_lease_token = $5 AND media_deleted_at IS NULL RETURNING 1",
            lease.recording_id,
            cipher.seal(video_url),
            cipher.seal(audio_url),
            received_at,
            lease.token,
        )
        if written is None:
            raise lease.lost()
        await _save_artifact_urls(conn, lease.recording_id, cipher, artifact_urls or {})
