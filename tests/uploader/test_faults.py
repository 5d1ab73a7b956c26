"""The uploader service under faults, as processes against real HTTP sources, Kafka, PostgreSQL
and an S3 endpoint that can be told to fail: each fault ends correctly and nothing is left open
(after every test, no multipart upload of its recordings is still open in the bucket).

A test that must act while a copy is under way holds the source at a `Gate` and waits for what
it needs (the body held, the parts the ledger vouches for), never for a stretch of time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.events import (
    TOPICS,
    RecordingCompleted,
    RecordingUploaded,
    RecordingUploadFailed,
    dlq_topic,
)
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key
from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.s3_proxy import RESET, Hold, S3FaultProxy, is_complete, is_part
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.sources import Fault, Gate, RecordingSource
from notetaker.devstack.stack import Stack, free_port
from notetaker.uploader.keys import SourceUrlCipher
from tests.conftest import eventually, records_up_to_marker
from tests.e2e.conftest import events_for

MIB = 1024 * 1024


@dataclass
class ProviderApi:
    """MeetingBaaS's `GET /v2/bots/{bot_id}` for the test's recordings: each answer signs the
    bot's file anew (a signature of its own, beginning with the source's), in MeetingBaaS's
    envelope and field names; a bot in `gone` is one MeetingBaaS no longer keeps (404), one in
    `audio_only` has only its audio (`{bot_id}.flac`, `video` null)."""

    source: RecordingSource
    port: int = field(default_factory=free_port)
    gone: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    audio_only: set[str] = field(default_factory=set)
    _server: InLoopServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get_bot(self, request: Request) -> Response:
        bot_id = request.path_params["bot_id"]
        if request.headers.get("x-meeting-baas-api-key") != PROVIDER_KEY:
            return JSONResponse({"success": False, "error": "Invalid API key"}, 401)
        self.asked.append(bot_id)
        if bot_id in self.gone:
            return JSONResponse({"success": False, "error": "Bot not found"}, 404)
        signature = f"{self.source.signature}R{len(self.asked)}"
        data: dict[str, Any] = {"bot_id": bot_id, "status": "completed"}
        if bot_id in self.audio_only:
            data |= {"video": None, "audio": self.source.url(f"{bot_id}.flac", signature)}
        else:
            data |= {"video": self.source.url(f"{bot_id}.mp4", signature), "audio": None}
        return JSONResponse({"success": True, "data": data})

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v2/bots/{bot_id}", self.get_bot)])
        self._server = InLoopServer(app, self.port)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()


PROVIDER_KEY = "meetingbaas-key-of-the-fault-tests"


@dataclass
class Workers:
    stack: Stack
    source: RecordingSource
    proxy: S3FaultProxy
    publisher: EventPublisher
    logdir: Path
    uploader: ServiceProcess
    scheduler: ServiceProcess
    provider: ProviderApi
    bots: list[str] = field(default_factory=list)  # recordings the current test created

    def new_uploader(self) -> ServiceProcess:
        """The uploader that replaces the current one (which the test killed)."""
        self.uploader = self.another_uploader()
        return self.uploader

    def another_uploader(self) -> ServiceProcess:
        """One more uploader worker, not started; the test stops it."""
        port = free_port()
        return ServiceProcess(
            "uploader",
            {**self.uploader.env, "NOTETAKER_HTTP_PORT": str(port)},
            port,
            self.logdir / f"uploader-{uuid.uuid4()}.log",
        )


@pytest.fixture(scope="module")
async def workers(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Workers]:
    source = RecordingSource()
    await source.start()
    assert stack.s3_endpoint_url is not None
    proxy = S3FaultProxy(stack.s3_endpoint_url)
    await proxy.start()
    publisher = EventPublisher(stack.settings(service_name="ingest"))
    await publisher.start()
    provider = ProviderApi(source)
    await provider.start()
    logdir = tmp_path_factory.mktemp("upload-workers")
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_S3_ENDPOINT_URL": proxy.url,
        "NOTETAKER_UPLOAD_PART_SIZE_BYTES": str(5 * MIB),
        "NOTETAKER_UPLOAD_RETRY_DELAYS_SECONDS": "[1, 1, 1]",
        "NOTETAKER_UPLOAD_MAX_ATTEMPTS": "3",
        # An S3 request gives up after 4 tries (3 retries with botocore's backoff, seconds, not
        # the half minute of 6 tries): S3 answering 503 for good becomes an outage sooner.
        "NOTETAKER_S3_MAX_ATTEMPTS": "4",
        # A source held at a gate sends nothing while the test looks around: no read timeout
        # may end the copy meanwhile.
        "NOTETAKER_SOURCE_TIMEOUT_SECONDS": "120",
        "NOTETAKER_SCHEDULER_INTERVAL_SECONDS": "0.5",
        "NOTETAKER_UPLOAD_PROGRESS_LOG_SECONDS": "0",  # a progress line after every part
        # A killed worker's lease runs out soon, and the scheduler requests its recording again.
        "NOTETAKER_UPLOAD_LEASE_SECONDS": "3",
        "NOTETAKER_MEETINGBAAS_API_URL": provider.url,
        "NOTETAKER_MEETINGBAAS_API_KEY": PROVIDER_KEY,
    }
    processes = {}
    for name in ("uploader", "scheduler"):
        port = free_port()
        processes[name] = ServiceProcess(
            name, {**env, "NOTETAKER_HTTP_PORT": str(port)}, port, logdir / f"{name}.log"
        )
        processes[name].start()
    for process in processes.values():
        await asyncio.to_thread(process.wait_ready)
    crew = Workers(
        stack,
        source,
        proxy,
        publisher,
        logdir,
        processes["uploader"],
        processes["scheduler"],
        provider,
    )
    yield crew
    crew.uploader.stop()
    crew.scheduler.stop()
    await provider.stop()
    await publisher.stop()
    await proxy.stop()
    await source.stop()


async def new_recording(
    db: asyncpg.Pool,
    workers: Workers,
    data: bytes,
    bot_id: str | None = None,
    received: datetime | None = None,
    fault: Fault | None = None,
) -> tuple[str, str]:
    """A deployed bot whose provider now says the recording is ready, its source serving `data`
    with `fault` from the first request; (bot_id, file name)."""
    bot_id = bot_id or str(uuid.uuid4())
    name = f"{bot_id}.mp4"
    workers.source.files[name] = data
    if fault is not None:
        workers.source.faults[name] = fault
    workers.bots.append(bot_id)
    await known_recording(db, bot_id)
    await workers.publisher.publish(
        RecordingCompleted(
            bot_id=bot_id,
            video_url=workers.source.url(name),
            urls_received_at=received or datetime.now(UTC),
        )
    )
    return bot_id, name


async def known_recording(db: asyncpg.Pool, bot_id: str) -> None:
    """The row the scheduler wrote when it deployed the bot."""
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )


async def recording(db: asyncpg.Pool, bot_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)


async def until_status(db: asyncpg.Pool, bot_id: str, status: str, timeout: float = 60) -> Any:
    async def probe() -> Any:
        row = await recording(db, bot_id)
        final = row["s3_upload_status"] == "failed" and row["s3_upload_next_retry_at"] is None
        wanted = final if status == "failed" else row["s3_upload_status"] == status
        return row if wanted else None

    return await eventually(probe, timeout, f"recording of {bot_id} to be {status}")


async def stored(s3: S3Client, stack: Stack, key: str) -> bytes:
    body: bytes = await (await s3.get_object(Bucket=stack.s3_bucket, Key=key))["Body"].read()
    return body


async def open_uploads(s3: S3Client, stack: Stack, key: str) -> list[Any]:
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
    return list(listing.get("Uploads", []))


def video_key(row: Any) -> str:
    """Where the uploader puts the recording's video (known before it is stored)."""
    return recording_key(row["org_id"], row["user_id"], row["id"], "video", "mp4")


