"""`notetaker recordings`: where uploads stand, one recording in full, and retrying failed ones.

A retry goes the normal way: the recording is marked `pending` and `recording.upload_requested`
is published for its next attempt in one step (`notetaker.common.upload_requests`, as the
scheduler does when a retry is due); the uploader then asks MeetingBaaS for freshly signed
recording URLs (`GET /v2/bots/{bot_id}`) before it copies, as it does before every retry.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from rich.table import Table
from rich.text import Text

from notetaker.cli.connections import (
    Connections,
    checked_org,
    connect,
    json_lines,
    progress,
)
from notetaker.cli.connections import show as show_table
from notetaker.cli.events import (
    ALL_TOPICS,
    Shown,
    Stop,
    as_json,
    err,
    out,
    quiet_kafka_logs,
    read,
    run,
    start_consumer,
    summary,
)
from notetaker.cli.lookup import COLUMNS, RecordingRow, find_recording
from notetaker.cli.settings import CliSettings
from notetaker.cli.webhooks import Delivery, deliveries_of, print_deliveries
from notetaker.common.deletion import find_deletion
from notetaker.common.s3 import recording_prefix
from notetaker.common.settings import load_settings
from notetaker.common.upload_requests import retry_failed

app = typer.Typer(
    help="Recordings: where each upload stands, one recording in full, and retries.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

STATES = ("pending", "uploading", "complete", "failed", "failed_final", "deleted")
IDLE_POLL_MS = 500


def settings() -> CliSettings:
    config = load_settings(CliSettings)
    quiet_kafka_logs(config)
    return config


def when(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}"


def row_json(row: RecordingRow) -> dict[str, Any]:
    values = asdict(row)
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value.astimezone(UTC).isoformat()
        elif isinstance(value, uuid.UUID):
            values[name] = str(value)
    return values


# --- recordings list -------------------------------------------------------------------------


async def list_recordings(
    settings: CliSettings, states: list[str], org: uuid.UUID | None, limit: int
) -> list[RecordingRow]:
    # `failed` asks for every failed recording, waiting for a retry or failed for good.
    wanted = sorted({*states, *(["failed_final"] if "failed" in states else [])}) or None
    async with connect(settings) as c:
        rows = await c.pool.fetch(
            f"SELECT * FROM (SELECT {COLUMNS} FROM recordings r) x"  # noqa: S608 - fixed
            " WHERE ($1::text[] IS NULL OR state = ANY($1::text[]))"
            " AND ($2::uuid IS NULL OR org_id = $2) ORDER BY updated_at DESC LIMIT $3",
            wanted,
            org,
            limit,
        )
    return [RecordingRow(**dict(r)) for r in rows]


def human_size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


STATE_STYLES = {
    "complete": "green",
    "failed": "yellow",
    "failed_final": "bold red",
    "deleted": "dim",
    "uploading": "cyan",
    "pending": "",
}


@app.command("list")
def list_command(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only these (repeat for several): pending, uploading, complete, failed (waiting"
            " for a retry or failed for good), failed_final (for good), deleted.",
        ),
    ] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="ORG", help="Only this org.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most N.")] = 50,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per recording and line.")
    ] = False,
) -> None:
    """List recordings, most recently changed first: status, retries, next retry, error."""
    states = status or []
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise typer.BadParameter(f"{unknown} not among {', '.join(STATES)}", param_hint="--status")
    config = settings()
    org_id = checked_org(org) if org else None
    rows = run(list_recordings(config, states, org_id, limit))
    if json_output:
        json_lines(row_json(r) for r in rows)
        return
    table = Table(title=f"{len(rows)} recording(s)", title_justify="left")
    for column in ("Recording", "Bot", "Org", "Status", "Retries", "Next retry", "Size", "Error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.id),
            r.bot_id,
            str(r.org_id),
            Text(r.state, style=STATE_STYLES.get(r.state, "")),
            str(r.retries),
            when(r.next_retry_at),
            human_size(r.size_bytes),
            (r.error or "")[:120],
        )
    show_table(table)


# --- recordings show -------------------------------------------------------------------------


async def stored_objects(c: Connections, row: RecordingRow) -> dict[str, Any]:
    """What S3 holds under the recording's prefix: objects, and unfinished multipart uploads
    with the parts S3 has and the parts the uploader's ledger vouches for."""
    s3 = c.need_s3()
    bucket = c.settings.s3_bucket
    prefix = recording_prefix(row.org_id, row.user_id, row.id)
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    objects = [
        {"key": o["Key"], "size": o.get("Size", 0), "last_modified": o["LastModified"].isoformat()}
        for o in listing.get("Contents", [])
    ]
    uploads = []
    pending = await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    for upload in pending.get("Uploads", []):
        parts = await s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        stored = parts.get("Parts", [])
        ledger = await c.pool.fetchval(
            "SELECT count(*) FROM upload_parts WHERE upload_id = $1", upload["UploadId"]
        )
        uploads.append(
            {
                "key": upload["Key"],
                "upload_id": upload["UploadId"],
                "parts_in_s3": len(stored),
                "bytes_in_s3": sum(p.get("Size", 0) for p in stored),
                "parts_in_ledger": ledger,
            }
        )
    return {"prefix": prefix, "objects": objects, "multipart_uploads": uploads}


