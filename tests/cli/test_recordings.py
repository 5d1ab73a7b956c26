"""`notetaker recordings list|show|retry` against the stack: real rows, objects and events.

A retry publishes `recording.upload_requested`, which the uploader of later test packages would
consume (its group starts at the earliest offset): the recordings retried here are marked
deleted once checked, so that uploader finds nothing to do for them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from notetaker.common.events import BotStatusChanged, RecordingUploadRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack
from tests.cli.conftest import TRANSCRIPT_TEXT, stored_meeting
from tests.cli.test_events import notetaker
from tests.e2e.conftest import events_for


async def failed_recording(
    db: asyncpg.Pool, org: uuid.UUID, *, final: bool, retries: int = 4
) -> tuple[uuid.UUID, str]:
    bot_id = f"failed-{uuid.uuid4()}"
    recording_id: uuid.UUID = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id, s3_upload_status, s3_upload_retry_count,"
        " s3_upload_next_retry_at, s3_upload_error_message)"
        " VALUES ($1, $2, $3, 'failed', $4, $5, 'SourceError: source answered HTTP 500')"
        " RETURNING id",
        org,
        uuid.uuid4(),
        bot_id,
        retries,
        None if final else datetime(2099, 1, 1, tzinfo=UTC),
    )
    return recording_id, bot_id


@pytest.fixture
async def retried(db: asyncpg.Pool) -> AsyncIterator[list[uuid.UUID]]:
    """Recordings a test asked to retry: marked deleted afterwards (see the module's doc)."""
    ids: list[uuid.UUID] = []
    yield ids
    await db.execute(
        "UPDATE recordings SET media_deleted_at = now() WHERE id = ANY($1::uuid[])", ids
    )


async def test_list_filters_by_status_and_org(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    org = uuid.uuid4()
    final, _ = await failed_recording(db, org, final=True)
    waiting, _ = await failed_recording(db, org, final=False, retries=1)
    stored = await stored_meeting(stack, db, s3, providers, org_id=org)
    await failed_recording(db, uuid.uuid4(), final=True)  # another org's

    async def listed(*args: str) -> dict[str, str]:
        result = await notetaker(
            operator_env, "recordings", "list", "--org", str(org), *args, "--json", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        return {line["id"]: line["state"] for line in result.json_lines()}

    failed, everything, table = await asyncio.gather(
        listed("--status", "failed"),
        listed(),
        notetaker(
            operator_env,
            "recordings",
            "list",
            "--status",
            "failed_final",
            "--org",
            str(org),
            cwd=tmp_path,
        ),
    )
    assert failed == {str(final): "failed_final", str(waiting): "failed"}
    assert everything == {
        str(final): "failed_final",
        str(waiting): "failed",
        str(stored.recording_id): "complete",
    }
    assert table.returncode == 0, table.stderr
    assert str(final) in table.stdout
    assert "HTTP 500" in table.stdout
    assert str(waiting) not in table.stdout


async def test_show_tells_status_storage_webhooks_events_and_the_meetings_row(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    meeting = await stored_meeting(stack, db, s3, providers)
    # Gladia's result as transcript-sync records it beside the video (the object is not needed).
    await db.execute(
        "INSERT INTO recording_artifacts (recording_id, kind, s3_key, size_bytes, checksum,"
        " stored_at, usage_step) VALUES ($1, 'gladia_result', $2, 2048, 'sha256:abc=', now(),"
        " 'gladia_result:->sha256:abc=')",
        meeting.recording_id,
        f"{meeting.prefix}gladia-result.json",
    )
    await db.execute(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id, outcome)"
        " VALUES ('meetingbaas', $1, 'bot.completed', $2, 'published')",
        f"msg_{uuid.uuid4().hex}",
        meeting.bot_id,
    )
    await db.execute(
        "INSERT INTO webhook_receipts (provider, delivery_id, bot_id, event_type, status, outcome)"
        " VALUES ('meetingbaas', 'msg_forged', $1, 'bot.completed', 401,"
        " 'refused: unauthenticated')",
        meeting.bot_id,
    )
    publisher = EventPublisher(stack.settings(service_name="ingest"))
    await publisher.start()
    try:
        await publisher.publish(BotStatusChanged(bot_id=meeting.bot_id, status="call_ended"))
    finally:
        await publisher.stop()

    result, readable = await asyncio.gather(
        notetaker(operator_env, "recordings", "show", meeting.bot_id, "--json", cwd=tmp_path),
        notetaker(
            operator_env,
            "recordings",
            "show",
            str(meeting.meeting_id),
            "--no-events",
            cwd=tmp_path,
        ),
    )
    assert result.returncode == 0, result.stderr
    (shown,) = result.json_lines()
    assert shown["recording"]["id"] == str(meeting.recording_id)
    assert shown["recording"]["state"] == "complete"
    assert shown["recording"]["size_bytes"] == meeting.size_bytes
    storage = shown["storage"]
    assert storage["prefix"] == meeting.prefix
    assert len(storage["objects"]) == 5
    (upload,) = storage["multipart_uploads"]
    assert (upload["parts_in_s3"], upload["bytes_in_s3"], upload["parts_in_ledger"]) == (1, 1024, 0)
    assert shown["meeting"]["id"] == str(meeting.meeting_id)
    assert shown["meeting"]["transcript_chars"] == len(TRANSCRIPT_TEXT)
    assert "transcript_text" not in shown["meeting"]  # summarised, never printed whole
    assert shown["deletion"] is None
    gladia = [a for a in shown["artifacts"] if a["kind"] == "gladia_result"]
    assert [(a["s3_key"], a["size_bytes"], a["checksum"]) for a in gladia] == [
        (f"{meeting.prefix}gladia-result.json", 2048, "sha256:abc=")
    ]
    # The meeting's bot.completed (its raw body kept), the one above, the refusal.
    assert [(w["outcome"], w["status"], w["body_kept"]) for w in shown["webhooks"]] == [
        ("published", 200, True),
        ("published", 200, False),
        ("refused: unauthenticated", 401, False),
    ]
    statuses = [e for e in shown["events"] if e["type"] == "bot.status"]
    assert [e["data"]["status"] for e in statuses] == ["call_ended"]

    assert readable.returncode == 0, readable.stderr
    for expected in (
        str(meeting.recording_id),
        "Budget review",
        "video.mp4",
        "refused",
        "artifact gladia_result",
        "gladia-result.json",
    ):
        assert expected in readable.stdout, expected


async def test_retry_requests_the_next_attempt_of_a_failed_recording_the_normal_way(
    stack: Stack,
    db: asyncpg.Pool,
    operator_env: dict[str, str],
    tmp_path: Path,
    retried: list[uuid.UUID],
) -> None:
    org = uuid.uuid4()
    final, final_bot = await failed_recording(db, org, final=True, retries=4)
    retried.append(final)
    result = await notetaker(operator_env, "recordings", "retry", final_bot, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.json_lines() == [
        {"recording_id": str(final), "outcome": "requested", "bot_id": final_bot, "attempt": 5}
    ]
    row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", final)
    assert (row["s3_upload_status"], row["s3_upload_next_retry_at"]) == ("pending", None)
    requests = [e.event for e in await events_for(stack, "recording.upload_requested", final_bot)]
    assert requests == [RecordingUploadRequested(bot_id=final_bot, recording_id=final, attempt=5)]

    again = await notetaker(operator_env, "recordings", "retry", final_bot, cwd=tmp_path)
    assert again.returncode == 1
    assert "is pending, not failed: nothing to retry" in " ".join(again.stderr.split())
    assert len(await events_for(stack, "recording.upload_requested", final_bot)) == 1


async def test_retry_all_failed_takes_each_failed_recording_once_and_never_a_deleted_one(
    stack: Stack,
    db: asyncpg.Pool,
    operator_env: dict[str, str],
    tmp_path: Path,
    retried: list[uuid.UUID],
) -> None:
    org = uuid.uuid4()
    waiting, waiting_bot = await failed_recording(db, org, final=False, retries=1)
    deleted, deleted_bot = await failed_recording(db, org, final=True)
    await db.execute("UPDATE recordings SET media_deleted_at = now() WHERE id = $1", deleted)
    result = await notetaker(
        operator_env, "recordings", "retry", "--all-failed", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    retried += [uuid.UUID(line["recording_id"]) for line in result.json_lines()]
    outcomes = {line["recording_id"]: line for line in result.json_lines()}
    assert outcomes[str(waiting)]["attempt"] == 2
    assert str(deleted) not in outcomes
    assert await events_for(stack, "recording.upload_requested", deleted_bot) == []
    assert len(await events_for(stack, "recording.upload_requested", waiting_bot)) == 1
    refused = await notetaker(operator_env, "recordings", "retry", deleted_bot, cwd=tmp_path)
    assert refused.returncode == 1
    assert "media was deleted" in " ".join(refused.stderr.split())