@pytest.fixture(scope="module", autouse=True)
async def no_secret_leaves(
    workers: Workers, db: asyncpg.Pool, stack: Stack
) -> AsyncIterator[list[str]]:
    """After all the faults of this module: the source's URL signature and its error bodies
    appear in no log line, no column of the recordings (the URLs are sealed), no record on any
    topic but the one that hands the URL to the uploader, no dead letter and no metric."""
    every_bot: list[str] = []
    yield every_bot
    secret = workers.source.signature.encode()
    found: list[str] = []
    for log in sorted(workers.logdir.glob("*.log")):
        if secret in log.read_bytes():
            found.append(f"log {log.name}")
    rows = await db.fetch("SELECT * FROM recordings WHERE bot_id = ANY($1::text[])", every_bot)
    assert len(rows) == len(set(every_bot))
    for row in rows:
        found += [
            f"recordings.{k} of {row['bot_id']}"
            for k, v in row.items()
            if secret in str(v).encode()
        ]
    for topic in [*TOPICS, *(dlq_topic(t) for t in TOPICS)]:
        if topic == RecordingCompleted.type:
            continue  # the event that hands the URL to the uploader
        records = await asyncio.to_thread(
            records_up_to_marker, stack.kafka_bootstrap_servers, topic, None
        )
        for record in records:
            if secret in record.value or any(secret in v for _, v in record.headers):
                found.append(f"{topic} offset {record.partition}:{record.offset}")
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"{workers.uploader.url}/metrics")).content
    if secret in scraped:
        found.append("the uploader's /metrics")
    assert found == [], f"the source's signature or body reached: {found}"