async def artifact_rows(pool: asyncpg.Pool, row: RecordingRow) -> list[dict[str, Any]]:
    """What `recording_artifacts` records of the recording: each artifact the provider handed
    over, the people lists, and the objects written after the upload (the thumbnail, Gladia's
    result as delivered), with where each is stored, its size and checksum, or why it is not."""
    found = await pool.fetch(
        "SELECT kind, s3_key, size_bytes, checksum, stored_at, error, usage_step"
        " FROM recording_artifacts WHERE recording_id = $1 ORDER BY kind",
        row.id,
    )
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dict(a).items()}
        for a in found
    ]


async def meeting_row(pool: asyncpg.Pool, row: RecordingRow) -> dict[str, Any] | None:
    """The meetings row, with its transcript summarised (never printed whole)."""
    found = await pool.fetchrow(
        "SELECT id, org_id, owner_user_id, title, start_time, source::text AS source, bot_id,"
        " video_url, audio_url, thumbnail_url, recording_status, transcript_provider,"
        " length(transcript_text) AS transcript_chars,"
        " jsonb_array_length(coalesce(transcript_json, '[]'::jsonb)) AS utterances,"
        " media_deleted_at, updated_at"
        " FROM meetings WHERE bot_id = $1",
        row.bot_id,
    )
    if found is None:
        return None
    values = dict(found)
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
        for k, v in values.items()
    }


async def bot_events(settings: CliSettings, bot_id: str) -> list[Shown]:
    """Every retained event about the bot on every topic and dead-letter topic: all of a bot's
    events are on one partition of each topic (keyed by bot id), read from its start to its end."""
    consumer = await start_consumer(settings)
    key = bot_id.encode()
    found: list[Shown] = []
    try:
        partitioner = DefaultPartitioner()
        wanted = []
        for topic in ALL_TOPICS:
            partitions = sorted(consumer.partitions_for_topic(topic) or set())
            if partitions:
                wanted.append(TopicPartition(topic, partitioner(key, partitions, partitions)))
        if not wanted:
            return []
        ends = await consumer.end_offsets(wanted)
        consumer.assign(wanted)
        await consumer.seek_to_beginning(*wanted)
        await _read_all(consumer, ends, key, found)
    except KafkaError as exc:
        raise Stop(f"Kafka at {settings.kafka_bootstrap_servers} failed: {exc!r}") from exc
    finally:
        await consumer.stop()
    return sorted(found, key=lambda s: s.record.timestamp)


