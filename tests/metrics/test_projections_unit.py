"""The projections, in process: month end and next month from an org's trend, worked on paper."""

from __future__ import annotations

from datetime import date

import pytest

from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.projections import (
    WINDOW_DAYS,
    OrgTrend,
    PlatformEgress,
    Projection,
    project,
)
from notetaker.metrics.usage import Prices

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)


def test_the_window_is_a_week() -> None:
    assert WINDOW_DAYS == 7


def test_a_steady_org_ends_the_month_at_its_level_and_recent_transfer() -> None:
    # January 10th: 21 days left of 31; February has 28. $0.70 of transfer in the last 7 days.
    trend = OrgTrend("org", 1.0, 100.0, 100.0, 0.7)
    assert project(trend, date(2027, 1, 10), PRICES) == Projection(
        "org",
        100.0,
        1.0,
        pytest.approx(1.0 + 100 * 0.023 * 21 / 31 + 0.1 * 21),  # type: ignore[arg-type]
        pytest.approx(100 * 0.023 + 0.1 * 28),  # type: ignore[arg-type]
    )


def test_growth_continues_through_next_month() -> None:
    # 7 GiB a week ago, 14 today: 1 GiB a day. On January 31st nothing is left of the month;
    # February's mean level is 14 + (28 + 1) / 2 = 28.5 GiB.
    trend = OrgTrend("org", 2.5, 14.0, 7.0, 0.0)
    projection = project(trend, date(2027, 1, 31), PRICES)
    assert projection.month_end_usd == pytest.approx(2.5)
    assert projection.next_month_usd == pytest.approx(28.5 * 0.023)


def test_the_trend_counts_the_days_left_before_next_month() -> None:
    # A new org, 7 GiB stored this week. November 20th: 10 days left of 30, December has 31:
    # December's mean level is 7 + 1 x (10 + 16) = 33 GiB.
    trend = OrgTrend("org", 0.0, 7.0, 0.0, 0.0)
    projection = project(trend, date(2026, 11, 20), PRICES)
    assert projection.next_month_usd == pytest.approx(33 * 0.023)
    assert projection.month_end_usd == pytest.approx(7 * 0.023 * 10 / 30)


def test_a_shrinking_org_never_projects_less_than_nothing_stored() -> None:
    # 6 GiB deleted in the week: -6/7 GiB a day would empty 4 GiB before March is half over.
    trend = OrgTrend("org", 0.3, 4.0, 10.0, 0.07)
    projection = project(trend, date(2027, 2, 28), PRICES)
    assert projection.next_month_usd == pytest.approx(0.01 * 31)  # the transfer only
    assert projection.month_end_usd == pytest.approx(0.3)


def test_downloads_are_projected_through_the_platform_tiers() -> None:
    """January 10th, 21 days left: the platform has downloaded 70 GiB this month and 70 in the
    last week (10 a day), this org 14 of them (a fifth). The rest of the month takes the platform
    to 70 + 210 GiB: the first 30 still free, 180 at $0.09; the org pays a fifth. Next month
    (28 days) is 280 GiB from nothing: 180 past the free 100, a fifth of it the org's."""
    platform = PlatformEgress(month_to_date_gb=70.0, window_gb=70.0)
    trend = OrgTrend("org", 1.0, 0.0, 0.0, 0.0, download_window_gb=14.0, download_month_gb=14.0)
    projection = project(trend, date(2027, 1, 10), PRICES, platform)
    assert projection.month_end_usd == pytest.approx(1.0 + 180 * 0.09 / 5)
    assert projection.next_month_usd == pytest.approx(180 * 0.09 / 5)


def test_an_org_that_did_not_download_lately_projects_no_egress() -> None:
    platform = PlatformEgress(month_to_date_gb=500.0, window_gb=700.0)
    trend = OrgTrend("org", 2.0, 0.0, 0.0, 0.0, download_window_gb=0.0, download_month_gb=50.0)
    projection = project(trend, date(2027, 1, 10), PRICES, platform)
    assert (projection.month_end_usd, projection.next_month_usd) == (2.0, 0.0)


def test_past_the_free_tier_the_rest_of_the_month_pays_every_gb() -> None:
    # The platform past 100 GiB already: the org's own 1 GiB a day for 21 days at $0.09.
    trend = OrgTrend("org", 0.0, 0.0, 0.0, 0.0, download_window_gb=7.0, download_month_gb=300.0)
    projection = project(trend, date(2027, 1, 10), PRICES)
    assert projection.month_end_usd == pytest.approx(21 * 0.09)
    assert projection.next_month_usd == pytest.approx(0.0)  # 28 GiB: within next month's free
