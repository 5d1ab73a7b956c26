"""The meeting's participants and speakers, which the provider hands over inline (not at a URL),
made permanent beside the video (issue 18): `participants.json` and `speakers.json` under the
recording's prefix, with the recording's `complete`, referenced from `recording_artifacts` with
their size and SHA-256 (as S3 holds it), counted in the recording's stored bytes; a recording
copied again writes the same bytes to the same keys.

One uploader worker in this process against the stack's PostgreSQL, Kafka and S3, and a source
on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from notetaker.common.db import create_pool
from notetaker.common.envelope import Envelope
from notetaker.common.events import RecordingCompleted, RecordingUploadRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_prefix
from notetaker.devstack.sources import RecordingSource
from notetaker.devstack.stack import Stack
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.transfer import copy_clients
from notetaker.uploader.upload import Uploader
from tests.uploader.conftest import served_recording

# As a v2 `bot.completed` lists them: keys in the provider's order, not sorted, and a name
# beyond ASCII.
PARTICIPANTS = [
    {"name": "Ada Lovelace", "id": 1},
    {"name": "Alan Turing", "id": 2},
    {"name": "Émilie du Châtelet", "id": 3},
]
SPEAKERS = [{"name": "Alan Turing", "id": 2}, {"name": "Ada Lovelace", "id": 1}]


@pytest.fixture
async def uploader(stack: Stack) -> AsyncIterator[Uploader]:
    base = stack.settings(service_name="uploader-people").model_dump()
    settings = UploaderSettings(
        **base | {"source_url_keys": [SecretStr(stack.source_url_key)]},
    )
    async with AsyncExitStack() as exit_stack:
        publisher = EventPublisher(settings)
        await publisher.start()
        exit_stack.push_async_callback(publisher.stop)
        pool = await create_pool(settings)  # with the services' JSON codec
        exit_stack.push_async_callback(pool.close)
        s3, http = await exit_stack.enter_async_context(copy_clients(settings, 120))
        yield Uploader(settings, pool, s3, http, publisher)


def envelope(event: Any) -> Envelope:
    return Envelope(str(uuid.uuid4()), "/test", event.type, datetime.now(UTC), event)


async def completed(
    db: asyncpg.Pool,
    source: RecordingSource,
    video: bytes,
    *,
    participants: list[dict[str, Any]] | None,
    speakers: list[dict[str, Any]] | None,
) -> tuple[Any, Envelope]:
    """A deployed bot whose provider says its recording is ready, with the people lists given;
    the recordings row and the `recording.completed`."""
    row = await served_recording(db, source, video)
    bot_id = row["bot_id"]
    event = RecordingCompleted(
        bot_id=bot_id,
        video_url=source.url(f"{bot_id}.mp4"),
        urls_received_at=datetime.now(UTC),
        participants=participants,
        speakers=speakers,
    )
    return row, envelope(event)


async def stored(db: asyncpg.Pool, s3: S3Client, stack: Stack, row: Any) -> dict[str, Any]:
    """Every object under the recording's prefix: key → (body, S3's SHA-256 of it)."""
    prefix = recording_prefix(row["org_id"], row["user_id"], row["id"])
    listing = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix)
    objects = {}
    for o in listing.get("Contents", []):
        got = await s3.get_object(Bucket=stack.s3_bucket, Key=o["Key"])
        head = await s3.head_object(Bucket=stack.s3_bucket, Key=o["Key"], ChecksumMode="ENABLED")
        objects[o["Key"]] = (await got["Body"].read(), head.get("ChecksumSHA256"))
    return objects


async def artifact_rows(db: asyncpg.Pool, recording_id: uuid.UUID) -> dict[str, Any]:
    return {
        r["kind"]: dict(r)
        for r in await db.fetch(
            "SELECT kind, provider_url, s3_key, size_bytes, checksum, error"
            " FROM recording_artifacts WHERE recording_id = $1",
            recording_id,
        )
    }


async def test_participants_and_speakers_are_stored_beside_the_video_referenced_and_counted(
    uploader: Uploader, source: RecordingSource, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    video = os.urandom(256 * 1024)
    row, event = await completed(db, source, video, participants=PARTICIPANTS, speakers=SPEAKERS)

    await uploader.handle(event)

    done = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])
    assert done["s3_upload_status"] == "complete"
    prefix = recording_prefix(row["org_id"], row["user_id"], row["id"])
    objects = await stored(db, s3, stack, row)
    rows = await artifact_rows(db, row["id"])
    assert sorted(rows) == ["participants", "speakers"]
    for kind, delivered in (("participants", PARTICIPANTS), ("speakers", SPEAKERS)):
        artifact = rows[kind]
        assert artifact["s3_key"] == f"{prefix}{kind}.json"
        body, s3_sha256 = objects[artifact["s3_key"]]
        assert json.loads(body) == delivered  # the list as delivered, in its order
        sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert s3_sha256 == sha256  # S3 checked the body against it and keeps it
        assert (artifact["size_bytes"], artifact["checksum"]) == (len(body), f"sha256:{sha256}")
        assert (artifact["provider_url"], artifact["error"]) == (None, None)
    # The recording's stored bytes (what its usage event counts) are all of its objects.
    assert sorted(objects) == sorted([done["s3_video_key"], *(r["s3_key"] for r in rows.values())])
    assert done["s3_file_size_bytes"] == sum(len(body) for body, _ in objects.values())
    assert done["s3_file_size_bytes"] == len(video) + sum(r["size_bytes"] for r in rows.values())


async def test_only_the_lists_the_provider_gave_are_stored(
    uploader: Uploader, source: RecordingSource, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """v1's `complete` names the speakers only; no list at all stores none."""
    video = os.urandom(64 * 1024)
    v1, v1_event = await completed(
        db, source, video, participants=None, speakers=[{"id": None, "name": "Ada Lovelace"}]
    )
    bare, bare_event = await completed(db, source, video, participants=None, speakers=None)

    await uploader.handle(v1_event)
    await uploader.handle(bare_event)

    assert sorted(await artifact_rows(db, v1["id"])) == ["speakers"]
    assert [key.rsplit("/", 1)[1] for key in await stored(db, s3, stack, v1)] == [
        "speakers.json",
        "video.mp4",
    ]
    assert await artifact_rows(db, bare["id"]) == {}
    assert [key.rsplit("/", 1)[1] for key in await stored(db, s3, stack, bare)] == ["video.mp4"]
    done = await db.fetchrow("SELECT s3_file_size_bytes FROM recordings WHERE id = $1", bare["id"])
    assert done["s3_file_size_bytes"] == len(video)


