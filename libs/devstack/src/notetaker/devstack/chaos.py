"""The chaos run: N meetings through the whole pipeline while every fault happens at once (services
SIGKILLed and restarted, PostgreSQL and Kafka cut off, S3 answering 503, webhooks duplicated, late
and out of order, a source answering 403, a source lying about its length, a meeting MeetingBaaS
refuses, meetings deleted by an operator mid-run), then a report of anything lost or done twice.

The fault plan is drawn from one seed (printed): the same seed gives the same plan, what happens
to what and when; how the processes interleave around it may differ. `make chaos ARGS=...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import struct
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from notetaker.common.envelope import EnvelopeError, from_message
from notetaker.common.events import TOPICS, MeetingSynced, dlq_topic
from notetaker.common.later_objects import LATER_NAME_OF
from notetaker.common.logs import configure_logging
from notetaker.common.s3 import s3_client
from notetaker.devstack import children
from notetaker.devstack.media import Recording, demo_recording
from notetaker.devstack.proxied import Proxied, start_proxied
from notetaker.devstack.services import SERVICES, ServiceProcess
from notetaker.devstack.simulator import ProviderSimulator, artifacts, people
from notetaker.devstack.stack import Stack, start_stack

MIB = 1024 * 1024
GIB = 1024**3
REFUSED_MEETING_URL = "https://meet.google.com/chaos-refused"


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    meetings: int = 50
    seed: int = 0
    max_mib: float = 300.0  # the largest recording: one meeting's is this size exactly
    span_seconds: float = 150.0  # meetings end and faults strike within this long
    outage_seconds: float = 30.0  # PostgreSQL, Kafka and S3 each this long
    kills_per_service: int = 3
    deletions: int = 2
    timeout_seconds: float = 900.0  # longest wait after the span for every meeting to end


@dataclass(frozen=True)
class PlannedMeeting:
    index: int
    ends_at: float  # seconds from the start of the run
    video_bytes: int
    transcript: str  # "meetingbaas" (the bot transcribes) or "gladia" (we ask Gladia)
    webhook_version: int
    scheduled: bool = False  # the scheduler deploys its bot (else: the bot exists already)
    refused: bool = False  # MeetingBaaS refuses its bot


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the start of the run
    kind: str
    target: str  # a service name, a dependency, or a meeting index
    seconds: float = 0.0  # how long it lasts (an outage; a killed service's time down)

    def describe(self) -> str:
        lasting = f" for {self.seconds:.1f}s" if self.seconds else ""
        return f"t+{self.at:6.1f}s  {self.kind:<12} {self.target}{lasting}"


@dataclass(frozen=True)
class Plan:
    seed: int
    meetings: tuple[PlannedMeeting, ...]
    faults: tuple[Fault, ...]

    def meetings_with(self, kind: str) -> set[int]:
        return {int(f.target) for f in self.faults if f.kind == kind}


# Faults that happen to one meeting's deliveries or source, in the order the plan picks them.
MEETING_FAULTS = ("forbidden", "lying", "duplicate", "duplicate", "late", "late")


def _video_size(rng: random.Random, max_bytes: int) -> int:
    """Mixed sizes: most recordings small, some mid-sized, a few up to the largest allowed."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(200_000, min(max_bytes, 2 * MIB))
    if roll < 0.9:
        return rng.randint(min(max_bytes, 2 * MIB), min(max_bytes, 20 * MIB))
    return rng.randint(min(max_bytes, 20 * MIB), max_bytes)


