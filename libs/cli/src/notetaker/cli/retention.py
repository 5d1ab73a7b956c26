"""`notetaker retention`: how long each org's media is kept.

The scheduler deletes media older than its org's retention (`NOTETAKER_MEDIA_RETENTION_DAYS`,
90 days, unless the org has its own) through the same path as `notetaker meetings delete`. A
retention must be shorter than the bucket's lifecycle rule (400 days,
`NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS`), which is only a safety net.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from notetaker.cli.connections import checked_org, connect, json_lines
from notetaker.cli.connections import show as show_table
from notetaker.cli.dead_letters import operator
from notetaker.cli.events import Stop, out, run
from notetaker.cli.settings import CliSettings
from notetaker.common.retention import (
    OrgRetention,
    RetentionRefused,
    expired_recordings,
    org_retentions,
    set_retention,
    unset_retention,
)
from notetaker.common.settings import load_settings

app = typer.Typer(
    help="Retention: how long each org's media is kept before it is deleted.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

OrgArg = Annotated[str, typer.Argument(metavar="ORG", help="The org's id.")]


def retention_json(r: OrgRetention) -> dict[str, object]:
    return {
        "org_id": str(r.org_id),
        "days": r.days,
        "set_by": r.set_by,
        "set_at": r.set_at.astimezone(UTC).isoformat(),
    }


@app.command("set")
def set_command(
    org: OrgArg,
    days: Annotated[int, typer.Argument(metavar="DAYS", help="Days the org's media is kept.")],
    json_output: Annotated[bool, typer.Option("--json", help="The row as JSON.")] = False,
) -> None:
    """Keep ORG's media DAYS days (from the recording), instead of the default."""
    org_id = checked_org(org)
    config = load_settings(CliSettings)

    async def write() -> OrgRetention:
        async with connect(config) as c:
            try:
                return await set_retention(
                    c.pool,
                    org_id,
                    days,
                    by=operator(),
                    safety_net_days=config.s3_lifecycle_expiration_days,
                )
            except RetentionRefused as exc:
                raise Stop(str(exc), code=2) from exc

    written = run(write())
    if json_output:
        json_lines([retention_json(written)])
        return
    out.print(f"org {written.org_id} keeps its media {written.days} days")


@app.command("unset")
def unset_command(org: OrgArg) -> None:
    """ORG goes back to the default retention."""
    org_id = checked_org(org)
    config = load_settings(CliSettings)

    async def remove() -> bool:
        async with connect(config) as c:
            return await unset_retention(c.pool, org_id)

    removed = run(remove())
    default = config.media_retention_days
    if removed:
        out.print(f"org {org_id} is back to the default retention ({default} days)")
    else:
        out.print(
            f"org {org_id} had no retention of its own (it keeps the default, {default} days)"
        )


@app.command("list")
def list_command(
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per org and line.")
    ] = False,
) -> None:
    """The orgs with a retention of their own, the default, the safety net, and how many
    recordings are past their retention now (the scheduler deletes them)."""
    config = load_settings(CliSettings)

    async def read() -> tuple[list[OrgRetention], int]:
        async with connect(config) as c:
            found = await org_retentions(c.pool)
            due = await expired_recordings(
                c.pool,
                default_days=config.media_retention_days,
                now=datetime.now(UTC),
                limit=10_000,
            )
            return found, len(due)

    found, due = run(read())
    if json_output:
        json_lines(retention_json(r) for r in found)
        return
    table = Table(
        title=f"Retention: {config.media_retention_days} days by default"
        f" (NOTETAKER_MEDIA_RETENTION_DAYS); bucket safety net"
        f" {config.s3_lifecycle_expiration_days} days",
        title_justify="left",
    )
    for column in ("Org", "Days", "Set by", "Set at"):
        table.add_column(column)
    for r in found:
        table.add_row(
            str(r.org_id), str(r.days), r.set_by, f"{r.set_at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}"
        )
    show_table(table)
    out.print(f"{due} recording(s) past their retention now (the scheduler deletes them).")
