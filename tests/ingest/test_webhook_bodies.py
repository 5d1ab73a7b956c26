"""Each accepted webhook's raw body is kept, sealed with the key ring of provider URLs, in the
transaction that accepts it: `notetaker webhooks show BOT_ID --body DELIVERY_ID` prints it as
received, and `notetaker webhooks reapply DELIVERY_ID` runs it through ingest's parse, map and
publish again (no signature window), marked as a replay. A refused delivery keeps nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import asyncpg
from pydantic import SecretStr

from notetaker.common.db import create_pool
from notetaker.common.kafka import EventPublisher
from notetaker.common.sealing import SourceUrlCipher
from notetaker.devstack.stack import Stack
from notetaker.ingest.deliveries import KeptBody, publish_once
from tests.cli.test_events import cli_env, notetaker
from tests.ingest.conftest import (
    JSON,
    Ingest,
    fixture_body,
    gladia_body,
    gladia_job,
    kafka_records,
    known_bot,
    post,
    whsec,
)


def as_sent(bot_id: str) -> str:
    """A v2 status change as a provider may lay it out: its own spacing, key order and a
    non-ASCII character, none of which a re-serialisation would keep."""
    return (
        '{ "data" :{"status": {"code":"joining_call"},  "bot_id":"' + bot_id + '",'
        '"extra": {"note": "réunion \\u00e9"}},\n  "event":"bot.status_change"}'
    )


async def test_an_accepted_webhooks_body_is_kept_sealed_and_shown_exactly_as_received(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    bot_id = await known_bot(db)
    body = as_sent(bot_id)
    signed = ingest.signed(body)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, signed)
    assert answer.status_code == 200, answer.text

    (row,) = await db.fetch(
        "SELECT provider, delivery_id, event_type, headers, sealed, size_bytes"
        " FROM webhook_bodies WHERE bot_id = $1",
        bot_id,
    )
    assert (row["provider"], row["delivery_id"], row["event_type"]) == (
        "meetingbaas",
        signed["svix-id"],
        "bot.status_change",
    )
    assert row["size_bytes"] == len(body.encode())
    # Stored sealed: neither the body nor its bot id readable, and no signature kept.
    assert body.encode() not in row["sealed"]
    assert bot_id.encode() not in row["sealed"]
    assert json.loads(row["headers"]) == {"svix-id": signed["svix-id"]}
    cipher = SourceUrlCipher([SecretStr(stack.source_url_key)])
    assert cipher.open_body(row["sealed"]) == body.encode()

    env = cli_env(stack.env())
    raw = await notetaker(
        env, "webhooks", "show", bot_id, "--body", signed["svix-id"], "--raw", cwd=tmp_path
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == body
    pretty = await notetaker(
        env, "webhooks", "show", bot_id, "--body", signed["svix-id"], cwd=tmp_path
    )
    assert pretty.returncode == 0, pretty.stderr
    assert json.loads(pretty.stdout) == json.loads(body)
    assert "réunion é" in pretty.stdout
    listed = await notetaker(env, "webhooks", "show", bot_id, "--json", cwd=tmp_path)
    assert [(d["delivery_id"], d["body_kept"]) for d in listed.json_lines()] == [
        (signed["svix-id"], True)
    ]

    # Without the key ring the body cannot be read, and the command says which setting.
    keyless = {k: v for k, v in env.items() if k != "NOTETAKER_SOURCE_URL_KEYS"}
    refused = await notetaker(
        keyless, "webhooks", "show", bot_id, "--body", signed["svix-id"], cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "NOTETAKER_SOURCE_URL_KEYS" in refused.stderr


async def test_a_refused_or_duplicate_webhook_keeps_no_body(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    bot_id = await known_bot(db)
    url = f"{ingest.url}/webhooks/meetingbaas"
    body = as_sent(bot_id)
    invalid = json.dumps(
        {"event": "bot.completed", "data": {"bot_id": bot_id, "duration_seconds": -5}}
    )
    signed = ingest.signed(body)
    answers = [
        await post(url, body, JSON),  # unsigned: 401
        await post(url, body, ingest.signed(body, secret=whsec())),
        await post(url, invalid, ingest.signed(invalid)),  # 422
        await post(url, body, signed),  # accepted
        await post(url, body, signed),  # the retry: a duplicate
    ]
    assert [a.status_code for a in answers] == [401, 401, 422, 200, 200]
    assert answers[-1].json()["status"] == "duplicate"
    kept = await db.fetch("SELECT delivery_id FROM webhook_bodies WHERE bot_id = $1", bot_id)
    assert [r["delivery_id"] for r in kept] == [signed["svix-id"]]

    # A refused delivery is listed, and asking for its body says it has none.
    listed = await notetaker(
        cli_env(stack.env()), "webhooks", "show", bot_id, "--json", cwd=tmp_path
    )
    assert [d["body_kept"] for d in listed.json_lines()] == [False, False, False, True, False]
    unknown = await notetaker(
        cli_env(stack.env()), "webhooks", "show", bot_id, "--body", "msg_never", cwd=tmp_path
    )
    assert unknown.returncode == 1
    assert "no accepted delivery 'msg_never' for bot" in unknown.stderr


async def test_a_bot_whose_media_was_deleted_keeps_no_body(
    ingest: Ingest, db: asyncpg.Pool
) -> None:
    bot_id = await known_bot(db)
    await db.execute("UPDATE recordings SET media_deleted_at = now() WHERE bot_id = $1", bot_id)
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, ingest.signed(body))
    assert answer.json()["status"] == "deleted"
    assert await db.fetchval("SELECT count(*) FROM webhook_bodies WHERE bot_id = $1", bot_id) == 0


async def test_a_body_arriving_as_its_bots_media_is_deleted_is_not_kept(
    db: asyncpg.Pool, stack: Stack
) -> None:
    """The race the handler's own check cannot close: the deletion marks the bot between that
    check and the delivery's transaction. The insert itself reads the mark (under a lock a
    deletion's FOR UPDATE waits for), so the delivery is recorded and its body is not."""
    bot_id = await known_bot(db)
    await db.execute("UPDATE recordings SET media_deleted_at = now() WHERE bot_id = $1", bot_id)
    sealed = SourceUrlCipher([SecretStr(stack.source_url_key)]).seal_body(b"{}")
    pool = await create_pool(stack.settings(service_name="ingest"))
    try:
        new = await publish_once(
            pool,
            cast(EventPublisher, None),  # nothing to publish: never used
            provider="meetingbaas",
            delivery_ids=[f"msg_{uuid.uuid4().hex}"],
            event_type="bot.status_change",
            bot_id=bot_id,
            events=[],
            outcome="ignored",
            timeout=5,
            kept=KeptBody(sealed, 2, datetime.now(UTC), {}),
        )
    finally:
        await pool.close()
    assert new is True
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE bot_id = $1", bot_id)
    assert await db.fetchval("SELECT count(*) FROM webhook_bodies WHERE bot_id = $1", bot_id) == 0


