"""The cost model: a usage event becomes per-org, per-day rows in `s3_usage_metrics`.

Each event is applied once (its CloudEvent id is recorded in the same transaction), so Kafka
redeliveries never double-count. Storage is a level, charged as S3 bills it: byte-hours held
(GB = 2^30 bytes), a GB held all day costing that day's share of a GB-month. A day's
`storage_gb` row holds the level at the day's end and the cost of the hours each byte was held
that day; the daily rollup (`rollup.py`) gives every org such a row for every day. Uploads and
requests are charged as they happen; downloads (egress) through the tiers on the platform's
month-to-date total, each org's day its share of the platform's cost of that day (`egress.py`),
so a download reprices every org's download row of its day and of every later day of its month.
"""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg

from notetaker.common.events import StorageUsage
from notetaker.metrics.egress import EgressTier, split_month
from notetaker.metrics.settings import MetricsSettings

GIB = 1024**3
DAY_SECONDS = 86_400

# Held shared by `apply`, exclusively by the rollup: a day is carried forward either before an
# event's change to the level or after it, never from a level the change is still writing.
STORAGE_LEVEL_LOCK = 0x726F6C6C
# Held exclusively by `apply` while it adds a download and reprices the month's download rows:
# each day's split reads every org's download that day, so two downloads are priced one after
# the other. Taken before the download row is written, so no writer waits for it holding a row
# it needs.
EGRESS_LOCK = 0x65677273


@dataclass(frozen=True)
class Prices:
    storage_per_gb_month: float
    upload_per_gb: float
    egress: tuple[EgressTier, ...]  # tiers on the platform's month-to-date downloads
    put_per_1000: float
    get_per_1000: float

    @classmethod
    def from_settings(cls, settings: MetricsSettings) -> Prices:
        return cls(
            storage_per_gb_month=settings.storage_price_usd_per_gb_month,
            upload_per_gb=settings.upload_price_usd_per_gb,
            egress=tuple(settings.price_egress_tiers),
            put_per_1000=settings.put_price_usd_per_1000,
            get_per_1000=settings.get_price_usd_per_1000,
        )

    def storage_day(self, gb: float, day: date) -> float:
        return gb * self.storage_per_gb_month / calendar.monthrange(day.year, day.month)[1]


def rest_of_day(when: datetime) -> float:
    """The fraction of its (UTC) day still to come at `when`: what a change of level then is
    charged for that day."""
    midnight = datetime.combine(when.date(), datetime.min.time(), when.tzinfo) + timedelta(days=1)
    return (midnight - when).total_seconds() / DAY_SECONDS


@dataclass(frozen=True)
class UsageDelta:
    """What one event adds to an org's day, in the units of `s3_usage_metrics`."""

    stored_gb: float
    upload_gb: float
    download_gb: float
    requests: int
    request_cost: float


def delta_of(event: StorageUsage, prices: Prices) -> UsageDelta:
    return UsageDelta(
        stored_gb=event.bytes_stored / GIB,
        upload_gb=event.bytes_uploaded / GIB,
        download_gb=event.bytes_downloaded / GIB,
        requests=event.put_requests + event.get_requests,
        request_cost=event.put_requests * prices.put_per_1000 / 1000
        + event.get_requests * prices.get_per_1000 / 1000,
    )


_ADD = """
INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)
VALUES ($1, $2, $3::usage_metric_type, $4, $5)
ON CONFLICT (org_id, date, metric_type) DO UPDATE
SET value = s3_usage_metrics.value + EXCLUDED.value,
    cost_usd = s3_usage_metrics.cost_usd + EXCLUDED.cost_usd,
    updated_at = now()
"""

# Storage is a level. Before a change on day D, the org gets a row for D and for every later day
# the rollup has done, each starting from the org's latest earlier level (a run of missing days
# all start from the row before the run, so one statement fills them all)...
_CARRY = """
INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)
SELECT $1, d.day, 'storage_gb', level,
       level * $3::float8
       / extract(day FROM date_trunc('month', d.day) + interval '1 month - 1 day')
FROM generate_series($2::date,
                     greatest($2::date, (SELECT max(day) FROM usage_rollup_days)),
                     interval '1 day') AS g(at)
CROSS JOIN LATERAL (SELECT g.at::date AS day) d
CROSS JOIN LATERAL (
  SELECT coalesce((SELECT value FROM s3_usage_metrics
                   WHERE org_id = $1 AND metric_type = 'storage_gb' AND date < d.day
                   ORDER BY date DESC LIMIT 1), 0) AS level) previous
ON CONFLICT (org_id, date, metric_type) DO NOTHING
"""

