"""The last three days' cost per org by type, read from `s3_usage_metrics` in PostgreSQL: what
the day-over-day gauges export."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import asyncpg

from notetaker.metrics.daily import recent_days

TODAY = date(2031, 5, 10)  # far from the days other tests write


async def test_recent_days_reads_each_day_and_type_and_nothing_older(db: asyncpg.Pool) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    rows = [
        (a, TODAY, "storage_gb", 1.5, 0.05),
        (a, TODAY - timedelta(days=1), "storage_gb", 1.5, 0.05),
        (a, TODAY - timedelta(days=1), "download_gb", 2.0, 0.18),
        (a, TODAY - timedelta(days=2), "api_requests", 100, 0.0005),
        (a, TODAY - timedelta(days=3), "upload_gb", 9.0, 7.0),  # too old
        (a, TODAY + timedelta(days=1), "upload_gb", 9.0, 7.0),  # not yet
        (b, TODAY - timedelta(days=1), "upload_gb", 3.0, 0.0),
    ]
    # In a transaction rolled back: the rows never reach the services other tests run.
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.executemany(
                "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
                " VALUES ($1, $2, $3::usage_metric_type, $4, $5)",
                rows,
            )
            found = {o.org_id: o.cost for o in await recent_days(conn, TODAY)}
        finally:
            await transaction.rollback()
    assert found[str(a)] == {
        ("today", "storage"): 0.05,
        ("yesterday", "storage"): 0.05,
        ("yesterday", "download"): 0.18,
        ("day_before", "requests"): 0.0005,
    }
    assert found[str(b)] == {("yesterday", "upload"): 0.0}
