"""`notetaker meetings delete`, run as an operator runs it, against the stack's PostgreSQL, S3 and
Kafka and the simulator's MeetingBaaS and Gladia: everything under the recording's prefix goes,
its rows keep no URL and no transcript, the providers delete their copies, the deletion is
recorded and the org's stored bytes are taken down by what the recording held; running it again
changes nothing, a run killed half-way or stopped by a provider is finished by the next, two at
once delete once, and hostile arguments delete nothing.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from notetaker.common.events import StorageUsage
from notetaker.common.s3 import S3Client
from notetaker.devstack.s3_proxy import Hold, S3FaultProxy
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack
from tests.cli.conftest import (
    TRANSCRIPT_TEXT,
    StoredMeeting,
    kept_bodies,
    stored_meeting,
    under_prefix,
)
from tests.cli.test_events import DEADLINE, NOTETAKER, Result, notetaker
from tests.e2e.conftest import events_for


async def delete(env: dict[str, str], cwd: Path, *args: str) -> Result:
    return await notetaker(env, "meetings", "delete", *args, "--yes", "--json", cwd=cwd)


async def deletion_row(db: asyncpg.Pool, meeting: StoredMeeting) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT * FROM media_deletions WHERE recording_id = $1", meeting.recording_id
    )
    assert row is not None, f"no deletion recorded for {meeting.recording_id}"
    return dict(row)


async def usage_taken_off(stack: Stack, meeting: StoredMeeting) -> list[int]:
    """bytes_stored of every `storage.usage` the deletion published for the recording."""
    events = await events_for(stack, StorageUsage.type, meeting.bot_id)
    return [
        e.event.bytes_stored
        for e in events
        if isinstance(e.event, StorageUsage) and e.event.step == "delete"
    ]


async def assert_media_gone(db: asyncpg.Pool, meeting: StoredMeeting) -> None:
    row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", meeting.meeting_id)
    for column in (
        "video_url",
        "audio_url",
        "thumbnail_url",
        "transcript_text",
        "transcript_json",
        "transcript_provider",
        "participants",
        "speakers",
        "summary",
    ):
        assert row[column] is None, column
    assert row["title"] == "Budget review"  # the product's meeting stays; only its media goes
    assert row["recording_status"] == "deleted"
    assert row["media_deleted_at"] is not None
    recording = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", meeting.recording_id)
    for column in ("provider_video_url", "provider_audio_url", "s3_video_key", "s3_audio_key"):
        assert recording[column] is None, column
    assert recording["media_deleted_at"] is not None
    # The artifact's row stays, as the record of what was kept, leading nowhere.
    artifact = await db.fetchrow(
        "SELECT * FROM recording_artifacts WHERE recording_id = $1", meeting.recording_id
    )
    assert (artifact["kind"], artifact["provider_url"], artifact["s3_key"]) == (
        "transcription",
        None,
        None,
    )
    text = " ".join(str(v) for r in (row, recording) for v in r.values())
    assert "confidential" not in text


async def test_a_stored_meeting_is_deleted_everywhere_once_and_a_second_run_changes_nothing(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    meeting = await stored_meeting(stack, db, s3, providers)
    held = await under_prefix(s3, stack, meeting.prefix)
    # video, audio, thumbnail, the transcript JSON, something else, an upload
    assert len(held) == 6
    assert await kept_bodies(db, meeting.bot_id) == 1

    first = await delete(operator_env, tmp_path, str(meeting.meeting_id), "--by", "ops@test")
    assert first.returncode == 0, first.stderr
    (line,) = first.json_lines()
    assert line["outcome"] == "deleted"
    assert line["recording_id"] == str(meeting.recording_id)
    assert line["objects_deleted"] == 5
    assert "1 deleted" in first.stderr

    assert await under_prefix(s3, stack, meeting.prefix) == []
    await assert_media_gone(db, meeting)
    # The raw webhook body (it holds the transcript) went with the media; that it arrived stays.
    assert await kept_bodies(db, meeting.bot_id) == 0
    shown = await notetaker(
        operator_env,
        "webhooks",
        "show",
        meeting.bot_id,
        "--body",
        f"msg_{meeting.bot_id}",
        cwd=tmp_path,
    )
    assert shown.returncode == 1
    assert "was deleted with the bot's media" in shown.stderr
    audit = await deletion_row(db, meeting)
    assert audit["requested_by"] == "ops@test"
    assert audit["reason"] == "operator"
    assert sorted(audit["deleted_keys"]) == [k for k in held if not k.startswith("upload:")]
    assert audit["stored_bytes"] == meeting.size_bytes
    assert audit["meetingbaas_outcome"] == "deleted"
    assert audit["gladia_job_id"] == meeting.gladia_job_id
    assert audit["gladia_outcome"] == "deleted"
    assert audit["completed_at"] is not None
    assert providers.data_deletions.count(meeting.bot_id) == 1
    assert meeting.gladia_job_id in providers.deleted_jobs
    # The org's stored level goes down by what the recording's upload put on it.
    assert await usage_taken_off(stack, meeting) == [-meeting.size_bytes]

    again = await delete(operator_env, tmp_path, meeting.bot_id)
    assert again.returncode == 0, again.stderr
    assert [x["outcome"] for x in again.json_lines()] == ["already_deleted"]
    assert await deletion_row(db, meeting) == audit
    assert await under_prefix(s3, stack, meeting.prefix) == []
    assert await usage_taken_off(stack, meeting) == [-meeting.size_bytes]
    assert providers.data_deletions.count(meeting.bot_id) == 1


async def test_a_run_killed_half_way_is_finished_by_the_next_one(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The command is SIGKILLed once the deletion's intent is committed, while its first S3
    request (listing the prefix) is held: the meeting is already marked and cleared, its objects
    are all still there; the next run deletes them and finishes every step."""
    meeting = await stored_meeting(stack, db, s3, providers)
    held = await under_prefix(s3, stack, meeting.prefix)
    assert stack.s3_endpoint_url is not None
    proxy = S3FaultProxy(stack.s3_endpoint_url)
    hold = Hold(lambda request: request.method == "GET")  # the first listing of the purge
    proxy.holds.append(hold)
    await proxy.start()
    process = await asyncio.create_subprocess_exec(
        str(NOTETAKER),
        *("meetings", "delete", str(meeting.recording_id), "--yes"),
        env=operator_env | {"NOTETAKER_S3_ENDPOINT_URL": proxy.url},
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await hold.wait_reached(DEADLINE)
        process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        hold.open()  # the held listing goes on to S3 (its client is gone): nothing waits on it
        await proxy.stop()

    audit = await deletion_row(db, meeting)  # the intent, written before any object is touched
    assert audit["s3_done_at"] is None
    assert audit["completed_at"] is None
    await assert_media_gone(db, meeting)  # the rows were cleared with the intent
    assert await under_prefix(s3, stack, meeting.prefix) == held
    assert await usage_taken_off(stack, meeting) == []

    rerun = await delete(operator_env, tmp_path, str(meeting.meeting_id))
    assert rerun.returncode == 0, rerun.stderr
    assert [x["outcome"] for x in rerun.json_lines()] == ["deleted"]
    assert await under_prefix(s3, stack, meeting.prefix) == []
    audit = await deletion_row(db, meeting)
    assert audit["completed_at"] is not None
    assert audit["requested_at"] < audit["completed_at"]
    assert audit["objects_deleted"] == 5
    assert await usage_taken_off(stack, meeting) == [-meeting.size_bytes]


async def test_a_provider_refusing_leaves_the_deletion_unfinished_until_a_later_run(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """MeetingBaaS answers 429 (its rate limit): our copy is gone, the deletion says what is
    left and exits 1; once MeetingBaaS answers again, the next run finishes it."""
    meeting = await stored_meeting(stack, db, s3, providers)
    providers.delete_data_status = 429
    try:
        stopped = await delete(operator_env, tmp_path, meeting.bot_id)
    finally:
        providers.delete_data_status = None
    assert stopped.returncode == 1, stopped.stderr
    (line,) = stopped.json_lines()
    assert line["outcome"] == "unfinished"
    assert line["steps_left"] == ["meetingbaas"]
    assert "HTTP 429" in line["last_error"]
    assert "Unfinished deletions are recorded" in stopped.stderr
    assert await under_prefix(s3, stack, meeting.prefix) == []
    audit = await deletion_row(db, meeting)
    assert audit["next_attempt_at"] is not None  # when the scheduler takes it up again

    finished = await delete(operator_env, tmp_path, meeting.bot_id)
    assert finished.returncode == 0, finished.stderr
    assert [x["outcome"] for x in finished.json_lines()] == ["deleted"]
    audit = await deletion_row(db, meeting)
    assert audit["meetingbaas_outcome"] == "deleted"
    assert audit["completed_at"] is not None
    assert await usage_taken_off(stack, meeting) == [-meeting.size_bytes]


async def test_two_deletions_of_one_meeting_at_once_delete_it_once(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    meeting = await stored_meeting(stack, db, s3, providers)
    both = await asyncio.gather(
        delete(operator_env, tmp_path, str(meeting.meeting_id)),
        delete(operator_env, tmp_path, meeting.bot_id),
    )
    for result in both:
        assert result.returncode == 0, result.stderr
    outcomes = sorted(x["outcome"] for result in both for x in result.json_lines())
    assert outcomes == ["already_deleted", "deleted"]
    assert await under_prefix(s3, stack, meeting.prefix) == []
    assert providers.data_deletions.count(meeting.bot_id) == 1
    assert await usage_taken_off(stack, meeting) == [-meeting.size_bytes]


async def test_an_org_is_deleted_meeting_by_meeting_after_a_dry_run(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    org = uuid.uuid4()
    ours = [await stored_meeting(stack, db, s3, providers, org_id=org) for _ in range(2)]
    other = await stored_meeting(stack, db, s3, providers)

    dry = await delete(operator_env, tmp_path, "--org", str(org), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(x["recording_id"] for x in dry.json_lines()) == sorted(
        str(m.recording_id) for m in ours
    )
    assert {x["outcome"] for x in dry.json_lines()} == {"would_delete"}
    for meeting in ours:
        assert len(await under_prefix(s3, stack, meeting.prefix)) == 6

    result = await delete(operator_env, tmp_path, "--org", str(org))
    assert result.returncode == 0, result.stderr
    assert [x["outcome"] for x in result.json_lines()] == ["deleted", "deleted"]
    for meeting in ours:
        assert await under_prefix(s3, stack, meeting.prefix) == []
        await assert_media_gone(db, meeting)
    assert len(await under_prefix(s3, stack, other.prefix)) == 6
    kept = await db.fetchval("SELECT transcript_text FROM meetings WHERE id = $1", other.meeting_id)
    assert kept == TRANSCRIPT_TEXT


HOSTILE: list[tuple[tuple[str, ...], int, str]] = [
    (("x' OR '1'='1",), 1, "no recording has the id"),
    (("meeting-recordings/",), 1, "no recording has the id"),
    (("--org", "'; DROP TABLE recordings; --"), 2, "is not an org id"),
    (("a" * 5000,), 2, "is not an id or a bot id"),
    ((), 2, "give one ID, or --org ORG"),
]


async def test_hostile_or_unclear_arguments_delete_nothing(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    canary = await stored_meeting(stack, db, s3, providers)
    before = await db.fetchval("SELECT count(*) FROM media_deletions")
    results = await asyncio.gather(
        *(delete(operator_env, tmp_path, *args) for args, _, _ in HOSTILE)
    )
    for (args, code, message), result in zip(HOSTILE, results, strict=True):
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in " ".join(result.stderr.split()), args
        assert "Traceback" not in result.stderr, args
    assert await db.fetchval("SELECT count(*) FROM media_deletions") == before
    assert len(await under_prefix(s3, stack, canary.prefix)) == 6
    assert await db.fetchval(
        "SELECT media_deleted_at IS NULL FROM recordings WHERE id = $1", canary.recording_id
    )


async def test_without_yes_it_asks_and_a_refusal_deletes_nothing(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    meeting = await stored_meeting(stack, db, s3, providers)
    process = await asyncio.create_subprocess_exec(
        str(NOTETAKER),
        *("meetings", "delete", str(meeting.meeting_id)),
        env=operator_env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(b"n\n"), DEADLINE)
    assert process.returncode == 1
    assert b"Delete the media of recording" in stdout
    assert len(await under_prefix(s3, stack, meeting.prefix)) == 6
    assert (
        await db.fetchval(
            "SELECT count(*) FROM media_deletions WHERE recording_id = $1", meeting.recording_id
        )
        == 0
    )
