"""`python -m notetaker.transcript_sync`: run the Faust join worker."""

from __future__ import annotations

import asyncio
import logging

import faust

from notetaker.common.http import health_app, make_server
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import configure_logging
from notetaker.common.runtime import run_service, serving, unless_stopped
from notetaker.common.settings import load_settings
from notetaker.transcript_sync.app import create_app
from notetaker.transcript_sync.settings import TranscriptSyncSettings


def until_kafka(settings: TranscriptSyncSettings) -> bool:
    """Wait until Kafka answers (True), or until SIGTERM/SIGINT (False), answering /healthz and a
    503 /readyz on the worker's port meanwhile. Faust's worker gives up when its producer cannot
    bootstrap as it starts (faust#711), so a pod started during a Kafka outage would exit into a
    crash loop; it waits here instead, as every other service waits in its own loop."""
    reached = False

    async def wait(stop: asyncio.Event) -> None:
        nonlocal reached

        async def ready() -> bool:
            return False

        publisher = EventPublisher(settings)
        # The worker's own /readyz fields, as they stand before it starts.
        waiting = {
            "assigned": False,
            "recovered": False,
            "connections": False,
            "outage": True,
            "waiting_for": "kafka",
        }
        app = health_app(ready, readiness_detail=waiting)
        async with serving(make_server(app, settings.http_port)):
            reached, _ = await unless_stopped(stop, publisher.start())
        await publisher.stop()

    run_service(wait)
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its own: Faust's
    return reached


def main() -> None:
    settings = load_settings(TranscriptSyncSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    if not until_kafka(settings):
        return
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=logging.getLevelName(logging.getLogger().level),
        override_logging=False,  # keep our structured logs
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
