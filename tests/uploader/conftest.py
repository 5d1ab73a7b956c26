"""Fixtures the uploader's tests share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from notetaker.common.events import RecordingCompleted
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.sources import RecordingSource
from notetaker.devstack.stack import Stack


@pytest.fixture
async def source() -> AsyncIterator[RecordingSource]:
    """A provider's file server on loopback; `files` and `faults` set what it serves and how."""
    src = RecordingSource()
    await src.start()
    yield src
    await src.stop()


async def served_recording(db: asyncpg.Pool, source: RecordingSource, data: bytes) -> Any:
    """A deployed bot's recordings row, nothing copied yet, whose provider's file server
    `source` serves `data` as `<bot_id>.mp4`; the row."""
    bot_id = str(uuid.uuid4())
    source.files[f"{bot_id}.mp4"] = data
    return await db.fetchrow(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3) RETURNING *",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )


async def recording_ready_at(stack: Stack, db: asyncpg.Pool, video_url: str) -> str:
    """A deployed bot (its recordings row) whose provider now says its recording is at
    `video_url`, as ingest would announce it; the bot id."""
    bot_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    publisher = EventPublisher(stack.settings(service_name="ingest"))
    await publisher.start()
    try:
        await publisher.publish(
            RecordingCompleted(
                bot_id=bot_id, video_url=video_url, urls_received_at=datetime.now(UTC)
            )
        )
    finally:
        await publisher.stop()
    return bot_id