async def test_reapplying_a_kept_body_publishes_the_same_events_marked_as_a_replay(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    bot_id = await known_bot(db)
    body = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    signed = ingest.signed(body)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", body, signed)
    assert answer.status_code == 200, answer.text
    published = answer.json()["events"]
    assert published == ["recording.completed", "transcript.ready"]

    env = cli_env(stack.env())
    result = await notetaker(env, "webhooks", "reapply", signed["svix-id"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Re-applied meetingbaas delivery {signed['svix-id']}" in result.stdout
    assert "webhook.reapplied" in result.stderr  # the audit line

    for topic in published:
        original, again = await kafka_records(stack, topic, bot_id)
        assert again["data"] == original["data"]
        assert again["headers"]["ce_id"] == original["headers"]["ce_id"]
        assert "notetaker_replayed_from" not in original["headers"]
        assert again["headers"]["notetaker_replayed_from"] == (
            f"webhook:meetingbaas:{signed['svix-id']}"
        )
    listed = await notetaker(env, "webhooks", "show", bot_id, "--json", cwd=tmp_path)
    outcomes = [(d["delivery_id"].split(":")[0], d["outcome"]) for d in listed.json_lines()]
    assert outcomes == [(signed["svix-id"], "published"), ("reapply", "reapplied")]
    # A re-apply is no delivery of its own to re-apply: the command names the original.
    reapply_id = listed.json_lines()[1]["delivery_id"]
    twice = await notetaker(env, "webhooks", "reapply", reapply_id, cwd=tmp_path)
    assert twice.returncode == 1
    assert f"use the original delivery {signed['svix-id']!r}" in twice.stderr


async def test_reapplying_a_gladia_callback_finds_its_job_again(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    bot_id = await known_bot(db)
    job_id = str(uuid.uuid4())
    request_id = await gladia_job(db, bot_id, job_id)
    answer = await post(ingest.gladia_url(request_id), gladia_body(job_id), JSON)
    assert answer.status_code == 200, answer.text
    delivery_id = await db.fetchval(
        "SELECT delivery_id FROM webhook_bodies WHERE bot_id = $1", bot_id
    )

    result = await notetaker(cli_env(stack.env()), "webhooks", "reapply", delivery_id, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    original, again = await kafka_records(stack, "transcript.ready", bot_id)
    assert again["data"] == original["data"]
    assert again["headers"]["notetaker_replayed_from"] == f"webhook:gladia:{delivery_id}"


async def test_reapplying_an_unknown_or_pruned_delivery_says_why_and_publishes_nothing(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    env = cli_env(stack.env())
    unknown = await notetaker(env, "webhooks", "reapply", "msg_nobody_sent_this", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no accepted delivery 'msg_nobody_sent_this'" in unknown.stderr

    bot_id = await known_bot(db)
    body = as_sent(bot_id)
    signed = ingest.signed(body)
    assert (await post(f"{ingest.url}/webhooks/meetingbaas", body, signed)).status_code == 200
    await db.execute("DELETE FROM webhook_bodies WHERE bot_id = $1", bot_id)  # as a prune does
    pruned = await notetaker(env, "webhooks", "reapply", signed["svix-id"], cwd=tmp_path)
    assert pruned.returncode == 1
    assert "is no longer kept: pruned after NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS" in (
        pruned.stderr
    )
    shown = await notetaker(
        env, "webhooks", "show", bot_id, "--body", signed["svix-id"], cwd=tmp_path
    )
    assert shown.returncode == 1
    assert "is no longer kept" in shown.stderr
    assert len(await kafka_records(stack, "bot.status", bot_id)) == 1  # the original only
