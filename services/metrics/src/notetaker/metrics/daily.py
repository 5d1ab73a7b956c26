"""The last three UTC days' cost per org by type, from the daily rows in `s3_usage_metrics`: what
the day-over-day spike alerts compare (yesterday against the day before) and what the dashboard
draws as daily bars (today so far).

A day's rows are complete once the daily rollup has given every org its storage row (`rollup.py`),
so yesterday's storage cost counts every org that held anything, with or without events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

# metric_type in s3_usage_metrics -> the `type` label.
TYPES = {
    "storage_gb": "storage",
    "upload_gb": "upload",
    "download_gb": "download",
    "api_requests": "requests",
}
# Days back from today -> the `day` label.
DAYS = {0: "today", 1: "yesterday", 2: "day_before"}


@dataclass(frozen=True)
class Spike:
    """A day-over-day spike: yesterday's cost more than `ratio` times the day before's and more
    than `min_usd` above it (so a cent that triples is no spike)."""

    ratio: float
    min_usd: float

    def of(self, yesterday: float, day_before: float) -> bool:
        return yesterday > self.ratio * day_before and yesterday - day_before > self.min_usd


@dataclass(frozen=True)
class OrgDays:
    """One org's cost over the last three days: (day label, type label) -> USD; absent is 0."""

    org_id: str
    cost: dict[tuple[str, str], float]

    def on(self, day: str) -> float:
        return sum(usd for (d, _), usd in self.cost.items() if d == day)

    def total(self) -> float:
        return sum(self.cost.values())


_RECENT = """
SELECT org_id::text AS org_id, ($1::date - date) AS ago, metric_type::text AS metric_type,
       sum(cost_usd) AS cost
FROM s3_usage_metrics
WHERE date BETWEEN $1::date - 2 AND $1::date
GROUP BY org_id, date, metric_type
"""


def by_org(rows: Iterable[Mapping[str, Any]]) -> list[OrgDays]:
    """The rows of `_RECENT` (org, days ago, metric type, cost) as each org's days, in org order."""
    found: dict[str, dict[tuple[str, str], float]] = {}
    for r in rows:
        cost = found.setdefault(r["org_id"], {})
        key = (DAYS[int(r["ago"])], TYPES[r["metric_type"]])
        cost[key] = cost.get(key, 0.0) + float(r["cost"])
    return [OrgDays(org, found[org]) for org in sorted(found)]


async def recent_days(pool: asyncpg.Pool | asyncpg.Connection, today: date) -> list[OrgDays]:
    """Every org with rows on `today` or the two days before, in org order."""
    return by_org(await pool.fetch(_RECENT, today))