async def test_a_recording_copied_again_writes_the_same_bytes_to_the_same_keys(
    uploader: Uploader, source: RecordingSource, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """A recording whose completion was not recorded (a status write fenced out) is copied again
    by its next holder: the lists are the ones kept in its row, written as the same objects."""
    row, event = await completed(
        db, source, os.urandom(64 * 1024), participants=PARTICIPANTS, speakers=SPEAKERS
    )
    await uploader.handle(event)
    first_objects = await stored(db, s3, stack, row)
    first_rows = await artifact_rows(db, row["id"])
    first = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])

    await db.execute(
        "UPDATE recordings SET s3_upload_status = 'pending',"
        " upload_lease_token = upload_lease_token + 1, upload_lease_expires_at = NULL"
        " WHERE id = $1",
        row["id"],
    )
    again = RecordingUploadRequested(bot_id=row["bot_id"], recording_id=row["id"], attempt=1)
    await uploader.handle(envelope(again))

    second = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])
    assert second["s3_upload_status"] == "complete"
    video = f"{row['bot_id']}.mp4"
    assert [n for n, _ in source.requests if n == video] == [video, video]  # copied again
    assert await stored(db, s3, stack, row) == first_objects
    assert await artifact_rows(db, row["id"]) == first_rows
    assert second["s3_file_size_bytes"] == first["s3_file_size_bytes"]
