"""Bot deploys, one round at a time, against a real database and the simulator's MeetingBaaS over
HTTP: one meeting's failure never holds up the others and backs off on its own, and no meeting
ever gets two bots, whatever happens between asking for a bot and linking it (a crash, a timeout,
a lost connection). The clock the backoff runs on is moved by the test (`next_attempt_at`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack
from notetaker.scheduler.bots import DeployRound, MeetingBaaS, deploy_due_bots
from notetaker.scheduler.leadership import CONNECTION_ERRORS
from notetaker.scheduler.settings import SchedulerSettings
from tests.scheduler.conftest import add_meeting, meeting_url

# The shipped backoff: 30 s, 1, 2, then 5 minutes.
DELAYS: list[float] = SchedulerSettings.model_fields["bot_deploy_retry_delays_seconds"].default


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def conn(db: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The round's connection."""
    async with db.acquire() as connection:
        yield connection


def provider(
    simulator: ProviderSimulator, http: httpx.AsyncClient, timeout: float = 10
) -> MeetingBaaS:
    return MeetingBaaS(
        http,
        api_url=simulator.base_url,
        api_key=SecretStr(simulator.config.api_key),
        timeout_seconds=timeout,
        callback_url="http://127.0.0.1:9/webhooks/meetingbaas",
        callback_key=SecretStr("callback-key-that-signs"),
    )


async def deploy_round(conn: asyncpg.Connection, meetingbaas: MeetingBaaS) -> DeployRound:
    return await deploy_due_bots(conn, meetingbaas, lead_seconds=120, retry_delays_seconds=DELAYS)


def asked_for(simulator: ProviderSimulator, url: str) -> int:
    """How many create-bot requests named this meeting URL."""
    return sum(1 for body in simulator.create_requests if body.get("meeting_url") == url)


async def deploy_row(db: asyncpg.Pool, meeting_id: uuid.UUID) -> Any:
    return await db.fetchrow("SELECT * FROM bot_deploys WHERE meeting_id = $1", meeting_id)


async def bot_of(db: asyncpg.Pool, meeting_id: uuid.UUID) -> str | None:
    bot_id: str | None = await db.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting_id)
    return bot_id


async def try_again_now(db: asyncpg.Pool, meeting_id: uuid.UUID) -> None:
    """The test clock: the meeting's wait (its backoff or its reservation) is over."""
    await db.execute(
        "UPDATE bot_deploys SET next_attempt_at = now() - interval '1 second'"
        " WHERE meeting_id = $1",
        meeting_id,
    )


async def assert_one_bot_linked(
    db: asyncpg.Pool, simulator: ProviderSimulator, meeting_id: uuid.UUID
) -> str:
    """The meeting has exactly one bot at MeetingBaaS, and it is the one linked, with its
    recording; its id."""
    (bot_id,) = simulator.bots_for_meeting(str(meeting_id))
    assert await bot_of(db, meeting_id) == bot_id
    recordings = await db.fetch("SELECT bot_id FROM recordings WHERE meeting_id = $1", meeting_id)
    assert [r["bot_id"] for r in recordings] == [bot_id]
    return bot_id


async def test_a_refused_meeting_backs_off_while_the_five_others_get_their_bots_in_the_round(
    db: asyncpg.Pool,
    conn: asyncpg.Connection,
    meetingbaas: ProviderSimulator,
    http: httpx.AsyncClient,
) -> None:
    refused_url = meeting_url()
    meetingbaas.refused_meeting_urls.add(refused_url)
    # The refused meeting starts first, so it is tried first.
    refused = await add_meeting(db, timedelta(seconds=30), meeting_url=refused_url)
    good = [
        await add_meeting(db, timedelta(seconds=60 + i), meeting_url=meeting_url())
        for i in range(5)
    ]
    mbaas = provider(meetingbaas, http)

    outcome = await deploy_round(conn, mbaas)

    assert outcome.deployed >= 5  # (meetings other tests left due get bots too)
    for meeting_id in good:
        await assert_one_bot_linked(db, meetingbaas, meeting_id)
    assert await bot_of(db, refused) is None
    first = await deploy_row(db, refused)
    assert first["attempts"] == 1
    assert "HTTP 400" in first["last_error"]
    assert first["next_attempt_at"] - first["last_attempt_at"] == timedelta(seconds=DELAYS[0])
    assert first["create_calls"] == 1
    assert asked_for(meetingbaas, refused_url) == 1

    # Next round, still within its backoff: the refused meeting is not asked for again, and the
    # others are done.
    requests_so_far = len(meetingbaas.create_requests)
    await deploy_round(conn, mbaas)
    assert asked_for(meetingbaas, refused_url) == 1
    assert not [
        body
        for body in meetingbaas.create_requests[requests_so_far:]
        if uuid.UUID(body["extra"]["meeting_id"]) in good
    ]

    # Its backoff over: tried again, refused again, and the next wait is the next delay.
    await try_again_now(db, refused)
    await deploy_round(conn, mbaas)
    assert asked_for(meetingbaas, refused_url) == 2
    second = await deploy_row(db, refused)
    assert second["attempts"] == 2
    assert second["next_attempt_at"] - second["last_attempt_at"] == timedelta(seconds=DELAYS[1])
    # A refusal made no bot, but the meeting was asked for: the next try looks first.
    assert meetingbaas.bots_for_meeting(str(refused)) == []

    # MeetingBaaS takes it now: the meeting gets its one bot.
    meetingbaas.refused_meeting_urls.discard(refused_url)
    await try_again_now(db, refused)
    await deploy_round(conn, mbaas)
    await assert_one_bot_linked(db, meetingbaas, refused)
    done = await deploy_row(db, refused)
    assert done["next_attempt_at"] is None
    assert done["bot_id"] == await bot_of(db, refused)