@pytest.fixture(autouse=True)
async def nothing_left_open(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack, no_secret_leaves: list[str]
) -> AsyncIterator[None]:
    """After each test, none of its recordings has a multipart upload open (parts S3 would keep
    and charge for, with nothing left to finish or abort them)."""
    workers.bots.clear()
    yield
    no_secret_leaves.extend(workers.bots)
    for bot_id in workers.bots:
        row = await recording(db, bot_id)
        folder = video_key(row).rsplit("/", 1)[0] + "/"
        assert await open_uploads(s3, stack, folder) == [], (
            f"multipart uploads left open for bot {bot_id} ({row['s3_upload_status']})"
        )


async def parts_vouched_for(
    db: asyncpg.Pool, s3: S3Client, stack: Stack, key: str, count: int
) -> str:
    """Wait until the open upload of `key` has `count` parts stored and in the ledger (what a
    later attempt can resume); its upload id."""

    async def probe() -> str | None:
        uploads = await open_uploads(s3, stack, key)
        if len(uploads) != 1:
            return None
        upload_id: str = uploads[0]["UploadId"]
        vouched = await db.fetchval(
            "SELECT count(*) FROM upload_parts WHERE upload_id = $1", upload_id
        )
        return upload_id if vouched >= count else None

    return await eventually(probe, 60, f"{count} parts of {key} stored and in the ledger")


def logged(workers: Workers, recording_id: object) -> list[dict[str, Any]]:
    """What every uploader worker of this module logged about one recording, in order."""
    lines = []
    for path in sorted(workers.logdir.glob("uploader*.log"), key=lambda p: p.stat().st_mtime):
        for text in path.read_text().splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue  # a worker killed mid-line
            if line.get("recording_id") == str(recording_id):
                lines.append(line)
    return lines


def events(workers: Workers, recording_id: object) -> list[str]:
    """The recording's log events, progress lines left out."""
    return [
        line["event"]
        for line in logged(workers, recording_id)
        if line["event"] != "upload.progress"
    ]


