"""What the operator commands' tests share: the providers (the simulator's MeetingBaaS and
Gladia, in this process), the command's environment, and meetings stored as the pipeline stores
them: real rows, real objects under the recording's S3 prefix, a Gladia job the provider has."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from notetaker.common.s3 import S3Client, recording_key, recording_prefix, s3_location
from notetaker.devstack.simulator import GladiaJob, ProviderSimulator
from notetaker.devstack.stack import Stack
from notetaker.uploader.keys import SourceUrlCipher
from tests.cli.test_events import cli_env
from tests.conftest import quiet_simulator


@pytest.fixture(scope="package")
async def providers() -> AsyncIterator[ProviderSimulator]:
    """MeetingBaaS and Gladia as the simulator plays them; its bots stay in their meetings (no
    webhooks: nothing listens)."""
    async with quiet_simulator() as simulator:
        yield simulator


@pytest.fixture
def operator_env(stack: Stack, providers: ProviderSimulator) -> dict[str, str]:
    """The command's environment: the stack, and the providers' APIs with their keys."""
    return cli_env(stack.env()) | {
        "NOTETAKER_MEETINGBAAS_API_URL": providers.base_url,
        "NOTETAKER_MEETINGBAAS_API_KEY": providers.config.api_key,
        "NOTETAKER_GLADIA_API_URL": providers.base_url,
        "NOTETAKER_GLADIA_API_KEY": providers.config.gladia_api_key,
    }


VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # what the bytes are is not tested
AUDIO = b"fLaC" + bytes(range(256)) * 20
THUMBNAIL = b"\xff\xd8\xff\xe0" + bytes(64)
TRANSCRIPT_TEXT = "Ada: The budget is confidential."
# The provider's transcript JSON, stored beside the video as the uploader stores an artifact.
TRANSCRIPTION = b'[{"speaker": "Ada", "words": [{"start": 0.5, "end": 1.5, "word": "x"}]}]'


@dataclass(frozen=True)
class StoredMeeting:
    meeting_id: uuid.UUID
    recording_id: uuid.UUID
    bot_id: str
    org_id: uuid.UUID
    user_id: uuid.UUID
    prefix: str
    # what the upload counted in the org's stored level (video, audio and the artifact)
    size_bytes: int
    gladia_job_id: str


async def stored_meeting(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    *,
    org_id: uuid.UUID | None = None,
    created_days_ago: float = 0,
) -> StoredMeeting:
    """A meeting whose recording the pipeline stored: video, audio, thumbnail, the provider's
    transcript JSON (an artifact, with its `recording_artifacts` row) and something else under its
    prefix, an upload of it left unfinished, its transcript, participants and summary in the
    meetings row, its provider URLs (sealed) in the recordings row, its bot.completed webhook
    accepted with its raw body kept (sealed), a MeetingBaaS bot and a finished Gladia job.
    `created_days_ago` moves the recording (and its webhook) back in time (the tests' clock)."""
    bot_id = providers.create_bot(hold_completed=True)
    org_id = org_id or uuid.uuid4()
    user_id, recording_id = uuid.uuid4(), uuid.uuid4()
    bucket = stack.s3_bucket
    keys = {
        kind: recording_key(org_id, user_id, recording_id, kind, ext)  # type: ignore[arg-type]
        for kind, ext in (("video", "mp4"), ("audio", "flac"), ("thumbnail", "jpg"))
    }
    prefix = recording_prefix(org_id, user_id, recording_id)
    for kind, body in (("video", VIDEO), ("audio", AUDIO), ("thumbnail", THUMBNAIL)):
        await s3.put_object(Bucket=bucket, Key=keys[kind], Body=body)
    await s3.put_object(Bucket=bucket, Key=f"{prefix}transcription.json", Body=TRANSCRIPTION)
    await s3.put_object(Bucket=bucket, Key=f"{prefix}extra/notes.txt", Body=b"whatever else")
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}video-retry.mp4")
    await s3.upload_part(
        Bucket=bucket,
        Key=f"{prefix}video-retry.mp4",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    created = datetime.now(UTC) - timedelta(days=created_days_ago)
    meeting_id: uuid.UUID = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
        " bot_id, video_url, audio_url, thumbnail_url, transcript_text, transcript_json,"
        " transcript_provider, recording_status, created_at, duration_seconds, participants,"
        " speakers, language, summary)"
        " VALUES ($1, $2, 'Budget review', $3, 'https://meet.google.com/x', 'notetaker', $4,"
        " $5, $6, $7, $8, $9, 'gladia', 'available', $3, 60, $10, $10, 'en',"
        " 'The budget is confidential.') RETURNING id",
        org_id,
        user_id,
        created,
        bot_id,
        s3_location(bucket, keys["video"]),
        s3_location(bucket, keys["audio"]),
        s3_location(bucket, keys["thumbnail"]),
        TRANSCRIPT_TEXT,
        '[{"speaker": "Ada", "start": 0.5, "end": 1.5, "text": "The budget is confidential."}]',
        '[{"id": null, "name": "Ada"}]',
    )
    cipher = SourceUrlCipher([SecretStr(stack.source_url_key)])
    size = len(VIDEO) + len(AUDIO) + len(TRANSCRIPTION)
    await db.execute(
        "INSERT INTO recordings (id, org_id, user_id, meeting_id, bot_id, provider_video_url,"
        " provider_audio_url, provider_urls_received_at, s3_upload_status, s3_video_key,"
        " s3_audio_key, s3_file_size_bytes, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'complete', $9, $10, $11, $8)",
        recording_id,
        org_id,
        user_id,
        meeting_id,
        bot_id,
        cipher.seal(providers.signed_url(bot_id, "video.mp4")),
        cipher.seal(providers.signed_url(bot_id, "audio.flac")),
        created,
        keys["video"],
        keys["audio"],
        size,
    )
    await db.execute(
        "INSERT INTO recording_artifacts (recording_id, kind, provider_url, s3_key, size_bytes,"
        " checksum, stored_at) VALUES ($1, 'transcription', $2, $3, $4, 'sha256-composite:c-1',"
        " now())",
        recording_id,
        cipher.seal(providers.signed_url(bot_id, "transcription.json")),
        f"{prefix}transcription.json",
        len(TRANSCRIPTION),
    )
    job_id = str(uuid.uuid4())
    providers.jobs[job_id] = GladiaJob(job_id, "https://s3.example/audio", None, status="done")
    await db.execute(
        "INSERT INTO transcription_jobs (request_id, bot_id, provider, job_id, completed_at,"
        " status) VALUES ($1, $2, 'gladia', $3, now(), 'done')",
        uuid.uuid4(),
        bot_id,
        job_id,
    )
    # The bot's bot.completed webhook as ingest kept it: accepted, its raw body sealed.
    body = json.dumps(
        {"event": "bot.completed", "data": {"bot_id": bot_id, "transcript": TRANSCRIPT_TEXT}}
    ).encode()
    await db.execute(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id, outcome,"
        " received_at) VALUES ('meetingbaas', $1, 'bot.completed', $2, 'published', $3)",
        f"msg_{bot_id}",
        bot_id,
        created,
    )
    await db.execute(
        "INSERT INTO webhook_bodies (provider, delivery_id, bot_id, event_type, headers, sealed,"
        " size_bytes, received_at) VALUES ('meetingbaas', $1, $2, 'bot.completed', $3, $4, $5,"
        " $6)",
        f"msg_{bot_id}",
        bot_id,
        json.dumps({"svix-id": f"msg_{bot_id}"}),
        cipher.seal_body(body),
        len(body),
        created,
    )
    return StoredMeeting(meeting_id, recording_id, bot_id, org_id, user_id, prefix, size, job_id)


async def kept_bodies(db: asyncpg.Pool, bot_id: str) -> int:
    """How many raw webhook bodies are kept for the bot."""
    count: int = await db.fetchval("SELECT count(*) FROM webhook_bodies WHERE bot_id = $1", bot_id)
    return count


async def under_prefix(s3: S3Client, stack: Stack, prefix: str) -> list[str]:
    """Every object key and unfinished upload under `prefix` (what S3 still holds of it)."""
    objects = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix)
    uploads = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=prefix)
    return sorted(
        [o["Key"] for o in objects.get("Contents", [])]
        + [f"upload:{u['Key']}" for u in uploads.get("Uploads", [])]
    )
