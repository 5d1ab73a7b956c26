"""transcript-sync restarted while PostgreSQL is down (a TCP proxy in front of it cuts every
connection and refuses new ones): no event is lost. The worker waiting out the outage stops
without committing what it did not apply; its successor cannot open its connections and says so
(/readyz 503) while events keep coming; once PostgreSQL is back every meeting is complete, with
nothing dead-lettered or parked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from notetaker.common.events import dlq_topic
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack
from tests.conftest import eventually, records_up_to_marker
from tests.transcript_sync.fakes import Meeting, parked_rows, scheduled_meeting, transcript
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
