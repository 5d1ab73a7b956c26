"""`notetaker thumbnails missing|regenerate` against the stack: the meetings whose video is
stored and whose thumbnail is not, and the pipeline's own `thumbnail.requested` published again.

The thumbnailer of later test packages would consume those requests (its group starts at the
earliest offset): the recordings asked for here are marked deleted once checked, so it makes
nothing of them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from notetaker.common.events import ThumbnailRequested
from notetaker.common.s3 import S3Client, recording_key
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack
from tests.cli.conftest import StoredMeeting, stored_meeting
from tests.cli.test_events import notetaker
from tests.e2e.conftest import events_for


@pytest.fixture
async def asked(db: asyncpg.Pool) -> AsyncIterator[list[StoredMeeting]]:
    meetings: list[StoredMeeting] = []
    yield meetings
    await db.execute(
        "UPDATE recordings SET media_deleted_at = now() WHERE id = ANY($1::uuid[])",
        [m.recording_id for m in meetings],
    )


async def without_thumbnail(
    stack: Stack, db: asyncpg.Pool, s3: S3Client, providers: ProviderSimulator, minutes_ago: int
) -> StoredMeeting:
    meeting = await stored_meeting(stack, db, s3, providers)
    await db.execute(
        "UPDATE meetings SET thumbnail_url = NULL,"
        " updated_at = now() - make_interval(mins => $2) WHERE id = $1",
        meeting.meeting_id,
        minutes_ago,
    )
    return meeting


async def requests_for(stack: Stack, meeting: StoredMeeting) -> list[ThumbnailRequested]:
    found = await events_for(stack, ThumbnailRequested.type, meeting.bot_id)
    return [e.event for e in found if isinstance(e.event, ThumbnailRequested)]


async def test_missing_lists_stored_videos_without_a_thumbnail_and_regenerate_asks_again(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
    asked: list[StoredMeeting],
) -> None:
    with_one = await stored_meeting(stack, db, s3, providers)
    old = await without_thumbnail(stack, db, s3, providers, minutes_ago=60)
    recent = await without_thumbnail(stack, db, s3, providers, minutes_ago=0)
    asked += [old, recent]

    listed = await notetaker(
        operator_env, "thumbnails", "missing", "--older-than", "30", "--json", cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    meetings = {line["meeting_id"] for line in listed.json_lines()}
    assert str(old.meeting_id) in meetings
    assert not meetings & {str(recent.meeting_id), str(with_one.meeting_id)}

    result = await notetaker(
        operator_env, "thumbnails", "regenerate", str(old.meeting_id), "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.json_lines()
    assert line["outcome"] == "requested"
    thumbnail_key = recording_key(old.org_id, old.user_id, old.recording_id, "thumbnail", "jpg")
    assert await requests_for(stack, old) == [
        ThumbnailRequested(
            bot_id=old.bot_id,
            recording_id=old.recording_id,
            org_id=old.org_id,
            bucket=stack.s3_bucket,
            video_key=recording_key(old.org_id, old.user_id, old.recording_id, "video", "mp4"),
            thumbnail_key=thumbnail_key,
        )
    ]


async def test_regenerate_missing_asks_for_each_and_says_when_the_video_is_gone(
    stack: Stack,
    db: asyncpg.Pool,
    s3: S3Client,
    providers: ProviderSimulator,
    operator_env: dict[str, str],
    tmp_path: Path,
    asked: list[StoredMeeting],
) -> None:
    present = await without_thumbnail(stack, db, s3, providers, minutes_ago=5)
    gone = await without_thumbnail(stack, db, s3, providers, minutes_ago=5)
    asked += [present, gone]
    await s3.delete_object(
        Bucket=stack.s3_bucket,
        Key=recording_key(gone.org_id, gone.user_id, gone.recording_id, "video", "mp4"),
    )
    result = await notetaker(
        operator_env, "thumbnails", "regenerate", "--missing", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    outcomes = {line["meeting_id"]: line["outcome"] for line in result.json_lines()}
    asked += []  # the others listed are other tests' meetings, already marked by theirs
    assert outcomes[str(present.meeting_id)] == "requested"
    assert outcomes[str(gone.meeting_id)] == "video_not_in_s3"
    assert len(await requests_for(stack, present)) == 1
    assert await requests_for(stack, gone) == []

    unknown = await notetaker(
        operator_env, "thumbnails", "regenerate", str(uuid.uuid4()), cwd=tmp_path
    )
    assert unknown.returncode == 1
    assert "no recording has the id" in unknown.stderr
