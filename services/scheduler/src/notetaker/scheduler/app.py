"""The scheduler: each round runs its jobs on the one connection that holds the leader lock
(leadership.py), so two replicas never run a round at once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import aiohttp
import asyncpg
import httpx
from prometheus_client import Counter

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.http import health_app
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.runtime import until_stopped
from notetaker.common.s3 import s3_client
from notetaker.common.service import started
from notetaker.scheduler import bots, retention, retries, transcriptions
from notetaker.scheduler.leadership import CONNECTION_ERRORS, Leadership, gone
from notetaker.scheduler.settings import SchedulerSettings

log = get_logger(__name__)

JOB_RUNS = Counter(
    "notetaker_scheduler_job_runs_total", "Job rounds, by job and outcome.", ["job", "outcome"]
)
ROUNDS = Counter("notetaker_scheduler_rounds_total", "Rounds this replica ran as the leader.")


class Scheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        publisher: EventPublisher,
        deleter: MediaDeleter,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self.publisher = publisher
        self.deleter = deleter
        self.leadership = Leadership(pool)
        self.warned_no_api_key = False
        self.warned_no_callback_key = False

    @property
    def is_leader(self) -> bool:
        return self.leadership.leading

    def meetingbaas(self) -> bots.MeetingBaaS | None:
        settings = self.settings
        if settings.meetingbaas_api_key is None:
            if not self.warned_no_api_key:
                log.warning("scheduler.bot_deploys_off", hint="set NOTETAKER_MEETINGBAAS_API_KEY")
                self.warned_no_api_key = True
            return None
        keys = settings.meetingbaas_callback_keys
        if not keys and not self.warned_no_callback_key:
            log.warning(
                "scheduler.bot_callbacks_off",
                hint="set NOTETAKER_MEETINGBAAS_CALLBACK_KEYS (the same on ingest)",
            )
            self.warned_no_callback_key = True
        return bots.MeetingBaaS(
            http=self.http,
            api_url=settings.meetingbaas_api_url,
            api_key=settings.meetingbaas_api_key,
            timeout_seconds=settings.meetingbaas_timeout_seconds,
            bot_name=settings.bot_name,
            transcription=settings.bot_transcription,
            callback_url=f"{settings.webhook_base_url.rstrip('/')}/webhooks/meetingbaas",
            callback_key=keys[0] if keys else None,
        )

    async def deploy_bots(self, conn: asyncpg.Connection) -> int:
        provider = self.meetingbaas()
        if provider is None:
            return 0
        outcome = await bots.deploy_due_bots(
            conn,
            provider,
            lead_seconds=self.settings.bot_join_lead_seconds,
            retry_delays_seconds=self.settings.bot_deploy_retry_delays_seconds,
        )
        if outcome.failed:
            log.warning("scheduler.bot_deploys_failed", failed=outcome.failed)
        return outcome.deployed

    async def request_retries(self, conn: asyncpg.Connection) -> int:
        return await retries.request_due_retries(conn, self.publisher)

    async def poll_transcriptions(self, conn: asyncpg.Connection) -> int:
        if self.settings.gladia_api_key is None:
            return 0
        return await transcriptions.poll_overdue_jobs(
            conn,
            self.http,
            self.publisher,
            api_url=self.settings.gladia_api_url,
            api_key=self.settings.gladia_api_key,
            overdue_seconds=self.settings.gladia_poll_after_seconds,
            every_seconds=self.settings.gladia_poll_every_seconds,
        )

    async def apply_retention(self, conn: asyncpg.Connection) -> int:
        done = await retention.apply_retention(
            conn,
            self.deleter,
            default_days=self.settings.media_retention_days,
            now=datetime.now(UTC),
            body_retention_days=self.settings.webhook_body_retention_days,
        )
        return done.resumed + done.expired + done.bodies_pruned

    async def round(self, conn: asyncpg.Connection) -> None:
        """The jobs, each on `conn` and isolated (a failure is logged and counted, the others
        still run), until the connection is gone: then the round ends where it is."""
        jobs = {
            "deploy_bots": self.deploy_bots,
            "upload_retries": self.request_retries,
            "transcription_polls": self.poll_transcriptions,
            "retention": self.apply_retention,
        }
        ROUNDS.inc()
        for name, job in jobs.items():
            if gone(conn):
                break
            try:
                count = await job(conn)
                JOB_RUNS.labels(name, "ok").inc()
                if count:
                    log.info("scheduler.job_done", job=name, count=count)
            except Exception:
                JOB_RUNS.labels(name, "error").inc()
                log.exception("scheduler.job_failed", job=name)

    async def lead_one_round(self) -> bool:
        """Run a round if this replica holds the lock (claiming it if free); True if it did."""
        try:
            conn = await self.leadership.claim()
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("scheduler.database_unavailable", error=f"{type(exc).__name__}: {exc}")
            return False
        except Exception:
            log.exception("scheduler.leadership_failed")
            return False
        if conn is None:
            return False
        await self.round(conn)
        if gone(conn):
            await self.leadership.lost()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.lead_one_round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.scheduler_interval_seconds)
        finally:
            await self.leadership.resign()


def provider_access(settings: SchedulerSettings) -> ProviderAccess:
    """What a deletion asks the providers with: the scheduler's own MeetingBaaS and Gladia."""
    return ProviderAccess(
        meetingbaas_api_url=settings.meetingbaas_api_url,
        meetingbaas_api_key=(
            settings.meetingbaas_api_key.get_secret_value()
            if settings.meetingbaas_api_key
            else None
        ),
        gladia_api_url=settings.gladia_api_url,
        gladia_api_key=(
            settings.gladia_api_key.get_secret_value() if settings.gladia_api_key else None
        ),
        timeout_seconds=settings.meetingbaas_timeout_seconds,
    )


async def run(settings: SchedulerSettings, stop: asyncio.Event) -> None:
    connected = asyncio.Event()

    async def ready() -> bool:
        return connected.is_set()

    async with started(settings, stop, lambda _: health_app(ready), settings.http_port) as service:
        if service is None:
            return
        connected.set()
        async with (
            httpx.AsyncClient(timeout=30.0) as http,
            aiohttp.ClientSession() as provider_http,
            s3_client(settings) as s3,
        ):
            deleter = MediaDeleter(
                service.pool,
                s3,
                settings.s3_bucket,
                service.publisher,
                provider_access(settings),
                provider_http,
            )
            scheduler = Scheduler(settings, service.pool, http, service.publisher, deleter)
            # A round in progress is finished, not cancelled: `Scheduler.run` ends on `stop`.
            rounds = asyncio.create_task(scheduler.run(stop))
            await until_stopped(stop, [rounds, service.server])
            await asyncio.gather(rounds, return_exceptions=True)
