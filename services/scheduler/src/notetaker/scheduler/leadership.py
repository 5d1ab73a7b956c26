"""Leadership, checked every round: a round runs on the one connection that holds the lock.

A PostgreSQL session advisory lock belongs to the connection (the server backend) that took it,
and ends with it. Every statement of a round goes through that same connection, so nothing a round
writes can land once the lock is gone: when the connection drops, the server ends its backend and
frees the lock, another replica may take it, and every later statement of the old round fails
instead of acting. Before each round the holder checks, on that connection, that the lock is still
its own; a replica that finds its connection gone stops leading until it wins the lock again.

What a round does outside PostgreSQL (a MeetingBaaS request, a Kafka publish) can still be in
flight when the connection drops; the jobs make those safe on their own (bots.py reserves a meeting
before asking for its bot; retries.py commits a retry only once Kafka has it).
"""

from __future__ import annotations

import contextlib

import asyncpg
from prometheus_client import Gauge

from notetaker.common.logs import get_logger

log = get_logger(__name__)

LEADING = Gauge("notetaker_scheduler_leading", "1 while this replica holds the leader lock.")

LEADER_LOCK = 0x6E6F7465_0001

# Where pg_locks shows a bigint advisory lock: its high and low 32 bits, objsubid 1.
_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
    " AND classid::bigint = $1 AND objid::bigint = $2)"
)

# A client that vanishes without closing its connection (a host gone, a cut network) would keep
# the lock until the server's keepalives notice; ask the server to notice within about 25 s.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)

# What a connection that dropped, or a server that went away, raises on the next statement.
CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def gone(conn: asyncpg.Connection) -> bool:
    """Whether the connection is closed (the pool detaches a pooled connection that closed, and
    then refuses to say)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


class Leadership:
    """Claims the leader lock for each round; `claim()` is the round's connection, or None when
    another replica leads."""

    def __init__(self, pool: asyncpg.Pool, lock_id: int = LEADER_LOCK) -> None:
        self.pool = pool
        self.lock_id = lock_id
        self._conn: asyncpg.Connection | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    async def claim(self) -> asyncpg.Connection | None:
        """The connection this round runs on, holding the lock; None if another replica holds it.
        Raises what the pool raises when PostgreSQL cannot be reached."""
        if self._conn is not None:
            if await self._still_held(self._conn):
                return self._conn
            await self.lost()
        conn = await self.pool.acquire()
        try:
            won = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_id))
            if won:
                await conn.execute(_KEEPALIVES)
        except BaseException:
            await self._give_back(conn)
            raise
        if not won:
            await self._give_back(conn)
            return None
        self._conn = conn
        LEADING.set(1)
        log.info("scheduler.leader_elected", backend_pid=conn.get_server_pid())
        return conn

    async def lost(self) -> None:
        """The round's connection failed: stop leading (the server freed, or will free, the lock
        when the connection ends)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        LEADING.set(0)
        log.warning("scheduler.leadership_lost", hint="the lock's connection is gone")
        with contextlib.suppress(Exception):
            conn.terminate()
        await self._give_back(conn)

    async def resign(self) -> None:
        """Give the lock up (at shutdown), so another replica can lead at once."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        LEADING.set(0)
        with contextlib.suppress(*CONNECTION_ERRORS, asyncpg.PostgresError):
            await conn.execute("SELECT pg_advisory_unlock($1)", self.lock_id)
        await self._give_back(conn)

    async def _still_held(self, conn: asyncpg.Connection) -> bool:
        if gone(conn):
            return False
        try:
            return bool(await conn.fetchval(_HELD, self.lock_id >> 32, self.lock_id & 0xFFFF_FFFF))
        except CONNECTION_ERRORS:
            return False

    async def _give_back(self, conn: asyncpg.Connection) -> None:
        # The pool's reset unlocks every advisory lock of the connection; a broken connection is
        # dropped by the pool.
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
