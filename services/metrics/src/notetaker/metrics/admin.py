"""The admin API: the full per-org, per-day usage and cost (Prometheus only sees the top N),
as JSON or CSV, and a summary with the projections and the orgs over the threshold, behind the
admin token."""

from __future__ import annotations

import csv
import hmac
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from notetaker.common.costs import (
    COLUMNS,
    DAILY_COLUMNS,
    cost_rows,
    daily_costs,
    stream_cost_rows,
    stream_daily_costs,
)
from notetaker.metrics.projections import Projection, projections
from notetaker.metrics.settings import MetricsSettings
from notetaker.metrics.usage import Prices

# What the summary's figures mean, served with them (the gauges' help texts say the same).
EXPLAINED = {
    "stored_gb": "GiB (2^30 bytes) held in S3 at the end of the day.",
    "month_to_date_usd": "Storage (GiB-hours held), transfer and requests since the 1st;"
    " downloads are the org's share of each day's tiered egress cost of the platform (the first"
    " 100 GB of the month free, then by tier), in proportion to its GB that day.",
    "month_end_usd": "Month to date, plus the days left at today's level and at the mean daily"
    " upload and request cost of the last 7 days, plus the org's share of the platform's"
    " downloads continuing at their mean GB a day of the last 7 days, priced through the egress"
    " tiers from the month's total so far (its share: its GB over the platform's in those days).",
    "next_month_usd": "Today's level held all next month, plus its mean daily change over the"
    " last 7 days continued through next month (never below nothing stored), plus the last 7"
    " days' mean daily upload and request cost for each of its days, plus the same share of the"
    " platform's downloads at the same rate over next month, through the tiers from nothing"
    " (the free 100 GB again).",
}


def _figures(p: Projection) -> dict[str, object]:
    return {
        "org_id": p.org_id,
        "stored_gb": round(p.stored_gb, 6),
        "month_to_date_usd": round(p.month_to_date_usd, 6),
        "month_end_usd": round(p.month_end_usd, 6),
        "next_month_usd": round(p.next_month_usd, 6),
    }


def _authorised(request: Request, settings: MetricsSettings) -> bool:
    presented = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
    ok = False
    for token in settings.admin_tokens:  # no early exit: timing does not tell which matched
        ok |= hmac.compare_digest(presented, token.get_secret_value().encode())
    return ok


def _period(request: Request) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    since = date.fromisoformat(request.query_params.get("from", today.replace(day=1).isoformat()))
    until = date.fromisoformat(request.query_params.get("to", today.isoformat()))
    if until < since or until - since > timedelta(days=366):
        raise ValueError("`from` must be on or before `to`, at most a year apart")
    return since, until


def _org(request: Request) -> uuid.UUID | None:
    """The `org_id` asked for, checked before anything is streamed; ValueError if not a UUID."""
    org = request.query_params.get("org_id")
    return uuid.UUID(org) if org else None


Rows = Callable[[asyncpg.Connection], AsyncIterator[dict[str, object]]]
_CSV_CHUNK = 64 * 1024


def _streamed_csv(
    pool: asyncpg.Pool, filename: str, columns: tuple[str, ...], rows: Rows
) -> Response:
    """A CSV written as its rows come from the database, about 64 KiB at a time."""

    async def body() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        async with pool.acquire() as conn, conn.transaction():
            async for row in rows(conn):
                writer.writerow(row)
                if out.tell() >= _CSV_CHUNK:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _bad_query(exc: Exception) -> Response:
    return JSONResponse({"title": f"bad query: {exc}", "status": 400}, 400)


def _unauthorised() -> Response:
    return JSONResponse({"title": "admin token required", "status": 401}, 401)


Endpoint = Callable[[Request], Awaitable[Response]]
Streamed = Callable[
    [asyncpg.Connection, date, date, uuid.UUID | None], AsyncIterator[dict[str, object]]
]
Answered = Callable[[date, date, uuid.UUID | None], Awaitable[dict[str, object]]]


def _report(
    settings: MetricsSettings,
    pool: asyncpg.Pool,
    name: str,
    columns: tuple[str, ...],
    streamed: Streamed,
    answered: Answered,
) -> Endpoint:
    """A report for `from`..`to` (this month by default) and an optional `org_id`, behind the
    admin token: JSON (`answered`, with the period), or at `*.csv` the rows as streamed."""

    async def endpoint(request: Request) -> Response:
        if not _authorised(request, settings):
            return _unauthorised()
        try:
            since, until = _period(request)
            org = _org(request)
        except ValueError as exc:
            return _bad_query(exc)
        if request.url.path.endswith(".csv"):
            return _streamed_csv(
                pool,
                f"{name}-{since}-{until}.csv",
                columns,
                lambda conn: streamed(conn, since, until, org),
            )
        answer = await answered(since, until, org)
        return JSONResponse({"from": since.isoformat(), "to": until.isoformat()} | answer)

    return endpoint


def routes(settings: MetricsSettings, pool: asyncpg.Pool) -> list[Route]:
    async def usage_answer(since: date, until: date, org: uuid.UUID | None) -> dict[str, object]:
        rows = [row.as_json() for row in await cost_rows(pool, since, until, org)]
        total = round(sum(float(str(r["cost_usd"])) for r in rows), 6)
        return {"total_cost_usd": total, "rows": rows}

    async def daily_answer(since: date, until: date, org: uuid.UUID | None) -> dict[str, object]:
        rows = await daily_costs(pool, since, until, org)
        by_type = {
            column: round(sum(float(str(r[column])) for r in rows), 6)
            for column in ("storage_usd", "upload_usd", "download_usd", "requests_usd", "total_usd")
        }
        return {"totals": by_type, "rows": rows}

    usage = _report(settings, pool, "usage", COLUMNS, stream_cost_rows, usage_answer)
    daily = _report(settings, pool, "daily-costs", DAILY_COLUMNS, stream_daily_costs, daily_answer)

    prices = Prices.from_settings(settings)

    async def summary(request: Request) -> Response:
        if not _authorised(request, settings):
            return _unauthorised()
        try:
            today = date.fromisoformat(
                request.query_params.get("date", datetime.now(UTC).date().isoformat())
            )
        except ValueError as exc:
            return _bad_query(exc)
        ahead = await projections(pool, today, prices)
        threshold = settings.cost_alert_threshold_usd
        platform = Projection(
            "platform",
            sum(p.stored_gb for p in ahead),
            sum(p.month_to_date_usd for p in ahead),
            sum(p.month_end_usd for p in ahead),
            sum(p.next_month_usd for p in ahead),
        )
        return JSONResponse(
            {
                "date": today.isoformat(),
                "threshold_usd": threshold,
                "orgs": len(ahead),
                "platform": _figures(platform)
                | {"over_threshold": platform.month_end_usd > threshold},
                "orgs_over_threshold": [_figures(p) for p in ahead if p.month_end_usd > threshold],
                "explained": EXPLAINED,
            }
        )

    return [
        Route("/admin/usage", usage),
        Route("/admin/usage.csv", usage),
        Route("/admin/summary", summary),
        Route("/admin/daily", daily),
        Route("/admin/daily.csv", daily),
    ]
