"""Leadership, claimed for every round on the connection that holds the lock.

In process: two replicas' `Leadership` on one database, one behind a TCP proxy that cuts its
connections. As processes: two scheduler replicas deploying bots on the simulator's MeetingBaaS,
the leader's connection to PostgreSQL cut in the middle of a round while MeetingBaaS is creating a
bot for it. The other replica takes over; no meeting gets two bots, the bot the old leader asked
for is found and linked, and the old leader, back online, does not lead again while the other
holds the lock."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from notetaker.common.db import create_pool
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack, free_port
from notetaker.scheduler.leadership import CONNECTION_ERRORS, Leadership
from tests.conftest import eventually
from tests.scheduler.conftest import add_meeting, meeting_url

TIMEOUT_SECONDS = 2  # MeetingBaaS requests; a reserved meeting is left alone twice as long


@dataclass
class Replicas:
    stack: Stack
    simulator: ProviderSimulator
    proxy: OutageProxy  # in front of PostgreSQL for the first replica only
    logdir: Path
    started: list[ServiceProcess]

    async def start(self, name: str, database_url: str) -> ServiceProcess:
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            **self.stack.env(),
            "NOTETAKER_LOG_FORMAT": "json",
            "NOTETAKER_HTTP_PORT": str(port),
            "NOTETAKER_DATABASE_URL": database_url,
            "NOTETAKER_SCHEDULER_INTERVAL_SECONDS": "0.2",
            "NOTETAKER_MEETINGBAAS_API_URL": self.simulator.base_url,
            "NOTETAKER_MEETINGBAAS_API_KEY": self.simulator.config.api_key,
            "NOTETAKER_MEETINGBAAS_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "NOTETAKER_BOT_DEPLOY_RETRY_DELAYS_SECONDS": "[1]",
        }
        process = ServiceProcess("scheduler", env, port, self.logdir / f"{name}.log")
        self.started.append(process)
        process.start()
        await asyncio.to_thread(process.wait_ready)
        return process


@pytest.fixture
async def replicas(
    stack: Stack, meetingbaas: ProviderSimulator, tmp_path: Path
) -> AsyncIterator[Replicas]:
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    proxy = OutageProxy(database.hostname, database.port)
    await proxy.start()
    crew = Replicas(stack, meetingbaas, proxy, tmp_path, [])
    try:
        yield crew
    finally:
        for process in crew.started:
            # Off the loop: the proxy a replica closes its connections through runs on it.
            await asyncio.to_thread(process.stop)
        await proxy.stop()


async def test_only_the_connection_holding_the_lock_runs_a_round_and_a_dropped_one_hands_it_on(
    replicas: Replicas,
) -> None:
    stack, proxy = replicas.stack, replicas.proxy
    lock_id = uuid.uuid4().int >> 65  # this test's own lock: no scheduler running now minds it
    behind_proxy = await create_pool(stack.settings(database_url=proxy.url_for(stack.database_url)))
    direct = await create_pool(stack.settings())
    first, second = Leadership(behind_proxy, lock_id), Leadership(direct, lock_id)
    try:
        round_conn = await first.claim()
        assert round_conn is not None
        assert await second.claim() is None
        again = await first.claim()  # checked again: still its own
        assert again is not None
        assert again is round_conn

        proxy.down()  # the leader's connection drops mid-round
        with pytest.raises(CONNECTION_ERRORS):
            await round_conn.execute("SELECT 1")  # nothing more of its round gets through
        taken = await eventually(second.claim, 10, "the lock to be freed with the connection")
        assert await second.claim() is taken

        proxy.restore()
        assert await first.claim() is None  # it sees the lock gone, and taken
        assert not first.leading
        await second.resign()
        assert await first.claim() is not None  # free again: it may lead
    finally:
        await first.resign()
        await second.resign()
        await behind_proxy.close()
        await direct.close()


def logged(process: ServiceProcess, event: str) -> list[dict[str, Any]]:
    """The lines `process` logged with this event, in order."""
    lines = []
    for text in process.log_path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if line.get("event") == event:
            lines.append(line)
    return lines


def deployed(process: ServiceProcess, meetings: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the meetings this replica linked a bot to."""
    linked = {line.get("meeting_id") for line in logged(process, "bot.deployed")}
    return {m for m in meetings if str(m) in linked}


