"""Webhook to `meetings` row with S3 locations, for a ~20 MB recording on the embedded stack.

For each of N meetings the simulator sends a signed `bot.completed`; the time until the meeting
row shows its `s3://` video location is measured. The baseline, in the same run, is the copy
alone: the uploader's streaming copy of the same bytes from the same URL into the same S3.
Target (docs/architecture.md §12): median under 3 s (the cron design took minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from notetaker.devstack.media import make_recording
from notetaker.devstack.pipeline import start_pipeline
from notetaker.devstack.stack import start_stack
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.transfer import copy_clients, stream_to_s3

MIB = 1024 * 1024


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meetings", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=7.0, help="recording length (noise)")
    args = parser.parse_args([a for a in sys.argv[1:] if a != "pipeline"])
    print("making a noisy 640x480 recording ...", flush=True)
    recording = await asyncio.to_thread(make_recording, args.seconds, 640, 480, 25, True)
    print(
        f"recording: {len(recording.video) / MIB:.1f} MiB video, "
        f"{len(recording.audio) / MIB:.2f} MiB audio",
        flush=True,
    )
    stack = await start_stack()
    workdir = Path(tempfile.mkdtemp(prefix="notetaker-bench-"))
    pipeline = await start_pipeline(
        stack, workdir, recording=recording, completed_delay_seconds=0.0
    )
    simulator = pipeline.simulator
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        pipeline_s: list[float] = []
        for n in range(args.meetings):
            bot_id = simulator.create_bot(hold_completed=True)
            org, user = uuid.uuid4(), uuid.uuid4()
            meeting_id = await pool.fetchval(
                "INSERT INTO meetings (org_id, owner_user_id, title, start_time, source, bot_id)"
                " VALUES ($1, $2, 'bench', $3, 'notetaker', $4) RETURNING id",
                org,
                user,
                datetime.now(UTC),
                bot_id,
            )
            await pool.execute(
                "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id)"
                " VALUES ($1, $2, $3, $4)",
                org,
                user,
                meeting_id,
                bot_id,
            )
            simulator.complete(bot_id)
            deadline = time.monotonic() + 120
            while not await pool.fetchval(
                "SELECT video_url FROM meetings WHERE id = $1", meeting_id
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"meeting {meeting_id} got no video in 120 s")
                await asyncio.sleep(0.02)
            seen = time.time()
            sent = next(
                w["at"] for w in simulator.bot(bot_id)["webhooks"] if w["event"] == "bot.completed"
            )
            pipeline_s.append(seen - sent)
            print(f"  meeting {n + 1}: webhook to row {seen - sent:.2f} s", flush=True)

        copy_s: list[float] = []
        # The copy the uploader makes, with its default settings.
        defaults = UploaderSettings(source_url_keys=[stack.source_url_key])
        async with copy_clients(stack.settings(), 60) as (s3, http):
            for n in range(args.meetings):
                url = simulator.signed_url(bot_id, "video.mp4")
                started = time.perf_counter()
                await stream_to_s3(
                    http,
                    s3,
                    url=url,
                    bucket=stack.s3_bucket,
                    key=f"bench/copy-{n}.mp4",
                    content_type="video/mp4",
                    part_size=defaults.upload_part_size_bytes,
                    parts_in_flight=defaults.upload_parts_in_flight,
                )
                copy_s.append(time.perf_counter() - started)
                print(f"  copy {n + 1}: {copy_s[-1]:.2f} s", flush=True)
    finally:
        await pool.close()
        await pipeline.stop()
        stack.stop()
    median, base = statistics.median(pipeline_s), statistics.median(copy_s)
    print(f"\nwebhook to meetings row, median of {args.meetings}: {median:.2f} s (target < 3 s)")
    print(f"the copy alone (baseline), median: {base:.2f} s")
    print(f"ratio pipeline / copy: {median / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
