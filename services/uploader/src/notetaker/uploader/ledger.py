"""The part ledger in PostgreSQL: digests of parts of unfinished uploads, for resuming, and the
uploads given up (`abandoned_uploads`), which are never resumed.

Every write is fenced by the upload lease: it is made only while the writer's token is the
recording's current one (the row is share-locked for the statement, so a worker taking the lease
over waits for the write, or the write sees the new token), else it raises `LeaseLost`. So an
upload is recorded abandoned only by the worker holding the lease, before that worker aborts it
in S3, and an abort that reaches S3 late can only end an upload no successor resumes."""

from __future__ import annotations

import asyncpg

from notetaker.uploader.lease import UploadLease
from notetaker.uploader.transfer import Part

_HOLDS_LEASE = "SELECT 1 FROM recordings WHERE id = $1 AND upload_lease_token = $2 FOR SHARE"


class PostgresPartLedger:
    def __init__(self, pool: asyncpg.Pool, lease: UploadLease) -> None:
        self.pool = pool
        self.lease = lease

    async def record(self, upload_id: str, part: Part) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn)
            await conn.execute(
                "INSERT INTO upload_parts (upload_id, part_number, size, sha256)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (upload_id, part_number)"
                " DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256,"
                " recorded_at = now()",
                upload_id,
                part.number,
                part.size,
                part.sha256,
            )

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]:
        rows = await self.pool.fetch(
            "SELECT part_number, size, sha256 FROM upload_parts WHERE upload_id = $1", upload_id
        )
        return {r["part_number"]: (r["size"], bytes(r["sha256"])) for r in rows}

    async def forget(self, upload_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn)
            await conn.execute("DELETE FROM upload_parts WHERE upload_id = $1", upload_id)

    async def abandon(self, upload_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._fence(conn)
            await conn.execute(
                "INSERT INTO abandoned_uploads (upload_id, recording_id, lease_token)"
                " VALUES ($1, $2, $3) ON CONFLICT (upload_id) DO NOTHING",
                upload_id,
                self.lease.recording_id,
                self.lease.token,
            )

    async def abandoned(self, upload_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT upload_id FROM abandoned_uploads WHERE upload_id = ANY($1::text[])",
            upload_ids,
        )
        return {r["upload_id"] for r in rows}

    async def _fence(self, conn: asyncpg.Connection) -> None:
        if await conn.fetchval(_HOLDS_LEASE, self.lease.recording_id, self.lease.token) is None:
            raise self.lease.lost()
