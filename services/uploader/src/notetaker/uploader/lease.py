"""One worker per recording: the upload lease on the `recordings` row and its fencing token.

A worker takes the lease in one UPDATE (the row is not `complete`, and its lease has run out or
was handed back): the token goes up by one and the row becomes `uploading`. While the copy runs
the lease is renewed; a worker that cannot renew it (its token was taken away) is stopped. Every
ledger write and status write names the token and changes nothing when it is not the current
one (`LeaseLost`), and the S3 steps that no later write can undo (completing or aborting a
multipart upload, deleting an object) are made only after `check()` found the lease current and
unexpired. So a rebalance, a slow worker or a second replica never has two copies of a
recording writing at once, and a worker whose token is stale stops without touching the
multipart upload its successor continues.

Who takes up an `uploading` row whose lease ran out (its worker died, or lost its database
connection for longer than the lease): the scheduler's retry sweep, not the uploader. The
scheduler already re-sends due retries, as one leader, in a transaction that commits once Kafka
has the request; it takes the token away (fencing out a worker that is only slow) in that same
transaction. An uploader that waited for leases to run out would need a timer per recording it
saw busy, held in memory and lost with the process; the sweep finds the rows in the database,
whoever died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from notetaker.common.logs import get_logger

log = get_logger(__name__)


class LeaseLost(Exception):
    """Another worker holds this recording's upload now: stop, and touch nothing of it."""


def worker_name() -> str:
    """Who holds a lease, for an operator reading the row: host, process and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class UploadLease:
    pool: asyncpg.Pool
    recording_id: uuid.UUID
    token: int
    seconds: float

    @classmethod
    async def take(
        cls, pool: asyncpg.Pool, recording_id: uuid.UUID, holder: str, seconds: float
    ) -> UploadLease | None:
        """The lease, or None while another worker holds it (or the recording is complete, or
        its media was deleted)."""
        token = await pool.fetchval(
            "UPDATE recordings SET upload_lease_token = upload_lease_token + 1,"
            " upload_lease_holder = $2,"
            " upload_lease_expires_at = now() + make_interval(secs => $3),"
            " s3_upload_status = 'uploading', s3_upload_next_retry_at = NULL, updated_at = now()"
            " WHERE id = $1 AND s3_upload_status <> 'complete' AND media_deleted_at IS NULL"
            " AND (upload_lease_expires_at IS NULL OR upload_lease_expires_at <= now())"
            " RETURNING upload_lease_token",
            recording_id,
            holder,
            seconds,
        )
        return None if token is None else cls(pool, recording_id, token, seconds)

    def lost(self, how: str = "lost") -> LeaseLost:
        """The error a write fenced out by this lease's token raises."""
        return LeaseLost(f"recording {self.recording_id}: upload lease {self.token} {how}")

    async def check(self) -> None:
        """Raise `LeaseLost` unless this lease is still the current one and has not run out."""
        current = await self.pool.fetchval(
            "SELECT 1 FROM recordings WHERE id = $1 AND upload_lease_token = $2"
            " AND upload_lease_expires_at > now()",
            self.recording_id,
            self.token,
        )
        if current is None:
            raise self.lost()

    async def renew(self) -> None:
        renewed = await self.pool.fetchval(
            "UPDATE recordings SET upload_lease_expires_at = now() + make_interval(secs => $3)"
            " WHERE id = $1 AND upload_lease_token = $2 RETURNING 1",
            self.recording_id,
            self.token,
            self.seconds,
        )
        if renewed is None:
            raise self.lost("taken over")

    async def release(self) -> None:
        """Hand the lease back early (the attempt stopped): the row can be taken at once."""
        await self.pool.execute(
            "UPDATE recordings SET upload_lease_expires_at = now()"
            " WHERE id = $1 AND upload_lease_token = $2",
            self.recording_id,
            self.token,
        )

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` while renewing the lease every third of its length; stop `work` and raise
        `LeaseLost` when the lease is taken over, and stop it too when this call is cancelled. A
        database that does not answer a renewal is tried again until the lease has run out: only
        the token decides who holds it."""
        async with self._renewing() as lost:
            task = asyncio.ensure_future(work())
            try:
                done, _ = await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                # Stopped (a revoked partition's drain, a shutdown): `asyncio.wait` leaves the
                # work running, so it is stopped here, before the caller hands the lease back.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                    await task
                raise self.lost()
            await task

    @asynccontextmanager
    async def _renewing(self) -> AsyncIterator[asyncio.Task[None]]:
        async def renew_until_lost() -> None:
            while True:
                await asyncio.sleep(self.seconds / 3)
                try:
                    await self.renew()
                except LeaseLost:
                    log.warning("upload.lease_lost", token=self.token)
                    return
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("upload.lease_not_renewed", token=self.token, error=repr(exc))

        renewer = asyncio.create_task(renew_until_lost())
        try:
            yield renewer
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
