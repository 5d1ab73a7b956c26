"""Where each org's cost is heading: this month's end and next month, from `s3_usage_metrics`.

- **Month end**: the month to date, plus the days left in the month at today's stored level, plus
  the same days at the recent upload and request rate (the mean cost per day over the last
  `WINDOW_DAYS` days, today included), plus the org's share of the platform's projected egress:
  the platform's downloads go on at their mean GB per day over the window, priced through the
  tiers from the month's total so far (`egress.py`), and the org pays the share of that cost its
  own mean GB per day is of the platform's.
- **Next month**: today's level held over every day of next month (a GB-month per GB), plus the
  recent growth trend (the level's change per day over the last `WINDOW_DAYS` days, continued
  from today to each day of next month), plus next month's days at the recent upload and request
  rate, plus the org's share (as above) of the platform's mean daily downloads over next month's
  days priced through the tiers from nothing (the free tier again). A shrinking org's projected
  storage stops at zero.

Both read the rows the daily rollup keeps (a storage row per org per day), so a month's projection
counts every day, with or without events.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg

from notetaker.metrics.egress import tiered_usd
from notetaker.metrics.usage import Prices

WINDOW_DAYS = 7  # the recent transfer rate and growth trend: the last week, today included


@dataclass(frozen=True)
class OrgTrend:
    """What the projections start from, for one org on one day."""

    org_id: str
    month_to_date_usd: float
    stored_gb: float  # today's level
    stored_gb_window_ago: float  # the level WINDOW_DAYS days before today
    transfer_window_usd: float  # upload and requests over the window (downloads: below)
    download_window_gb: float = 0.0  # GB downloaded over the window
    download_month_gb: float = 0.0  # GB downloaded this month so far


@dataclass(frozen=True)
class PlatformEgress:
    """Every org's downloads together: what the tiers apply to."""

    month_to_date_gb: float = 0.0
    window_gb: float = 0.0

    @classmethod
    def of(cls, trends: list[OrgTrend]) -> PlatformEgress:
        return cls(
            sum(t.download_month_gb for t in trends), sum(t.download_window_gb for t in trends)
        )


@dataclass(frozen=True)
class Projection:
    org_id: str
    stored_gb: float
    month_to_date_usd: float
    month_end_usd: float
    next_month_usd: float


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def project(
    trend: OrgTrend, today: date, prices: Prices, platform: PlatformEgress | None = None
) -> Projection:
    """The month-end and next-month cost of `trend`'s org, seen on `today`, its downloads
    priced as its share of `platform`'s (by default, the org's own alone)."""
    if platform is None:
        platform = PlatformEgress(trend.download_month_gb, trend.download_window_gb)
    month_days = days_in_month(today)
    days_left = month_days - today.day
    next_days = days_in_month(today.replace(day=1) + timedelta(days=month_days))
    transfer_per_day = trend.transfer_window_usd / WINDOW_DAYS
    growth_per_day = (trend.stored_gb - trend.stored_gb_window_ago) / WINDOW_DAYS
    share = trend.download_window_gb / platform.window_gb if platform.window_gb > 0 else 0.0
    platform_gb_per_day = platform.window_gb / WINDOW_DAYS
    egress_rest_of_month = tiered_usd(
        platform.month_to_date_gb + platform_gb_per_day * days_left, prices.egress
    ) - tiered_usd(platform.month_to_date_gb, prices.egress)
    egress_next_month = tiered_usd(platform_gb_per_day * next_days, prices.egress)
    month_end = (
        trend.month_to_date_usd
        + trend.stored_gb * prices.storage_per_gb_month * days_left / month_days
        + transfer_per_day * days_left
        + share * egress_rest_of_month
    )
    # The level on next month's day k is today's plus the trend over days_left + k days; its
    # mean over the month is the level at days_left + (next_days + 1) / 2.
    mean_level = trend.stored_gb + growth_per_day * (days_left + (next_days + 1) / 2)
    next_month = (
        max(mean_level, 0.0) * prices.storage_per_gb_month
        + transfer_per_day * next_days
        + share * egress_next_month
    )
    return Projection(trend.org_id, trend.stored_gb, trend.month_to_date_usd, month_end, next_month)


_TRENDS = """
SELECT org_id::text AS org_id,
  coalesce(sum(cost_usd) FILTER (WHERE date >= date_trunc('month', $1::date)), 0) AS mtd,
  coalesce((array_agg(value ORDER BY date DESC)
            FILTER (WHERE metric_type = 'storage_gb'))[1], 0) AS level,
  coalesce((array_agg(value ORDER BY date DESC)
            FILTER (WHERE metric_type = 'storage_gb' AND date <= $1::date - $2::int))[1], 0)
    AS level_window_ago,
  coalesce(sum(cost_usd) FILTER (WHERE metric_type IN ('upload_gb', 'api_requests')
                                 AND date > $1::date - $2::int), 0) AS transfer_window,
  coalesce(sum(value) FILTER (WHERE metric_type = 'download_gb'
                              AND date > $1::date - $2::int), 0) AS download_window,
  coalesce(sum(value) FILTER (WHERE metric_type = 'download_gb'
                              AND date >= date_trunc('month', $1::date)), 0) AS download_month
FROM s3_usage_metrics
WHERE date <= $1::date AND date >= least(date_trunc('month', $1::date)::date, $1::date - $2::int)
GROUP BY org_id
"""


async def trends(pool: asyncpg.Pool, today: date) -> list[OrgTrend]:
    """Every org with rows this month or in the window (the rollup gives every org with a level
    a row each day)."""
    rows = await pool.fetch(_TRENDS, today, WINDOW_DAYS)
    return [
        OrgTrend(
            r["org_id"],
            float(r["mtd"]),
            float(r["level"]),
            float(r["level_window_ago"]),
            float(r["transfer_window"]),
            float(r["download_window"]),
            float(r["download_month"]),
        )
        for r in rows
    ]


async def projections(pool: asyncpg.Pool, today: date, prices: Prices) -> list[Projection]:
    """Every org's projections on `today`, the highest month end first."""
    recent = await trends(pool, today)
    platform = PlatformEgress.of(recent)
    found = [project(t, today, prices, platform) for t in recent]
    return sorted(found, key=lambda p: (-p.month_end_usd, p.org_id))
