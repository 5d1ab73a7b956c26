"""One worker per recording: two uploader workers in this process, each with its own S3 endpoint
(a proxy that notes every request, so the test knows which worker did what to the bucket),
against the real PostgreSQL, Kafka and S3 of the stack and a provider source on loopback.

The lease's clock is the test's: a lease "runs out" when the test moves its end into the past,
and the workers' leases are long enough that no renewal happens while a test runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from pydantic import SecretStr

from notetaker.common.envelope import Envelope
from notetaker.common.events import Event, RecordingCompleted, RecordingUploadRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key
from notetaker.devstack.s3_proxy import S3FaultProxy
from notetaker.devstack.sources import Fault, Gate, RecordingSource
from notetaker.devstack.stack import Stack
from notetaker.scheduler.retries import request_due_retries
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.transfer import copy_clients
from notetaker.uploader.upload import Uploader
from tests.conftest import eventually
from tests.uploader.conftest import served_recording

MIB = 1024 * 1024


@dataclass
class Worker:
    uploader: Uploader
    proxy: S3FaultProxy

    def touched(self, upload_id: str) -> list[str]:
        """The requests this worker made about one multipart upload, by kind."""
        kinds = []
        for line in self.proxy.seen:
            if f"uploadId={upload_id}" not in line:
                continue
            method = line.split(" ", 1)[0]
            kinds.append({"PUT": "part", "POST": "complete", "DELETE": "abort"}.get(method, "list"))
        return kinds


def envelope(event: Event) -> Envelope:
    return Envelope(str(uuid.uuid4()), "/test", event.type, datetime.now(UTC), event)


@pytest.fixture
async def pair(stack: Stack) -> AsyncIterator[tuple[Worker, Worker]]:
    """Two uploader workers, as two replicas would be, sharing nothing but the stack."""
    assert stack.s3_endpoint_url is not None
    async with AsyncExitStack() as exit_stack:
        workers = []
        for name in ("a", "b"):
            proxy = S3FaultProxy(stack.s3_endpoint_url)
            await proxy.start()
            exit_stack.push_async_callback(proxy.stop)
            base = stack.settings(service_name=f"uploader-{name}").model_dump()
            settings = UploaderSettings(
                **base
                | {
                    "s3_endpoint_url": proxy.url,
                    "source_url_keys": [SecretStr(stack.source_url_key)],
                    "upload_lease_seconds": 600,
                    "source_timeout_seconds": 120,
                }
            )
            publisher = EventPublisher(settings)
            await publisher.start()
            exit_stack.push_async_callback(publisher.stop)
            pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
            exit_stack.push_async_callback(pool.close)
            s3, http = await exit_stack.enter_async_context(copy_clients(settings, 120))
            workers.append(Worker(Uploader(settings, pool, s3, http, publisher), proxy))
        yield workers[0], workers[1]


async def open_upload(s3: S3Client, stack: Stack, key: str) -> str:
    async def probe() -> str | None:
        listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
        uploads = listing.get("Uploads", [])
        return uploads[0]["UploadId"] if len(uploads) == 1 else None

    return await eventually(probe, 60, f"an open upload of {key}")


async def test_two_workers_handed_one_recording_make_one_copy_and_a_stale_one_stops_untouched(
    pair: tuple[Worker, Worker],
    source: RecordingSource,
    db: asyncpg.Pool,
    s3: S3Client,
    stack: Stack,
) -> None:
    a, b = pair
    data = os.urandom(12 * MIB)
    row = await served_recording(db, source, data)
    name = f"{row['bot_id']}.mp4"
    key = recording_key(row["org_id"], row["user_id"], row["id"], "video", "mp4")
    held_a = Gate(at=10 * MIB)  # worker a holds its body once two parts are sent
    source.faults[name] = Fault(hold=held_a, times=1)
    completed = envelope(
        RecordingCompleted(
            bot_id=row["bot_id"], video_url=source.url(name), urls_received_at=datetime.now(UTC)
        )
    )

    # Both workers handed the recording at once: b finds it taken and leaves it alone.
    copying_a = asyncio.create_task(a.uploader.handle(completed))
    await held_a.wait_reached(60)
    upload_id = await open_upload(s3, stack, key)
    await b.uploader.handle(completed)
    assert b.proxy.seen == []

    # a stalls past its lease; the scheduler's sweep takes the recording back and requests it,
    # and b resumes a's upload from its two stored parts, holding mid-way in turn.
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) = 2 FROM upload_parts WHERE upload_id = $1", upload_id
        ),
        60,
        "a's two parts in the ledger",
    )
    await db.execute(
        "UPDATE recordings SET upload_lease_expires_at = now() - interval '1 second' WHERE id = $1",
        row["id"],
    )
    publisher = EventPublisher(stack.settings(service_name="scheduler"))
    await publisher.start()
    try:
        async with db.acquire() as conn:
            assert await request_due_retries(conn, publisher) == 1
    finally:
        await publisher.stop()
    held_b = Gate(at=11 * MIB)
    source.faults[name] = Fault(hold=held_b, times=1)
    copying_b = asyncio.create_task(
        b.uploader.handle(
            envelope(
                RecordingUploadRequested(bot_id=row["bot_id"], recording_id=row["id"], attempt=1)
            )
        )
    )
    await held_b.wait_reached(60)

    # a wakes up first and sends its last part: its ledger write is refused, and it stops
    # without completing, aborting or recording anything.
    held_a.open()
    await asyncio.wait_for(copying_a, 60)
    assert a.touched(upload_id) == ["part", "part", "part"]
    assert (await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"]))[
        "s3_upload_status"
    ] == "uploading"

    held_b.open()
    await asyncio.wait_for(copying_b, 60)
    assert b.touched(upload_id) == ["list", "part", "complete"]
    done = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", row["id"])
    assert (done["s3_upload_status"], done["s3_upload_retry_count"]) == ("complete", 0)
    body = await (await s3.get_object(Bucket=stack.s3_bucket, Key=key))["Body"].read()
    assert body == data
    folder = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=key.rsplit("/", 1)[0])
    assert [o["Key"] for o in folder.get("Contents", [])] == [key]
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
    assert listing.get("Uploads", []) == []
    assert [r for n, r in source.requests if n == name] == [None, f"bytes={10 * MIB}-"]