def make_plan(options: Options) -> Plan:
    """What happens when, drawn from `options.seed` alone."""
    rng = random.Random(options.seed)
    span = options.span_seconds
    count = max(options.meetings, len(MEETING_FAULTS) + options.deletions + 2)
    max_bytes = int(options.max_mib * MIB)
    meetings = [
        PlannedMeeting(
            index=i,
            ends_at=round(rng.uniform(0.0, span * 0.8), 1),
            video_bytes=_video_size(rng, max_bytes),
            transcript="gladia" if rng.random() < 0.4 else "meetingbaas",
            webhook_version=1 if rng.random() < 0.3 else 2,
        )
        for i in range(count - 2)
    ]
    # The largest recording at least once: a copy long enough to meet every fault mid-way.
    largest = rng.randrange(count - 2)
    meetings[largest] = replace(meetings[largest], video_bytes=max_bytes)
    # Every kind at least once, however few meetings the seed gave.
    if all(m.transcript != "gladia" for m in meetings):
        meetings[0] = replace(meetings[0], transcript="gladia")
    if all(m.webhook_version != 1 for m in meetings):
        meetings[1] = replace(meetings[1], webhook_version=1)
    # The last two meetings are on the calendar: the scheduler deploys their bots, and
    # MeetingBaaS refuses one of them.
    meetings.append(PlannedMeeting(count - 2, 0.0, 0, "meetingbaas", 2, scheduled=True))
    meetings.append(
        PlannedMeeting(count - 1, 0.0, 0, "meetingbaas", 2, scheduled=True, refused=True)
    )
    faults: list[Fault] = []
    for service in SERVICES:
        for _ in range(options.kills_per_service):
            faults.append(
                Fault(
                    round(rng.uniform(0.0, span), 1), "kill", service, round(rng.uniform(0.5, 4), 1)
                )
            )
    for dependency in ("postgres", "kafka", "s3"):
        at = round(rng.uniform(0.1 * span, max(0.1 * span, span - options.outage_seconds)), 1)
        faults.append(Fault(at, "outage", dependency, options.outage_seconds))
    # Each meeting fault and each deletion to a meeting of its own, among the bots that exist
    # from the start; a delivery fault strikes after its meeting ended (a source fault before).
    chosen = rng.sample(range(count - 2), len(MEETING_FAULTS) + options.deletions)
    kinds = [*MEETING_FAULTS, *["delete"] * options.deletions]
    for index, kind in zip(chosen, kinds, strict=True):
        ends = meetings[index].ends_at
        if kind in ("forbidden", "lying"):
            at = max(0.0, ends - 1.0)
        elif kind == "delete":
            at = ends + rng.uniform(0.1 * span, 0.3 * span)
        else:
            at = ends + rng.uniform(1.0, 0.2 * span)
        faults.append(Fault(round(at, 1), kind, str(index)))
    faults.sort(key=lambda f: (f.at, f.kind, f.target))
    return Plan(options.seed, tuple(meetings), tuple(faults))


def sized_recording(base: Recording, video_bytes: int, filler: bytes) -> Recording:
    """`base` with its video grown to `video_bytes` by a trailing MP4 `free` box (a valid MP4
    still: players and the thumbnailer skip it), so sizes vary without encoding anything."""
    missing = video_bytes - len(base.video) - 8
    if missing <= 0:
        return base
    box = struct.pack(">I", missing + 8) + b"free" + filler[:missing]
    return Recording(video=base.video + box, audio=base.audio)


# Compressed in time: upload retries, leases, Gladia polling and bot deploy retries in seconds.
CHAOS_SERVICE_ENV = {
    "uploader": {
        "NOTETAKER_UPLOAD_RETRY_DELAYS_SECONDS": "[2, 5, 10]",
        "NOTETAKER_UPLOAD_LEASE_SECONDS": "15",
    },
    # Reconciliation with S3 joins the run (it corrects levels and marks meetings expired).
    "metrics": {"NOTETAKER_STORAGE_RECONCILE_INTERVAL_SECONDS": "15"},
    "scheduler": {
        "NOTETAKER_GLADIA_POLL_AFTER_SECONDS": "10",
        "NOTETAKER_GLADIA_POLL_EVERY_SECONDS": "3",
        "NOTETAKER_BOT_DEPLOY_RETRY_DELAYS_SECONDS": "[3, 10]",
        "NOTETAKER_UPLOAD_LEASE_SECONDS": "15",
    },
}


# --- the run -------------------------------------------------------------------------------------


@dataclass
class LiveMeeting:
    plan: PlannedMeeting
    id: uuid.UUID
    org_id: uuid.UUID
    bot_id: str | None
    recording: Recording | None
    completed_at: float | None = None  # seconds from the start, when first seen complete
    deleted: bool = False


@dataclass
class Run:
    proxied: Proxied
    db: asyncpg.Pool
    plan: Plan
    options: Options
    started: float
    say: Callable[[str], None]
    meetings: list[LiveMeeting] = field(default_factory=list)
    fault_ends: list[float] = field(default_factory=list)
    outage_ends: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    crashes: Counter[str] = field(default_factory=Counter)  # exits the supervisor restarted
    # held while a service is down on purpose, or being restarted after it exited
    kill_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.now()))


