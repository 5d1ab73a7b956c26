"""Fresh links for a recording MeetingBaaS's API v1 delivered (its `complete` webhook): the
uploader asks v1's `GET /bots/meeting_data` for a newly signed `mp4`, never v2's bot details.

One uploader worker in this process against the stack's PostgreSQL, Kafka and S3, a source on
loopback, and a MeetingBaaS that answers both APIs in the shapes of the samples (v2 only to
show it is not asked). The v2 form of the first test, with processes, is in `test_faults.py`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from notetaker.common.envelope import Envelope
from notetaker.common.events import RecordingCompleted
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key
from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.sources import Fault, Gate, RecordingSource
from notetaker.devstack.stack import Stack, free_port
from notetaker.uploader.keys import SourceUrlCipher
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.transfer import copy_clients
from notetaker.uploader.upload import Uploader
from tests.conftest import eventually
from tests.fixtures import PROVIDER_SAMPLES
from tests.uploader.conftest import served_recording

MIB = 1024 * 1024
KEY = "meetingbaas-key-of-the-v1-tests"
MEETING_DATA = json.loads(
    (PROVIDER_SAMPLES / "meetingbaas" / "v1-meeting-data.response.json").read_text()
)


@dataclass
class MeetingBaaS:
    """Both APIs' answers for the test's bots: v1's meeting data signs the bot's file anew (a
    signature of its own, beginning with the source's) in the sample's shape; a bot in `gone`
    is one MeetingBaaS does not know (404, as v1 says it). `asked`: (API, bot id) of each."""

    source: RecordingSource
    port: int = field(default_factory=free_port)
    gone: set[str] = field(default_factory=set)
    asked: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def meeting_data(self, request: Request) -> Response:
        if request.headers.get("x-meeting-baas-api-key") != KEY:
            return JSONResponse({"error": "Invalid API key"}, 401)
        bot_id = request.query_params.get("bot_id", "")
        self.asked.append(("v1", bot_id))
        if bot_id in self.gone:
            return JSONResponse({"error": "Bot not found"}, 404)
        body = copy.deepcopy(MEETING_DATA)
        body["bot_data"]["bot"]["uuid"] = bot_id
        body["mp4"] = self.source.url(f"{bot_id}.mp4", f"{self.source.signature}R{len(self.asked)}")
        return JSONResponse(body)

    async def bot_details(self, request: Request) -> Response:
        self.asked.append(("v2", request.path_params["bot_id"]))
        return JSONResponse({"success": False, "error": "Not Found", "statusCode": 404}, 404)


@dataclass
class Worker:
    uploader: Uploader
    meetingbaas: MeetingBaaS
    source: RecordingSource


@pytest.fixture
async def worker(stack: Stack, source: RecordingSource) -> AsyncIterator[Worker]:
    meetingbaas = MeetingBaaS(source)
    app = Starlette(
        routes=[
            Route("/bots/meeting_data", meetingbaas.meeting_data),
            Route("/v2/bots/{bot_id}", meetingbaas.bot_details),
        ]
    )
    async with AsyncExitStack() as exit_stack:
        server = InLoopServer(app, meetingbaas.port)
        await server.start()
        exit_stack.push_async_callback(server.stop)
        base = stack.settings(service_name="uploader-v1").model_dump()
        settings = UploaderSettings(
            **base
            | {
                "source_url_keys": [SecretStr(stack.source_url_key)],
                "meetingbaas_api_url": meetingbaas.url,
                "meetingbaas_api_key": SecretStr(KEY),
                "upload_lease_seconds": 600,  # no renewal while a test runs
                "source_timeout_seconds": 120,  # a body held at a gate is not a timeout
            }
        )
        publisher = EventPublisher(settings)
        await publisher.start()
        exit_stack.push_async_callback(publisher.stop)
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
        exit_stack.push_async_callback(pool.close)
        s3, http = await exit_stack.enter_async_context(copy_clients(settings, 120))
        yield Worker(Uploader(settings, pool, s3, http, publisher), meetingbaas, source)


async def v1_recording(db: asyncpg.Pool, worker: Worker, data: bytes, fault: Fault) -> Any:
    """A deployed bot whose recording v1's `complete` webhook announced, its source serving
    `data` with `fault`; the recordings row and the event."""
    row = await served_recording(db, worker.source, data)
    name = f"{row['bot_id']}.mp4"
    worker.source.faults[name] = fault
    event = RecordingCompleted(
        bot_id=row["bot_id"],
        provider_api="v1",
        video_url=worker.source.url(name),
        urls_received_at=datetime.now(UTC),
    )
    return row, Envelope(str(uuid.uuid4()), "/ingest", event.type, datetime.now(UTC), event)


async def open_uploads(s3: S3Client, stack: Stack, key: str) -> list[Any]:
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
    return list(listing.get("Uploads", []))


async def test_a_v1_source_refusing_halfway_is_signed_again_by_v1_and_continued(
    worker: Worker, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    """The attempt is stopped halfway (as a revoked partition's drain stops it); by the time
    the event is handled again the webhook's URL answers 403. The worker asks v1's meeting
    data for the bot and continues from the two parts S3 holds with the `mp4` it hands out."""
    data = os.urandom(12 * MIB)
    gate = Gate(at=10 * MIB)
    row, completed = await v1_recording(db, worker, data, Fault(hold=gate, times=1))
    name = f"{row['bot_id']}.mp4"
    key = recording_key(row["org_id"], row["user_id"], row["id"], "video", "mp4")

    first = asyncio.create_task(worker.uploader.handle(completed))
    await gate.wait_reached(60)

    async def two_parts_vouched_for() -> bool:
        uploads = await open_uploads(s3, stack, key)
        vouched = await db.fetchval(
            "SELECT count(*) FROM upload_parts WHERE upload_id = ANY($1::text[])",
            [u["UploadId"] for u in uploads],
        )
        return len(uploads) == 1 and vouched == 2

    await eventually(two_parts_vouched_for, 60, "two parts stored and in the ledger")
    first.cancel()
    with suppress(asyncio.CancelledError):
        await first
    worker.source.revoked.add(worker.source.signature)  # the URL the webhook carried
    gate.open()

    await worker.uploader.handle(completed)  # the event, redelivered

    done = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])
    assert (done["s3_upload_status"], done["s3_upload_retry_count"]) == ("complete", 0)
    assert done["provider_api"] == "v1"
    body = await (await s3.get_object(Bucket=stack.s3_bucket, Key=key))["Body"].read()
    assert body == data
    ranges = [r for n, r in worker.source.requests if n == name]
    assert ranges == [None, f"bytes={10 * MIB}-", f"bytes={10 * MIB}-"]  # refused, continued
    assert worker.meetingbaas.asked == [("v1", row["bot_id"])]
    kept = SourceUrlCipher([SecretStr(stack.source_url_key)]).open(done["provider_video_url"])
    assert kept == worker.source.url(name, f"{worker.source.signature}R1")


async def test_a_v1_recording_meetingbaas_no_longer_has_fails_for_good_saying_so(
    worker: Worker, db: asyncpg.Pool, s3: S3Client, stack: Stack
) -> None:
    row, completed = await v1_recording(db, worker, os.urandom(MIB), Fault(status=403))
    worker.meetingbaas.gone.add(row["bot_id"])

    await worker.uploader.handle(completed)

    failed = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])
    assert failed["s3_upload_status"] == "failed"
    assert failed["s3_upload_next_retry_at"] is None  # for good: no retry is planned
    assert failed["s3_upload_retry_count"] == 1
    assert failed["s3_upload_error_message"] == (
        f"MeetingBaaS no longer has bot {row['bot_id']} (API v1: HTTP 404)"
    )
    assert worker.meetingbaas.asked == [("v1", row["bot_id"])]
    key = recording_key(row["org_id"], row["user_id"], row["id"], "video", "mp4")
    assert await open_uploads(s3, stack, key) == []
