"""The metrics process: applies usage events, refreshes the gauges, serves /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg

from notetaker.common.consumer import EventConsumer
from notetaker.common.envelope import Envelope
from notetaker.common.events import StorageUsage
from notetaker.common.http import health_app
from notetaker.common.logs import get_logger
from notetaker.common.parking import PostgresParking
from notetaker.common.s3 import s3_client
from notetaker.common.service import run_until_stopped, started
from notetaker.metrics import (
    admin,
    daily,
    exporter,
    projections,
    reconcile,
    rollup,
    uploads,
    usage,
)
from notetaker.metrics.settings import MetricsSettings

log = get_logger(__name__)

GROUP = "notetaker-metrics"


class UsageRecorder:
    def __init__(self, settings: MetricsSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.prices = usage.Prices.from_settings(settings)
        self.changed = asyncio.Event()

    async def handle(self, envelope: Envelope) -> None:
        event = envelope.event
        if not isinstance(event, StorageUsage):
            return
        applied = await usage.apply(self.pool, envelope.id, event, self.prices)
        log.info(
            "usage.applied" if applied else "usage.duplicate",
            org_id=str(event.org_id),
            bot_id=event.bot_id,
            step=event.step,
            event_id=envelope.id,
        )
        self.changed.set()

    async def refresh(self) -> None:
        today = datetime.now(UTC).date()
        costs = await usage.month_to_date(self.pool, today)
        exporter.export(costs, self.settings.metrics_top_orgs)
        ahead = await projections.projections(self.pool, today, self.prices)
        exporter.export_projections(
            ahead, self.settings.metrics_top_orgs, self.settings.cost_alert_threshold_usd
        )
        exporter.export_daily(
            await daily.recent_days(self.pool, today),
            self.settings.metrics_top_orgs,
            daily.Spike(self.settings.cost_spike_ratio, self.settings.cost_spike_min_usd),
        )
        exporter.export_uploads(await uploads.upload_states(self.pool))
        exporter.export_drift(
            await reconcile.latest(self.pool),
            self.settings.metrics_top_orgs,
            self.settings.storage_drift_alert_percent,
        )

    async def refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("metrics.refresh_failed", error=repr(exc))
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.settings.metrics_refresh_seconds)


async def run(settings: MetricsSettings, stop: asyncio.Event) -> None:
    consumers: list[EventConsumer] = []

    async def ready() -> bool:
        return bool(consumers) and consumers[0].is_ready()

    def app(pool: asyncpg.Pool) -> object:
        return health_app(ready, admin.routes(settings, pool))

    async with started(settings, stop, app, settings.http_port) as service:
        if service is None:
            return
        pool = service.pool
        recorder = UsageRecorder(settings, pool)
        consumers.append(
            EventConsumer(
                settings,
                GROUP,
                ["storage.usage"],
                recorder.handle,
                service.publisher,
                parking=PostgresParking(pool),
            )
        )
        background = [
            recorder.refresh_forever(),
            rollup.roll_up_forever(
                pool,
                recorder.prices,
                timedelta(seconds=settings.usage_rollup_after_midnight_seconds),
            ),
        ]
        async with contextlib.AsyncExitStack() as resources:
            if settings.storage_reconcile_interval_seconds > 0:
                s3 = await resources.enter_async_context(s3_client(settings))
                background.append(
                    reconcile.reconcile_forever(
                        pool,
                        s3,
                        settings.s3_bucket,
                        recorder.prices,
                        timedelta(seconds=settings.storage_reconcile_interval_seconds),
                        inventory=settings.inventory(),
                    )
                )
            await run_until_stopped(stop, service.server, consumers, background)
