"""Gladia's whole result kept (issue 18, "every artifact kept"): what Gladia delivers for a
job (word timings, sentences, subtitles, confidences, metadata, add-on results) is stored beside
the video as `gladia-result.json`, byte for byte, referenced from `recording_artifacts` and
counted in the org's storage; a long meeting's callback, too large to travel inline, goes through
ingest's endpoint as a pointer and reaches the meeting whole; deleting the meeting removes it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg

from notetaker.common.envelope import from_message
from notetaker.common.events import StorageUsage, TranscriptReady
from notetaker.common.later_objects import LATER_KINDS, change_step
from notetaker.common.s3 import S3Client, recording_prefix
from notetaker.devstack.pipeline import Pipeline
from notetaker.devstack.simulator import GladiaJob
from notetaker.ingest.settings import IngestSettings
from tests.cli.conftest import under_prefix
from tests.cli.test_events import cli_env, notetaker
from tests.conftest import eventually, records_up_to_marker
from tests.e2e.conftest import events_for, meeting_with_bot
from tests.e2e.test_deletion import stored_level
from tests.e2e.test_pipeline import complete_row, gladia_job_of

INLINE_MAX = IngestSettings.model_fields["inline_transcript_max_bytes"].default


def gladia_result(utterances: int, words: int) -> dict[str, Any]:
    """A Gladia pre-recorded result as `GET /v2/pre-recorded/{id}` and the callback carry it:
    utterances with word timings and confidences, sentences, subtitles (SRT and VTT), metadata
    and the summarization, named entity recognition and chapterization add-ons."""
    spoken: list[dict[str, Any]] = []
    for u in range(utterances):
        start = u * 10.0
        timed: list[dict[str, Any]] = [
            {
                "word": f" u{u}w{w}",
                "start": round(start + w * 0.3, 2),
                "end": round(start + w * 0.3 + 0.25, 2),
                "confidence": 0.9,
            }
            for w in range(words)
        ]
        spoken.append(
            {
                "start": start,
                "end": timed[-1]["end"],
                "confidence": 0.93,
                "channel": 0,
                "speaker": u % 2,
                "language": "en",
                "text": "".join(w["word"] for w in timed).strip(),
                "words": timed,
            }
        )
    return {
        "metadata": {
            "audio_duration": utterances * 10.0,
            "number_of_distinct_channels": 1,
            "billing_time": utterances * 10.0,
            "transcription_time": 3.2,
        },
        "transcription": {
            "languages": ["en"],
            "full_transcript": " ".join(s["text"] for s in spoken),
            "utterances": spoken,
            "sentences": [
                {"success": True, "is_empty": False, "exec_time": 0.1, "error": None}
                | {"results": [s["text"] for s in spoken]}
            ],
            "subtitles": [
                {"format": "srt", "subtitles": "1\n00:00:00,000 --> 00:00:02,000\nu0w0\n"},
                {"format": "vtt", "subtitles": "WEBVTT\n\n00:00.000 --> 00:02.000\nu0w0\n"},
            ],
        },
        "summarization": {
            "success": True,
            "is_empty": False,
            "exec_time": 1.4,
            "error": None,
            "results": "The team went through the launch plan.",
        },
        "named_entity_recognition": {
            "success": True,
            "is_empty": False,
            "exec_time": 0.4,
            "error": None,
            "entity": [{"entity_type": "ORG", "text": "Gladia", "start": 1.0, "end": 1.4}],
        },
        "chapterization": {
            "success": True,
            "is_empty": False,
            "exec_time": 0.6,
            "error": None,
            "results": [{"headline": "Launch plan", "start": 0.0, "end": 20.0}],
        },
    }


def sha256_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


async def gladia_meeting(
    pipeline: Pipeline, db: asyncpg.Pool, result: dict[str, Any]
) -> tuple[str, Any, GladiaJob]:
    """A bot whose provider gives no transcript, so Gladia transcribes it with `result`: its
    id, its complete meetings row and its Gladia job (whose callback was posted)."""
    sim = pipeline.simulator
    bot_id = sim.create_bot(hold_completed=True, transcription=False)
    sim.gladia_results[bot_id] = result
    meeting = await meeting_with_bot(db, bot_id)
    sim.complete(bot_id)
    row = await complete_row(db, meeting, timeout=120)
    job = await gladia_job_of(pipeline, db, bot_id)
    assert job.callbacks == [200]
    assert job.delivered is not None
    return bot_id, row, job


async def archived(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client, bot_id: str
) -> tuple[Any, Any, bytes]:
    """The bot's recording, its `gladia_result` row (once written) and the object's bytes."""
    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)

    async def row() -> Any:
        return await db.fetchrow(
            "SELECT * FROM recording_artifacts WHERE recording_id = $1 AND kind = 'gladia_result'",
            recording["id"],
        )

    artifact = await eventually(row, 30, f"bot {bot_id}'s Gladia result to be recorded")
    stored = await s3.get_object(
        Bucket=pipeline.stack.s3_bucket, Key=artifact["s3_key"], ChecksumMode="ENABLED"
    )
    body: bytes = await stored["Body"].read()
    assert stored["ContentType"] == "application/json"
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["ChecksumSHA256"] == sha256_b64(body)
    return recording, artifact, body


async def test_gladias_whole_result_is_stored_as_delivered_referenced_and_counted(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    result = gladia_result(utterances=4, words=6)
    bot_id, row, job = await gladia_meeting(pipeline, db, result)
    assert job.delivered is not None
    assert row["transcript_provider"] == "gladia"
    assert row["summary"] == "The team went through the launch plan."

    recording, artifact, body = await archived(pipeline, db, s3, bot_id)
    prefix = recording_prefix(recording["org_id"], recording["user_id"], recording["id"])
    assert artifact["s3_key"] == f"{prefix}gladia-result.json"
    # Byte for byte what Gladia posted: the word timings, sentences, subtitles and add-ons too.
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(job.delivered).hexdigest()
    assert json.loads(body)["payload"] == result
    checksum = f"sha256:{sha256_b64(body)}"
    assert (artifact["size_bytes"], artifact["checksum"]) == (len(body), checksum)
    assert artifact["usage_step"] == change_step("gladia_result", None, checksum)

    # Counted once: one storage.usage event for it, and the org's level holds it.
    usage = [
        e.event
        for e in await events_for(pipeline.stack, "storage.usage", bot_id)
        if isinstance(e.event, StorageUsage) and e.event.step.startswith("gladia_result:")
    ]
    assert [(u.step, u.bytes_stored) for u in usage] == [(artifact["usage_step"], len(body))]
    later = await db.fetchval(
        "SELECT coalesce(sum(size_bytes), 0) FROM recording_artifacts WHERE recording_id = $1"
        " AND kind = ANY($2::text[]) AND usage_step IS NOT NULL",
        recording["id"],
        list(LATER_KINDS),
    )
    expected = recording["s3_file_size_bytes"] + later

    async def counted() -> bool:
        return bool(await stored_level(db, recording["org_id"]) == expected)

    await eventually(counted, 30, f"the org's stored level to reach {expected}")


async def test_a_long_gladia_callback_travels_as_a_pointer_and_is_kept_whole(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    result = gladia_result(utterances=1_500, words=30)  # 45,000 timed words
    bot_id, row, job = await gladia_meeting(pipeline, db, result)
    assert job.delivered is not None
    assert len(job.delivered) > 2 * 2**20

    # Through ingest's endpoint (the simulator posted to the callback URL): on Kafka a pointer.
    records = await asyncio.to_thread(
        records_up_to_marker, pipeline.stack.kafka_bootstrap_servers, "transcript.ready", bot_id
    )
    (event,) = [from_message(r.headers, r.key, r.value).event for r in records]
    assert isinstance(event, TranscriptReady)
    assert event.provider == "gladia"
    assert event.utterances is None
    assert event.body_ref is not None
    assert len(records[0].value) < INLINE_MAX

    # The meeting holds every utterance, in order.
    utterances = json.loads(row["transcript_json"])
    assert [(u["speaker"], u["text"]) for u in utterances] == [
        (f"Speaker {u['speaker']}", u["text"]) for u in result["transcription"]["utterances"]
    ]

    # And the callback is kept beside the video as delivered.
    _, artifact, body = await archived(pipeline, db, s3, bot_id)
    assert body == job.delivered
    assert artifact["size_bytes"] == len(job.delivered)


async def test_deleting_the_meeting_removes_gladias_result(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client, tmp_path: Path
) -> None:
    bot_id, row, _ = await gladia_meeting(pipeline, db, gladia_result(utterances=2, words=3))
    recording, artifact, _ = await archived(pipeline, db, s3, bot_id)
    prefix = recording_prefix(recording["org_id"], recording["user_id"], recording["id"])
    assert artifact["s3_key"] in await under_prefix(s3, pipeline.stack, prefix)

    sim = pipeline.simulator
    env = cli_env(pipeline.stack.env()) | {
        "NOTETAKER_MEETINGBAAS_API_URL": sim.base_url,
        "NOTETAKER_MEETINGBAAS_API_KEY": pipeline.keys["api_key"],
        "NOTETAKER_GLADIA_API_URL": sim.base_url,
        "NOTETAKER_GLADIA_API_KEY": pipeline.keys["gladia_key"],
    }
    done = await notetaker(
        env, "meetings", "delete", str(row["id"]), "--yes", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert [x["outcome"] for x in done.json_lines()] == ["deleted"]

    assert await under_prefix(s3, pipeline.stack, prefix) == []
    left = await db.fetchrow(
        "SELECT s3_key FROM recording_artifacts WHERE recording_id = $1 AND kind = 'gladia_result'",
        recording["id"],
    )
    assert left["s3_key"] is None
