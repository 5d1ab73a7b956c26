"""What a command talks to (PostgreSQL, and when it needs them Kafka, S3 and the providers),
opened from the `NOTETAKER_*` settings, and what to say when one of them is not there.

Every failure of a dependency becomes `Stop` with a message naming it and the setting that
points at it, never a traceback: `explained()` wraps a command's work for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from notetaker.cli.dead_letters import database_name
from notetaker.cli.events import Stop, err, fail, out, start_kafka_client
from notetaker.cli.settings import CliSettings
from notetaker.common.db import create_pool
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, s3_client

MAX_REF = 200  # longer than any id or bot id: refused before it reaches a query


@dataclass
class Connections:
    settings: CliSettings
    pool: asyncpg.Pool
    publisher: EventPublisher | None = None
    s3: S3Client | None = None
    http: aiohttp.ClientSession | None = None

    def need_publisher(self) -> EventPublisher:
        assert self.publisher is not None, "opened without kafka=True"
        return self.publisher

    def need_s3(self) -> S3Client:
        assert self.s3 is not None, "opened without s3=True"
        return self.s3


@contextlib.asynccontextmanager
async def connect(
    settings: CliSettings, *, kafka: bool = False, s3: bool = False, http: bool = False
) -> AsyncIterator[Connections]:
    """The database pool, and Kafka, S3 and an HTTP session when asked; every failure of theirs
    inside the block explained (`explained`)."""
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(explained(settings))
        pool = await _pool(settings)
        stack.push_async_callback(pool.close)
        connections = Connections(settings, pool)
        if kafka:
            publisher = EventPublisher(settings)
            await start_kafka_client(publisher.producer, settings)
            stack.push_async_callback(publisher.stop)
            connections.publisher = publisher
        if s3:
            connections.s3 = await stack.enter_async_context(s3_client(settings))
        if http:
            connections.http = await stack.enter_async_context(aiohttp.ClientSession())
        yield connections


async def _pool(settings: CliSettings) -> asyncpg.Pool:
    where = database_name(settings.database_url)
    try:
        pool = await asyncio.wait_for(create_pool(settings), 15)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Stop(
            f"cannot reach PostgreSQL at {where} (NOTETAKER_DATABASE_URL): {reason}"
        ) from exc
    except ValueError as exc:
        raise Stop(f"NOTETAKER_DATABASE_URL is not a PostgreSQL URL: {exc}") from exc
    applied = await pool.fetchval("SELECT to_regclass('media_deletions') IS NOT NULL")
    if not applied:
        await pool.close()
        raise Stop(
            f"PostgreSQL at {where} lacks this version's tables: apply the migrations"
            " (python -m notetaker.common.migrate)"
        )
    return pool


@contextlib.contextmanager
def explained(settings: CliSettings) -> Iterator[None]:
    """Turn a dependency's failure into `Stop` naming it (and no secret: no DSN, no key)."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = database_name(settings.database_url)
        raise Stop(f"PostgreSQL at {where} failed: {exc}") from exc
    except (ClientError, BotoCoreError) as exc:
        where = settings.s3_endpoint_url or "AWS S3"
        raise Stop(
            f"S3 ({where}, bucket {settings.s3_bucket}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    except KafkaError as exc:
        raise Stop(f"Kafka at {settings.kafka_bootstrap_servers} failed: {exc!r}") from exc
    except (OSError, TimeoutError) as exc:
        raise Stop(f"a connection failed: {type(exc).__name__}: {exc}") from exc


def checked_ref(ref: str) -> str:
    """An id or bot id as given; anything that cannot be one exits 2 before any query."""
    if not ref or len(ref) > MAX_REF or any(ord(c) < 32 for c in ref):
        fail(f"{ref[:40]!r}… is not an id or a bot id", 2)
    return ref


def checked_org(org: str) -> uuid.UUID:
    """An org id; anything else exits 2."""
    try:
        return uuid.UUID(org)
    except ValueError:
        fail(f"{org[:40]!r} is not an org id (a UUID)", 2)


def json_lines(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, default=str) + "\n")
    sys.stdout.flush()


def progress() -> Progress:
    """A progress bar on stderr, drawn only on a terminal (scripts get the lines alone)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


# Piped output is not cut to 80 columns: ids and keys stay whole for grep and for the eye.
_piped = Console(highlight=False, soft_wrap=True, width=240)


def show(renderable: RenderableType) -> None:
    """Print a table (or grid) on stdout, as wide as the terminal, or whole when piped."""
    (out if out.is_terminal else _piped).print(renderable)