async def _create_meetings(run: Run, base: Recording) -> None:
    sim = run.proxied.pipeline.simulator
    sim.refused_meeting_urls.add(REFUSED_MEETING_URL)
    largest = max((m.video_bytes for m in run.plan.meetings), default=0)
    rng = random.Random(run.plan.seed)  # randbytes takes at most 2^31 bits at a time
    filler = b"".join(rng.randbytes(8 * MIB) for _ in range(0, largest, 8 * MIB))
    user = uuid.uuid4()
    for planned in run.plan.meetings:
        org = uuid.uuid4()
        if planned.scheduled:
            url = REFUSED_MEETING_URL if planned.refused else "https://meet.google.com/chaos-sched"
            meeting_id = await run.db.fetchval(
                "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url,"
                " source) VALUES ($1, $2, 'chaos', now(), $3, 'notetaker') RETURNING id",
                org,
                user,
                url,
            )
            run.meetings.append(LiveMeeting(planned, meeting_id, org, None, None))
            continue
        recording = sized_recording(base, planned.video_bytes, filler)
        bot_id = sim.create_bot(
            hold_completed=True,
            transcription=planned.transcript == "meetingbaas",
            recording=recording,
            webhook_version=planned.webhook_version,
        )
        meeting_id = await run.db.fetchval(
            "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
            " bot_id) VALUES ($1, $2, 'chaos', now(), 'https://meet.google.com/chaos', 'notetaker',"
            " $3) RETURNING id",
            org,
            user,
            bot_id,
        )
        await run.db.execute(
            "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id) VALUES ($1, $2, $3, $4)",
            org,
            user,
            meeting_id,
            bot_id,
        )
        run.meetings.append(LiveMeeting(planned, meeting_id, org, bot_id, recording))


async def _end_meeting(run: Run, meeting: LiveMeeting) -> None:
    await run.until(meeting.plan.ends_at)
    assert meeting.bot_id is not None
    run.proxied.pipeline.simulator.complete(meeting.bot_id)


async def _completed_body(run: Run, bot_id: str) -> None:
    """Wait until the bot has sent its `bot.completed` (the simulator keeps it to resend)."""
    bot = run.proxied.pipeline.simulator.bots[bot_id]
    while (
        bot.completed_body is None
        and run.now() < run.options.span_seconds + run.options.timeout_seconds
    ):
        await asyncio.sleep(0.2)


async def _strike(run: Run, fault: Fault) -> None:
    await run.until(fault.at)
    proxied, sim = run.proxied, run.proxied.pipeline.simulator
    run.say(f"  fault  {fault.describe()}  (at t+{run.now():.1f}s)")
    if fault.kind == "kill":
        process = proxied.pipeline.services.processes[fault.target]
        # Two kills of one service that overlap go one after the other: never two processes.
        async with run.kill_locks.setdefault(fault.target, asyncio.Lock()):
            await asyncio.to_thread(process.kill)
            await asyncio.sleep(fault.seconds)
            process.start()  # from the main thread (see `children.spawn`); not awaited ready
    elif fault.kind == "outage":
        if fault.target == "s3":
            proxied.s3.fail_all(503)
        else:
            getattr(proxied, fault.target).down()
        await asyncio.sleep(fault.seconds)
        if fault.target == "s3":
            proxied.s3.heal()
        else:
            getattr(proxied, fault.target).restore()
        run.outage_ends.append(run.now())
    else:
        meeting = run.meetings[int(fault.target)]
        assert meeting.bot_id is not None
        bot_id = meeting.bot_id
        if fault.kind == "forbidden":
            sim.revoke_at_completion(bot_id)
        elif fault.kind == "lying":
            sim.lie_about_length(bot_id)
        elif fault.kind == "duplicate":
            await _completed_body(run, bot_id)
            await asyncio.gather(
                sim.resend_completed(bot_id), sim.resend_completed(bot_id, new_delivery_id=True)
            )
        elif fault.kind == "late":
            await _completed_body(run, bot_id)
            await sim.resend_status(bot_id)  # a status after the end: out of order
            await sim.resend_completed(bot_id, new_delivery_id=True)
        elif fault.kind == "delete":
            await _delete(run, meeting)
            return  # an operator's deletion is work to check, not a fault to recover from
    run.fault_ends.append(run.now())


