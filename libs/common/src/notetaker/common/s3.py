"""S3: the aioboto3 client, object keys, and the bucket's rules (private, encrypted, lifecycle)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from notetaker.common.logs import get_logger
from notetaker.common.settings import NotetakerSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client as S3Client
else:
    S3Client = object

log = get_logger(__name__)

RECORDINGS_PREFIX = "meeting-recordings/"
MediaKind = Literal[
    "video",
    "audio",
    "thumbnail",
    # the provider's artifacts (notetaker.common.events.ArtifactKind)
    "transcription",
    "raw_transcription",
    "diarization",
    "chat_messages",
    # the people lists the provider hands over inline (notetaker.common.events.PeopleKind)
    "participants",
    "speakers",
]


def recording_key(
    org_id: uuid.UUID, user_id: uuid.UUID, recording_id: uuid.UUID, kind: MediaKind, ext: str
) -> str:
    """Where a recording's object lives; a function of the recording, so retries overwrite."""
    return f"{RECORDINGS_PREFIX}{org_id}/{user_id}/{recording_id}/{kind}.{ext}"


def recording_prefix(org_id: uuid.UUID, user_id: uuid.UUID, recording_id: uuid.UUID) -> str:
    """The folder holding everything stored for one recording (`recording_key`'s parent); it
    always names all three ids, so it never covers another recording's objects."""
    return f"{RECORDINGS_PREFIX}{org_id}/{user_id}/{recording_id}/"


def s3_location(bucket: str, key: str) -> str:
    """The permanent address stored in `meetings` (never a presigned URL, which expires)."""
    return f"s3://{bucket}/{key}"


def parse_s3_location(location: str) -> tuple[str, str]:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


@asynccontextmanager
async def s3_client(
    settings: NotetakerSettings, *, sign_payload: bool | None = None
) -> AsyncIterator[S3Client]:
    """`sign_payload=False` sends UNSIGNED-PAYLOAD instead of hashing every body for SigV4:
    for callers whose bodies each carry a signed SHA-256 checksum header, which S3 verifies
    (botocore already does this by itself over HTTPS; None keeps botocore's choice)."""
    session = aioboto3.Session(
        aws_access_key_id=(
            settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
        ),
        aws_secret_access_key=(
            settings.s3_secret_access_key.get_secret_value()
            if settings.s3_secret_access_key
            else None
        ),
        region_name=settings.s3_region,
    )
    config = AioConfig(
        retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
        signature_version="s3v4",
        max_pool_connections=50,
        s3={"addressing_style": "path", "payload_signing_enabled": sign_payload},
    )
    async with session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config) as s3:
        yield s3


async def ensure_bucket(s3: S3Client, bucket: str, expiration_days: int) -> None:
    """Create the recordings bucket if needed and (re)apply its rules; safe to repeat.

    Recordings expire after `expiration_days` (NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS): only a
    safety net, longer than any org's retention, which the project's own deletion path applies
    (objects, rows and the stored level together; moto does not run lifecycle rules at all)."""
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError:
        await s3.create_bucket(Bucket=bucket)
        log.info("s3.bucket_created", bucket=bucket)
    await s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    await s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    await s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-stale-multipart-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                },
                {
                    "ID": "recording-retention-safety-net",
                    "Status": "Enabled",
                    "Filter": {"Prefix": RECORDINGS_PREFIX},
                    "Expiration": {"Days": expiration_days},
                },
            ]
        },
    )
