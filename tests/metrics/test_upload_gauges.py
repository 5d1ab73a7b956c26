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


async def test_uploads_by_status_and_a_stuck_upload_show_until_it_completes(
    metrics_url: str, db: asyncpg.Pool
) -> None:
    before = await scrape(metrics_url)
    stuck = await add(db, "uploading", received_hours_ago=3)
    await add(db, "failed", received_hours_ago=0.1, retry_due=True)
    await add(db, "failed", received_hours_ago=5)  # failed for good: never counted as waiting
    await add(db, "pending")  # a bot still in its meeting: no recording yet

    async def counted() -> dict[str, float] | None:
        now = await scrape(metrics_url)
        return now if now["uploading"] == before["uploading"] + 1 else None

    now = await eventually(counted, 10, "the new recordings counted")
    assert {s: now[s] - before[s] for s in before if s != "oldest"} == {
        "pending": 1,
        "uploading": 1,
        "complete": 0,
        "failed": 1,
        "failed_final": 1,
    }
    assert now["oldest"] >= HOURS_3

    await db.execute("UPDATE recordings SET s3_upload_status = 'complete' WHERE id = $1", stuck)

    async def cleared() -> dict[str, float] | None:
        now = await scrape(metrics_url)
        return now if now["complete"] == before["complete"] + 1 else None

    assert (await eventually(cleared, 10, "the stuck upload complete"))["oldest"] < HOURS_3
