"""The part ledger in PostgreSQL: digests of parts of unfinished uploads, for resuming."""

from __future__ import annotations

import asyncpg

from notetaker.uploader.transfer import Part


class PostgresPartLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, upload_id: str, part: Part) -> None:
        await self.pool.execute(
            "INSERT INTO upload_parts (upload_id, part_number, size, sha256)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (upload_id, part_number)"
            " DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, recorded_at = now()",
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
        await self.pool.execute("DELETE FROM upload_parts WHERE upload_id = $1", upload_id)