async def test_after_a_crash_between_asking_for_the_bot_and_linking_it_the_bot_is_found(
    db: asyncpg.Pool,
    conn: asyncpg.Connection,
    meetingbaas: ProviderSimulator,
    http: httpx.AsyncClient,
) -> None:
    """The scheduler dies while MeetingBaaS creates the bot (its answer never read): the meeting
    stays reserved while the request could be in flight, then the next try finds the bot by the
    meeting id it carries and links it instead of deploying a second one."""
    url = meeting_url()
    meeting_id = await add_meeting(db, timedelta(seconds=30), meeting_url=url)
    mbaas = provider(meetingbaas, http)
    held = meetingbaas.hold_next_create(str(meeting_id))
    crashing = asyncio.create_task(deploy_round(conn, mbaas))
    created = await held.wait_reached(timeout=30)
    crashing.cancel()  # the process dies here
    with pytest.raises(asyncio.CancelledError):
        await crashing
    held.open()
    reserved = await deploy_row(db, meeting_id)
    assert (reserved["create_calls"], reserved["bot_id"]) == (1, None)
    assert await bot_of(db, meeting_id) is None

    # Restarted, while the reservation still holds: the meeting is left alone.
    await deploy_round(conn, mbaas)
    assert asked_for(meetingbaas, url) == 1

    # Once a request sent then has surely ended: looked up, found, linked; never asked again.
    await try_again_now(db, meeting_id)
    await deploy_round(conn, mbaas)
    assert await assert_one_bot_linked(db, meetingbaas, meeting_id) == created
    assert asked_for(meetingbaas, url) == 1


async def test_a_bot_created_after_the_request_timed_out_is_found_not_doubled(
    db: asyncpg.Pool,
    conn: asyncpg.Connection,
    meetingbaas: ProviderSimulator,
    http: httpx.AsyncClient,
) -> None:
    url = meeting_url()
    meeting_id = await add_meeting(db, timedelta(seconds=30), meeting_url=url)
    mbaas = provider(meetingbaas, http, timeout=0.5)
    held = meetingbaas.hold_next_create(str(meeting_id))  # made, but answered too late
    await deploy_round(conn, mbaas)
    await held.wait_reached(timeout=5)
    failed = await deploy_row(db, meeting_id)
    assert failed["attempts"] == 1
    assert "did not answer within 0.5s" in failed["last_error"]
    # Not before the reservation's hold is over, whatever the first delay says.
    assert failed["next_attempt_at"] >= failed["reserved_at"] + timedelta(seconds=2 * 0.5)
    held.open()

    await try_again_now(db, meeting_id)
    await deploy_round(conn, mbaas)
    await assert_one_bot_linked(db, meetingbaas, meeting_id)
    assert asked_for(meetingbaas, url) == 1


async def test_a_link_that_fails_leaves_no_orphan_the_next_round_links_the_same_bot(
    stack: Stack,
    db: asyncpg.Pool,
    meetingbaas: ProviderSimulator,
    http: httpx.AsyncClient,
) -> None:
    """The round's connection to PostgreSQL drops while MeetingBaaS creates the bot: linking it
    fails (and the round ends); the bot is not lost, the next round links it."""
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    proxy = OutageProxy(database.hostname, database.port)
    await proxy.start()
    url = meeting_url()
    meeting_id = await add_meeting(db, timedelta(seconds=30), meeting_url=url)
    mbaas = provider(meetingbaas, http)
    try:
        doomed = await asyncpg.connect(proxy.url_for(stack.database_url))
        held = meetingbaas.hold_next_create(str(meeting_id))
        round_task = asyncio.create_task(deploy_round(doomed, mbaas))
        created = await held.wait_reached(timeout=30)
        proxy.down()
        held.open()
        with pytest.raises(CONNECTION_ERRORS):
            await round_task
        doomed.terminate()
    finally:
        await proxy.stop()
    assert await bot_of(db, meeting_id) is None
    assert (await deploy_row(db, meeting_id))["create_calls"] == 1

    async with db.acquire() as conn:
        await try_again_now(db, meeting_id)
        await deploy_round(conn, mbaas)
    assert await assert_one_bot_linked(db, meetingbaas, meeting_id) == created
    assert asked_for(meetingbaas, url) == 1
