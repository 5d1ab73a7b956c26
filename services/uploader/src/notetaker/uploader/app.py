"""The uploader process: the upload consumer, the thumbnail consumer, and probes/metrics."""

from __future__ import annotations

import asyncio

from notetaker.common.consumer import EventConsumer
from notetaker.common.db import create_pool
from notetaker.common.http import health_app, make_server
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.parking import PostgresParking
from notetaker.common.runtime import serving, unless_stopped, until_stopped
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.thumbnails import Thumbnailer
from notetaker.uploader.transfer import copy_clients
from notetaker.uploader.upload import Uploader

log = get_logger(__name__)

UPLOAD_GROUP = "notetaker-uploader"
THUMBNAIL_GROUP = "notetaker-thumbnailer"


async def run(settings: UploaderSettings, stop: asyncio.Event) -> None:
    consumers: list[EventConsumer] = []

    async def ready() -> bool:
        return bool(consumers) and all(c.is_ready() for c in consumers)

    pool = await create_pool(settings)  # connects on first use: PostgreSQL may be down now
    publisher = EventPublisher(settings)
    try:
        async with serving(make_server(health_app(ready), settings.http_port)) as server:
            started, _ = await unless_stopped(stop, publisher.start())  # waits for Kafka
            if not started:
                return
            async with copy_clients(settings, settings.source_timeout_seconds) as (s3, http):
                uploader = Uploader(settings, pool, s3, http, publisher)
                thumbnailer = Thumbnailer(
                    s3,
                    publisher,
                    pool,
                    width=settings.thumbnail_width,
                    at_seconds=settings.thumbnail_at_seconds,
                )
                consumers += [
                    EventConsumer(
                        settings,
                        UPLOAD_GROUP,
                        ["recording.completed", "recording.upload_requested"],
                        uploader.handle,
                        publisher,
                        parking=PostgresParking(pool),
                        max_in_flight=settings.upload_concurrency,
                    ),
                    EventConsumer(
                        settings,
                        THUMBNAIL_GROUP,
                        ["thumbnail.requested"],
                        thumbnailer.handle,
                        publisher,
                        parking=PostgresParking(pool),
                        max_in_flight=2,
                    ),
                ]
                tasks = [asyncio.create_task(c.run()) for c in consumers]
                await until_stopped(stop, [*tasks, server])
                for consumer in consumers:
                    consumer.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pool.close()
        await publisher.stop()
