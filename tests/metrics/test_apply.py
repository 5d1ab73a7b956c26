"""Usage events land in s3_usage_metrics once per event, with storage as a running level."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

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


async def test_concurrent_downloads_add_up_to_the_platform_bill(own_db: asyncpg.Pool) -> None:
    """Downloads of several orgs, with uploads between them, applied all at once (as replicas
    and partitions do): each download reprices its day under the egress lock, none waits for
    another forever, and the orgs' download costs add up to the platform's tiered bill of the
    day, each within a cent of its proportional share. A database of its own: the tiers apply
    to every org of it."""
    day = datetime(2027, 4, 2, 9, tzinfo=UTC)
    orgs = [uuid.UUID(int=n) for n in range(1, 6)]
    events = []
    for n in range(40):
        org = orgs[n % len(orgs)]
        events.append(
            StorageUsage(
                bot_id="b",
                org_id=org,
                recording_id=uuid.uuid4(),
                step="upload",
                bytes_downloaded=(n % len(orgs) + 1) * GIB,
                get_requests=1,
                occurred_at=day + timedelta(minutes=n),
            )
        )
        events.append(usage(org, 1, day + timedelta(minutes=n)))
    applied = await asyncio.wait_for(
        asyncio.gather(*(apply(own_db, f"c-{n}", e, PRICES) for n, e in enumerate(events))), 60
    )
    assert all(applied)
    rows = await own_db.fetch(
        "SELECT org_id, value, cost_usd FROM s3_usage_metrics"
        " WHERE metric_type = 'download_gb' AND date = $1",
        day.date(),
    )
    # 8 downloads of 1 to 5 GiB per org: 120 GiB, 20 past the free 100 at $0.09.
    assert sum(r["value"] for r in rows) == pytest.approx(120)
    assert sum(r["cost_usd"] for r in rows) == Decimal("1.80")
    for r in rows:
        assert float(r["cost_usd"]) == pytest.approx(1.80 * r["value"] / 120, abs=0.01)
