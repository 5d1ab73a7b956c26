"""The projections, in process: month end and next month from an org's trend, worked on paper."""

from __future__ import annotations

from datetime import date

import pytest

from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.projections import WINDOW_DAYS, OrgTrend, Projection, project
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