async def test_s3_500_and_slowdown_are_retried_and_the_upload_completes(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    workers.proxy.fail_next(2, 503)
    workers.proxy.fail_next(1, 500)
    data = os.urandom(11 * MIB)
    bot_id, _ = await new_recording(db, workers, data)
    row = await until_status(db, bot_id, "complete")
    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert len(workers.proxy.injected) == 3
    assert row["s3_upload_retry_count"] == 0  # absorbed by the S3 client's retries
    assert events(workers, row["id"]) == ["upload.started", "upload.complete"]


async def test_s3_down_for_longer_than_two_retry_delays_uses_up_no_attempt(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """S3 answers every request 503 from the middle of an upload while the uploader tries the
    event again and again, for longer than two retry delays (1 s each in this module: its log
    shows two tries given up on S3, each after the S3 client's own retries); once S3 is back the
    recording completes on its first attempt."""
    data = os.urandom(11 * MIB)
    gate = Gate(at=5 * MIB)
    bot_id, _ = await new_recording(db, workers, data, fault=Fault(hold=gate, times=1))
    await gate.wait_reached(60)
    row = await recording(db, bot_id)
    workers.proxy.fail_all(503)
    gate.open()

    async def waited_out_twice() -> bool:
        lines = logged(workers, row["id"])
        given_up = [line for line in lines if line["event"] == "upload.dependency_unavailable"]
        return len(given_up) >= 2

    try:
        await eventually(waited_out_twice, 120, "two tries given up on S3")
    finally:
        workers.proxy.heal()
    row = await until_status(db, bot_id, "complete", timeout=120)
    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 0
    assert "upload.failed" not in events(workers, row["id"])
    failures = await events_for(stack, "recording.upload_failed", bot_id)
    assert failures == []


async def test_a_connection_reset_mid_part_is_retried_and_the_part_sent_whole(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    injected_before = len(workers.proxy.injected)
    workers.proxy.fail_next(2, RESET)
    data = os.urandom(12 * MIB)
    bot_id, _ = await new_recording(db, workers, data)
    row = await until_status(db, bot_id, "complete")
    assert await stored(s3, stack, row["s3_video_key"]) == data
    resets = workers.proxy.injected[injected_before:]
    assert [r.rsplit(" ", 1)[-1] for r in resets] == ["0", "0"], resets
    assert row["s3_upload_retry_count"] == 0  # absorbed by the S3 client's retries
    assert events(workers, row["id"]) == ["upload.started", "upload.complete"]


async def test_a_long_upload_logs_its_progress_with_the_recording_id(
    workers: Workers, db: asyncpg.Pool
) -> None:
    data = os.urandom(12 * MIB)  # parts of 5, 5 and 2 MiB
    bot_id, _ = await new_recording(db, workers, data)
    row = await until_status(db, bot_id, "complete")
    progress = [line for line in logged(workers, row["id"]) if line["event"] == "upload.progress"]
    stored = [p["bytes_stored"] for p in progress]  # parts finish in any order
    assert len(stored) == 3
    assert stored == sorted(stored)
    assert stored[-1] == len(data)
    assert [p["parts_stored"] for p in progress] == [1, 2, 3]
    assert {p["total_bytes"] for p in progress} == {12 * MIB}
    assert max(p["percent"] for p in progress) == 100.0
    assert all(p["key"] == row["s3_video_key"] for p in progress)


async def test_a_worker_killed_mid_upload_is_resumed_by_the_next_one(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    data = os.urandom(30 * MIB)
    gate = Gate(at=10 * MIB)  # the source holds the body once two whole parts are sent
    bot_id, name = await new_recording(db, workers, data, fault=Fault(hold=gate))
    await gate.wait_reached(60)
    row = await recording(db, bot_id)
    upload_id = await parts_vouched_for(db, s3, stack, video_key(row), 2)

    workers.uploader.kill()  # SIGKILL mid-copy: no cleanup, no commit
    workers.source.faults[name] = Fault()
    gate.open()  # the killed worker's connection is gone: let its body end
    replacement = workers.new_uploader()
    replacement.start()
    row = await until_status(db, bot_id, "complete", timeout=90)

    assert await stored(s3, stack, row["s3_video_key"]) == data
    ranges = [r for n, r in workers.source.requests if n == name]
    assert ranges == [None, f"bytes={10 * MIB}-"]  # resumed after the two parts, not redone
    assert "upload.resumed" in events(workers, row["id"])
    assert (
        await db.fetchval("SELECT count(*) FROM upload_parts WHERE upload_id = $1", upload_id) == 0
    )


async def test_a_source_that_starts_refusing_halfway_is_signed_again_and_continued(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """The worker dies halfway; by the time its successor resumes, the provider's URL answers
    403. The successor asks MeetingBaaS for the bot again and continues from the two parts S3
    holds with the URL it hands out: no attempt used, nothing copied twice."""
    data = os.urandom(12 * MIB)
    gate = Gate(at=10 * MIB)
    bot_id, name = await new_recording(db, workers, data, fault=Fault(hold=gate, times=1))
    await gate.wait_reached(60)
    row = await recording(db, bot_id)
    await parts_vouched_for(db, s3, stack, video_key(row), 2)
    workers.uploader.kill()
    workers.source.revoked.add(workers.source.signature)  # the URL the webhook carried
    gate.open()
    replacement = workers.new_uploader()
    replacement.start()
    try:
        row = await until_status(db, bot_id, "complete", timeout=90)
    finally:
        workers.source.revoked.clear()  # the other tests' URLs are good

    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 0
    ranges = [r for n, r in workers.source.requests if n == name]
    assert ranges == [None, f"bytes={10 * MIB}-", f"bytes={10 * MIB}-"]  # refused, then continued
    assert workers.provider.asked.count(bot_id) == 1
    steps = {"upload.started", "upload.urls_refreshed", "upload.resumed", "upload.complete"}
    lines = [line for line in logged(workers, row["id"]) if line["event"] in steps]
    assert [(line["event"], line.get("why")) for line in lines] == [
        ("upload.started", None),  # the worker that died
        ("upload.started", None),
        ("upload.urls_refreshed", "source_http_403"),
        ("upload.resumed", None),
        ("upload.complete", None),
    ]
    sealed = await db.fetchval("SELECT provider_video_url FROM recordings WHERE id = $1", row["id"])
    kept = SourceUrlCipher([SecretStr(stack.source_url_key)]).open(sealed)
    assert kept is not None
    assert kept.startswith(workers.source.url(name))  # signed again: a longer signature
    assert kept != workers.source.url(name)


async def test_a_recording_the_provider_no_longer_has_fails_for_good_at_once(
    workers: Workers, db: asyncpg.Pool
) -> None:
    bot_id = str(uuid.uuid4())
    workers.provider.gone.add(bot_id)
    await new_recording(db, workers, os.urandom(MIB), bot_id=bot_id, fault=Fault(status=410))
    row = await until_status(db, bot_id, "failed", timeout=60)
    assert row["s3_upload_retry_count"] == 1
    assert f"MeetingBaaS no longer has bot {bot_id}" in row["s3_upload_error_message"]
    failed = [line for line in logged(workers, row["id"]) if line["event"] == "upload.failed"]
    assert [(f["reason"], f["final"]) for f in failed] == [("source_gone", True)]


KILL_STEPS = {
    # S3 stored part 2 but its answer is held: the worker dies before writing its digest.
    "before a ledger write": lambda: Hold(is_part(2), answered=True),
    # Parts 1 and 2 stored and in the ledger, part 3 held before S3 sees it.
    "after a part": lambda: Hold(is_part(3)),
    "before complete": lambda: Hold(is_complete),
    # S3 completed the object; the worker dies before it writes `complete` on the row.
    "after complete, before the status write": lambda: Hold(is_complete, answered=True),
}


@pytest.mark.parametrize("step", KILL_STEPS)
async def test_a_worker_killed_at_each_step_of_an_upload_is_completed_after_its_restart(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack, step: str
) -> None:
    """SIGKILL while S3 holds one request of the upload; the restarted worker finds the dead
    one's lease still running and leaves the recording, the scheduler requests it again once
    the lease has run out, and the new worker completes it with the source's bytes."""
    data = os.urandom(12 * MIB)
    hold = KILL_STEPS[step]()
    workers.proxy.holds.append(hold)
    bot_id, _ = await new_recording(db, workers, data)
    await hold.wait_reached(60)
    if step == "after a part":
        await parts_vouched_for(db, s3, stack, video_key(await recording(db, bot_id)), 2)

    workers.uploader.kill()
    hold.open()  # the dead worker's request goes on to S3 (or its answer to nobody)
    # The test's clock: the dead worker's lease has an hour left when its successor starts.
    row = await recording(db, bot_id)
    await db.execute(
        "UPDATE recordings SET upload_lease_expires_at = now() + interval '1 hour' WHERE id = $1",
        row["id"],
    )
    replacement = workers.new_uploader()
    replacement.start()

    async def left_alone() -> bool:
        return "upload.busy" in events(workers, row["id"])

    await eventually(left_alone, 60, "the restarted worker to find the recording leased")
    await db.execute(  # the hour is over
        "UPDATE recordings SET upload_lease_expires_at = now() - interval '1 second' WHERE id = $1",
        row["id"],
    )
    row = await until_status(db, bot_id, "complete", timeout=90)

    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 0  # a killed worker uses up no attempt
    # Announced once, or again with the same event id (the redelivered request finds it done).
    announced = await events_for(stack, "recording.uploaded", bot_id)
    assert len({e.id for e in announced}) == 1
    assert {e.event.size_bytes for e in announced if isinstance(e.event, RecordingUploaded)} == {
        len(data)
    }


async def test_a_part_changed_in_s3_before_the_resume_never_reaches_the_recording(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """While an attempt is cut short, something else writes part 1 of its unfinished upload
    again: same size, other bytes. The retry resumes the parts the ledger vouches for and finds
    S3's checksum is not the source's; it keeps nothing, and the next retry copies afresh."""
    data = os.urandom(12 * MIB)
    gate = Gate(at=10 * MIB)  # two whole parts sent, then the source holds
    bot_id, name = await new_recording(
        db, workers, data, fault=Fault(truncate_at=11 * MIB, hold=gate, times=1)
    )
    await gate.wait_reached(60)
    row = await recording(db, bot_id)
    upload_id = await parts_vouched_for(db, s3, stack, video_key(row), 2)
    other = os.urandom(5 * MIB)
    await s3.upload_part(  # straight to S3, not through the worker's proxy
        Bucket=stack.s3_bucket,
        Key=video_key(row),
        UploadId=upload_id,
        PartNumber=1,
        Body=other,
        ChecksumSHA256=base64.b64encode(hashlib.sha256(other).digest()).decode(),
    )
    gate.open()  # the body stops short at 11 MiB: the attempt fails, the retry resumes

    row = await until_status(db, bot_id, "complete", timeout=60)
    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 2
    lines = [line for line in logged(workers, row["id"]) if line["event"] != "upload.progress"]
    assert [(line["event"], line.get("reason")) for line in lines] == [
        ("upload.started", None),
        ("upload.failed", "source_truncated"),
        ("upload.started", None),
        ("upload.urls_refreshed", None),  # before every retry
        ("upload.resumed", None),
        ("upload.failed", "integrity"),
        ("upload.started", None),
        ("upload.urls_refreshed", None),
        ("upload.complete", None),
    ]
    assert [r for n, r in workers.source.requests if n == name] == [
        None,
        f"bytes={10 * MIB}-",
        None,
    ]
    (announced,) = [e.event for e in await events_for(stack, "recording.uploaded", bot_id)]
    assert isinstance(announced, RecordingUploaded)
    assert announced.size_bytes == len(data)


async def test_three_failures_end_in_failed_with_the_retries_recorded(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    bot_id, name = await new_recording(db, workers, os.urandom(MIB), fault=Fault(status=500))
    row = await until_status(db, bot_id, "failed", timeout=60)
    assert row["s3_upload_retry_count"] == 3
    assert row["s3_upload_last_retry_at"] is not None
    assert row["s3_upload_next_retry_at"] is None
    assert "HTTP 500" in row["s3_upload_error_message"]
    assert sum(1 for n, _ in workers.source.requests if n == name) == 3
    failures = [e.event for e in await events_for(stack, "recording.upload_failed", bot_id)]
    assert [
        (f.attempt, f.final) if isinstance(f, RecordingUploadFailed) else f for f in failures
    ] == [(1, False), (2, False), (3, True)]
    reasons = [line.get("reason") for line in logged(workers, row["id"])]
    assert reasons.count("source_http_500") == 3
    log = workers.uploader.log_path.read_text()
    assert f'"recording_id": "{row["id"]}"' in log


async def test_a_source_past_its_validity_is_signed_again_before_it_is_asked_for(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """The webhook's URL is five hours old: the worker never tries it, asks MeetingBaaS for the
    bot first and copies from the URL it hands out."""
    workers.source.revoked.add(workers.source.signature)  # as the expired URL would answer
    try:
        data = os.urandom(MIB)
        bot_id, name = await new_recording(
            db, workers, data, received=datetime.now(UTC) - timedelta(hours=5)
        )
        row = await until_status(db, bot_id, "complete", timeout=30)
    finally:
        workers.source.revoked.clear()
    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 0
    assert [r for n, r in workers.source.requests if n == name] == [None]  # the fresh URL only
    assert workers.provider.asked.count(bot_id) == 1
    lines = logged(workers, row["id"])
    refreshed = [line for line in lines if line["event"] == "upload.urls_refreshed"]
    assert [line["why"] for line in refreshed] == ["expired"]


async def test_an_audio_only_recording_is_stored_as_its_audio_and_signed_again_as_audio(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """`bot.completed` without video: the audio is the recording's source (no video key), and
    the fresh URLs MeetingBaaS hands out for it, audio only, are enough."""
    bot_id, data = str(uuid.uuid4()), os.urandom(MIB)
    name = f"{bot_id}.flac"
    workers.source.files[name] = data
    workers.bots.append(bot_id)
    workers.provider.audio_only.add(bot_id)
    await known_recording(db, bot_id)
    await workers.publisher.publish(
        RecordingCompleted(
            bot_id=bot_id,
            video_url=None,
            audio_url=workers.source.url(name),
            urls_received_at=datetime.now(UTC) - timedelta(hours=5),  # to be signed again
        )
    )
    row = await until_status(db, bot_id, "complete", timeout=30)
    assert row["s3_video_key"] is None
    assert row["s3_audio_key"] == recording_key(
        row["org_id"], row["user_id"], row["id"], "audio", "flac"
    )
    assert await stored(s3, stack, row["s3_audio_key"]) == data
    assert row["s3_file_size_bytes"] == MIB
    assert workers.provider.asked.count(bot_id) == 1


async def test_a_recording_whose_video_the_provider_no_longer_has_fails_for_good(
    workers: Workers, db: asyncpg.Pool
) -> None:
    """Signed again, a recording that had a video comes back with its audio only: the audio
    alone is not the recording, so it is gone, not stored as audio-only."""
    bot_id = str(uuid.uuid4())
    workers.provider.audio_only.add(bot_id)
    await new_recording(
        db, workers, os.urandom(MIB), bot_id=bot_id, received=datetime.now(UTC) - timedelta(hours=5)
    )
    row = await until_status(db, bot_id, "failed", timeout=30)
    assert f"MeetingBaaS has no video for bot {bot_id} any more" in row["s3_upload_error_message"]
    failed = [line for line in logged(workers, row["id"]) if line["event"] == "upload.failed"]
    assert [(f["reason"], f["final"]) for f in failed] == [("source_gone", True)]


async def test_a_source_that_sends_less_than_it_declared_fails_the_attempt_and_the_retry_resumes(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    data = os.urandom(12 * MIB)
    bot_id, _ = await new_recording(db, workers, data, fault=Fault(truncate_at=7 * MIB, times=1))
    row = await until_status(db, bot_id, "complete")
    assert await stored(s3, stack, row["s3_video_key"]) == data
    assert row["s3_upload_retry_count"] == 1
    lines = [line for line in logged(workers, row["id"]) if line["event"] != "upload.progress"]
    assert [(line["event"], line.get("reason")) for line in lines] == [
        ("upload.started", None),
        ("upload.failed", "source_truncated"),
        ("upload.started", None),
        ("upload.urls_refreshed", None),  # before every retry
        ("upload.resumed", None),
        ("upload.complete", None),
    ]


async def test_a_source_that_always_stops_short_fails_for_good_and_leaves_no_parts_behind(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    data = os.urandom(8 * MIB)
    bot_id, name = await new_recording(db, workers, data, fault=Fault(truncate_at=6 * MIB))
    row = await until_status(db, bot_id, "failed", timeout=60)
    assert row["s3_upload_retry_count"] == 3

    async def failures_logged() -> list[dict[str, Any]] | None:
        # The worker logs a failure just after writing it: the row can be read first.
        lines = [line for line in logged(workers, row["id"]) if line["event"] == "upload.failed"]
        return lines if len(lines) >= 3 else None

    failed = await eventually(failures_logged, 10, "three failures logged")
    assert [(f["reason"], f["final"]) for f in failed] == [
        ("source_truncated", False),
        ("source_truncated", False),
        ("source_truncated", True),
    ]
    # Each retry resumed the 5 MiB part the first attempt stored; the last one gave it up.
    assert [r for n, r in workers.source.requests if n == name] == [None] + [
        f"bytes={5 * MIB}-"
    ] * 2
    assert await open_uploads(s3, stack, video_key(row)) == []
    with pytest.raises(s3.exceptions.NoSuchKey):
        await s3.get_object(Bucket=stack.s3_bucket, Key=video_key(row))


@pytest.mark.parametrize("status", [403, 404])
async def test_a_source_that_refuses_the_url_fails_after_the_retries_logged_by_reason(
    workers: Workers, db: asyncpg.Pool, status: int
) -> None:
    bot_id, _ = await new_recording(db, workers, os.urandom(MIB), fault=Fault(status=status))
    row = await until_status(db, bot_id, "failed", timeout=60)
    assert f"HTTP {status}" in row["s3_upload_error_message"]
    assert row["s3_upload_retry_count"] == 3

    async def failures_logged() -> list[dict[str, Any]] | None:
        # The worker logs a failure just after writing it: the row can be read first.
        lines = [line for line in logged(workers, row["id"]) if line["event"] == "upload.failed"]
        return lines if len(lines) >= 3 else None

    failed = await eventually(failures_logged, 10, "three failures logged")
    assert [(f["reason"], f["final"]) for f in failed] == [
        (f"source_http_{status}", False),
        (f"source_http_{status}", False),
        (f"source_http_{status}", True),
    ]


async def test_a_slow_recording_does_not_hold_up_another_on_its_partition(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    partitions = stack.settings().kafka_topic_partitions
    partition = DefaultPartitioner()
    slow_bot = str(uuid.uuid4())
    target = partition(slow_bot.encode(), list(range(partitions)), list(range(partitions)))
    fast_bot = next(
        b
        for b in (str(uuid.uuid4()) for _ in range(1000))
        if partition(b.encode(), list(range(partitions)), list(range(partitions))) == target
    )
    gate = Gate(at=MIB)  # the slow source sends 1 MiB, then nothing until the gate opens
    slow_data = os.urandom(10 * MIB)
    await new_recording(db, workers, slow_data, bot_id=slow_bot, fault=Fault(hold=gate))
    await gate.wait_reached(60)  # the slow copy is under way
    await new_recording(db, workers, os.urandom(MIB), bot_id=fast_bot)
    await until_status(db, fast_bot, "complete", timeout=30)
    slow = await recording(db, slow_bot)
    assert slow["s3_upload_status"] == "uploading"
    assert events(workers, slow["id"]) == ["upload.started"]

    gate.open()
    slow = await until_status(db, slow_bot, "complete", timeout=60)
    assert await stored(s3, stack, slow["s3_video_key"]) == slow_data
    assert events(workers, slow["id"]) == ["upload.started", "upload.complete"]


async def test_scaling_out_from_one_worker_to_three_mid_upload_copies_each_recording_once(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """Five large recordings under way on one worker (four copying, one waiting for a slot),
    two more workers join: the rebalance drains the first worker, whose copies stop and hand
    their leases back, and the new owners resume them. Each recording ends as one complete
    object with the source's bytes, and no worker aborted an upload."""
    seen_before = len(workers.proxy.seen)
    gates = [Gate(at=10 * MIB) for _ in range(5)]
    copies = {}
    for gate in gates:
        data = os.urandom(12 * MIB)
        bot_id, _ = await new_recording(db, workers, data, fault=Fault(hold=gate, times=1))
        copies[bot_id] = data

    async def four_held() -> bool:  # the worker copies four at a time, in any order
        return sum(gate.reached.is_set() for gate in gates) == 4

    await eventually(four_held, 60, "four copies under way")

    joined = [workers.another_uploader() for _ in range(2)]
    try:
        for process in joined:
            process.start()
        for process in joined:
            await asyncio.to_thread(process.wait_ready)
        for gate in gates:
            gate.open()
        for bot_id, data in copies.items():
            row = await until_status(db, bot_id, "complete", timeout=120)
            assert await stored(s3, stack, row["s3_video_key"]) == data
            assert row["s3_upload_retry_count"] == 0
            objects = await s3.list_objects_v2(
                Bucket=stack.s3_bucket, Prefix=row["s3_video_key"].rsplit("/", 1)[0]
            )
            assert [o["Key"] for o in objects.get("Contents", [])] == [row["s3_video_key"]]
        aborts = [
            line
            for line in workers.proxy.seen[seen_before:]
            if line.startswith("DELETE") and "uploadId=" in line
        ]
        assert aborts == []
    finally:
        for process in joined:
            process.stop()


# --- deleted while being stored --------------------------------------------------------------


@pytest.fixture
async def deleter(stack: Stack, db: asyncpg.Pool, s3: S3Client) -> AsyncIterator[MediaDeleter]:
    """The operator's deletion path (`notetaker meetings delete`), on the stack's own S3; the
    providers are not asked (no keys), which the deletion records as skipped."""
    publisher = EventPublisher(stack.settings(service_name="notetaker-cli"))
    await publisher.start()
    access = ProviderAccess("http://127.0.0.1:9", None, "http://127.0.0.1:9", None)
    async with aiohttp.ClientSession() as http:
        yield MediaDeleter(db, s3, stack.s3_bucket, publisher, access, http)
    await publisher.stop()


async def held_in(s3: S3Client, stack: Stack, prefix: str) -> list[str]:
    objects = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix)
    uploads = await open_uploads(s3, stack, prefix)
    return [o["Key"] for o in objects.get("Contents", [])] + [u["Key"] for u in uploads]


async def test_a_recording_deleted_while_its_upload_completes_is_not_stored_again(
    workers: Workers, db: asyncpg.Pool, s3: S3Client, stack: Stack, deleter: MediaDeleter
) -> None:
    """The uploader's CompleteMultipartUpload is held on its way to S3 while the recording is
    deleted; then it goes on. Whatever S3 makes of it, nothing of the recording is left, no
    `recording.uploaded` is announced, and the uploader says why."""
    hold = Hold(is_complete)
    workers.proxy.holds.append(hold)
    bot_id, _ = await new_recording(db, workers, os.urandom(6 * MIB))
    await hold.wait_reached(60)
    row = await recording(db, bot_id)
    prefix = video_key(row).rsplit("/", 1)[0] + "/"
    outcome = await deleter.delete(row["id"], by="ops@test", reason="operator")
    assert outcome is not None
    assert outcome.deletion.done
    hold.open()

    async def gave_up() -> bool:
        return "upload.media_deleted" in events(workers, row["id"])

    await eventually(gave_up, 60, "the uploader to give the deleted recording up")
    assert await held_in(s3, stack, prefix) == []
    assert await events_for(stack, "recording.uploaded", bot_id) == []
    final = await recording(db, bot_id)
    assert final["s3_upload_status"] == "failed"
    assert final["s3_upload_error_message"] == "media deleted before the upload finished"
