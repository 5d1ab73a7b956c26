"""transcript-sync restarted while PostgreSQL is down (a TCP proxy in front of it cuts every
connection and refuses new ones): no event is lost. The worker waiting out the outage stops
without committing what it did not apply; its successor cannot open its connections and says so
(/readyz 503) while events keep coming; once PostgreSQL is back every meeting is complete, with
nothing dead-lettered or parked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notetaker.common.events import Event, dlq_topic
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack
from tests.conftest import eventually, records_up_to_marker
from tests.transcript_sync.fakes import (
    Meeting,
    parked_rows,
    scheduled_meeting,
    thumbnail_generated,
    transcript,
    uploaded,
)
from tests.transcript_sync.workers import (
    Publisher,
    new_group,
    readiness,
    stop,
    without_transcript,
    worker_process,
)


@pytest.fixture
async def postgres(stack: Stack) -> AsyncIterator[OutageProxy]:
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    proxy = OutageProxy(database.hostname, database.port)
    await proxy.start()
    yield proxy
    proxy.restore()
    await proxy.stop()


async def answer_of(process: ServiceProcess, status: int) -> dict[str, object]:
    """Wait for the worker's /readyz to answer `status`; its body."""

    async def answered() -> dict[str, object] | None:
        answer = await readiness(process)
        return answer[1] if answer is not None and answer[0] == status else None

    return await eventually(answered, 60, f"/readyz to answer {status}")


async def test_a_restart_while_postgres_is_down_loses_no_event(
    stack: Stack,
    db: asyncpg.Pool,
    postgres: OutageProxy,
    tmp_path: Path,
) -> None:
    group = await new_group(stack)
    env = {"NOTETAKER_DATABASE_URL": postgres.url_for(stack.database_url)}
    before = worker_process(stack, tmp_path, group, "before", **env)
    after = worker_process(stack, tmp_path, group, "after", **env)
    meetings: list[Meeting] = [await scheduled_meeting(db) for _ in range(6)]
    try:
        before.start()
        await asyncio.to_thread(before.wait_ready, 60)
        async with Publisher(stack) as publisher:
            postgres.down()
            for meeting in meetings[:3]:  # taken by the worker that is about to stop
                await publisher.publish(transcript(meeting, "before the restart"))
            waiting = await answer_of(before, 503)
            assert waiting["outage"] is True
            await stop(before)  # SIGTERM while it waits: it must stop, committing nothing

            after.start()
            not_ready = await answer_of(after, 503)
            assert not_ready["connections"] is False
            for meeting in meetings[3:]:  # while the new worker cannot reach the database
                await publisher.publish(transcript(meeting, "after the restart"))
            assert postgres.refused > 0
            assert await without_transcript(db, meetings) == meetings

            postgres.restore()

            async def all_written() -> bool:
                return not await without_transcript(db, meetings)

            await eventually(all_written, 90, "every meeting's transcript once PostgreSQL is back")
            assert (await answer_of(after, 200))["ready"] is True
    finally:
        postgres.restore()
        await stop(before)
        await stop(after)

    dead = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, dlq_topic("transcript.ready"), None
    )
    bots = {m.bot_id.encode() for m in meetings}
    assert [r for r in dead if r.key in bots] == []
    assert await parked_rows(db, group) == []


IN_FLIGHT = 12  # meetings whose state the worker keeps (a video written, the rest to come)


async def join_states(process: ServiceProcess) -> float:
    """How many meetings' join state the worker holds (its gauge, scraped)."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{process.url}/metrics")).text
    (held,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "notetaker_transcript_sync_join_states"
    ]
    return held


async def thumbnails_requested(stack: Stack, meeting: Meeting) -> int:
    """How many thumbnails were asked for the meeting's bot (none when its thumbnail came
    before its upload was read)."""
    requests = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, "thumbnail.requested", meeting.bot_id
    )
    return len(requests)


def applied(process: ServiceProcess, bot_id: str) -> list[dict[str, object]]:
    """The `join.applied` lines the worker logged for the bot."""
    lines = process.log_path.read_text(errors="replace").splitlines()
    # A line may start with a terminal control sequence: the JSON is from its first brace on.
    entries = [json.loads(line[line.index("{") :]) for line in lines if "{" in line]
    return [e for e in entries if e.get("event") == "join.applied" and e.get("bot_id") == bot_id]


async def test_a_complete_meeting_leaves_a_tombstone_and_a_restart_decides_it_from_rows(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A meeting's join state is deleted once it is complete: its last changelog record is a
    tombstone, while meetings in flight keep their state. The worker restarted recovers the
    state of every meeting in flight and none of the complete one; it then gets the complete
    meeting's events again, decides them from the rows and changes nothing."""
    group = await new_group(stack)
    first = worker_process(stack, tmp_path, group, "first")
    second = worker_process(stack, tmp_path, group, "second")
    done = await scheduled_meeting(db)
    in_flight = [await scheduled_meeting(db) for _ in range(IN_FLIGHT)]
    upload, waiting = uploaded(done), [uploaded(m) for m in in_flight]
    events: list[Event] = [upload, transcript(done, "all of it"), thumbnail_generated(upload)]
    try:
        first.start()
        await asyncio.to_thread(first.wait_ready, 60)
        async with Publisher(stack) as publisher:
            for event in [*events, *waiting]:
                await publisher.publish(event)

            async def settled() -> bool:
                row = await db.fetchrow(
                    "SELECT thumbnail_url, transcript_text FROM meetings WHERE id = $1", done.id
                )
                videos = await db.fetchval(
                    "SELECT count(video_url) FROM meetings WHERE id = ANY($1::uuid[])",
                    [m.id for m in in_flight],
                )
                return row is not None and None not in tuple(row) and videos == IN_FLIGHT

            await eventually(settled, 60, "the meeting complete and the others' videos written")
            await stop(first)
            row = await db.fetchrow("SELECT * FROM meetings WHERE id = $1", done.id)
            requested = await thumbnails_requested(stack, done)

            second.start()
            await asyncio.to_thread(second.wait_ready, 60)
            for event in events:
                await publisher.publish(event)

            async def all_decided() -> list[dict[str, object]] | None:
                decided = applied(second, done.bot_id)
                return decided if len(decided) == len(events) else None

            decided = await eventually(all_decided, 60, "the late duplicates to be decided")
            held = await join_states(second)
    finally:
        await stop(first)
        await stop(second)

    assert [d["effects"] for d in decided] == [[], [], []]
    assert await db.fetchrow("SELECT * FROM meetings WHERE id = $1", done.id) == row
    assert await thumbnails_requested(stack, done) == requested
    changelog = f"{group}-meeting-join-changelog"
    states = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, changelog, json.dumps(done.bot_id)
    )
    assert [s.tombstone for s in states] == [False] * (len(states) - 1) + [True]
    assert held == IN_FLIGHT  # recovered: every meeting in flight, not the complete one
    for meeting, its_upload in zip(in_flight, waiting, strict=True):
        kept = await asyncio.to_thread(
            records_up_to_marker,
            stack.kafka_bootstrap_servers,
            changelog,
            json.dumps(meeting.bot_id),  # the table's keys are JSON
        )
        assert [json.loads(s.value)["video_key"] for s in kept] == [its_upload.video_key]
