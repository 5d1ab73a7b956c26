"""The admin API answers the full per-org usage and cost, as JSON and CSV, only to the admin."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from notetaker.common.events import StorageUsage
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from notetaker.metrics.usage import GIB, Prices, apply

TOKEN = "admin-secret-token"


@pytest.fixture(scope="module")
async def metrics_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_ADMIN_TOKEN": TOKEN,
    }
    process = ServiceProcess("metrics", env, port, tmp_path_factory.mktemp("m") / "metrics.log")
    process.start()
    await asyncio.to_thread(process.wait_ready)
    yield process.url
    process.stop()


async def test_usage_as_json_and_csv_for_the_admin_only(metrics_url: str, db: asyncpg.Pool) -> None:
    org = uuid.uuid4()
    event = StorageUsage(
        bot_id="b",
        org_id=org,
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=3 * GIB,
        bytes_uploaded=3 * GIB,
        put_requests=2000,
        occurred_at=datetime.now(UTC),
    )
    await apply(db, f"admin-{org}", event, Prices(0.023, 0.0, 0.09, 0.005, 0.0004))
    admin = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=metrics_url) as http:
        as_json = await http.get("/admin/usage", params={"org_id": str(org)}, headers=admin)
        as_csv = await http.get("/admin/usage.csv", params={"org_id": str(org)}, headers=admin)
        anonymous = await http.get("/admin/usage")
        wrong = await http.get("/admin/usage", headers={"authorization": "Bearer nope"})
        bad = await http.get("/admin/usage", params={"from": "yesterday"}, headers=admin)

    assert as_json.status_code == 200
    rows = {r["metric_type"]: r for r in as_json.json()["rows"]}
    assert rows["storage_gb"]["value"] == pytest.approx(3)
    assert rows["api_requests"]["cost_usd"] == pytest.approx(0.01)
    assert as_json.json()["total_cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in rows.values())
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["metric_type"] for r in parsed} == set(rows)
    assert all(r["org_id"] == str(org) for r in parsed)
    assert (anonymous.status_code, wrong.status_code, bad.status_code) == (401, 401, 400)
