"""The metrics service shows where uploads stand, read from PostgreSQL: recordings by upload
status, and the age of the oldest unfinished upload, which grows while one is stuck and drops
once it completes (what the stuck-upload alert watches)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from tests.conftest import eventually

HOURS_3 = 3 * 3600


@pytest.fixture(scope="module")
async def metrics_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_ADMIN_TOKENS": "admin-secret-token-of-this-test",
        "NOTETAKER_METRICS_REFRESH_SECONDS": "0.2",
    }
    process = ServiceProcess("metrics", env, port, tmp_path_factory.mktemp("m") / "metrics.log")
    process.start()
    await asyncio.to_thread(process.wait_ready)
    yield process.url
    process.stop()


async def scrape(url: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "notetaker_uploads":
                values[sample.labels["status"]] = sample.value
            elif sample.name == "notetaker_upload_oldest_unfinished_age_seconds":
                values["oldest"] = sample.value
    return values


async def add(
    db: asyncpg.Pool,
    status: str,
    *,
    received_hours_ago: float | None = None,
    retry_due: bool = False,
) -> uuid.UUID:
    recording_id: uuid.UUID = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id, s3_upload_status,"
        " provider_urls_received_at, s3_upload_next_retry_at)"
        " VALUES ($1, $2, $3, $4::s3_upload_status,"
        " now() - make_interval(secs => $5), CASE WHEN $6 THEN now() END) RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        str(uuid.uuid4()),
        status,
        None if received_hours_ago is None else received_hours_ago * 3600,
        retry_due,
    )
    return recording_id


async def table_counts(db: asyncpg.Pool) -> dict[str, int]:
    """What the gauges should say, read from the table as the issue defines each status."""
    rows = await db.fetch(
        "SELECT CASE WHEN s3_upload_status = 'failed' AND s3_upload_next_retry_at IS NULL"
        " THEN 'failed_final' ELSE s3_upload_status::text END AS status, count(*) AS n"
        " FROM recordings GROUP BY 1"
    )
    counts = dict.fromkeys(["pending", "uploading", "complete", "failed", "failed_final"], 0)
    return counts | {r["status"]: r["n"] for r in rows}


async def test_uploads_by_status_and_a_stuck_upload_show_until_it_completes(
    metrics_url: str, db: asyncpg.Pool
) -> None:
    """Other tests' recordings share the table: the gauges are compared with the table itself,
    once both agree (the service refreshes every 0.2 s)."""
    stuck = await add(db, "uploading", received_hours_ago=3)
    await add(db, "failed", received_hours_ago=0.1, retry_due=True)
    await add(db, "failed", received_hours_ago=5)  # failed for good: never counted as waiting
    await add(db, "pending")  # a bot still in its meeting: no recording yet

    async def shown(stuck_done: bool) -> dict[str, float] | None:
        now, counts = await scrape(metrics_url), await table_counts(db)
        if any(now.get(status) != count for status, count in counts.items()):
            return None
        return now if (now["oldest"] < HOURS_3) == stuck_done else None

    now = await eventually(lambda: shown(False), 10, "the table's counts and the stuck upload")
    assert now["oldest"] >= HOURS_3
    assert now["uploading"] >= 1
    assert now["failed_final"] >= 1

    await db.execute("UPDATE recordings SET s3_upload_status = 'complete' WHERE id = $1", stuck)
    await eventually(lambda: shown(True), 10, "the stuck upload gone from the oldest age")
