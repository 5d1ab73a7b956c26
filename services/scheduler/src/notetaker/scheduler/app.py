"""The scheduler: one leader (a PostgreSQL advisory lock) runs the periodic jobs."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import httpx
from prometheus_client import Counter

from notetaker.common.db import create_pool
from notetaker.common.http import health_app, make_server
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.runtime import until_stopped
from notetaker.scheduler import bots, retries, transcriptions
from notetaker.scheduler.settings import SchedulerSettings

log = get_logger(__name__)

LEADER_LOCK = 0x6E6F7465_0001
JOB_RUNS = Counter(
    "notetaker_scheduler_job_runs_total", "Job rounds, by job and outcome.", ["job", "outcome"]
)
BOTS_DEPLOYED = Counter("notetaker_scheduler_bots_deployed_total", "Bots deployed.")


class Scheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        publisher: EventPublisher,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self.publisher = publisher
        self.is_leader = False
        self.warned_no_api_key = False
        self.warned_no_callback_key = False

    async def deploy_bots(self) -> int:
        if self.settings.meetingbaas_api_key is None:
            if not self.warned_no_api_key:
                log.warning("scheduler.bot_deploys_off", hint="set NOTETAKER_MEETINGBAAS_API_KEY")
                self.warned_no_api_key = True
            return 0
        keys = self.settings.meetingbaas_callback_keys
        if not keys and not self.warned_no_callback_key:
            log.warning(
                "scheduler.bot_callbacks_off",
                hint="set NOTETAKER_MEETINGBAAS_CALLBACK_KEYS (the same on ingest)",
            )
            self.warned_no_callback_key = True
        deployed = 0
        for meeting in await bots.due_meetings(self.pool, self.settings.bot_join_lead_seconds):
            bot_id = await bots.create_bot(
                self.http,
                api_url=self.settings.meetingbaas_api_url,
                api_key=self.settings.meetingbaas_api_key,
                meeting=meeting,
                bot_name=self.settings.bot_name,
                transcription=self.settings.bot_transcription,
                callback_url=f"{self.settings.webhook_base_url.rstrip('/')}/webhooks/meetingbaas",
                callback_key=keys[0] if keys else None,
            )
            if await bots.link_bot(self.pool, meeting, bot_id):
                deployed += 1
                BOTS_DEPLOYED.inc()
                log.info(
                    "bot.deployed",
                    bot_id=bot_id,
                    meeting_id=str(meeting.id),
                    org_id=str(meeting.org_id),
                    start_time=meeting.start_time.isoformat(),
                )
        return deployed

    async def request_retries(self) -> int:
        return await retries.request_due_retries(self.pool, self.publisher)

    async def poll_transcriptions(self) -> int:
        if self.settings.gladia_api_key is None:
            return 0
        return await transcriptions.poll_overdue_jobs(
            self.pool,
            self.http,
            self.publisher,
            api_url=self.settings.gladia_api_url,
            api_key=self.settings.gladia_api_key,
            overdue_seconds=self.settings.gladia_poll_after_seconds,
            every_seconds=self.settings.gladia_poll_every_seconds,
        )

    async def round(self) -> None:
        jobs = {
            "deploy_bots": self.deploy_bots,
            "upload_retries": self.request_retries,
            "transcription_polls": self.poll_transcriptions,
        }
        for name, job in jobs.items():
            try:
                count = await job()
                JOB_RUNS.labels(name, "ok").inc()
                if count:
                    log.info("scheduler.job_done", job=name, count=count)
            except Exception:
                JOB_RUNS.labels(name, "error").inc()
                log.exception("scheduler.job_failed", job=name)

    async def run(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as lock_conn:
            while not stop.is_set():
                if not self.is_leader:
                    self.is_leader = bool(
                        await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
                    )
                    if self.is_leader:
                        log.info("scheduler.leader_elected")
                if self.is_leader:
                    await self.round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.scheduler_interval_seconds)


async def run(settings: SchedulerSettings, stop: asyncio.Event) -> None:
    publisher = EventPublisher(settings)
    await publisher.start()
    pool = await create_pool(settings)
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            scheduler = Scheduler(settings, pool, http, publisher)

            async def ready() -> bool:
                return True

            server = make_server(health_app(ready), settings.http_port)
            tasks = [
                asyncio.create_task(scheduler.run(stop)),
                asyncio.create_task(server.serve()),
            ]
            await until_stopped(stop, tasks)
            server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pool.close()
        await publisher.stop()
