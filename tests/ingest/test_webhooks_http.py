"""Ingest over real HTTP: each provider format becomes the right CloudEvents on Kafka (read back
with librdkafka), and every kind of bad or unauthenticated delivery is refused with nothing sent."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from notetaker.common.events import BotStatusChanged
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.stack import Stack, free_port
from tests.conftest import records_up_to_marker
from tests.ingest.conftest import (
    Ingest,
    assert_nothing_published,
    bot_with_meeting,
    fixture_body,
    gladia_job,
    kafka_records,
    known_bot,
    post,
)

CE_HEADERS = {
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_specversion",
    "ce_time",
    "content-type",
    "ce_dataschema",
}


@pytest.mark.parametrize(
    ("fixture", "auth", "topics"),
    [
        ("meetingbaas/v2-bot.completed.json", "svix", ["recording.completed", "transcript.ready"]),
        ("meetingbaas/v2-bot.completed.json", "callback", ["recording.completed"]),
        ("meetingbaas/v2-bot.failed.json", "svix", ["recording.failed"]),
        ("meetingbaas/v2-bot.status_change.json", "svix", ["bot.status"]),
        ("meetingbaas/v1-complete.json", "v1", ["recording.completed", "transcript.ready"]),
        ("meetingbaas/v1-failed.json", "v1", ["recording.failed"]),
        ("gladia/v2-callback.transcription.success.json", "gladia", ["transcript.ready"]),
        ("gladia/v2-webhook.transcription.success.json", "gladia", ["transcript.ready"]),
    ],
)
async def test_each_provider_format_becomes_cloudevents_on_kafka(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, fixture: str, auth: str, topics: list[str]
) -> None:
    bot_id, meeting_id = await bot_with_meeting(db)
    body = fixture_body(fixture, bot_id)
    if auth == "gladia":
        request_id = await gladia_job(db, bot_id)  # the job Gladia calls back about
        answer = await post(
            ingest.gladia_url(request_id), body, {"content-type": "application/json"}
        )
    else:
        headers = {
            "svix": ingest.signed(body),
            "callback": {
                "content-type": "application/json",
                "x-mb-secret": ingest.callback_secret(meeting_id),
            },
            "v1": {"content-type": "application/json", "x-meeting-baas-api-key": ingest.api_key},
        }[auth]
        answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "published"

    for topic in topics:
        (record,) = await kafka_records(stack, topic, bot_id)
        assert set(record["headers"]) >= CE_HEADERS
        assert record["headers"]["ce_type"] == topic
        assert record["headers"]["ce_specversion"] == "1.0"
        assert record["headers"]["content-type"] == "application/json"
        assert record["headers"]["ce_dataschema"] == f"urn:notetaker:event:{topic}:v1"
        assert record["headers"]["ce_source"] == "/notetaker/ingest"
        assert uuid.UUID(record["headers"]["ce_id"])
        assert record["key"] == bot_id
        assert record["data"]["bot_id"] == bot_id
    sent = json.loads(body)
    if topics[0] == "recording.completed":
        (completed,) = await kafka_records(stack, "recording.completed", bot_id)
        video = sent["data"].get("video") or sent["data"].get("mp4")
        assert completed["data"]["video_url"] == video
    if "transcript.ready" in topics and "utterances" in json.dumps(sent) + str(sent.get("data")):
        (ready,) = await kafka_records(stack, "transcript.ready", bot_id)
        assert ready["data"]["utterances"][0]["text"].startswith("Hello")


async def test_a_repeated_fact_keeps_its_cloudevent_id(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id, other = await known_bot(db), await known_bot(db)
    for bot in (bot_id, bot_id, other):  # status changes are not deduplicated by fact
        body = fixture_body("meetingbaas/v2-bot.status_change.json", bot)
        answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body))
        assert answer.json()["status"] == "published"
    first, second = await kafka_records(stack, "bot.status", bot_id)
    (third,) = await kafka_records(stack, "bot.status", other)
    assert first["headers"]["ce_id"] == second["headers"]["ce_id"]
    assert third["headers"]["ce_id"] != first["headers"]["ce_id"]
    assert first["partition"] == second["partition"]


async def test_both_secrets_are_accepted_during_rotation(ingest: Ingest, db: asyncpg.Pool) -> None:
    for secret in (ingest.old_secret, ingest.new_secret):
        body = fixture_body("meetingbaas/v2-bot.status_change.json", await known_bot(db))
        answer = await post(
            f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body, secret=secret)
        )
        assert answer.status_code == 200


async def rejected_total(ingest: Ingest, reason: str, provider: str = "meetingbaas") -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{ingest.url}/metrics")).text
    pattern = (
        rf'^notetaker_ingest_webhooks_rejected_total\{{provider="{provider}",'
        rf'reason="{reason}"\}} (\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def assert_refused(
    answer: httpx.Response, status: int, stack: Stack, db: asyncpg.Pool, bot_id: str
) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status
    assert problem["type"].startswith("urn:notetaker:problem:")
    await assert_nothing_published(stack, bot_id)
    deliveries = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE bot_id = $1", bot_id
    )
    assert deliveries == 0


@pytest.mark.parametrize(
    "forgery",
    [
        "unknown secret",
        "tampered body",
        "stale timestamp",
        "future timestamp",
        "no auth",
        "wrong callback secret",
        "wrong api key",
    ],
)
async def test_unauthenticated_deliveries_get_401_and_send_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, forgery: str
) -> None:
    from tests.ingest.conftest import whsec

    bot_id = await known_bot(db)
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    now = datetime.now(UTC)
    headers = {
        "unknown secret": ingest.signed(body, secret=whsec()),
        "tampered body": ingest.signed(body.replace("duration_seconds", "duration_secondz")),
        "stale timestamp": ingest.signed(body, when=now - timedelta(minutes=10)),
        "future timestamp": ingest.signed(body, when=now + timedelta(minutes=10)),
        "no auth": {"content-type": "application/json"},
        "wrong callback secret": {"content-type": "application/json", "x-mb-secret": "nope"},
        "wrong api key": {"content-type": "application/json", "x-meeting-baas-api-key": "nope"},
    }[forgery]
    before = await rejected_total(ingest, "unauthenticated")
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, headers)
    await assert_refused(answer, 401, stack, db, bot_id)
    assert "secret" not in answer.text
    assert "signature" not in answer.text.lower()
    assert await rejected_total(ingest, "unauthenticated") == before + 1


async def test_redelivery_is_acknowledged_and_sends_nothing_new(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id = await known_bot(db)
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    headers = ingest.signed(body, msg_id="msg_same")
    answers = [
        await post(f"{ingest.url}/webhooks/meetingbaas", body, headers),  # first
        await post(f"{ingest.url}/webhooks/meetingbaas", body, headers),  # Svix retry
        await post(f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body)),  # same fact
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["status"] for a in answers] == ["published", "duplicate", "duplicate"]
    assert len(await kafka_records(stack, "recording.completed", bot_id)) == 1
    rows = await db.fetch(
        "SELECT delivery_id FROM webhook_deliveries WHERE bot_id = $1 ORDER BY delivery_id", bot_id
    )
    assert [r["delivery_id"] for r in rows] == [f"fact:bot.completed:{bot_id}", "msg_same"]


async def test_unknown_event_types_are_stored_acknowledged_and_publish_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id = await known_bot(db)
    body = json.dumps({"event": "bot.teleported", "data": {"bot_id": bot_id, "to": "mars"}})
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body))
    assert answer.status_code == 200
    assert answer.json() == {"status": "ignored", "events": []}
    stored = await db.fetchval(
        "SELECT event_type FROM webhook_deliveries WHERE bot_id = $1", bot_id
    )
    assert stored == "bot.teleported"
    await assert_nothing_published(stack, bot_id)


def completed(bot_id: str, **data: object) -> str:
    return json.dumps(
        {
            "event": "bot.completed",
            "data": {"bot_id": bot_id, "video": "http://127.0.0.1:8080/v.mp4", **data},
        }
    )


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("malformed json", 400, "malformed_json"),
        ("wrong content type", 415, "unsupported_media_type"),
        ("missing bot id", 422, "invalid_payload"),
        ("missing event", 422, "invalid_payload"),
        ("oversized body", 413, "body_too_large"),
        ("unknown bot", 404, "unknown_bot"),
        ("negative duration", 422, "invalid_payload"),
        ("video is not a URL", 422, "invalid_payload"),
        ("ftp video URL", 422, "invalid_payload"),
        ("year 1900", 422, "invalid_payload"),
        ("bot id with spaces", 422, "invalid_payload"),
    ],
)
async def test_bad_input_gets_a_precise_4xx_and_sends_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, case: str, status: int, reason: str
) -> None:
    bot_id = await known_bot(db)
    body = {
        "malformed json": '{"event": "bot.completed", "data": {',
        "wrong content type": completed(bot_id),
        "missing bot id": json.dumps({"event": "bot.completed", "data": {"video": "http://x/v"}}),
        "missing event": json.dumps({"data": {"bot_id": bot_id}}),
        "oversized body": completed(bot_id, padding="x" * (ingest.max_body + 1)),
        "unknown bot": completed(str(uuid.uuid4())),
        "negative duration": completed(bot_id, duration_seconds=-5),
        "video is not a URL": completed(bot_id, video="not a url"),
        "ftp video URL": completed(bot_id, video="ftp://127.0.0.1/v.mp4"),
        "year 1900": json.dumps(
            {
                "event": "bot.status_change",
                "data": {
                    "bot_id": bot_id,
                    "status": {"code": "joining_call", "created_at": "1900-01-01T00:00:00Z"},
                },
            }
        ),
        "bot id with spaces": completed("bot with spaces"),
    }[case]
    headers = ingest.signed(body)
    if case == "wrong content type":
        headers["content-type"] = "text/plain"
    before = await rejected_total(ingest, reason)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, headers)
    await assert_refused(answer, status, stack, db, bot_id)
    assert await rejected_total(ingest, reason) == before + 1


async def test_a_negative_check_sees_a_record_published_just_before_it(stack: Stack) -> None:
    bot_id = str(uuid.uuid4())
    publisher = EventPublisher(stack.settings(service_name="tests"))
    await publisher.start()
    try:
        await publisher.publish(BotStatusChanged(bot_id=bot_id, status="joining_call"))
    finally:
        await publisher.stop()
    with pytest.raises(AssertionError, match=r"1 record\(s\) keyed .* on bot\.status"):
        await assert_nothing_published(stack, bot_id)


async def test_a_negative_check_on_a_topic_that_does_not_exist_fails(stack: Stack) -> None:
    # The old reader listed no partitions here and returned [], so "nothing was published" held.
    with pytest.raises(AssertionError, match=r"cannot read .*'no\.such\.topic'.*unreadable"):
        await kafka_records(stack, "no.such.topic", str(uuid.uuid4()))
    with pytest.raises(AssertionError, match=r"cannot read .*'no\.such\.topic'"):
        await assert_nothing_published(stack, str(uuid.uuid4()), topics=("no.such.topic",))


def test_a_negative_check_against_a_broker_that_does_not_answer_fails() -> None:
    silent = f"127.0.0.1:{free_port()}"
    with pytest.raises(AssertionError, match=r"cannot read .*no metadata from the broker"):
        records_up_to_marker(silent, "bot.status", str(uuid.uuid4()), timeout=2)
