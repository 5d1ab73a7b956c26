"""Usage events land in s3_usage_metrics once per event, with storage as a running level."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from notetaker.common.events import StorageUsage
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.usage import GIB, Prices, apply, month_to_date

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)


def usage(org: uuid.UUID, gib: int, when: datetime) -> StorageUsage:
    return StorageUsage(
        bot_id="b",
        org_id=org,
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=gib * GIB,
        bytes_uploaded=gib * GIB,
        put_requests=1000,
        occurred_at=when,
    )


async def test_each_event_counts_once_and_storage_carries_over(db: asyncpg.Pool) -> None:
    org = uuid.uuid4()
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    assert await apply(db, f"{org}-1", usage(org, 2, yesterday), PRICES)
    assert not await apply(db, f"{org}-1", usage(org, 2, yesterday), PRICES)  # redelivered
    assert await apply(db, f"{org}-2", usage(org, 3, today), PRICES)

    rows = {
        (r["date"], r["metric_type"]): r
        for r in await db.fetch("SELECT * FROM s3_usage_metrics WHERE org_id = $1", org)
    }
    assert rows[(yesterday.date(), "storage_gb")]["value"] == pytest.approx(2)
    assert rows[(today.date(), "storage_gb")]["value"] == pytest.approx(5)  # 2 carried + 3
    assert rows[(today.date(), "upload_gb")]["value"] == pytest.approx(3)
    assert rows[(today.date(), "api_requests")]["value"] == 1000
    assert float(rows[(today.date(), "api_requests")]["cost_usd"]) == pytest.approx(0.005)
    assert float(rows[(today.date(), "storage_gb")]["cost_usd"]) == pytest.approx(
        PRICES.storage_day(2 + 3 * 0.5, today.date()), abs=1e-6
    )  # 2 GiB held all day, 3 more from noon: S3 bills byte-hours

    (mine,) = [c for c in await month_to_date(db, today.date()) if c.org_id == str(org)]
    assert mine.stored_bytes == pytest.approx(5 * GIB)