# ...then the change lands on all of them: charged from its time to the end of D, and for the
# whole of every later day.
_CHANGE = """
UPDATE s3_usage_metrics
SET value = value + $3,
    cost_usd = cost_usd + $3 * (CASE WHEN date = $2 THEN $4::float8 ELSE 1 END) * $5::float8
               / extract(day FROM date_trunc('month', date) + interval '1 month - 1 day')::float8,
    updated_at = now()
WHERE org_id = $1 AND metric_type = 'storage_gb' AND date >= $2
"""


async def shift_level(
    conn: asyncpg.Connection, org: uuid.UUID, when: datetime, stored_gb: float, prices: Prices
) -> None:
    """Change the org's stored level by `stored_gb` from `when` on: charged from then to the end
    of its day and for every later day rolled up. The caller holds the storage-level lock."""
    day = when.date()
    await conn.execute(_CARRY, org, day, prices.storage_per_gb_month)
    await conn.execute(_CHANGE, org, day, stored_gb, rest_of_day(when), prices.storage_per_gb_month)


async def apply(pool: asyncpg.Pool, event_id: str, event: StorageUsage, prices: Prices) -> bool:
    """Add the event's usage to its org's day (and its stored level to every day since);
    False when it was applied before."""
    day = event.occurred_at.date()
    delta = delta_of(event, prices)
    org: uuid.UUID = event.org_id
    async with pool.acquire() as conn, conn.transaction():
        first = await conn.fetchval(
            "INSERT INTO usage_events_applied (event_id) VALUES ($1)"
            " ON CONFLICT DO NOTHING RETURNING true",
            event_id,
        )
        if not first:
            return False
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", STORAGE_LEVEL_LOCK)
        await shift_level(conn, org, event.occurred_at, delta.stored_gb, prices)
        await conn.execute(
            _ADD, org, day, "upload_gb", delta.upload_gb, delta.upload_gb * prices.upload_per_gb
        )
        if delta.download_gb:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EGRESS_LOCK)
        await conn.execute(_ADD, org, day, "download_gb", delta.download_gb, 0.0)
        if delta.download_gb:
            await reprice_egress(conn, day, prices.egress)
        await conn.execute(_ADD, org, day, "api_requests", delta.requests, delta.request_cost)
    return True


# The platform's downloads this month before the day, and every org's download row from the day
# to the month's end: what the day's and each later day's split depend on.
_EGRESS_BEFORE = """
SELECT coalesce(sum(value), 0) FROM s3_usage_metrics
WHERE metric_type = 'download_gb' AND date >= date_trunc('month', $1::date) AND date < $1::date
"""
_EGRESS_FROM = """
SELECT org_id, date, value, cost_usd FROM s3_usage_metrics
WHERE metric_type = 'download_gb' AND date >= $1::date
  AND date < date_trunc('month', $1::date) + interval '1 month'
ORDER BY date, org_id
"""
_EGRESS_SET = """
UPDATE s3_usage_metrics SET cost_usd = $3::numeric, updated_at = now()
WHERE org_id = $1 AND date = $2 AND metric_type = 'download_gb'
"""


async def reprice_egress(conn: asyncpg.Connection, day: date, tiers: tuple[EgressTier, ...]) -> int:
    """Share the platform's tiered egress cost of `day` and of every later day of its month
    among the orgs that downloaded (`egress.split_day`); the rows whose cost changed. The caller
    holds the egress lock, in the transaction that changed the day's downloads."""
    before = float(await conn.fetchval(_EGRESS_BEFORE, day))
    rows = await conn.fetch(_EGRESS_FROM, day)
    days: dict[date, dict[str, float]] = {}
    for r in rows:
        days.setdefault(r["date"], {})[str(r["org_id"])] = float(r["value"])
    split = dict(zip(days, split_month(before, days.values(), tiers), strict=True))
    changed = [
        (r["org_id"], r["date"], cents)
        for r in rows
        if (cents := Decimal(split[r["date"]][str(r["org_id"])]) / 100) != Decimal(r["cost_usd"])
    ]
    if changed:
        await conn.executemany(_EGRESS_SET, changed)
    return len(changed)


@dataclass(frozen=True)
class OrgCost:
    org_id: str
    stored_bytes: float
    month_to_date_usd: float


async def month_to_date(pool: asyncpg.Pool, today: date) -> list[OrgCost]:
    """Every org's stored bytes (latest level) and cost this month, most expensive first."""
    rows = await pool.fetch(
        """
        SELECT org_id::text AS org_id,
          coalesce((SELECT value FROM s3_usage_metrics s
                    WHERE s.org_id = m.org_id AND s.metric_type = 'storage_gb'
                    ORDER BY date DESC LIMIT 1), 0) AS stored_gb,
          sum(cost_usd) FILTER (WHERE date >= date_trunc('month', $1::date)) AS mtd
        FROM s3_usage_metrics m
        GROUP BY org_id
        ORDER BY mtd DESC NULLS LAST, org_id
        """,
        today,
    )
    return [OrgCost(r["org_id"], float(r["stored_gb"]) * GIB, float(r["mtd"] or 0)) for r in rows]
