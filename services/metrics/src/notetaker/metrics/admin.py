"""The admin API: the full per-org, per-day usage and cost (Prometheus only sees the top N),
as JSON or CSV, behind the admin token."""

from __future__ import annotations

import csv
import hmac
import io
from datetime import UTC, date, datetime, timedelta

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from notetaker.common.costs import COLUMNS, cost_rows
from notetaker.metrics.settings import MetricsSettings


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


def routes(settings: MetricsSettings, pool: asyncpg.Pool) -> list[Route]:
    async def usage(request: Request) -> Response:
        if not _authorised(request, settings):
            return JSONResponse({"title": "admin token required", "status": 401}, 401)
        try:
            since, until = _period(request)
            org = request.query_params.get("org_id")
            rows = [row.as_json() for row in await cost_rows(pool, since, until, org)]
        except (ValueError, asyncpg.DataError) as exc:
            return JSONResponse({"title": f"bad query: {exc}", "status": 400}, 400)
        if request.url.path.endswith(".csv"):
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            return Response(
                out.getvalue(),
                media_type="text/csv",
                headers={
                    "content-disposition": f'attachment; filename="usage-{since}-{until}.csv"'
                },
            )
        total = round(sum(float(str(r["cost_usd"])) for r in rows), 6)
        return JSONResponse(
            {
                "from": since.isoformat(),
                "to": until.isoformat(),
                "total_cost_usd": total,
                "rows": rows,
            }
        )

    return [Route("/admin/usage", usage), Route("/admin/usage.csv", usage)]
