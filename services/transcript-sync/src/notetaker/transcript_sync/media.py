"""Playable media for the meetings page: a short-lived presigned URL for a meeting's video,
audio or thumbnail, only for callers of the meeting's org, each one counted as a download."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from pydantic import SecretStr

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


def authorised(presented: str, tokens: list[SecretStr]) -> bool:
    token = presented.removeprefix("Bearer ").encode()
    ok = False
    for secret in tokens:  # no early exit: timing does not tell which token matched
        ok |= hmac.compare_digest(token, secret.get_secret_value().encode())
    return ok


async def media_link(
    pool: asyncpg.Pool,
    s3: S3Client,
    publisher: EventPublisher,
    *,
    meeting_id: str,
    kind: str,
    org_id: str,
    expires_in: int,
) -> MediaLink:
    if kind not in COLUMNS:
        raise MediaRefused(404, f"no media kind {kind!r}: use video, audio or thumbnail")
    try:
        meeting, org = uuid.UUID(meeting_id), uuid.UUID(org_id)
    except ValueError as exc:
        raise MediaRefused(404, "no such meeting") from exc
    row = await pool.fetchrow(
        f"SELECT m.{COLUMNS[kind]} AS location, m.bot_id, r.id AS recording_id"  # noqa: S608
        " FROM meetings m LEFT JOIN recordings r ON r.bot_id = m.bot_id"
        " WHERE m.id = $1 AND m.org_id = $2",
        meeting,
        org,
    )
    if row is None:  # another org's meeting looks exactly like a missing one
        raise MediaRefused(404, "no such meeting")
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
