"""A meeting the whole pipeline stored (video, audio, thumbnail, Gladia transcript) deleted with
`notetaker meetings delete`: nothing left in S3, in its rows or at the providers, and the org's
stored level (what the gauges and the cost read) back where it was. Then everything that can come
late comes: a redelivered and a new webhook, every event about the meeting published again, a
dead letter replayed. The services consume each one, and nothing changes: deleted stays deleted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from standardwebhooks.webhooks import Webhook

from notetaker.common.envelope import from_message
from notetaker.common.events import RecordingUploadRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, parse_s3_location
from notetaker.devstack.pipeline import Pipeline
from notetaker.metrics.usage import month_to_date
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from tests.cli.conftest import under_prefix
from tests.cli.test_events import cli_env, notetaker
from tests.conftest import KafkaRecord, eventually, records_up_to_marker
from tests.e2e.conftest import events_for
from tests.e2e.test_pipeline import completed_meeting

JOIN_GROUP = TranscriptSyncSettings.model_fields["faust_app_id"].default
# Who reads each topic whose events are published again: it must have consumed them.
READERS = {
    "recording.completed": "notetaker-uploader",
    "recording.upload_requested": "notetaker-uploader",
    "thumbnail.requested": "notetaker-thumbnailer",
    "recording.uploaded": JOIN_GROUP,
    "transcript.ready": JOIN_GROUP,
    "thumbnail.generated": JOIN_GROUP,
    "storage.usage": "notetaker-metrics",
}
COUNTED = ("recording.uploaded", "thumbnail.requested", "meeting.synced", "storage.usage")


async def stored_level(db: asyncpg.Pool, org: uuid.UUID) -> float:
    """The org's stored bytes as the gauges and the cost read them (`month_to_date`)."""
    costs = await month_to_date(db, datetime.now(UTC).date())
    return next((c.stored_bytes for c in costs if c.org_id == str(org)), 0.0)


async def consumed(pipeline: Pipeline, group: str, topic: str, partition: int, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.stack.kafka_bootstrap_servers)
    await admin.start()
    tp = TopicPartition(topic, partition)
    try:

        async def past() -> bool:
            committed = await admin.list_consumer_group_offsets(group, partitions=[tp])
            return tp in committed and committed[tp].offset > offset

        await eventually(past, 60, f"{group} to consume {topic} {partition}:{offset}")
    finally:
        await admin.close()


async def facts(pipeline: Pipeline, bot_id: str) -> dict[str, set[str]]:
    """The event ids published about the bot, per topic: a fact published again keeps its id."""
    return {t: {e.id for e in await events_for(pipeline.stack, t, bot_id)} for t in COUNTED}


async def snapshot(db: asyncpg.Pool, bot_id: str) -> tuple[Any, ...]:
    rows = []
    for table in ("meetings", "recordings", "media_deletions", "transcription_jobs"):
        row = await db.fetchrow(f"SELECT * FROM {table} WHERE bot_id = $1", bot_id)  # noqa: S608
        rows.append(dict(row) if row else None)
    return tuple(rows)


