"""transcript-sync's restart with 100,000 completed meetings in its history.

The join's state is a Faust table rebuilt from its changelog topic when a worker starts, so a
restart reads what the changelog holds. Each case is a fresh consumer group whose changelog is
written before its worker starts, as the join writes it, always with `--in-flight` (200) meetings
whose state is kept (a video written, the rest to come):

- **baseline**: those meetings alone: a young deployment.
- **kept**: plus `--meetings` (100,000) completed meetings whose state stays in the table (three
  states each: the video, the transcript, the thumbnail), which is what the join did before it
  deleted a complete meeting's state. The table holds every meeting ever seen.
- **tombstoned**: the same history as the join writes it now (two states, then a tombstone when
  the meeting is complete), uncompacted: the embedded broker (Tansu) has no log cleaner, so this
  is the worst case, a changelog nobody compacted. The table ends with the in-flight meetings.
- **compacted**: what Kafka's log cleaner leaves of that (Faust creates the changelog
  `cleanup.policy=compact`): a key's earlier states go, its tombstone stays until it is older
  than `delete.retention.ms` (a day by default), then goes too. So this is the changelog of
  100,000 meetings completed within the last day; older history leaves nothing, the baseline.

Measured per case: seconds from the worker's start to its /readyz answering 200 (recovery over,
connections open), and its resident memory then. Printed with the ratio of each to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port, start_stack


@dataclass(frozen=True)
class Case:
    name: str
    completed: int  # meetings in history
    tombstoned: bool
    compacted: bool = False  # only each complete meeting's tombstone is left


@dataclass(frozen=True)
class Restart:
    case: Case
    records: int
    seconds: float
    rss_mib: float
    held: int  # meetings whose state the worker holds once ready


def state(bot_id: str, stage: int) -> bytes:
    """The join state of a meeting after its video (1), transcript (2), thumbnail (3)."""
    prefix = f"meeting-recordings/{uuid.uuid4()}/{uuid.uuid4()}/{bot_id}"
    value = {
        "bucket": "meeting-recordings",
        "recording_id": bot_id,
        "org_id": str(uuid.uuid4()),
        "video_key": f"{prefix}/video.mp4",
        "audio_key": f"{prefix}/audio.flac",
        "transcript_id": "meetingbaas:12" if stage >= 2 else None,
        "thumbnail_key": f"{prefix}/thumbnail.jpg" if stage >= 3 else None,
        "failure": None,
        "gladia_requested": False,
        "awaiting_transcript": True,
    }
    return json.dumps(value).encode()


def history(case: Case, in_flight: int) -> list[tuple[bytes, bytes | None]]:
    """The changelog's records (key, value; None a tombstone), oldest first."""
    records: list[tuple[bytes, bytes | None]] = []
    for _ in range(case.completed):
        bot_id = str(uuid.uuid4())
        key = json.dumps(bot_id).encode()  # the table's keys are JSON
        if case.compacted:
            records.append((key, None))
            continue
        records.append((key, state(bot_id, 1)))
        records.append((key, state(bot_id, 2)))
        records.append((key, None if case.tombstoned else state(bot_id, 3)))
    for _ in range(in_flight):
        bot_id = str(uuid.uuid4())
        records.append((json.dumps(bot_id).encode(), state(bot_id, 1)))
    return records


async def write_changelog(
    stack: Stack, topic: str, records: list[tuple[bytes, bytes | None]]
) -> None:
    partitions = stack.settings().kafka_topic_partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    # One record per batch: Tansu counts a batch of several records short in the end offsets it
    # reports, and Faust's recovery reads up to those, so it would stop before the end.
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=700,
    )
    await producer.start()
    try:
        batch = []
        for n, (key, value) in enumerate(records, 1):
            batch.append(await producer.send(topic, value, key=key))
            if len(batch) >= 5000:
                await asyncio.gather(*batch)
                batch.clear()
            if n % 50_000 == 0:
                print(f"  {n:,} of {len(records):,} changelog records written", flush=True)
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def restart(stack: Stack, workdir: Path, case: Case, in_flight: int) -> Restart:
    group = f"bench-join-{case.name}-{uuid.uuid4().hex[:8]}"
    records = history(case, in_flight)
    print(f"{case.name}: writing {len(records):,} changelog records", flush=True)
    await write_changelog(stack, f"{group}-meeting-join-changelog", records)
    port = free_port()
    env = {
        **stack.env(),
        "PATH": "/usr/bin:/bin",
        "NOTETAKER_LOG_FORMAT": "json",
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_FAUST_APP_ID": group,
        "NOTETAKER_FAUST_DATA_DIR": str(workdir / f"faust-{case.name}"),
    }
    process = ServiceProcess("transcript_sync", env, port, workdir / f"{case.name}.log")
    started = time.monotonic()
    process.start()
    try:
        await asyncio.to_thread(process.wait_ready, 900)  # polls /readyz every 0.1 s
        seconds = time.monotonic() - started
        assert process.process is not None
        memory = rss_mib(process.process.pid)
        async with httpx.AsyncClient(timeout=2) as http:
            metrics = (await http.get(f"{process.url}/metrics")).text
    finally:
        await asyncio.to_thread(process.stop)
    held = next(
        int(sample.value)
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "notetaker_transcript_sync_join_states"
    )
    print(
        f"{case.name}: ready after {seconds:.2f} s, {memory:.0f} MiB resident,"
        f" {held:,} meetings' state held",
        flush=True,
    )
    expected = in_flight + (0 if case.tombstoned else case.completed)
    if held != expected:  # the recovery stopped short: the timing would not mean what it says
        raise RuntimeError(f"{case.name}: the worker holds {held:,} states, not {expected:,}")
    return Restart(case, len(records), seconds, memory, held)


async def main(meetings: int, in_flight: int, names: list[str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="notetaker-bench-join-"))
    stack = await start_stack(workdir=workdir / "stack")
    every = [
        Case("baseline", 0, tombstoned=True),
        Case("kept", meetings, tombstoned=False),
        Case("tombstoned", meetings, tombstoned=True),
        Case("compacted", meetings, tombstoned=True, compacted=True),
    ]
    cases = [c for c in every if c.name == "baseline" or not names or c.name in names]
    try:
        results = [await restart(stack, workdir, case, in_flight) for case in cases]
    finally:
        stack.stop()
    base = results[0]
    print(f"\nrestart of transcript-sync, {in_flight} meetings in flight in every case:")
    print(
        f"{'case':<12}{'completed':>11}{'records':>10}{'held':>9}{'ready s':>9}{'x base':>8}"
        f"{'RSS MiB':>9}{'x base':>8}"
    )
    for r in results:
        print(
            f"{r.case.name:<12}{r.case.completed:>11,}{r.records:>10,}{r.held:>9,}"
            f"{r.seconds:>9.2f}{r.seconds / base.seconds:>8.2f}"
            f"{r.rss_mib:>9.0f}{r.rss_mib / base.rss_mib:>8.2f}"
        )
    print(
        "once its tombstones are older than delete.retention.ms, a compacted changelog holds"
        " the baseline's records: its restart is the baseline's"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meetings", type=int, default=100_000, help="completed, in history")
    parser.add_argument("--in-flight", type=int, default=200, help="meetings with state kept")
    parser.add_argument(
        "--cases",
        default="",
        help="comma-separated: kept, tombstoned, compacted (all when empty; baseline always)",
    )
    args = parser.parse_args([a for a in sys.argv[1:] if a != "join_restart"])
    names = [n for n in args.cases.split(",") if n]
    sys.exit(asyncio.run(main(args.meetings, args.in_flight, names)))