async def _read_all(
    consumer: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    key: bytes,
    found: list[Shown],
) -> None:
    """Read each partition to its end offset, then on until a poll brings nothing (the
    embedded broker reports some end offsets short; see dead_letters._read_to)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        at_end = [await consumer.position(tp) >= end for tp, end in ends.items()]
        batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS)
        for records in batch.values():
            found += [read(r) for r in records if r.key == key]
        if all(at_end) and not batch:
            return
    raise Stop("reading the bot's events took over 60 s: try `notetaker events tail` instead")


async def show(
    settings: CliSettings, ref: str, with_events: bool
) -> tuple[RecordingRow, dict[str, Any], list[Delivery], list[Shown]]:
    async with connect(settings, s3=True) as c:
        row = await find_recording(c.pool, ref)
        details: dict[str, Any] = {"recording": row_json(row)}
        details["storage"] = await stored_objects(c, row)
        details["artifacts"] = await artifact_rows(c.pool, row)
        details["meeting"] = await meeting_row(c.pool, row)
        deletion = await find_deletion(c.pool, row.id)
        details["deletion"] = deletion.as_json() if deletion else None
        webhooks = await deliveries_of(c.pool, row.bot_id)
    events = await bot_events(settings, row.bot_id) if with_events else []
    return row, details, webhooks, events


@app.command("show")
def show_command(
    ref: Annotated[
        str, typer.Argument(metavar="ID|BOT_ID", help="Recording id, meeting id or bot id.")
    ],
    with_events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events", help="Read the bot's events from Kafka (every topic)."
        ),
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Everything about one recording: status, error, retries, what S3 holds (objects, and the
    parts of an unfinished upload), its artifacts as `recording_artifacts` records them (the
    provider's, the people lists, the thumbnail, Gladia's result), the webhooks received for
    its bot, its events, its meetings row and its deletion, if any."""
    config = settings()
    row, details, webhooks, events = run(show(config, ref, with_events))
    if json_output:
        document = details | {
            "webhooks": [w.as_json() for w in webhooks],
            "events": [as_json(e) for e in events] if with_events else None,
        }
        json_lines([document])
        return
    print_recording(row, details)
    print_webhooks(webhooks)
    if with_events:
        print_events(events)


def print_recording(row: RecordingRow, details: dict[str, Any]) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("Recording", str(row.id))
    head.add_row("Bot", row.bot_id)
    head.add_row("Org / user", f"{row.org_id} / {row.user_id}")
    head.add_row("Meeting", str(row.meeting_id or "-"))
    head.add_row("Status", Text(row.state, style=STATE_STYLES.get(row.state, "")))
    head.add_row("Retries", f"{row.retries} (next: {when(row.next_retry_at)})")
    head.add_row("Error", row.error or "-")
    head.add_row("Size", human_size(row.size_bytes))
    head.add_row("Provider URLs", f"received {when(row.urls_received_at)}")
    head.add_row("Created / updated", f"{when(row.created_at)} / {when(row.updated_at)}")
    storage = details["storage"]
    head.add_row("S3 prefix", storage["prefix"])
    for o in storage["objects"]:
        head.add_row("  object", f"{o['key'].rsplit('/', 1)[-1]}  {human_size(o['size'])}")
    for u in storage["multipart_uploads"]:
        head.add_row(
            "  unfinished upload",
            f"{u['key'].rsplit('/', 1)[-1]}: {u['parts_in_s3']} part(s) in S3"
            f" ({human_size(u['bytes_in_s3'])}), {u['parts_in_ledger']} in the ledger",
        )
    if not storage["objects"] and not storage["multipart_uploads"]:
        head.add_row("  ", "nothing stored")
    for a in details["artifacts"]:
        where = (
            f"{a['s3_key'].rsplit('/', 1)[-1]}  {human_size(a['size_bytes'])}  {a['checksum']}"
            if a["s3_key"]
            else f"not stored ({a['error'] or 'deleted'})"
        )
        head.add_row(f"  artifact {a['kind']}", where)
    meeting = details["meeting"]
    if meeting is None:
        head.add_row("Meetings row", "none")
    else:
        head.add_row("Meetings row", f"{meeting['id']} {meeting['title']!r} ({meeting['source']})")
        for column in ("video_url", "audio_url", "thumbnail_url", "recording_status"):
            head.add_row(f"  {column}", str(meeting[column] or "-"))
        transcript = (
            f"{meeting['transcript_chars']} characters, {meeting['utterances']} utterances"
            f" ({meeting['transcript_provider']})"
            if meeting["transcript_chars"]
            else "-"
        )
        head.add_row("  transcript", transcript)
    deletion = details["deletion"]
    if deletion is not None:
        state = "complete" if deletion["completed_at"] else f"unfinished {deletion['steps_left']}"
        head.add_row(
            "Deleted",
            f"{deletion['requested_at']} by {deletion['requested_by']} ({deletion['reason']}),"
            f" {state}",
        )
    show_table(head)