async def test_a_deleted_meeting_stays_deleted_whatever_comes_late(
    pipeline: Pipeline, db: asyncpg.Pool, s3: S3Client, tmp_path: Path
) -> None:
    sim = pipeline.simulator
    bot_id, row = await completed_meeting(pipeline, db, transcription=False)  # Gladia's
    org = row["org_id"]
    recording = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
    prefix = parse_s3_location(row["video_url"])[1].rsplit("/", 1)[0] + "/"
    thumbnail = await s3.head_object(Bucket=pipeline.stack.s3_bucket, Key=f"{prefix}thumbnail.jpg")
    # the upload's bytes and the thumbnail's, each counted by its own usage event
    size = recording["s3_file_size_bytes"] + thumbnail["ContentLength"]

    # The upload's bytes and Gladia's result, archived once the transcript is written.
    async def archive_size() -> Any:
        return await db.fetchval(
            "SELECT size_bytes FROM recording_artifacts WHERE recording_id = $1"
            " AND kind = 'gladia_result' AND usage_step IS NOT NULL",
            recording["id"],
        )

    size += await eventually(archive_size, 30, "Gladia's result to be archived")

    async def counted() -> bool:
        return bool(await stored_level(db, org) == size)

    await eventually(counted, 30, "the upload's, thumbnail's and archive's bytes to be counted")
    # video, audio, thumbnail, the provider's artifacts (its chat: no transcript came with it),
    # the participants and speakers it listed, and Gladia's result
    stored = await under_prefix(s3, pipeline.stack, prefix)
    served = sim.bot(bot_id)
    assert len(stored) == 3 + len(served["artifacts"]) + len(served["people"]) + 1 == 7
    artifacts = await db.fetch(
        "SELECT s3_key FROM recording_artifacts WHERE recording_id = $1 ORDER BY kind",
        recording["id"],
    )
    assert [a["s3_key"] for a in artifacts] == [
        f"{prefix}{name}.json"
        for name in ("chat_messages", "gladia-result", "participants", "speakers")
    ] + [f"{prefix}thumbnail.jpg"]
    job_id = await db.fetchval("SELECT job_id FROM transcription_jobs WHERE bot_id = $1", bot_id)
    assert job_id in sim.jobs

    env = cli_env(pipeline.stack.env()) | {
        "NOTETAKER_MEETINGBAAS_API_URL": sim.base_url,
        "NOTETAKER_MEETINGBAAS_API_KEY": pipeline.keys["api_key"],
        "NOTETAKER_GLADIA_API_URL": sim.base_url,
        "NOTETAKER_GLADIA_API_KEY": pipeline.keys["gladia_key"],
    }
    result = await notetaker(
        env, "meetings", "delete", str(row["id"]), "--yes", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert [x["outcome"] for x in result.json_lines()] == ["deleted"]
    assert await under_prefix(s3, pipeline.stack, prefix) == []
    assert sim.data_deletions.count(bot_id) == 1
    assert job_id in sim.deleted_jobs

    async def lowered() -> bool:
        return await stored_level(db, org) == 0

    await eventually(lowered, 30, "the org's stored bytes to go back down")
    before = await snapshot(db, bot_id)
    assert before[0]["video_url"] is None
    assert before[0]["transcript_text"] is None
    assert before[1]["provider_video_url"] is None
    artifacts = await db.fetch(
        "SELECT provider_url, s3_key FROM recording_artifacts WHERE recording_id = $1",
        recording["id"],
    )
    # the chat's row, the people lists', Gladia's result's and the thumbnail's lead nowhere
    assert [tuple(a) for a in artifacts] == [(None, None)] * 5
    facts_before = await facts(pipeline, bot_id)
    downloads = dict(sim.bot(bot_id)["downloads"])

    # 1. Webhooks: MeetingBaaS delivers bot.completed again, and a status it never sent before.
    assert await sim.resend_completed(bot_id) == 200
    body = json.dumps(
        {"event": "bot.status_change", "data": {"bot_id": bot_id, "status": {"code": "x"}}}
    )
    headers = _signed(pipeline, body)
    async with httpx.AsyncClient(base_url=pipeline.ingest_url) as http:
        answer = await http.post("/webhooks/meetingbaas", content=body, headers=headers)
    assert answer.json() == {"status": "deleted", "events": []}

    # 2. Every event about the meeting published again, as a replay from Kafka would.
    publisher = EventPublisher(pipeline.stack.settings(service_name="replay"))
    await publisher.start()
    try:
        landed = []
        for topic in READERS:
            if topic == "recording.upload_requested":
                continue
            for record in await asyncio.to_thread(
                records_up_to_marker, pipeline.stack.kafka_bootstrap_servers, topic, bot_id
            ):
                landed.append(await _again(publisher, record))
        request = RecordingUploadRequested(
            bot_id=bot_id,
            recording_id=recording["id"],
            attempt=recording["s3_upload_retry_count"] + 1,
        )
        await publisher.publish(request)
        (requested,) = await asyncio.to_thread(
            records_up_to_marker,
            pipeline.stack.kafka_bootstrap_servers,
            "recording.upload_requested",
            bot_id,
        )
        landed.append((requested.topic, requested.partition, requested.offset))
        # 3. A dead letter of the meeting's transcript, replayed by an operator.
        transcript, *_ = await asyncio.to_thread(
            records_up_to_marker, pipeline.stack.kafka_bootstrap_servers, "transcript.ready", bot_id
        )
        await publisher.dead_letter(
            topic="transcript.ready",
            key=transcript.key,
            value=transcript.value,
            headers=transcript.headers,
            offset=transcript.offset,
            error="handler failed: RuntimeError('late')",
        )
    finally:
        await publisher.stop()
    event_id = from_message(transcript.headers, transcript.key, transcript.value).id
    replay = await notetaker(
        env, "dlq", "replay", "transcript.ready", "--event-id", event_id, "--json", cwd=tmp_path
    )
    assert replay.returncode == 0, replay.stderr
    (replayed,) = [x for x in replay.json_lines() if x["bot_id"] == bot_id]
    assert replayed["outcome"] == "replayed"
    landed.append(
        ("transcript.ready", replayed["replayed"]["partition"], replayed["replayed"]["offset"])
    )
    assert {t for t, _, _ in landed} >= set(READERS)
    for topic, partition, offset in landed:
        await consumed(pipeline, READERS[topic], topic, partition, offset)

    # Nothing changed: no object, no row, no new event, no download, the level stays down.
    assert await under_prefix(s3, pipeline.stack, prefix) == []
    assert await snapshot(db, bot_id) == before
    assert await facts(pipeline, bot_id) == facts_before  # nothing new was announced
    assert sim.bot(bot_id)["downloads"] == downloads
    assert await stored_level(db, org) == 0


async def _again(publisher: EventPublisher, record: KafkaRecord) -> tuple[str, int, int]:
    sent = await publisher.producer.send_and_wait(
        record.topic, value=record.value, key=record.key, headers=record.headers
    )
    return record.topic, sent.partition, sent.offset


def _signed(pipeline: Pipeline, body: str) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(pipeline.keys["svix"]).sign(msg_id, now, body),
    }
