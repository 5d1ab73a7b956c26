"""The cost table: per org, per day and per metric type, what `s3_usage_metrics` holds (the
metrics service writes it), and the same as cost by type, one row per org per day. The admin API
serves them as JSON and CSV, `notetaker costs` prints the first; both read them here."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import asyncpg

COLUMNS = ("org_id", "date", "metric_type", "value", "cost_usd")


@dataclass(frozen=True)
class CostRow:
    org_id: str
    date: date
    metric_type: str
    value: float
    cost_usd: float

    def as_json(self) -> dict[str, object]:
        return {
            "org_id": self.org_id,
            "date": self.date.isoformat(),
            "metric_type": self.metric_type,
            "value": self.value,
            "cost_usd": self.cost_usd,
        }


_ROWS = (
    "SELECT org_id::text AS org_id, date, metric_type::text AS metric_type, value,"
    " cost_usd FROM s3_usage_metrics WHERE date BETWEEN $1 AND $2"
    " AND ($3::uuid IS NULL OR org_id = $3::uuid) ORDER BY org_id, date, metric_type"
)


def _cost_row(r: asyncpg.Record) -> CostRow:
    return CostRow(
        r["org_id"], r["date"], r["metric_type"], float(r["value"]), float(r["cost_usd"])
    )


async def cost_rows(
    pool: asyncpg.Pool | asyncpg.Connection,
    since: date,
    until: date,
    org_id: uuid.UUID | str | None = None,
) -> list[CostRow]:
    """Every row from `since` to `until` (inclusive), of one org or all, in org, date, type
    order. An org id that is not a UUID raises asyncpg.DataError."""
    records = await pool.fetch(_ROWS, since, until, str(org_id) if org_id is not None else None)
    return [_cost_row(r) for r in records]


async def stream_cost_rows(
    conn: asyncpg.Connection, since: date, until: date, org_id: uuid.UUID | None = None
) -> AsyncIterator[dict[str, object]]:
    """The same rows as JSON values, through a server-side cursor a batch at a time (for a
    streamed CSV). `conn` must be in a transaction."""
    cursor = conn.cursor(_ROWS, since, until, str(org_id) if org_id else None, prefetch=500)
    async for record in cursor:
        yield _cost_row(record).as_json()


def month_bounds(month: str) -> tuple[date, date]:
    """First and last day of `YYYY-MM`; ValueError for anything else."""
    year, sep, number = month.partition("-")
    if not (sep and len(year) == 4 and year.isdigit() and len(number) == 2 and number.isdigit()):
        raise ValueError(f"{month!r} is not a month as YYYY-MM")
    first = date(int(year), int(number), 1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


# --- cost by type, one row per org per day ------------------------------------------------------

DAILY_COLUMNS = (
    "org_id",
    "date",
    "stored_gb",
    "upload_gb",
    "download_gb",
    "api_requests",
    "storage_usd",
    "upload_usd",
    "download_usd",
    "requests_usd",
    "total_usd",
)

_DAILY = """
SELECT org_id::text AS org_id, date,
  coalesce(sum(value) FILTER (WHERE metric_type = 'storage_gb'), 0) AS stored_gb,
  coalesce(sum(value) FILTER (WHERE metric_type = 'upload_gb'), 0) AS upload_gb,
  coalesce(sum(value) FILTER (WHERE metric_type = 'download_gb'), 0) AS download_gb,
  coalesce(sum(value) FILTER (WHERE metric_type = 'api_requests'), 0) AS api_requests,
  coalesce(sum(cost_usd) FILTER (WHERE metric_type = 'storage_gb'), 0) AS storage_usd,
  coalesce(sum(cost_usd) FILTER (WHERE metric_type = 'upload_gb'), 0) AS upload_usd,
  coalesce(sum(cost_usd) FILTER (WHERE metric_type = 'download_gb'), 0) AS download_usd,
  coalesce(sum(cost_usd) FILTER (WHERE metric_type = 'api_requests'), 0) AS requests_usd,
  sum(cost_usd) AS total_usd
FROM s3_usage_metrics
WHERE date BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR org_id = $3::uuid)
GROUP BY org_id, date
ORDER BY org_id, date
"""


def daily_json(record: asyncpg.Record) -> dict[str, object]:
    """One org's day, cost by type: the day's stored level (GB) and flows, each type's cost and
    the day's total, as JSON values."""
    row: dict[str, object] = {"org_id": record["org_id"], "date": record["date"].isoformat()}
    for column in DAILY_COLUMNS[2:]:
        row[column] = float(record[column])
    return row


async def daily_costs(
    pool: asyncpg.Pool | asyncpg.Connection,
    since: date,
    until: date,
    org_id: uuid.UUID | None = None,
) -> list[dict[str, object]]:
    """Cost by type per org per day from `since` to `until` (inclusive), in org, date order."""
    records = await pool.fetch(_DAILY, since, until, str(org_id) if org_id else None)
    return [daily_json(r) for r in records]


async def stream_daily_costs(
    conn: asyncpg.Connection, since: date, until: date, org_id: uuid.UUID | None = None
) -> AsyncIterator[dict[str, object]]:
    """The same rows through a server-side cursor, a batch at a time, so a year of every org
    never sits in memory. `conn` must be in a transaction."""
    cursor = conn.cursor(_DAILY, since, until, str(org_id) if org_id else None, prefetch=500)
    async for record in cursor:
        yield daily_json(record)
