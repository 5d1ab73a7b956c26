"""`notetaker costs`: storage, transfer and request cost per org, from the table the metrics
service keeps (`s3_usage_metrics`) and its admin API serves (`notetaker.common.costs`);
`notetaker costs reconcile`: the metrics service's reconciliation with S3, run now."""

from __future__ import annotations

import getpass
import socket
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from notetaker.cli.connections import checked_org, connect, json_lines
from notetaker.cli.connections import show as show_table
from notetaker.cli.events import err, run
from notetaker.cli.settings import CliSettings
from notetaker.common.costs import CostRow, cost_rows, month_bounds
from notetaker.common.settings import load_settings
from notetaker.metrics.reconcile import Reconciliation, reconcile
from notetaker.metrics.usage import Prices

GIB = 1024**3


def org_totals(rows: list[CostRow]) -> list[dict[str, Any]]:
    """Per org over the period: the stored level on its last day, transfer and requests summed,
    and the cost of all of it; the most expensive first."""
    totals: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "stored_gb": 0.0,
            "upload_gb": 0.0,
            "download_gb": 0.0,
            "api_requests": 0.0,
            "cost_usd": 0.0,
        }
    )
    for row in rows:  # in date order within an org: the last storage row is the latest level
        total = totals[row.org_id]
        if row.metric_type == "storage_gb":
            total["stored_gb"] = row.value
        else:
            total[row.metric_type] += row.value
        total["cost_usd"] += row.cost_usd
    found = [{"org_id": org} | values for org, values in totals.items()]
    return sorted(found, key=lambda t: (-t["cost_usd"], t["org_id"]))


app = typer.Typer(
    help="Cost per org for a month (`notetaker costs`), and its reconciliation with S3.",
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def costs(
    ctx: typer.Context,
    month: Annotated[
        str | None,
        typer.Option(
            "--month", metavar="YYYY-MM", help="The calendar month (default: this one, to date)."
        ),
    ] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="ORG", help="Only this org.")] = None,
    daily: Annotated[
        bool,
        typer.Option(
            "--daily",
            help="The rows themselves (org, day, metric, value, cost), as the admin API serves"
            " them, instead of a total per org.",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per row (or org) and line.")
    ] = False,
) -> None:
    """What storage costs per org for a month: stored GB (the level at the end of the period),
    upload and download GB, API requests, and the cost in USD with its total."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        since, until = month_bounds(month or datetime.now(UTC).strftime("%Y-%m"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--month") from exc
    org_id = checked_org(org) if org else None
    config = load_settings(CliSettings)

    async def read() -> list[CostRow]:
        async with connect(config) as c:
            return await cost_rows(c.pool, since, until, org_id)

    rows = run(read())
    total = round(sum(r.cost_usd for r in rows), 6)
    if json_output:
        json_lines(r.as_json() for r in rows) if daily else json_lines(org_totals(rows))
        return
    title = f"Cost from {since} to {until}" + (f", org {org_id}" if org_id else "")
    table = Table(title=title, title_justify="left", show_footer=True)
    if daily:
        for column in ("Org", "Date", "Metric", "Value"):
            table.add_column(column, footer="")
        table.add_column("Cost (USD)", justify="right", footer=f"{total:.6f}")
        for r in rows:
            table.add_row(
                r.org_id, r.date.isoformat(), r.metric_type, f"{r.value:.6g}", f"{r.cost_usd:.6f}"
            )
    else:
        table.add_column("Org", footer="total")
        for column in ("Stored GB", "Upload GB", "Download GB", "Requests"):
            table.add_column(column, justify="right", footer="")
        table.add_column("Cost (USD)", justify="right", footer=f"{total:.6f}")
        for t in org_totals(rows):
            table.add_row(
                t["org_id"],
                f"{t['stored_gb']:.6f}",
                f"{t['upload_gb']:.6f}",
                f"{t['download_gb']:.6f}",
                f"{t['api_requests']:.0f}",
                f"{t['cost_usd']:.6f}",
            )
    show_table(table)
    if not rows:
        err.print("No usage is recorded for that period" + (" and org." if org_id else "."))


@app.command("reconcile")
def reconcile_now(
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per org found drifting, and a total.")
    ] = False,
) -> None:
    """Reconcile every org's stored level with S3 now, as the metrics service does each hour:
    list the bucket, compare, correct the drift this run and the one before both found (only
    that part), mark the meetings of recordings gone from S3 `media_expired`; print what it
    found and corrected. The run is recorded (storage_reconciliations) like the service's."""
    config = load_settings(CliSettings)
    # A correction changes the stored level alone: only the storage price is ever charged.
    prices = Prices(config.storage_price_usd_per_gb_month, 0.0, (), 0.0, 0.0)
    by = f"notetaker costs reconcile ({getpass.getuser()}@{socket.gethostname()})"

    async def go() -> Reconciliation | None:
        async with connect(config, s3=True) as c:
            assert c.s3 is not None
            return await reconcile(
                c.pool, c.s3, config.s3_bucket, prices, slot=datetime.now(UTC), by=by
            )

    done = run(go())
    if done is None:
        err.print("Another reconciliation is running; try again once it is over.")
        raise typer.Exit(1)
    drift = done.s3_bytes - done.level_bytes
    summary = {
        "bucket": config.s3_bucket,
        "list_requests": done.listing.requests,
        "objects_listed": done.listing.objects,
        "bytes_listed": done.listing.bytes,
        "level_bytes": done.level_bytes,
        "s3_bytes": done.s3_bytes,
        "drift_bytes": drift,
        "corrected_bytes": done.corrected_bytes,
        "orgs_drifting": len(done.drifting),
        "recordings_expired": len(done.expired),
    }
    if json_output:
        json_lines(
            [
                {
                    "org_id": str(o.org_id),
                    "level_bytes": o.level_bytes,
                    "listed_bytes": o.listed_bytes,
                    "in_flight_bytes": o.in_flight_bytes,
                    "pending_deletion_bytes": o.pending_deletion_bytes,
                    "since_listing_bytes": o.since_listing_bytes,
                    "s3_bytes": o.s3_bytes,
                    "drift_bytes": o.drift_bytes,
                    "corrected_bytes": o.corrected_bytes,
                    "expired_recordings": [str(r) for r in o.expired_recordings],
                }
                for o in done.orgs
                if o.worth_a_row
            ]
            + [{"total": summary}]
        )
        return
    table = Table(
        title=f"Reconciliation of s3://{config.s3_bucket} ({done.listing.objects} objects,"
        f" {done.listing.requests} list requests)",
        title_justify="left",
        show_footer=True,
    )
    table.add_column("Org", footer="total")
    footers = (done.level_bytes, done.s3_bytes, drift, done.corrected_bytes, len(done.expired))
    for column, footer in zip(
        ("Level (B)", "S3 (B)", "Drift (B)", "Corrected (B)", "Expired"), footers, strict=True
    ):
        table.add_column(column, justify="right", footer=str(footer))
    for o in done.orgs:
        if o.worth_a_row:
            table.add_row(
                str(o.org_id),
                str(o.level_bytes),
                str(o.s3_bytes),
                str(o.drift_bytes),
                str(o.corrected_bytes),
                str(len(o.expired_recordings)),
            )
    show_table(table)
    if not done.drifting:
        err.print("S3 and every stored level agree.")
    elif not done.corrected_bytes:
        err.print(
            "Drift found; nothing corrected: a drift is corrected when the next run finds it again."
        )
