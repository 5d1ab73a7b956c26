"""The cost table: per org, per day and per metric type, what `s3_usage_metrics` holds (the
metrics service writes it). The admin API serves it as JSON and CSV, `notetaker costs` prints it;
both read it here."""

from __future__ import annotations

import calendar
import uuid
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


async def cost_rows(
    pool: asyncpg.Pool | asyncpg.Connection,
    since: date,
    until: date,
    org_id: uuid.UUID | str | None = None,
) -> list[CostRow]:
    """Every row from `since` to `until` (inclusive), of one org or all, in org, date, type
    order. An org id that is not a UUID raises asyncpg.DataError."""
    records = await pool.fetch(
        "SELECT org_id::text AS org_id, date, metric_type::text AS metric_type, value,"
        " cost_usd FROM s3_usage_metrics WHERE date BETWEEN $1 AND $2"
        " AND ($3::uuid IS NULL OR org_id = $3::uuid) ORDER BY org_id, date, metric_type",
        since,
        until,
        str(org_id) if org_id is not None else None,
    )
    return [
        CostRow(r["org_id"], r["date"], r["metric_type"], float(r["value"]), float(r["cost_usd"]))
        for r in records
    ]


def month_bounds(month: str) -> tuple[date, date]:
    """First and last day of `YYYY-MM`; ValueError for anything else."""
    year, sep, number = month.partition("-")
    if not (sep and len(year) == 4 and year.isdigit() and len(number) == 2 and number.isdigit()):
        raise ValueError(f"{month!r} is not a month as YYYY-MM")
    first = date(int(year), int(number), 1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])
