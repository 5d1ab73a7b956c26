"""PostgreSQL: the asyncpg pool every service uses, and the ordered SQL migrations."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import asyncpg

from notetaker.common.logs import get_logger
from notetaker.common.settings import NotetakerSettings

log = get_logger(__name__)

# One lock id for "migrations in progress", so two runners (a Job retried, a dev) never interleave.
_MIGRATION_LOCK = 0x6E6F7465


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class PoolExhausted(OSError):
    """No pooled connection came free in time: PostgreSQL is slow or every connection is held.
    An OSError, so callers treat it as the database being unavailable (503, retry later)."""


class _AcquireWithin:
    def __init__(self, acquiring: Any, timeout: float) -> None:
        self._acquiring = acquiring
        self._timeout = timeout

    async def __aenter__(self) -> Any:
        try:
            return await self._acquiring.__aenter__()
        except TimeoutError as exc:
            raise PoolExhausted(
                f"no database connection came free in {self._timeout:.0f}s"
                " (NOTETAKER_DATABASE_ACQUIRE_TIMEOUT_SECONDS)"
            ) from exc

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._acquiring.__aexit__(*exc_info)

    def __await__(self) -> Any:  # `await pool.acquire()` as well as `async with`
        return self.__aenter__().__await__()


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool, where taking a connection (`acquire`, and so `fetch`, `execute`, ...)
    waits at most `acquire_timeout` seconds instead of for ever."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        limit = self.acquire_timeout if timeout is None else timeout
        return _AcquireWithin(super().acquire(timeout=limit), limit)


async def create_pool(settings: NotetakerSettings) -> asyncpg.Pool:
    """The pool every service uses: each statement may run 30 s, each acquisition waits at most
    the setting's timeout. Built as `asyncpg.create_pool` builds its pool, with its defaults,
    except that it opens no connection until one is asked for (`min_size=0`): a process started
    while PostgreSQL is unreachable starts, and meets the outage where it meets any other, in
    the failure policy of the work that asked (instead of exiting on start)."""
    pool = BoundedPool(
        settings.database_url,
        acquire_timeout=settings.database_acquire_timeout_seconds,
        min_size=0,
        max_size=settings.database_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=30,
    )
    await pool
    return pool


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped in this package, in order."""
    folder = resources.files("notetaker.common").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied; return their versions. Re-running is harmless."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("migration.applied", version=version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied_now


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None