def _operator_env(run: Run) -> dict[str, str]:
    """The operator tool's environment: the scheduler's settings (the stack through the proxies,
    the providers and their keys), nothing of this process's own NOTETAKER_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTETAKER_")}
    scheduler = run.proxied.pipeline.services.processes["scheduler"].env
    return env | {k: v for k, v in scheduler.items() if k.startswith("NOTETAKER_")}


async def _delete(run: Run, meeting: LiveMeeting) -> None:
    """`notetaker meetings delete` of a complete meeting, as an operator runs it (again until it
    answers: a dependency may be down), then its `bot.completed` delivered again, anew: what is
    deleted must stay deleted."""
    while meeting.completed_at is None:
        if run.now() > run.options.span_seconds + run.options.timeout_seconds:
            run.notes.append(f"meeting {meeting.plan.index}: never complete, so never deleted")
            return
        await asyncio.sleep(0.5)
    tool = Path(sys.executable).with_name("notetaker")
    for attempt in range(1, 31):
        process = await asyncio.create_subprocess_exec(
            str(tool),
            "meetings",
            "delete",
            str(meeting.id),
            "--yes",
            "--json",
            "--by",
            "chaos@run",
            env=_operator_env(run),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
        if process.returncode == 0:
            meeting.deleted = True
            outcomes = [json.loads(line).get("outcome") for line in stdout.decode().splitlines()]
            run.say(f"  delete meeting {meeting.plan.index}: {outcomes} (try {attempt})")
            break
        await asyncio.sleep(2)
    else:
        run.notes.append(f"meeting {meeting.plan.index}: deletion never succeeded: {stderr!r}")
        return
    assert meeting.bot_id is not None
    await run.proxied.pipeline.simulator.resend_completed(meeting.bot_id, new_delivery_id=True)


async def _is_complete(db: asyncpg.Pool, meeting: LiveMeeting) -> bool:
    row = await db.fetchrow(
        "SELECT m.video_url, m.transcript_text, m.thumbnail_url, r.s3_upload_status"
        " FROM meetings m JOIN recordings r ON r.bot_id = m.bot_id WHERE m.id = $1",
        meeting.id,
    )
    return bool(
        row is not None
        and row["video_url"]
        and row["transcript_text"]
        and row["thumbnail_url"]
        and row["s3_upload_status"] == "complete"
    )


def _exited(process: ServiceProcess) -> bool:
    return process.process is not None and process.process.poll() is not None


async def _supervise(run: Run, stop: asyncio.Event) -> None:
    """Restart a service that exited on its own, 2 s later, as Kubernetes restarts a pod whose
    container exits (a service started while Kafka or PostgreSQL is unreachable may give up)."""
    while not stop.is_set():
        for name, process in run.proxied.pipeline.services.processes.items():
            lock = run.kill_locks.setdefault(name, asyncio.Lock())
            if not _exited(process) or lock.locked():
                continue  # running, or a planned kill holds it down
            async with lock:
                await asyncio.sleep(2)
                if _exited(process):
                    run.crashes[name] += 1
                    run.say(f"  {name} exited on its own: restarted (t+{run.now():.1f}s)")
                    process.start()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _watch(run: Run, stop: asyncio.Event) -> None:
    """Note when each meeting is first seen complete (a dependency may be down: try again)."""
    while not stop.is_set():
        for meeting in run.meetings:
            if meeting.completed_at is not None or meeting.plan.refused:
                continue
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                if meeting.bot_id is None:
                    meeting.bot_id = await run.db.fetchval(
                        "SELECT bot_id FROM meetings WHERE id = $1", meeting.id
                    )
                if meeting.bot_id is not None and await _is_complete(run.db, meeting):
                    meeting.completed_at = run.now()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _expected(run: Run) -> list[LiveMeeting]:
    return [m for m in run.meetings if not m.plan.refused]


async def drive(run: Run, base: Recording) -> None:
    await _create_meetings(run, base)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(run, stop))
    supervisor = asyncio.create_task(_supervise(run, stop))
    try:
        work = [_end_meeting(run, m) for m in run.meetings if not m.plan.scheduled]
        work += [_strike(run, f) for f in run.plan.faults]
        await asyncio.gather(*work)
        run.say(f"every fault struck; waiting for the meetings (t+{run.now():.1f}s)")

        deadline = run.now() + run.options.timeout_seconds
        while run.now() < deadline:
            left = [m.plan.index for m in _expected(run) if m.completed_at is None]
            if not left:
                break
            if int(run.now()) % 10 == 0:
                run.say(f"  t+{run.now():.0f}s: meetings not complete yet: {left}")
            await asyncio.sleep(1)
        await asyncio.sleep(5)  # late effects (usage, events) have a moment to land
    finally:
        stop.set()
        await watcher
        await supervisor


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[tuple[str, str, bool]] = field(default_factory=list)  # (what, value, clean)

    def add(self, what: str, value: str, clean: bool) -> None:
        self.lines.append((what, value, clean))

    @property
    def clean(self) -> bool:
        return all(ok for _, _, ok in self.lines)

    def render(self) -> str:
        width = max((len(w) for w, _, _ in self.lines), default=0)
        rows = [f"  {'ok ' if ok else 'BAD'} {w:<{width}}  {v}" for w, v, ok in self.lines]
        return "\n".join(rows)


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` (all partitions), read until the end and then quiet for a second
    (the embedded broker may report an end offset short)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        records: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            got = [r for rs in batch.values() for r in rs]
            records += got
            at_end = all([await consumer.position(tp) >= ends[tp] for tp in assigned])
            if not got and at_end:
                return records
    finally:
        await consumer.stop()


def _index_of(run: Run, meeting_id: uuid.UUID) -> int:
    return next(m.plan.index for m in run.meetings if m.id == meeting_id)


GLADIA_RESULT_NAME = LATER_NAME_OF["gladia_result"]


def gladia_delivered(sim: ProviderSimulator, bot_id: str) -> Callable[[bytes], bool] | None:
    """Whether an archived Gladia result is what Gladia delivered for the bot's job: its
    callback's body byte for byte, or the answer of `GET /v2/pre-recorded/{id}` with the job's
    result (the callback refused while ingest was down: the poller read the job); None when no
    job of the bot's finished."""
    jobs = [
        j
        for j in sim.jobs.values()
        if (j.custom_metadata or {}).get("bot_id") == bot_id and j.status == "done"
    ]
    if not jobs:
        return None
    job = jobs[-1]
    return lambda data: data == job.delivered or json.loads(data).get("result") == job.result


