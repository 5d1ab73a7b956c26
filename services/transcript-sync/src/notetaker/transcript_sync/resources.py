"""The connections the join's effects need: Kafka, PostgreSQL, S3 and two HTTP clients.

They are opened inside the worker's event loop (aiokafka and httpx bind to the running loop) and
all at once or not at all: `open` either sets every one of them or closes what it had opened
before it raises, so a dependency that is down costs nothing but the time of the try.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import asyncpg
import httpx

from notetaker.common.db import create_pool
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, s3_client
from notetaker.transcript_sync.outbox import Send
from notetaker.transcript_sync.settings import TranscriptSyncSettings

POOL_CLOSE_SECONDS = 5.0


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool, or terminate it when a connection does not come back in time (a query
    hanging on a database that stopped answering)."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        pool.terminate()


class DependencyUnavailable(ConnectionError):
    """A connection could not be opened (the cause is chained). A ConnectionError, so the failure
    policy takes it for an outage, whatever the cause: nothing can be handled without it."""


class Resources:
    publisher: EventPublisher
    http: httpx.AsyncClient
    sources: aiohttp.ClientSession
    pool: asyncpg.Pool
    s3: S3Client

    def __init__(self, settings: TranscriptSyncSettings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        self.opened = False
        self.send: Send = self._send  # publishes one record as it is (an attribute: replaceable)

    @classmethod
    def given(cls, settings: TranscriptSyncSettings, **opened: Any) -> Resources:
        """Resources opened elsewhere (tests): `open` leaves them as they are, `close` too."""
        resources = cls(settings)
        for name, value in opened.items():
            setattr(resources, name, value)
        resources.opened = True
        return resources

    async def open(self) -> None:
        """Open everything, or nothing (closing what was opened) and raise DependencyUnavailable."""
        async with self._lock:
            if self.opened:
                return
            stack = contextlib.AsyncExitStack()
            try:
                publisher = EventPublisher(self.settings)
                stack.push_async_callback(publisher.stop)  # stops a producer that never started
                await publisher.start()
                http = httpx.AsyncClient(timeout=30.0)
                stack.push_async_callback(http.aclose)
                # Provider transcript URLs: only what the source URL policy allows.
                sources = self.settings.source_policy().session(
                    timeout=aiohttp.ClientTimeout(total=120, sock_connect=10, sock_read=30)
                )
                stack.push_async_callback(sources.close)
                s3 = await stack.enter_async_context(s3_client(self.settings))
                pool = await create_pool(self.settings)
                stack.push_async_callback(_close_pool, pool)
                await pool.execute("SELECT 1")  # the pool connects lazily: open one now
            except BaseException as exc:
                await stack.aclose()
                if isinstance(exc, Exception):
                    raise DependencyUnavailable(f"cannot open the connections: {exc!r}") from exc
                raise
            self.publisher, self.http, self.sources, self.s3, self.pool = (
                publisher,
                http,
                sources,
                s3,
                pool,
            )
            self._stack = stack
            self.opened = True

    async def _send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish one record as it is; returns once Kafka acknowledged it."""
        await self.publisher.producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack = self._stack, None
            self.opened = False
            if stack is not None:
                await stack.aclose()
