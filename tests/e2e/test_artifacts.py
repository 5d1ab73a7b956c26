"""A v2 `bot.completed` with every artifact (issue 18, what it must show, point 2): each one is in
S3 under the recording's prefix with the size and SHA-256 the provider served (the participants
and speakers it carried inline: as `participants.json` and `speakers.json`, the lists it
delivered), referenced from the rows, and counted in the org's storage usage."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import asyncpg

from notetaker.common.events import RecordingUploaded
from notetaker.common.s3 import S3Client, parse_s3_location, recording_prefix
from notetaker.devstack.pipeline import Pipeline
from tests.conftest import eventually
from tests.e2e.conftest import events_for, meeting_with_bot
from tests.e2e.test_pipeline import complete_row, completed_meeting

GIB = 1024**3

# The file each kind is stored as, as the simulator names what it serves.
FILES = {
    "transcription": "transcription.json",
    "raw_transcription": "raw_transcription.json",
    "diarization": "diarization.jsonl",
    "chat_messages": "chat_messages.json",
}
# The lists `bot.completed` carries inline, stored as files too.
PEOPLE = {"participants": "participants.json", "speakers": "speakers.json"}


def one_part_checksum(sha256_hex: str) -> str:
    """S3's composite checksum of an object stored in one part (every artifact here is far
    below a part): base64(SHA-256 of the part's SHA-256)-1."""
    digest = hashlib.sha256(bytes.fromhex(sha256_hex)).digest()
    return f"sha256-composite:{base64.b64encode(digest).decode()}-1"


async def test_every_artifact_of_a_v2_completed_bot_is_stored_referenced_and_counted(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    sim = pipeline.simulator
    bot_id, meeting = await completed_meeting(pipeline, db, transcription=True)
    served = sim.bot(bot_id)
    assert sorted(served["artifacts"]) == sorted(FILES.values())

    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
    assert recording["s3_upload_status"] == "complete"
    prefix = recording_prefix(recording["org_id"], recording["user_id"], recording["id"])
    rows = {
        r["kind"]: r
        for r in await db.fetch(
            "SELECT * FROM recording_artifacts WHERE recording_id = $1", recording["id"]
        )
    }
    # The thumbnail is recorded beside them (a later object, counted by its own usage event).
    thumbnail = rows.pop("thumbnail")
    assert sorted(rows) == sorted(FILES | PEOPLE)
    bucket = pipeline.stack.s3_bucket
    assert thumbnail["s3_key"] == f"{prefix}thumbnail.jpg"
    head = await s3.head_object(Bucket=bucket, Key=thumbnail["s3_key"], ChecksumMode="ENABLED")
    assert (thumbnail["size_bytes"], thumbnail["checksum"]) == (
        head["ContentLength"],
        f"sha256:{head['ChecksumSHA256']}",
    )
    for kind, name in FILES.items():
        source = served["artifacts"][name]
        row = rows[kind]
        assert row["s3_key"] == f"{prefix}{name}"
        assert (row["size_bytes"], row["checksum"]) == (
            source["size"],
            one_part_checksum(source["sha256"]),
        )
        stored = await s3.get_object(Bucket=bucket, Key=row["s3_key"])
        body = await stored["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (source["size"], source["sha256"])
    # The people lists: each as the webhook carried it, its size and S3's SHA-256 of it recorded.
    assert sorted(served["people"]) == sorted(PEOPLE.values())
    people_bytes = 0
    for kind, name in PEOPLE.items():
        row = rows[kind]
        assert row["s3_key"] == f"{prefix}{name}"
        body = await (await s3.get_object(Bucket=bucket, Key=row["s3_key"]))["Body"].read()
        assert json.loads(body) == served["people"][name]
        head = await s3.head_object(Bucket=bucket, Key=row["s3_key"], ChecksumMode="ENABLED")
        sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert head["ChecksumSHA256"] == sha256
        assert (row["size_bytes"], row["checksum"]) == (len(body), f"sha256:{sha256}")
        people_bytes += len(body)
    # Copied once each (transcript-sync reads the transcript JSON for the meeting as well).
    downloads = dict(sim.bot(bot_id)["artifact_downloads"])
    assert downloads.pop("transcription.json") >= 1
    assert downloads == dict.fromkeys(set(FILES.values()) - {"transcription.json"}, 1)

    # The recording's stored bytes are all of its objects; its upload event names each artifact.
    total = served["video_size"] + served["audio_size"]
    total += sum(a["size"] for a in served["artifacts"].values()) + people_bytes
    assert recording["s3_file_size_bytes"] == total
    (uploaded,) = [
        e.event
        for e in await events_for(pipeline.stack, "recording.uploaded", bot_id)
        if isinstance(e.event, RecordingUploaded)
    ]
    assert {(a.kind, a.key, a.size_bytes, a.checksum) for a in uploaded.artifacts} == {
        (kind, r["s3_key"], r["size_bytes"], r["checksum"]) for kind, r in rows.items()
    }
    assert parse_s3_location(meeting["video_url"])[1].startswith(prefix)

    # Counted in the org's storage: everything under the prefix, artifacts included.
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    under_prefix = {o["Key"]: o["Size"] for o in listed.get("Contents", [])}
    assert {rows[k]["s3_key"] for k in FILES | PEOPLE} <= set(under_prefix)

    # The org's level: the upload's bytes and the thumbnail's, each counted by its own event.
    charged = total + thumbnail["size_bytes"]
    assert sum(under_prefix.values()) == charged

    async def stored_gb() -> Any:
        level = await db.fetchval(
            "SELECT value FROM s3_usage_metrics WHERE org_id = $1 AND metric_type = 'storage_gb'"
            " ORDER BY date DESC LIMIT 1",
            recording["org_id"],
        )
        return level is not None and abs(float(level) * GIB - charged) < 1

    await eventually(stored_gb, 30, "the upload's and the thumbnail's storage to be counted")

    # The meetings row carries what the provider said about the meeting, as the product shows it.
    people = [{"id": None, "name": "Ada Lovelace"}, {"id": None, "name": "Alan Turing"}]
    assert meeting["duration_seconds"] == 6
    assert json.loads(meeting["participants"]) == json.loads(meeting["speakers"]) == people
    assert meeting["summary"] is None  # MeetingBaaS's transcript comes without one


async def test_an_artifact_the_provider_no_longer_has_does_not_cost_the_recording(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client
) -> None:
    sim = pipeline.simulator
    bot_id = sim.create_bot(hold_completed=True, transcription=True)
    sim.bots[bot_id].gone_artifacts.add("diarization.jsonl")  # named, but answers 404
    meeting = await meeting_with_bot(db, bot_id)
    sim.complete(bot_id)
    row = await complete_row(db, meeting)

    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
    assert recording["s3_upload_status"] == "complete"
    assert recording["s3_upload_retry_count"] == 0  # not retried: asking again cannot help
    bucket, video_key = parse_s3_location(row["video_url"])
    video = await (await s3.get_object(Bucket=bucket, Key=video_key))["Body"].read()
    assert hashlib.sha256(video).hexdigest() == sim.bot(bot_id)["video_sha256"]
    rows = {
        r["kind"]: r
        for r in await db.fetch(
            "SELECT * FROM recording_artifacts WHERE recording_id = $1", recording["id"]
        )
    }
    gone = rows.pop("diarization")
    assert rows.pop("thumbnail")["s3_key"].endswith("/thumbnail.jpg")  # a later object
    assert (gone["s3_key"], gone["error"]) == (None, "source_http_404")
    assert sorted(rows) == [
        "chat_messages",
        "participants",
        "raw_transcription",
        "speakers",
        "transcription",
    ]
    assert all(r["s3_key"] and r["error"] is None for r in rows.values())
