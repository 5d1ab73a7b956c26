"""Where uploads stand, read from `recordings`: how many in each status, and how long the oldest
unfinished one has waited, so an upload stuck anywhere (a lost request, a worker that never
comes back) shows as a gauge that keeps growing, whatever the uploader itself reports."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

STATUSES = ("pending", "uploading", "complete", "failed", "failed_final")


@dataclass(frozen=True)
class UploadStates:
    by_status: dict[str, int]  # every name in STATUSES, 0 when none
    oldest_unfinished_seconds: float  # 0 when none


async def upload_states(pool: asyncpg.Pool) -> UploadStates:
    """Counts per status (`failed` waits for a retry, `failed_final` does not), and the age of
    the oldest upload that is neither complete nor failed for good, counted from when its
    recording became available (`provider_urls_received_at`; a bot still in its meeting has no
    upload yet)."""
    rows = await pool.fetch(
        "SELECT CASE WHEN s3_upload_status = 'failed' AND s3_upload_next_retry_at IS NULL"
        " THEN 'failed_final' ELSE s3_upload_status::text END AS status, count(*) AS n"
        " FROM recordings GROUP BY 1"
    )
    oldest = await pool.fetchval(
        "SELECT coalesce(extract(epoch FROM now() - min(provider_urls_received_at)), 0)"
        " FROM recordings WHERE provider_urls_received_at IS NOT NULL"
        " AND s3_upload_status <> 'complete'"
        " AND NOT (s3_upload_status = 'failed' AND s3_upload_next_retry_at IS NULL)"
    )
    counts = dict.fromkeys(STATUSES, 0) | {r["status"]: r["n"] for r in rows}
    return UploadStates(counts, max(0.0, float(oldest)))
