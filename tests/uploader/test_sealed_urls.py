"""Provider URLs carry the provider's signature: the recordings row keeps them sealed (Fernet),
the uploader opens them with any of its keys (rotation), and a key it lacks fails without
quoting the URL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from notetaker.common.events import RecordingCompleted
from notetaker.uploader import recordings
from notetaker.uploader.keys import SourceUrlCipher

SIGNED = "https://files.example.com/rec/video.mp4?X-Amz-Signature=0a1b2c3d4e5f&X-Amz-Expires=14400"


def cipher(*keys: bytes) -> SourceUrlCipher:
    return SourceUrlCipher([SecretStr(k.decode()) for k in keys])


async def test_the_row_holds_ciphertext_and_the_uploader_reads_the_url(db: asyncpg.Pool) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    bot_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    event = RecordingCompleted(
        bot_id=bot_id, video_url=SIGNED, audio_url=SIGNED + "&a", urls_received_at=datetime.now(UTC)
    )
    await recordings.save_source(db, event, cipher(old))

    raw = await db.fetchrow(
        "SELECT provider_video_url, provider_audio_url FROM recordings WHERE bot_id = $1", bot_id
    )
    for column in raw.values():
        assert "X-Amz-Signature" not in column
        assert "files.example.com" not in column
    found = await recordings.find_by_bot(db, bot_id, cipher(new, old))  # rotated: new first
    assert found is not None
    assert (found.video_url, found.audio_url) == (SIGNED, SIGNED + "&a")

    with pytest.raises(ValueError, match="NOTETAKER_SOURCE_URL_KEYS") as refused:
        await recordings.find_by_bot(db, bot_id, cipher(new))
    assert "Signature" not in str(refused.value)