async def report(run: Run) -> Report:
    out = Report()
    db, sim, stack = run.db, run.proxied.pipeline.simulator, run.proxied.pipeline.stack
    expected = [m for m in _expected(run) if not m.deleted]
    deleted = [m for m in run.meetings if m.deleted]
    complete = [m for m in expected if m.bot_id and await _is_complete(db, m)]
    out.add(
        "meetings complete", f"{len(complete)} of {len(expected)}", len(complete) == len(expected)
    )
    bots = {m.bot_id for m in run.meetings if m.bot_id}

    settings = stack.settings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    same = 0
    held: dict[uuid.UUID, int] = {}
    expected_artifacts = same_artifacts = 0
    missing_artifacts: list[str] = []
    kept: dict[uuid.UUID, int] = {}
    open_uploads = 0
    async with s3_client(settings) as s3:
        for m in complete:
            row = await db.fetchrow(
                "SELECT s3_video_key, s3_audio_key FROM recordings WHERE bot_id = $1", m.bot_id
            )
            assert m.bot_id is not None
            source = m.recording or sim.bots[m.bot_id].recording
            video = await s3.get_object(Bucket=settings.s3_bucket, Key=row["s3_video_key"])
            body = await video["Body"].read()
            ok = hashlib.sha256(body).hexdigest() == source.video_sha256
            if row["s3_audio_key"]:
                audio = await s3.get_object(Bucket=settings.s3_bucket, Key=row["s3_audio_key"])
                ok = ok and hashlib.sha256(await audio["Body"].read()).hexdigest() == (
                    source.audio_sha256
                )
            same += ok
            # Every artifact the bot handed over (chat, transcript JSON, raw transcription,
            # diarization), stored under the recording's prefix as its file, with the bytes it
            # served. (API v2 names them in `bot.completed`; v1's `complete` names none.)
            served = artifacts(sim.bots[m.bot_id]) if m.plan.webhook_version == 2 else {}
            # The participants and speakers its webhook carried inline (v1: the speakers), as
            # `participants.json` / `speakers.json`: the JSON stored is the lists delivered.
            listed = people(sim.bots[m.bot_id])
            # Gladia's result, archived as `gladia-result.json`: its callback's body as posted
            # (or, without a callback, the result `GET /v2/pre-recorded/{id}` answered).
            gladia = gladia_delivered(sim, m.bot_id) if m.plan.transcript == "gladia" else None
            expected_artifacts += len(served) + len(listed) + (gladia is not None)
            found = set()
            for stored in await db.fetch(
                "SELECT a.kind, a.s3_key, a.error FROM recording_artifacts a JOIN recordings r"
                " ON r.id = a.recording_id WHERE r.bot_id = $1",
                m.bot_id,
            ):
                if stored["s3_key"] is None:
                    missing_artifacts.append(f"{m.plan.index}:{stored['kind']}:{stored['error']}")
                    continue
                name = stored["s3_key"].rsplit("/", 1)[-1]
                got = await s3.get_object(Bucket=settings.s3_bucket, Key=stored["s3_key"])
                data = await got["Body"].read()
                if name in listed:
                    same_artifacts += json.loads(data) == listed[name]
                elif name == GLADIA_RESULT_NAME:
                    same_artifacts += gladia is not None and gladia(data)
                else:
                    same_artifacts += name in served and data == served[name]
                found.add(name)
            wanted = set(served) | set(listed) | ({GLADIA_RESULT_NAME} if gladia else set())
            missing_artifacts += [f"{m.plan.index}:{name}" for name in sorted(wanted - found)]
        for m in run.meetings:
            prefix = f"meeting-recordings/{m.org_id}/"
            listing = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
            objects = listing.get("Contents", [])
            # the stored level counts every object: video, audio, artifacts and the thumbnail
            held[m.org_id] = sum(o["Size"] for o in objects)
            kept[m.org_id] = len(objects)
            uploads = await s3.list_multipart_uploads(Bucket=settings.s3_bucket, Prefix=prefix)
            open_uploads += len(uploads.get("Uploads", []))
    out.add(
        "recordings whose S3 bytes equal the source (sha256)",
        f"{same} of {len(complete)}",
        same == len(complete) == len(expected),
    )

    out.add(
        # chat, transcripts, diarization as served; participants, speakers as the webhook listed;
        # Gladia's result as Gladia delivered it
        "artifacts in S3 equal to what the bot handed over",
        f"{same_artifacts} of {expected_artifacts}"
        + (f" (not stored: {missing_artifacts[:6]})" if missing_artifacts else ""),
        same_artifacts == expected_artifacts > 0,
    )

    dead = 0
    for topic in TOPICS:
        records = await read_topic(stack.kafka_bootstrap_servers, dlq_topic(topic))
        dead += sum(1 for r in records if r.key is not None and r.key.decode() in bots)
    out.add("dead letters", str(dead), dead == 0)

    per_meeting = Counter(
        str(b.extra.get("meeting_id")) for b in sim.bots.values() if b.extra.get("meeting_id")
    )
    scheduled = {str(m.id) for m in run.meetings if m.plan.scheduled}
    several = sum(1 for mid, n in per_meeting.items() if mid in scheduled and n > 1)
    rows = await db.fetch(
        "SELECT meeting_id, count(*) AS n FROM recordings WHERE meeting_id = ANY($1::uuid[])"
        " GROUP BY meeting_id HAVING count(*) > 1",
        [m.id for m in run.meetings],
    )
    several += len(rows)
    refused = [m for m in run.meetings if m.plan.refused]
    refused_bots = sum(per_meeting.get(str(m.id), 0) for m in refused)
    out.add("meetings with more than one bot", str(several), several == 0)
    out.add(
        "refused meeting: bots MeetingBaaS gave it",
        f"{refused_bots} ({len(sim.create_requests)} create requests in all)",
        refused_bots == 0,
    )
    out.add("multipart uploads left open", str(open_uploads), open_uploads == 0)

    stuck = await db.fetchval(
        "SELECT count(*) FROM recordings WHERE bot_id = ANY($1::text[])"
        " AND (s3_upload_status IS NULL OR s3_upload_status::text NOT IN ('complete'))"
        " AND media_deleted_at IS NULL",
        list(bots),
    )
    out.add("recording rows not complete (pending, uploading, failed)", str(stuck), stuck == 0)

    synced = await read_topic(stack.kafka_bootstrap_servers, MeetingSynced.type)
    ids: Counter[str] = Counter()
    facts: Counter[tuple[Any, ...]] = Counter()
    for record in synced:
        if record.key is None or record.key.decode() not in bots:
            continue
        try:
            envelope = from_message(record.headers, record.key, record.value)
        except EnvelopeError:
            continue
        event = envelope.event
        assert isinstance(event, MeetingSynced)
        ids[envelope.id] += 1
        facts[(event.meeting_id, event.has_video, event.has_transcript, event.has_thumbnail)] += 1
    twice_id = sum(n - 1 for n in ids.values())
    twice_fact = sum(n - 1 for n in facts.values())
    repeated = [fact for fact, n in facts.items() if n > 1][:3]
    out.add(
        "duplicate meeting.synced (by event id / by content)",
        f"{twice_id} / {twice_fact} of {sum(ids.values())}"
        + (f" (e.g. {[_index_of(run, f[0]) for f in repeated]}: {repeated})" if repeated else ""),
        twice_id == twice_fact == 0,
    )

    levels = {
        r["org_id"]: float(r["value"])
        for r in await db.fetch(
            "SELECT DISTINCT ON (org_id) org_id, value FROM s3_usage_metrics"
            " WHERE org_id = ANY($1::uuid[]) AND metric_type = 'storage_gb'"
            " ORDER BY org_id, date DESC",
            [m.org_id for m in run.meetings],
        )
    }
    wrong = [
        m.plan.index
        for m in run.meetings
        if not m.plan.refused and abs(levels.get(m.org_id, 0.0) * GIB - held[m.org_id]) > 64
    ]
    example = ""
    if wrong:
        first = run.meetings[sorted(wrong)[0]]
        level = levels.get(first.org_id, 0.0) * GIB
        example = f" (meeting {first.plan.index}: level {level:.0f} B, S3 {held[first.org_id]} B)"
    out.add(
        "orgs whose stored level differs from S3 (usage counted twice or missed)",
        f"{len(wrong)} {sorted(wrong)[:10]}{example}",
        not wrong,
    )
    runs = await db.fetchrow(
        "SELECT count(*) AS runs, coalesce(sum(corrected_bytes), 0) AS corrected"
        " FROM storage_reconciliations"
    )
    corrected = await db.fetchval(
        "SELECT count(DISTINCT org_id) FROM storage_reconciliation_orgs"
        " WHERE corrected_bytes <> 0 AND org_id = ANY($1::uuid[])",
        [m.org_id for m in run.meetings],
    )
    out.add(
        # Nothing was counted wrong, so reconciliation, running all along, corrects nothing.
        "reconciliation with S3 during the run: runs (orgs corrected, bytes)",
        f"{runs['runs']} ({corrected}, {int(runs['corrected']):+d} B)",
        runs["runs"] > 0 and corrected == 0 and int(runs["corrected"]) == 0,
    )
    expired = await db.fetch(
        "SELECT id FROM meetings WHERE id = ANY($1::uuid[]) AND recording_status = 'media_expired'",
        [m.id for m in run.meetings],
    )
    out.add(
        "meetings marked media_expired (nothing expired: must be none)",
        str([_index_of(run, r["id"]) for r in expired]),
        not expired,
    )

    # Every webhook ingest accepted for a bot still there keeps its raw body (a `fact:` id marks
    # the same delivery a second time; the run re-applies nothing).
    kept_bots = [m.bot_id for m in run.meetings if m.bot_id and not m.deleted]
    bodiless = await db.fetch(
        "SELECT d.provider, d.delivery_id FROM webhook_deliveries d WHERE d.bot_id = ANY($1)"
        " AND d.delivery_id NOT LIKE 'fact:%' AND NOT EXISTS (SELECT 1 FROM webhook_bodies b"
        " WHERE b.provider = d.provider AND b.delivery_id = d.delivery_id)",
        kept_bots,
    )
    accepted = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE bot_id = ANY($1)"
        " AND delivery_id NOT LIKE 'fact:%'",
        kept_bots,
    )
    out.add(
        "accepted webhooks without their raw body kept",
        f"{len(bodiless)} of {accepted}"
        + (f" (e.g. {[tuple(r) for r in bodiless[:3]]})" if bodiless else ""),
        not bodiless and accepted > 0,
    )

    undeleted = []
    for m in deleted:
        row = await db.fetchrow(
            "SELECT recording_status, video_url, transcript_text FROM meetings WHERE id = $1",
            m.id,
        )
        bodies = await db.fetchval(
            "SELECT count(*) FROM webhook_bodies WHERE bot_id = $1", m.bot_id
        )
        if row["recording_status"] != "deleted" or row["video_url"] or kept[m.org_id] or bodies:
            undeleted.append(m.plan.index)
    out.add(
        "deleted meetings that stayed deleted (media, rows, raw webhook bodies)",
        f"{len(deleted) - len(undeleted)} of {len(deleted)}",
        not undeleted and len(deleted) == run.options.deletions,
    )

    last_fault = max(run.fault_ends, default=0.0)
    done = [m.completed_at for m in expected if m.completed_at is not None]
    last_done = max(done, default=0.0)
    last_outage = max(run.outage_ends, default=0.0)
    out.add(
        "last outage over to last meeting complete",
        f"{max(0.0, last_done - last_outage):.1f}s (outage over t+{last_outage:.1f}s)",
        True,
    )
    out.add(
        "last fault to last meeting complete",
        f"{max(0.0, last_done - last_fault):.1f}s (last fault ended t+{last_fault:.1f}s,"
        f" last meeting complete t+{last_done:.1f}s)",
        True,
    )
    out.add(
        # A service waits out an outage, started in one or not: an exit is a crash (the run
        # restarts it, as Kubernetes would, and counts it here).
        "services that exited on their own (restarted by the run)",
        str(dict(run.crashes) or "none"),
        not run.crashes,
    )
    for note in run.notes:
        out.add("note", note, False)
    return out


