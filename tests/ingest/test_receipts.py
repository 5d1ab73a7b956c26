"""Whether a webhook arrived and what became of it: ingest records every delivery that names a
bot (accepted ones with their outcome, duplicates and refusals in `webhook_receipts`), and
`notetaker webhooks show BOT_ID` lists them. A bot whose media was deleted gets its deliveries
acknowledged (the provider stops retrying) and nothing published: deleted stays deleted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg

from notetaker.devstack.stack import Stack
from tests.cli.test_events import cli_env, notetaker
from tests.ingest.conftest import (
    JSON,
    Ingest,
    assert_nothing_published,
    fixture_body,
    gladia_body,
    gladia_job,
    kafka_records,
    known_bot,
    post,
)


def status_change(bot_id: str, code: str) -> str:
    return json.dumps(
        {
            "event": "bot.status_change",
            "data": {"bot_id": bot_id, "status": {"code": code}},
        }
    )


async def test_every_delivery_for_a_bot_is_listed_with_its_outcome(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    bot_id = await known_bot(db)
    url = f"{ingest.url}/webhooks/meetingbaas"
    body = status_change(bot_id, "joining_call")
    signed = ingest.signed(body, msg_id=f"msg_{uuid.uuid4().hex}")
    invalid = json.dumps(
        {
            "event": "bot.completed",
            "data": {
                "bot_id": bot_id,
                "video": "http://127.0.0.1:8080/v.mp4",
                "duration_seconds": -5,
            },
        }
    )
    unknown = json.dumps({"event": "bot.teleported", "data": {"bot_id": bot_id}})
    answers = [
        await post(url, body, signed),  # published
        await post(url, body, signed),  # the Svix retry: a duplicate
        await post(url, body, JSON),  # unsigned
        await post(url, invalid, ingest.signed(invalid)),  # signed, outside the model
        await post(url, unknown, ingest.signed(unknown)),  # an event we do not map
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 422, 200]

    result = await notetaker(
        cli_env(stack.env()), "webhooks", "show", bot_id, "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    listed = [(x["event_type"], x["status"], x["outcome"]) for x in result.json_lines()]
    assert listed == [
        ("bot.status_change", 200, "published"),
        ("bot.status_change", 200, "duplicate"),
        ("bot.status_change", 401, "refused: unauthenticated"),
        ("bot.completed", 422, "refused: invalid_payload"),
        ("bot.teleported", 200, "ignored"),
    ]
    assert result.json_lines()[1]["delivery_id"] == signed["svix-id"]
    table = await notetaker(cli_env(stack.env()), "webhooks", "show", bot_id, cwd=tmp_path)
    assert "refused: unauthenticated (401)" in table.stdout
    # A refusal's receipt holds no secret of the request: only its id, event and reason.
    stored = await db.fetch("SELECT * FROM webhook_receipts WHERE bot_id = $1", bot_id)
    assert all("whsec" not in str(dict(r)) and "v1," not in str(dict(r)) for r in stored)


async def test_a_bot_whose_media_was_deleted_is_acknowledged_and_nothing_is_published(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    bot_id = await known_bot(db)
    job_id = str(uuid.uuid4())
    request_id = await gladia_job(db, bot_id, job_id)
    await db.execute("UPDATE recordings SET media_deleted_at = now() WHERE bot_id = $1", bot_id)

    completed = fixture_body("meetingbaas/v2-bot.completed.json", bot_id)
    answer = await post(f"{ingest.url}/webhooks/meetingbaas", completed, ingest.signed(completed))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "deleted", "events": []}
    answer = await post(ingest.gladia_url(request_id), gladia_body(job_id), JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "deleted", "events": []}

    await assert_nothing_published(stack, bot_id)
    outcomes = await db.fetch(
        "SELECT provider, outcome FROM webhook_deliveries WHERE bot_id = $1"
        " AND delivery_id NOT LIKE 'fact:%' ORDER BY received_at",
        bot_id,
    )
    assert [(r["provider"], r["outcome"]) for r in outcomes] == [
        ("meetingbaas", "deleted"),
        ("gladia", "deleted"),
    ]
    assert await kafka_records(stack, "recording.completed", bot_id) == []
