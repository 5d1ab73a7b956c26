"""The cost model and the bounded label set of the cost gauges."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from notetaker.common.events import StorageUsage
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.exporter import OTHER, capped
from notetaker.metrics.usage import GIB, OrgCost, Prices, delta_of

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)


def test_request_and_transfer_costs() -> None:
    event = StorageUsage(
        bot_id="b",
        org_id=uuid.uuid4(),
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=2 * GIB,
        bytes_uploaded=2 * GIB,
        bytes_downloaded=GIB,
        put_requests=1000,
        get_requests=10_000,
        occurred_at=datetime.now(UTC),
    )
    delta = delta_of(event, PRICES)
    assert delta.stored_gb == 2
    assert delta.download_gb == 1
    assert delta.requests == 11_000
    assert delta.request_cost == pytest.approx(0.005 + 0.004)


def test_a_day_of_storage_is_its_share_of_a_gb_month() -> None:
    assert PRICES.storage_day(30, date(2026, 11, 5)) == pytest.approx(0.023)  # 30-day month
    assert PRICES.storage_day(31, date(2026, 12, 5)) == pytest.approx(0.023)


def test_label_set_is_capped_and_the_rest_summed_as_other() -> None:
    costs = [OrgCost(f"org-{i}", i * 10.0, float(i)) for i in range(10, 0, -1)]
    rows = capped(costs, 3)
    assert [r.org_id for r in rows] == ["org-10", "org-9", "org-8", OTHER]
    assert sum(r.month_to_date_usd for r in rows) == sum(c.month_to_date_usd for c in costs)
    assert rows[-1].stored_bytes == sum(c.stored_bytes for c in costs[3:])
    assert capped(costs[:2], 3) == costs[:2]
