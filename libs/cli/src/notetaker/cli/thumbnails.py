"""`notetaker thumbnails`: meetings whose video is stored but whose thumbnail is missing, and
making one again.

Regenerating publishes the pipeline's own `thumbnail.requested` (what transcript-sync sends once
a video is stored): the uploader's thumbnailer writes the JPEG beside the video, counts it in the
org's stored level (a replaced thumbnail by the difference in size; the same bytes again, not at
all) and announces `thumbnail.generated`, and transcript-sync writes `meetings.thumbnail_url`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer
from botocore.exceptions import ClientError
from rich.table import Table

from notetaker.cli.connections import Connections, checked_ref, connect, json_lines, progress
from notetaker.cli.connections import show as show_table
from notetaker.cli.events import Stop, err, out, run
from notetaker.cli.lookup import find_recording
from notetaker.cli.settings import CliSettings
from notetaker.common.events import ThumbnailRequested
from notetaker.common.s3 import parse_s3_location, recording_key
from notetaker.common.settings import load_settings

app = typer.Typer(
    help="Thumbnails: find meetings without one, and make them again.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@dataclass(frozen=True)
class Missing:
    meeting_id: uuid.UUID
    recording_id: uuid.UUID
    bot_id: str
    org_id: uuid.UUID
    user_id: uuid.UUID
    video_url: str
    thumbnail_url: str | None
    video_since: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "meeting_id": str(self.meeting_id),
            "recording_id": str(self.recording_id),
            "bot_id": self.bot_id,
            "org_id": str(self.org_id),
            "video_url": self.video_url,
            "video_since": self.video_since.astimezone(UTC).isoformat(),
        }

    def request(self) -> ThumbnailRequested:
        bucket, video_key = parse_s3_location(self.video_url)
        return ThumbnailRequested(
            bot_id=self.bot_id,
            recording_id=self.recording_id,
            org_id=self.org_id,
            bucket=bucket,
            video_key=video_key,
            thumbnail_key=recording_key(
                self.org_id, self.user_id, self.recording_id, "thumbnail", "jpg"
            ),
        )


_MEDIA = """SELECT m.id AS meeting_id, r.id AS recording_id, m.bot_id, m.org_id, r.user_id,
    m.video_url, m.thumbnail_url, m.updated_at AS video_since
    FROM meetings m JOIN recordings r ON r.bot_id = m.bot_id
    WHERE m.source = 'notetaker' AND m.video_url IS NOT NULL
    AND m.media_deleted_at IS NULL AND r.media_deleted_at IS NULL"""


async def missing(pool: asyncpg.Pool, older_than_minutes: float) -> list[Missing]:
    rows = await pool.fetch(
        f"{_MEDIA} AND m.thumbnail_url IS NULL"
        " AND m.updated_at < now() - make_interval(secs => $1) ORDER BY m.updated_at",
        older_than_minutes * 60,
    )
    return [Missing(**dict(r)) for r in rows]


@app.command("missing")
def missing_command(
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            metavar="MINUTES",
            min=0,
            help="Only meetings whose video was stored at least this long ago (a new one gets"
            " its thumbnail within seconds).",
        ),
    ] = 10.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per meeting and line.")
    ] = False,
) -> None:
    """Meetings with a stored video and no thumbnail."""
    config = load_settings(CliSettings)

    async def find() -> list[Missing]:
        async with connect(config) as c:
            return await missing(c.pool, older_than)

    found = run(find())
    if json_output:
        json_lines(m.as_json() for m in found)
        return
    table = Table(title=f"{len(found)} meeting(s) without a thumbnail", title_justify="left")
    for column in ("Meeting", "Bot", "Org", "Video", "Video since"):
        table.add_column(column, overflow="fold")
    for m in found:
        table.add_row(
            str(m.meeting_id),
            m.bot_id,
            str(m.org_id),
            m.video_url,
            f"{m.video_since.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}",
        )
    show_table(table)


async def regenerate(settings: CliSettings, ref: str | None) -> list[dict[str, Any]]:
    async with connect(settings, kafka=True, s3=True) as c:
        if ref is None:
            chosen = await missing(c.pool, 0)
        else:
            recording = await find_recording(c.pool, ref)
            row = await c.pool.fetchrow(f"{_MEDIA} AND r.id = $1", recording.id)
            if row is None:
                raise Stop(
                    f"recording {recording.id} has no stored video in a notetaker meeting"
                    f" ({recording.state}): nothing to make a thumbnail of"
                )
            chosen = [Missing(**dict(row))]
        results = []
        with progress() as bar:
            task = bar.add_task("Requesting thumbnails", total=len(chosen))
            for meeting in chosen:
                results.append(await _request(c, meeting))
                bar.advance(task)
    return results


async def _request(c: Connections, meeting: Missing) -> dict[str, Any]:
    request = meeting.request()
    try:
        await c.need_s3().head_object(Bucket=request.bucket, Key=request.video_key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchKey", "NotFound"):
            raise
        return meeting.as_json() | {"outcome": "video_not_in_s3", "thumbnail_key": None}
    await c.need_publisher().publish(request)
    return meeting.as_json() | {"outcome": "requested", "thumbnail_key": request.thumbnail_key}


@app.command("regenerate")
def regenerate_command(
    ref: Annotated[
        str | None,
        typer.Argument(metavar="ID|BOT_ID", help="Recording id, meeting id or bot id."),
    ] = None,
    all_missing: Annotated[
        bool, typer.Option("--missing", help="Every meeting `thumbnails missing` lists.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per meeting and line.")
    ] = False,
) -> None:
    """Make a meeting's thumbnail again (or every missing one): publishes `thumbnail.requested`,
    as transcript-sync does once a video is stored."""
    if (ref is None) == (not all_missing) or (ref is not None and all_missing):
        raise typer.BadParameter("give one ID|BOT_ID, or --missing")
    if ref is not None:
        checked_ref(ref)
    config = load_settings(CliSettings)
    results = run(regenerate(config, ref))
    if json_output:
        json_lines(results)
        return
    for r in results:
        if r["outcome"] == "requested":
            out.print(f"requested a thumbnail for meeting {r['meeting_id']} (bot {r['bot_id']})")
        else:
            out.print(
                f"meeting {r['meeting_id']}: its video is not in S3 ({r['video_url']}):"
                " retry its upload first (`notetaker recordings retry`)",
                style="yellow",
            )
    requested = sum(r["outcome"] == "requested" for r in results)
    err.print(f"{requested} thumbnail(s) requested.", style="bold")
