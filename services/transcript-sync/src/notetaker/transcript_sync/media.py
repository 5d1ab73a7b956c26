"""Playable media for the meetings page: a short-lived presigned URL for a meeting's video,
audio or thumbnail, only for a token that names the meeting's org, each one counted as a
download."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from pydantic import SecretStr

from notetaker.common import media_tokens
from notetaker.common.events import StorageUsage
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, parse_s3_location

COLUMNS = {"video": "video_url", "audio": "audio_url", "thumbnail": "thumbnail_url"}


class MediaRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class MediaLink:
    url: str
    expires_in: int
    size_bytes: int


def orgs_of(authorization: str, keys: list[SecretStr]) -> frozenset[uuid.UUID]:
    """The orgs the bearer token names; MediaRefused(401) when it is missing or not valid."""
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        raise MediaRefused(401, "a bearer token is required")
    try:
        return media_tokens.verify(token, [k.get_secret_value() for k in keys])
    except media_tokens.MediaTokenRefused as refused:
        raise MediaRefused(401, str(refused)) from refused


async def media_link(
    pool: asyncpg.Pool,
    s3: S3Client,
    publisher: EventPublisher,
    *,
    meeting_id: str,
    kind: str,
    orgs: frozenset[uuid.UUID],
    expires_in: int,
) -> MediaLink:
    """A presigned URL to the meeting's media, when the meeting belongs to one of `orgs` (the
    orgs the caller's token names): another org's meeting is 403."""
    if kind not in COLUMNS:
        raise MediaRefused(404, f"no media kind {kind!r}: use video, audio or thumbnail")
    try:
        meeting = uuid.UUID(meeting_id)
    except ValueError as exc:
        raise MediaRefused(404, "no such meeting") from exc
    row = await pool.fetchrow(
        f"SELECT m.{COLUMNS[kind]} AS location, m.org_id, m.bot_id,"  # noqa: S608
        " m.media_deleted_at IS NOT NULL AS deleted, r.id AS recording_id"
        " FROM meetings m LEFT JOIN recordings r ON r.bot_id = m.bot_id WHERE m.id = $1",
        meeting,
    )
    if row is None:
        raise MediaRefused(404, "no such meeting")
    if row["org_id"] not in orgs:
        raise MediaRefused(403, "the token does not name this meeting's org")
    org = row["org_id"]
    if row["deleted"]:
        raise MediaRefused(410, "the meeting's media was deleted")
    if row["location"] is None:
        raise MediaRefused(409, f"the meeting has no {kind} yet")
    bucket, key = parse_s3_location(row["location"])
    head = await s3.head_object(Bucket=bucket, Key=key)
    url = await s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
    )
    if row["recording_id"] is not None:
        # Counted when handed out: the bytes leave S3 when the browser plays them.
        await publisher.publish(
            StorageUsage(
                bot_id=row["bot_id"],
                org_id=org,
                recording_id=row["recording_id"],
                step=f"download:{kind}:{uuid.uuid4()}",
                bytes_downloaded=head["ContentLength"],
                get_requests=1,
                occurred_at=datetime.now(UTC),
            )
        )
    return MediaLink(url=url, expires_in=expires_in, size_bytes=head["ContentLength"])
