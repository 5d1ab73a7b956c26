"""`notetaker meetings delete`: delete a meeting's media everywhere, or every meeting's of an org.

Everything goes through the one deletion path (`notetaker.common.deletion`), the one the
scheduler's retention job uses: the intent is recorded first (who, why, when: `media_deletions`),
then every object under the recording's S3 prefix is deleted, the org's stored level lowered,
and MeetingBaaS and Gladia asked to delete their copies. Run it again at any time: what is done
stays done and what is not is finished (so does the scheduler, within a round or two).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import typer
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError
from rich.text import Text

from notetaker.cli.connections import Connections, checked_org, checked_ref, connect, json_lines
from notetaker.cli.connections import progress as progress_bar
from notetaker.cli.dead_letters import operator
from notetaker.cli.events import err, out, quiet_kafka_logs, run
from notetaker.cli.lookup import find_recording
from notetaker.cli.settings import CliSettings
from notetaker.common.deletion import MediaDeleter, Outcome
from notetaker.common.settings import load_settings

app = typer.Typer(
    help="Meetings: delete a meeting's media everywhere (audited, idempotent).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

# Our own dependencies failing under a deletion: it is recorded unfinished, and the run stops.
DEPENDENCY_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ClientError,
    BotoCoreError,
    KafkaError,
)


async def targets(c: Connections, ref: str | None, org: uuid.UUID | None) -> list[uuid.UUID]:
    if ref is not None:
        return [(await find_recording(c.pool, ref)).id]
    rows = await c.pool.fetch(
        "SELECT id FROM recordings WHERE org_id = $1 AND (media_deleted_at IS NULL OR id IN"
        " (SELECT recording_id FROM media_deletions WHERE org_id = $1 AND completed_at IS NULL))"
        " ORDER BY created_at",
        org,
    )
    return [r["id"] for r in rows]


def result_of(outcome: Outcome) -> dict[str, Any]:
    deletion = outcome.deletion
    state = "already_deleted" if outcome.already_done else "deleted"
    return {"outcome": state if deletion.done else "unfinished"} | deletion.as_json()


async def delete(
    settings: CliSettings,
    ref: str | None,
    org: uuid.UUID | None,
    *,
    by: str,
    confirm: bool,
    dry_run: bool,
) -> list[dict[str, Any]]:
    async with connect(settings, kafka=not dry_run, s3=not dry_run, http=not dry_run) as c:
        chosen = await targets(c, ref, org)
        if dry_run:
            return [{"outcome": "would_delete", "recording_id": str(r)} for r in chosen]
        if confirm and chosen:
            what = f"recording {chosen[0]}" if ref else f"{len(chosen)} recording(s) of org {org}"
            if not typer.confirm(f"Delete the media of {what}, everywhere?"):
                raise typer.Abort()
        assert c.http is not None
        deleter = MediaDeleter(
            c.pool,
            c.need_s3(),
            settings.s3_bucket,
            c.need_publisher(),
            settings.provider_access(),
            c.http,
        )
        results: list[dict[str, Any]] = []
        with progress_bar() as bar:
            task = bar.add_task("Deleting media", total=len(chosen))
            for recording_id in chosen:
                try:
                    outcome = await deleter.delete(recording_id, by=by, reason="operator")
                except DEPENDENCY_ERRORS as exc:
                    results.append(
                        {
                            "outcome": "unfinished",
                            "recording_id": str(recording_id),
                            "last_error": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    break  # S3, Kafka or the database is failing: the next ones would too
                assert outcome is not None  # wait=True: never skipped
                results.append(result_of(outcome))
                bar.advance(task)
    return results


def line(result: dict[str, Any]) -> Text:
    outcome = result["outcome"]
    text = Text(
        f"{outcome.replace('_', ' '):<16}",
        style={
            "deleted": "bold green",
            "already_deleted": "dim",
            "would_delete": "bold cyan",
            "unfinished": "bold red",
        }[outcome],
    )
    text.append(f" recording {result['recording_id']}")
    if "bot_id" in result:
        text.append(f"  bot={result['bot_id']}", style="cyan")
    if outcome in ("deleted", "already_deleted"):
        text.append(
            f"  {result['objects_deleted']} object(s), {result['bytes_deleted']} bytes;"
            f" MeetingBaaS: {result['meetingbaas_outcome']}; Gladia: {result['gladia_outcome']};"
            f" by {result['requested_by']} at {result['requested_at']}"
        )
    if outcome == "unfinished":
        left = result.get("steps_left")
        text.append(f"  left: {left}" if left else "", style="red")
        text.append(f"  {result.get('last_error') or ''}", style="red")
    return text


EXAMPLES = """\
**Examples**

`notetaker meetings delete 3f0c…` (a meeting id, recording id or bot id; asks first)

`notetaker meetings delete --org ORG --dry-run`

`notetaker meetings delete --org ORG --yes --json`
"""


@app.command("delete", epilog=EXAMPLES)
def delete_command(
    ref: Annotated[
        str | None,
        typer.Argument(metavar="ID", help="Meeting id, recording id or bot id."),
    ] = None,
    org: Annotated[
        str | None, typer.Option("--org", metavar="ORG", help="Every meeting of this org.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="WHO", help="Who asked, for the audit (default: user@host)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per recording and line.")
    ] = False,
) -> None:
    """Delete a meeting's media everywhere: every object under its recording's S3 prefix
    (video, audio, thumbnail, transcripts, anything else), the provider URLs and transcript in
    its rows, MeetingBaaS's and Gladia's copies; the org's stored bytes go down by what it held.
    Recorded (who, when, what) in `media_deletions`. Safe to run again: it finishes what a run
    stopped half-way left. Exits 1 when a deletion is left unfinished (the scheduler finishes it;
    or run the command again)."""
    if (ref is None) == (org is None):
        raise typer.BadParameter("give one ID, or --org ORG")
    if ref is not None:
        checked_ref(ref)
    org_id = checked_org(org) if org else None
    config = load_settings(CliSettings)
    quiet_kafka_logs(config)
    results = run(
        delete(config, ref, org_id, by=by or operator(), confirm=not yes, dry_run=dry_run)
    )
    if json_output:
        json_lines(results)
    else:
        for result in results:
            out.print(line(result))
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    summary = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in sorted(counts.items()))
    err.print(f"{summary or 'nothing to delete'}.", style="bold")
    if counts.get("unfinished"):
        err.print(
            "Unfinished deletions are recorded: run the command again, or let the scheduler"
            " finish them (it retries every unfinished deletion).",
            style="yellow",
        )
        raise typer.Exit(1)