def print_webhooks(webhooks: list[Delivery]) -> None:
    print_deliveries(webhooks, f"Webhooks received: {len(webhooks)}")


def print_events(events: list[Shown]) -> None:
    table = Table(title=f"Events: {len(events)}", title_justify="left")
    for column in ("Time", "Topic", "Position", "Data"):
        table.add_column(column, overflow="fold")
    for shown in events:
        record = shown.record
        data = (
            summary(shown.envelope.event.model_dump(mode="json"), 160)
            if shown.envelope
            else f"not an event: {shown.parse_error}"
        )
        dead = shown.dead_letter()
        if dead is not None:
            data += f"  [dead letter: {dead['error']}]"
        stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        table.add_row(
            f"{stamp:%Y-%m-%d %H:%M:%SZ}",
            record.topic,
            f"{record.partition}:{record.offset}",
            data,
        )
    show_table(table)


# --- recordings retry ------------------------------------------------------------------------


async def retry(settings: CliSettings, ref: str | None) -> list[dict[str, Any]]:
    async with connect(settings, kafka=True) as c:
        if ref is not None:
            row = await find_recording(c.pool, ref)
            if row.state == "deleted":
                raise Stop(f"recording {row.id}'s media was deleted: there is nothing to retry")
            if row.status != "failed":
                raise Stop(f"recording {row.id} is {row.state}, not failed: nothing to retry")
            ids = [row.id]
        else:
            ids = [
                r["id"]
                for r in await c.pool.fetch(
                    "SELECT id FROM recordings WHERE s3_upload_status = 'failed'"
                    " AND media_deleted_at IS NULL ORDER BY updated_at"
                )
            ]
        results = []
        with progress() as bar:
            task = bar.add_task("Requesting retries", total=len(ids))
            async with c.pool.acquire() as conn:
                for recording_id in ids:
                    requested = await retry_failed(conn, c.need_publisher(), recording_id)
                    results.append(
                        {
                            "recording_id": str(recording_id),
                            "outcome": "requested" if requested else "not_failed_any_more",
                            "bot_id": requested.bot_id if requested else None,
                            "attempt": requested.attempt if requested else None,
                        }
                    )
                    bar.advance(task)
    return results


@app.command("retry")
def retry_command(
    ref: Annotated[
        str | None,
        typer.Argument(metavar="ID|BOT_ID", help="Recording id, meeting id or bot id."),
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every failed recording (not deleted).")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per recording and line.")
    ] = False,
) -> None:
    """Retry failed uploads now, the normal way: the next attempt is requested
    (`recording.upload_requested`) and the uploader copies again from freshly signed provider
    URLs (it asks MeetingBaaS for them before every retry), resuming what S3 holds."""
    if (ref is None) == (not all_failed) or (ref is not None and all_failed):
        raise typer.BadParameter("give one ID|BOT_ID, or --all-failed")
    config = settings()
    results = run(retry(config, ref))
    if json_output:
        json_lines(results)
        return
    for r in results:
        if r["outcome"] == "requested":
            out.print(
                f"requested attempt {r['attempt']} of recording {r['recording_id']}"
                f" (bot {r['bot_id']})"
            )
        else:
            out.print(f"recording {r['recording_id']} is no longer failed: skipped", style="dim")
    requested = sum(r["outcome"] == "requested" for r in results)
    err.print(f"{requested} retr{'y' if requested == 1 else 'ies'} requested.", style="bold")
