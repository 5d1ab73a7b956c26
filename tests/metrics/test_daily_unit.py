"""The day-over-day cost gauges, in process: what a spike is, which orgs keep their own series
(the top N by the last three days' cost, and every org whose yesterday is a spike, whatever its
rank), the rest summed as `other`, and every kept org with each day and type."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from prometheus_client import REGISTRY

from notetaker.metrics import daily as days_module
from notetaker.metrics.daily import OrgDays, Spike, by_org, recent_days
from notetaker.metrics.exporter import OTHER, export_daily

DAILY = "notetaker_storage_cost_usd_daily"
SPIKE = Spike(ratio=2.0, min_usd=2.0)


def daily(org: str, kind: str, day: str) -> float | None:
    return REGISTRY.get_sample_value(DAILY, {"org_id": org, "type": kind, "day": day})


def org(name: str, yesterday: float, day_before: float, today: float = 0.0) -> OrgDays:
    """An org whose days cost only storage."""
    return OrgDays(
        name,
        {
            ("today", "storage"): today,
            ("yesterday", "storage"): yesterday,
            ("day_before", "storage"): day_before,
        },
    )


@pytest.mark.parametrize(
    ("yesterday", "day_before", "spike"),
    [
        (10.0, 4.0, True),  # 2.5 times, 6 USD more
        (8.0, 4.0, False),  # exactly twice: not over the ratio
        (8.01, 4.0, True),
        (0.03, 0.01, False),  # tripled, but 2 cents: no page
        (2.0, 0.0, False),  # from nothing, exactly the minimum more: not over it
        (2.5, 0.0, True),  # from nothing, past the minimum
        (30.0, 20.0, False),  # 10 USD more, but only 1.5 times
        (1.0, 5.0, False),  # a drop
    ],
)
def test_a_spike_passes_both_the_ratio_and_the_minimum(
    yesterday: float, day_before: float, spike: bool
) -> None:
    assert SPIKE.of(yesterday, day_before) is spike


def test_the_days_add_up_by_type() -> None:
    days = OrgDays(
        "a",
        {
            ("yesterday", "storage"): 1.0,
            ("yesterday", "download"): 0.5,
            ("today", "storage"): 1.0,
            ("day_before", "requests"): 0.25,
        },
    )
    assert (days.on("today"), days.on("yesterday"), days.on("day_before")) == (1.0, 1.5, 0.25)
    assert days.total() == 2.75


def test_the_rows_become_each_orgs_days_by_type_in_org_order() -> None:
    rows = [  # as PostgreSQL answers `_RECENT`: org, days ago, metric type, cost
        {"org_id": "b", "ago": 1, "metric_type": "upload_gb", "cost": 0.5},
        {"org_id": "a", "ago": 0, "metric_type": "storage_gb", "cost": 0.25},
        {"org_id": "a", "ago": 2, "metric_type": "api_requests", "cost": 0.125},
        {"org_id": "a", "ago": 1, "metric_type": "download_gb", "cost": 2},
        {"org_id": "a", "ago": 1, "metric_type": "download_gb", "cost": 1},
    ]
    assert by_org(rows) == [
        OrgDays(
            "a",
            {
                ("today", "storage"): 0.25,
                ("day_before", "requests"): 0.125,
                ("yesterday", "download"): 3.0,
            },
        ),
        OrgDays("b", {("yesterday", "upload"): 0.5}),
    ]
    assert by_org([]) == []


class AnsweringPool:
    """Answers the one statement `recent_days` sends, for the day asked, with `rows`
    (tests/metrics/test_daily.py runs the statement against PostgreSQL)."""

    def __init__(self, day: date, rows: list[dict[str, Any]]) -> None:
        self.day, self.rows = day, rows

    async def fetch(self, statement: str, *args: object) -> list[dict[str, Any]]:
        assert statement == days_module._RECENT
        assert args == (self.day,)
        return self.rows


async def test_recent_days_asks_for_the_day_and_groups_the_answer() -> None:
    day = date(2031, 5, 10)
    row = {"org_id": "a", "ago": 1, "metric_type": "storage_gb", "cost": 0.5}
    pool: Any = AnsweringPool(day, [row])
    assert await recent_days(pool, day) == [OrgDays("a", {("yesterday", "storage"): 0.5})]


def test_every_kept_org_has_each_day_and_type_at_six_places() -> None:
    export_daily(
        [OrgDays("acme", {("yesterday", "download"): 1.23456789, ("today", "storage"): 0.5})],
        5,
        SPIKE,
    )
    assert daily("acme", "download", "yesterday") == 1.234568
    assert daily("acme", "storage", "today") == 0.5
    for day in ("today", "yesterday", "day_before"):
        for kind in ("storage", "upload", "download", "requests"):
            assert daily("acme", kind, day) is not None, (kind, day)
    assert daily("acme", "upload", "day_before") == 0.0
    assert daily(OTHER, "storage", "today") is None  # every org fits


def test_the_top_orgs_keep_their_series_and_the_rest_sum_as_other() -> None:
    orgs = [org("small", 1.23456789, 1.0), org("big", 9.0, 9.0, 9.0), org("mid", 3.0, 3.0, 3.0)]
    export_daily(orgs, 2, SPIKE)
    assert daily("big", "storage", "yesterday") == 9.0
    assert daily("mid", "storage", "yesterday") == 3.0
    assert daily("small", "storage", "yesterday") is None
    assert daily(OTHER, "storage", "yesterday") == 1.234568  # 6 places
    assert daily(OTHER, "download", "today") == 0.0
    # A new round forgets the old series.
    export_daily([org("big", 9.0, 9.0)], 0, SPIKE)
    assert daily("mid", "storage", "yesterday") is None
    assert daily("big", "storage", "yesterday") is None
    assert daily(OTHER, "storage", "yesterday") == 9.0


def test_an_org_whose_yesterday_spiked_keeps_its_series_whatever_its_rank() -> None:
    orgs = [
        org("steady", 50.0, 50.0, 50.0),
        org("jumped", 6.0, 1.0),  # 6 times and 5 USD more
        org("cents", 0.03, 0.01),  # tripled, but cents
    ]
    export_daily(orgs, 1, SPIKE)
    assert daily("steady", "storage", "yesterday") == 50.0
    assert daily("jumped", "storage", "yesterday") == 6.0
    assert daily("jumped", "storage", "day_before") == 1.0
    assert daily("cents", "storage", "yesterday") is None
    assert daily(OTHER, "storage", "yesterday") == 0.03
