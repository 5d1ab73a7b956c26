"""Events carry pointers, not payloads (issue 18): a long meeting's inline transcript is accepted
by ingest, travels on Kafka as a pointer to the kept webhook body, and reaches the meeting whole."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import asyncpg
import httpx

from notetaker.common.envelope import from_message
from notetaker.common.events import TranscriptReady
from notetaker.devstack.pipeline import Pipeline
from notetaker.ingest.settings import IngestSettings
from tests.conftest import eventually, records_up_to_marker
from tests.e2e.conftest import meeting_with_bot, post_v1_webhook

INLINE_MAX = IngestSettings.model_fields["inline_transcript_max_bytes"].default


def v1_transcript(segments: int, words: int) -> list[dict[str, Any]]:
    """A v1 `complete`'s inline transcript: speaker segments of timed words, each word unique."""
    return [
        {
            "speaker": ("Ada Lovelace", "Grace Hopper")[s % 2],
            "words": [
                {"start": s * 20.0 + w * 0.5, "end": s * 20.0 + w * 0.5 + 0.4, "word": f"s{s}w{w}"}
                for w in range(words)
            ],
        }
        for s in range(segments)
    ]


async def post_v1_complete(
    pipeline: Pipeline, bot_id: str, transcript: list[dict[str, Any]]
) -> tuple[bytes, httpx.Response]:
    body = json.dumps(
        {
            "event": "complete",
            "data": {
                "bot_id": bot_id,
                "mp4": pipeline.simulator.signed_url(bot_id, "video.mp4"),
                "speakers": ["Ada Lovelace", "Grace Hopper"],
                "transcript": transcript,
            },
        }
    ).encode()
    return body, await post_v1_webhook(pipeline, body, timeout=60)


async def transcript_records(pipeline: Pipeline, bot_id: str) -> list[Any]:
    return await asyncio.to_thread(
        records_up_to_marker, pipeline.stack.kafka_bootstrap_servers, "transcript.ready", bot_id
    )


async def test_a_long_inline_v1_transcript_travels_as_a_pointer_and_reaches_the_meeting_whole(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    bot_id = pipeline.simulator.create_bot(
        hold_completed=True, transcription=False, webhook_version=1
    )
    meeting = await meeting_with_bot(db, bot_id)
    transcript = v1_transcript(segments=2_000, words=40)  # 80,000 timed words
    body, answer = await post_v1_complete(pipeline, bot_id, transcript)
    assert len(body) > 4 * 2**20  # past the old 1 MiB limit, which answered 413
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == ["recording.completed", "transcript.ready"]

    # On Kafka: a small record pointing at the kept body, not the utterances.
    (record,) = await transcript_records(pipeline, bot_id)
    assert len(record.value) < INLINE_MAX
    event = from_message(record.headers, record.key, record.value).event
    assert isinstance(event, TranscriptReady)
    assert event.utterances is None
    assert event.body_ref is not None
    # v1 has no delivery id: the body's SHA-256 is its id, under which ingest kept it.
    assert (event.body_ref.provider, event.body_ref.delivery_id) == (
        "meetingbaas",
        hashlib.sha256(body).hexdigest(),
    )

    # In the meeting: the whole transcript, every segment in order.
    async def transcribed() -> Any:
        return await db.fetchrow(
            "SELECT transcript_text, transcript_json, transcript_provider FROM meetings"
            " WHERE id = $1 AND transcript_text IS NOT NULL",
            meeting.id,
        )

    row = await eventually(transcribed, 60, f"meeting {meeting.id}'s transcript")
    assert row["transcript_provider"] == "meetingbaas"
    utterances = json.loads(row["transcript_json"])
    assert [(u["speaker"], u["text"]) for u in utterances] == [
        (s["speaker"], " ".join(w["word"] for w in s["words"])) for s in transcript
    ]
    assert "s0w0 s0w1" in row["transcript_text"]
    assert "s1999w38 s1999w39" in row["transcript_text"]


async def test_a_short_inline_transcript_still_travels_inline(
    pipeline: Pipeline, db: asyncpg.Pool
) -> None:
    bot_id = pipeline.simulator.create_bot(
        hold_completed=True, transcription=False, webhook_version=1
    )
    await meeting_with_bot(db, bot_id)
    transcript = v1_transcript(segments=3, words=5)
    _, answer = await post_v1_complete(pipeline, bot_id, transcript)
    assert answer.status_code == 200, answer.text

    (record,) = await transcript_records(pipeline, bot_id)
    event = from_message(record.headers, record.key, record.value).event
    assert isinstance(event, TranscriptReady)
    assert event.body_ref is None
    assert event.utterances is not None
    assert [u.text for u in event.utterances] == [
        " ".join(w["word"] for w in s["words"]) for s in transcript
    ]
