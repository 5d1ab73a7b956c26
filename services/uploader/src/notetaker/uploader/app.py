"""The uploader process: the upload consumer, the thumbnail consumer, and probes/metrics."""

from __future__ import annotations

import asyncio

from notetaker.common.consumer import EventConsumer
from notetaker.common.http import health_app
from notetaker.common.logs import get_logger
from notetaker.common.parking import PostgresParking
from notetaker.common.service import run_until_stopped, started
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

    async with started(settings, stop, lambda _: health_app(ready), settings.http_port) as service:
        if service is None:
            return
        pool, publisher = service.pool, service.publisher
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
            await run_until_stopped(stop, service.server, consumers)
