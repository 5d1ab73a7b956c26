"""Meetings in flight when a dependency goes away all end complete once it is back, and no event
is dead-lettered for it: an outage is waited out (consumers pause and report not-ready, webhooks
get 503 and are delivered again), never mistaken for a bad event."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import httpx
import pytest

from notetaker.common.events import TOPICS, dlq_topic
from tests.conftest import eventually, records_up_to_marker
from tests.e2e.conftest import Meeting, meeting_with_bot
from tests.e2e.test_pipeline import complete_row
from tests.outages.conftest import MEETINGS, OUTAGE_SECONDS, Proxied


async def readiness(proxied: Proxied) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=5) as http:
        return {
            name: (await http.get(f"{process.url}/readyz")).status_code
            for name, process in proxied.pipeline.services.processes.items()
        }


@pytest.mark.parametrize("dependency", ["postgres", "kafka", "s3"])
async def test_meetings_in_flight_through_an_outage_all_complete_and_none_is_dead_lettered(
    proxied: Proxied, db: asyncpg.Pool, dependency: str
) -> None:
    sim = proxied.pipeline.simulator
    half = MEETINGS // 2
    meetings: list[Meeting] = []
    for n in range(MEETINGS):
        # The first half's videos answer late: their uploads are under way when it goes down,
        # and need the dependency again in the middle of the outage.
        delay = OUTAGE_SECONDS / 2 if n < half else 0.0
        bot_id = sim.create_bot(hold_completed=True, video_delay=delay)
        meetings.append(await meeting_with_bot(db, bot_id))
    for meeting in meetings[:half]:
        sim.complete(meeting.bot_id)

    async def uploading() -> bool | None:
        statuses = await db.fetch(
            "SELECT s3_upload_status FROM recordings WHERE bot_id = ANY($1::text[])",
            [m.bot_id for m in meetings[:half]],
        )
        # the uploader copies a few at a time: the rest of the half wait their turn
        return any(r["s3_upload_status"] == "uploading" for r in statuses) or None

    await eventually(uploading, 60, "the first half's uploads under way")
    if dependency == "s3":
        proxied.s3.fail_all(503)
    else:
        getattr(proxied, dependency).down()
    for meeting in meetings[half:]:  # these arrive during the outage
        sim.complete(meeting.bot_id)
    not_ready: set[str] = set()
    ends = asyncio.get_running_loop().time() + OUTAGE_SECONDS  # how long it lasts, not a check
    while asyncio.get_running_loop().time() < ends:
        not_ready |= {name for name, code in (await readiness(proxied)).items() if code != 200}
        await asyncio.sleep(0.2)
    if dependency == "s3":
        proxied.s3.heal()
    else:
        getattr(proxied, dependency).restore()

    rows = [await complete_row(db, m, timeout=120 + OUTAGE_SECONDS) for m in meetings]
    assert [r["recording_status"] for r in rows] == ["available"] * MEETINGS
    bots = {m.bot_id for m in meetings}
    for topic in TOPICS:
        dead = await asyncio.to_thread(
            records_up_to_marker,
            proxied.pipeline.stack.kafka_bootstrap_servers,
            dlq_topic(topic),
            None,
        )
        assert [r for r in dead if r.key is not None and r.key.decode() in bots] == [], topic
    # No outage used up an attempt of any upload.
    recordings = await db.fetch(
        "SELECT s3_upload_retry_count FROM recordings WHERE bot_id = ANY($1::text[])", list(bots)
    )
    assert [r["s3_upload_retry_count"] for r in recordings] == [0] * MEETINGS
    if dependency == "postgres":
        assert proxied.postgres.refused > 0  # the services did try, and were refused
        # The uploader, whose copies needed the database mid-outage, paused and said so.
        assert "uploader" in not_ready
    elif dependency == "kafka":
        assert proxied.kafka.refused > 0
        assert "ingest" in not_ready  # ingest cannot publish: it says so
    else:
        # S3 was asked, and answered 503 (botocore's own retries may outlast a short outage).
        assert proxied.s3.injected
    assert set((await readiness(proxied)).values()) == {200}


async def test_services_started_while_postgres_and_kafka_are_unreachable_wait_and_then_work(
    proxied: Proxied, db: asyncpg.Pool
) -> None:
    """A pod restarted in the middle of an outage (a node drained, a deploy) waits for its
    dependencies, answering /healthz and saying not ready, instead of exiting into a crash loop;
    once they are back it is ready and a meeting goes through."""
    processes = proxied.pipeline.services.processes
    for process in processes.values():
        process.stop()
    proxied.postgres.down()
    proxied.kafka.down()
    try:
        for process in processes.values():
            process.start()

        async def not_live() -> list[str]:
            silent = []
            async with httpx.AsyncClient(timeout=2) as http:
                for name, process in processes.items():
                    try:
                        if (await http.get(f"{process.url}/healthz")).status_code != 200:
                            silent.append(name)
                    except httpx.HTTPError:
                        silent.append(name)
            return silent

        deadline = asyncio.get_running_loop().time() + 60
        while (silent := await not_live()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
        assert silent == [], {name: processes[name].tail(15) for name in silent}
        await asyncio.sleep(OUTAGE_SECONDS / 2)  # how long they wait, not a check
        exited = {
            name: code
            for name, process in processes.items()
            if process.process is not None and (code := process.process.poll()) is not None
        }
        assert exited == {}
        assert set((await readiness(proxied)).values()) == {503}
        assert proxied.postgres.refused > 0
        assert proxied.kafka.refused > 0
        # A SIGTERM while waiting (a rollout in the outage) stops each at once, cleanly.
        for process in processes.values():
            await asyncio.to_thread(process.stop, signal.SIGTERM, 10.0)
        codes = {n: p.process.returncode for n, p in processes.items() if p.process is not None}
        assert set(codes.values()) <= {0, -signal.SIGTERM}, codes
        for process in processes.values():
            process.start()
    finally:
        proxied.postgres.restore()
        proxied.kafka.restore()
    for process in processes.values():
        await asyncio.to_thread(process.wait_ready, 120)
    sim = proxied.pipeline.simulator
    meeting = await meeting_with_bot(db, sim.create_bot())
    sim.complete(meeting.bot_id)
    row = await complete_row(db, meeting, timeout=120)
    assert row["recording_status"] == "available"