async def all_linked(db: asyncpg.Pool, meetings: list[uuid.UUID]) -> bool:
    count = await db.fetchval(
        "SELECT count(*) FROM meetings WHERE id = ANY($1::uuid[]) AND bot_id IS NOT NULL",
        meetings,
    )
    return bool(count == len(meetings))


async def test_the_leaders_lock_connection_cut_mid_round_gives_no_meeting_two_bots(
    replicas: Replicas, db: asyncpg.Pool, meetingbaas: ProviderSimulator
) -> None:
    """The cut comes while the old leader's create request is held at MeetingBaaS: both replicas
    run before any meeting is due, so nothing slow (a process starting) stands between the
    request and the cut. The request times out after TIMEOUT_SECONDS; had the cut come later, the
    old leader, still holding the lock, would record the timeout and deploy the other meetings
    itself (right, but not the fault this test is about)."""
    first, second, third = [
        await add_meeting(db, timedelta(days=1), meeting_url=meeting_url()) for _ in range(3)
    ]
    meetings = [first, second, third]

    old = await replicas.start("old-leader", replicas.proxy.url_for(replicas.stack.database_url))

    async def old_leads() -> bool:
        return bool(logged(old, "scheduler.leader_elected"))

    await eventually(old_leads, 30, "the first replica to lead")
    # The second replica runs beside it, waiting for the lock.
    new = await replicas.start("new-leader", replicas.stack.database_url)
    assert not logged(new, "scheduler.leader_elected")

    # All three fall due at once; the old leader's round asks for the first meeting's bot, and
    # MeetingBaaS makes it and holds the answer.
    held = meetingbaas.hold_next_create(str(first))
    await db.execute(
        "UPDATE meetings m SET start_time = now() + make_interval(secs => d.seconds)"
        " FROM unnest($1::uuid[], $2::float8[]) AS d(id, seconds) WHERE m.id = d.id",
        meetings,
        [10.0, 20.0, 30.0],
    )
    created = await held.wait_reached(timeout=60)
    replicas.proxy.down()  # the old leader's connections are cut: its lock goes with them

    # The second replica takes over: it deploys the other two at once, and the first meeting
    # once its reservation is over, by finding the bot the old leader asked for.
    await eventually(lambda: all_linked(db, meetings), 60, "every meeting linked to a bot")
    assert logged(new, "scheduler.leader_elected")
    # The old leader's try ended with its connection, not in a timeout it could still record.
    failed_tries = await db.fetchval(
        "SELECT attempts FROM bot_deploys WHERE meeting_id = $1", first
    )
    assert failed_tries == 0, "the old leader's request timed out before its connection was cut"
    # Only now does the old leader's answer come (or its request has timed out meanwhile).
    held.open()

    async def old_leader_stepped_down() -> bool:
        return bool(logged(old, "scheduler.leadership_lost"))

    await eventually(old_leader_stepped_down, 30, "the old leader to notice it lost the lock")
    replicas.proxy.restore()  # back online, it finds the lock taken

    # One more meeting, after all that: deployed once, by the replica that holds the lock.
    fourth = await add_meeting(db, timedelta(seconds=5), meeting_url=meeting_url())
    meetings.append(fourth)
    await eventually(lambda: all_linked(db, meetings), 60, "the fourth meeting linked")

    for meeting_id in meetings:
        bots = meetingbaas.bots_for_meeting(str(meeting_id))
        assert len(bots) == 1, f"meeting {meeting_id} has bots {bots}"
        linked = await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting_id)
        assert linked == bots[0]
        recordings = await db.fetch(
            "SELECT bot_id FROM recordings WHERE meeting_id = $1", meeting_id
        )
        assert [r["bot_id"] for r in recordings] == bots
    assert await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", first) == created
    asked_for_first = [
        body
        for body in meetingbaas.create_requests
        if body.get("extra", {}).get("meeting_id") == str(first)
    ]
    assert len(asked_for_first) == 1
    assert deployed(old, meetings) == set()
    assert deployed(new, meetings) == set(meetings)
    assert len(logged(old, "scheduler.leader_elected")) == 1  # it never led again