async def chaos(
    stack: Stack, options: Options, workdir: Path, say: Callable[[str], None] = print
) -> Report:
    """Run the plan of `options.seed` against a pipeline on `stack`; the report."""
    plan = make_plan(options)
    say(f"chaos run: seed {options.seed}, {len(plan.meetings)} meetings, {len(plan.faults)} faults")
    for planned in plan.meetings:
        kind = "scheduled, refused" if planned.refused else "scheduled" if planned.scheduled else ""
        say(
            f"  meeting {planned.index:3d}: ends t+{planned.ends_at:6.1f}s"
            f" {planned.video_bytes / MIB:7.2f} MiB {planned.transcript:<11}"
            f" v{planned.webhook_version} {kind}"
        )
    for fault in plan.faults:
        say(f"  plan   {fault.describe()}")
    base = await asyncio.to_thread(demo_recording)
    proxied = await start_proxied(
        stack,
        workdir,
        per_service_env=CHAOS_SERVICE_ENV,
        recording=base,
        delivery_attempts=200,  # Svix retries for a day: here 200 tries, 5 s apart at most
    )
    db = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    assert db is not None
    run = Run(proxied, db, plan, options, time.monotonic(), say)
    try:
        await drive(run, base)
        return await report(run)
    finally:
        await db.close()
        await proxied.stop()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    defaults = Options()
    parser.add_argument("--meetings", type=int, default=defaults.meetings)
    parser.add_argument("--seed", type=int, default=None, help="the fault plan's seed (random)")
    parser.add_argument(
        "--max-mib",
        type=float,
        default=defaults.max_mib,
        help="the largest recording in MiB (300): one meeting's, the others' mixed below it",
    )
    parser.add_argument("--span", type=float, default=defaults.span_seconds)
    parser.add_argument(
        "--outage-seconds", type=float, default=defaults.outage_seconds, help="each outage"
    )
    parser.add_argument("--kills", type=int, default=defaults.kills_per_service)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_seconds)
    parser.add_argument(
        "--workdir", type=lambda p: Path(p).absolute(), default=Path(".notetaker/chaos")
    )
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    configure_logging("chaos", "WARNING", "console")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    options = Options(
        meetings=args.meetings,
        seed=seed,
        max_mib=args.max_mib,
        span_seconds=args.span,
        outage_seconds=args.outage_seconds,
        kills_per_service=args.kills,
        timeout_seconds=args.timeout,
    )
    for line in children.reap(children.orphans()):
        print(f"stopped a process an earlier, killed run left behind: {line}")
    started = time.monotonic()
    workdir = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    stack = await start_stack(workdir=workdir / "stack")
    try:
        result = await chaos(stack, options, workdir, print)
    finally:
        stack.stop()
        for line in children.reap(children.survivors(children.own_tag())):
            print(f"LEAK: still running after the stop, now killed: {line}")
    print(
        f"\nchaos report (seed {seed}, {time.monotonic() - started:.0f}s in all, logs {workdir}):"
    )
    print(result.render())
    print("clean" if result.clean else "NOT CLEAN: something was lost or done twice")
    return 0 if result.clean else 1


def cli() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main()))


if __name__ == "__main__":
    cli()
