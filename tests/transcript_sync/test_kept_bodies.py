"""A transcript.ready that points at a kept webhook body (`body_ref`): transcript-sync reads the
transcript from the body in PostgreSQL, or refuses for good when the body is gone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from notetaker.common.events import KeptBodyRef, TranscriptReady
from notetaker.common.failures import Permanent
from notetaker.common.sealing import SourceUrlCipher
from notetaker.ingest.deliveries import KEEP_BODY
from notetaker.transcript_sync.transcripts import TranscriptRefused, kept_transcript
from tests.fixtures import PROVIDER_SAMPLES

KEYS = [SecretStr(Fernet.generate_key().decode())]


async def keep(db: asyncpg.Pool, provider: str, body: bytes, bot_id: str) -> str:
    """A delivery accepted with its body kept, as ingest writes them; its delivery id."""
    delivery_id = uuid.uuid4().hex
    await db.execute(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id, outcome)"
        " VALUES ($1, $2, 'transcription.success', $3, 'published')",
        provider,
        delivery_id,
        bot_id,
    )
    sealed = SourceUrlCipher(KEYS).seal_body(body)
    await db.execute(
        KEEP_BODY,
        provider,
        delivery_id,
        bot_id,
        "transcription.success",
        "{}",
        sealed,
        len(body),
        datetime.now(UTC),
    )
    return delivery_id


def pointer(bot_id: str, provider: str, delivery_id: str) -> TranscriptReady:
    ref = KeptBodyRef(provider=provider, delivery_id=delivery_id)
    return TranscriptReady(bot_id=bot_id, provider=provider, body_ref=ref)


async def test_a_gladia_transcript_is_read_from_its_kept_callback(db: asyncpg.Pool) -> None:
    bot_id = str(uuid.uuid4())
    body = (PROVIDER_SAMPLES / "gladia" / "v2-callback.transcription.success.json").read_bytes()
    delivery_id = await keep(db, "gladia", body, bot_id)

    transcript = await kept_transcript(db, KEYS, pointer(bot_id, "gladia", delivery_id))

    assert [(u.speaker, u.text) for u in transcript.utterances][:2] == [
        ("Speaker 0", "Hello Alan."),
        ("Speaker 1", "Hello Ada."),
    ]
    assert transcript.language == "en"


async def test_a_pointer_to_a_body_no_longer_kept_is_refused_for_good(db: asyncpg.Pool) -> None:
    bot_id = str(uuid.uuid4())
    event = pointer(bot_id, "meetingbaas", "pruned-delivery")
    with pytest.raises(TranscriptRefused, match="no longer kept") as refused:
        await kept_transcript(db, KEYS, event)
    assert isinstance(refused.value, Permanent)
    assert "meetingbaas/pruned-delivery" in str(refused.value)


async def test_a_kept_body_no_key_opens_is_refused_for_good(db: asyncpg.Pool) -> None:
    bot_id = str(uuid.uuid4())
    body = (PROVIDER_SAMPLES / "gladia" / "v2-callback.transcription.success.json").read_bytes()
    delivery_id = await keep(db, "gladia", body, bot_id)
    other = [SecretStr(Fernet.generate_key().decode())]
    with pytest.raises(TranscriptRefused, match="opens with none of"):
        await kept_transcript(db, other, pointer(bot_id, "gladia", delivery_id))
    with pytest.raises(TranscriptRefused, match="no key opens kept bodies"):
        await kept_transcript(db, [], pointer(bot_id, "gladia", delivery_id))
