"""The start and stop every Kafka service of ours shares: its probes served first, then Kafka
waited for (never an exit because a dependency is down), then its consumers and background
tasks run until SIGTERM, and everything closed in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from notetaker.common.consumer import EventConsumer
from notetaker.common.db import create_pool
from notetaker.common.http import make_server
from notetaker.common.kafka import EventPublisher
from notetaker.common.runtime import serving, unless_stopped, until_stopped
from notetaker.common.settings import NotetakerSettings


@dataclass(frozen=True)
class Started:
    pool: asyncpg.Pool
    publisher: EventPublisher
    server: asyncio.Task[None]


@contextlib.asynccontextmanager
async def started(
    settings: NotetakerSettings,
    stop: asyncio.Event,
    app: Callable[[asyncpg.Pool], object],
    port: int,
) -> AsyncIterator[Started | None]:
    """A pool (it connects on first use: PostgreSQL may be down now), the probes and routes of
    `app(pool)` served on `port` at once, then the publisher started once Kafka answers: the
    service's parts, or None when `stop` came first. The pool and the publisher are closed at
    the end."""
    pool = await create_pool(settings)
    publisher = EventPublisher(settings)
    try:
        async with serving(make_server(app(pool), port)) as server:
            reached, _ = await unless_stopped(stop, publisher.start())
            yield Started(pool, publisher, server) if reached else None
    finally:
        await pool.close()
        await publisher.stop()


async def run_until_stopped(
    stop: asyncio.Event,
    server: asyncio.Task[None],
    consumers: Sequence[EventConsumer] = (),
    background: Sequence[Coroutine[Any, Any, None]] = (),
) -> None:
    """Run the consumers and the background work until `stop` (or until one of them, or the
    server, ends: `until_stopped` logs why and stops the rest); then the consumers finish their
    events in hand, the background work is cancelled, and all have ended on return."""
    consuming = [asyncio.create_task(c.run()) for c in consumers]
    others = [asyncio.create_task(work) for work in background]
    await until_stopped(stop, [*consuming, *others, server])
    for consumer in consumers:
        consumer.stop()
    for task in others:
        task.cancel()
    await asyncio.gather(*consuming, *others, return_exceptions=True)
