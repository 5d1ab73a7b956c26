"""Thumbnails of a real generated video: a JPEG of the configured size from a non-black frame,
read from S3 by range requests without fetching the whole recording."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg
import av
import pytest
from prometheus_client import REGISTRY

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.envelope import Envelope
from notetaker.common.events import ThumbnailRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key, s3_client
from notetaker.devstack.media import make_recording
from notetaker.devstack.s3_proxy import Hold, S3FaultProxy
from notetaker.devstack.stack import Stack
from notetaker.uploader.thumbnails import Budget, S3RangeFile, Thumbnailer, render_thumbnail
from tests.e2e.conftest import events_for


def mean_luma(jpeg: bytes) -> float:
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (320, 240)
        data = bytes(frame.reformat(width=32, height=24, format="gray").planes[0])
    return sum(data) / len(data)


async def test_thumbnail_is_a_scaled_non_black_jpeg_read_by_range(
    stack: Stack, s3: S3Client
) -> None:
    recording = await asyncio.to_thread(make_recording, 20.0, 640, 480)
    key = "t/thumb-source/video.mp4"
    await s3.put_object(Bucket=stack.s3_bucket, Key=key, Body=recording.video)
    source = S3RangeFile(
        s3, stack.s3_bucket, key, len(recording.video), asyncio.get_running_loop(), block=16_384
    )
    thumbnail = await asyncio.to_thread(render_thumbnail, source, 3.0, 320)

    assert thumbnail.jpeg[:3] == b"\xff\xd8\xff"
    assert (thumbnail.width, thumbnail.height) == (320, 240)
    assert mean_luma(thumbnail.jpeg) > 30  # the first frames are black; this one is not
    assert 0 < source.bytes_read < len(recording.video) / 2  # never the whole recording


def test_the_black_opening_is_skipped_even_when_asked_for_it() -> None:
    recording = make_recording(seconds=3.0)
    thumbnail = render_thumbnail(io.BytesIO(recording.video), 0.0, 160)
    assert (thumbnail.width, thumbnail.height) == (160, 120)


async def test_a_video_without_decodable_frames_fails_clearly_once(
    stack: Stack, s3: S3Client, db: asyncpg.Pool
) -> None:
    key = f"t/broken-{uuid.uuid4()}/video.mp4"
    bot_id = f"broken-{uuid.uuid4()}"
    await s3.put_object(Bucket=stack.s3_bucket, Key=key, Body=b"\x00not a video" * 1000)
    request = ThumbnailRequested(
        bot_id=bot_id,
        recording_id=uuid.uuid4(),
        org_id=uuid.uuid4(),
        bucket=stack.s3_bucket,
        video_key=key,
        thumbnail_key=key.replace("video.mp4", "t.jpg"),
    )

    def failures() -> float:
        value = REGISTRY.get_sample_value(
            "notetaker_thumbnailer_failures_total", {"reason": "no_decodable_frame"}
        )
        return value or 0.0

    before = failures()
    publisher = EventPublisher(stack.settings(service_name="uploader"))
    await publisher.start()
    try:
        thumbnailer = Thumbnailer(s3, publisher, db, width=320, at_seconds=3.0)
        await thumbnailer.handle(Envelope("id", "/t", request.type, datetime.now(UTC), request))
    finally:
        await publisher.stop()
    assert failures() == before + 1  # handled (no exception, so no retry loop), and counted
    assert await events_for(stack, "thumbnail.generated", bot_id) == []
    with pytest.raises(s3.exceptions.NoSuchKey):
        await s3.get_object(Bucket=stack.s3_bucket, Key=request.thumbnail_key)


async def test_a_video_dark_throughout_costs_only_the_budget_and_gets_its_least_dark_frame(
    stack: Stack, s3: S3Client
) -> None:
    # Before the budget, a 2-minute black mp4 was decoded to the end: 112% of it read.
    recording = await asyncio.to_thread(
        make_recording, 120.0, 320, 240, 25, False, dark_seconds=120.0
    )
    key = f"t/dark-{uuid.uuid4()}/video.mp4"
    await s3.put_object(Bucket=stack.s3_bucket, Key=key, Body=recording.video)
    source = S3RangeFile(
        s3, stack.s3_bucket, key, len(recording.video), asyncio.get_running_loop(), block=4096
    )
    thumbnail = await asyncio.to_thread(render_thumbnail, source, 3.0, 320, Budget(frames=50))
    assert thumbnail.jpeg[:3] == b"\xff\xd8\xff"
    assert mean_luma(thumbnail.jpeg) < 30  # the least dark of dark frames: still dark
    assert 0 < source.bytes_read < len(recording.video) / 4


async def test_a_thumbnail_stored_after_the_deletion_listed_the_recording_is_deleted_too(
    stack: Stack, s3: S3Client, db: asyncpg.Pool
) -> None:
    """The thumbnailer's PUT of the JPEG is held (by an S3 proxy in front of the stack's) until
    the recording's media has been deleted: it lands after the deletion listed the recording's
    objects, and the thumbnailer, seeing the recording deleted, deletes it again and announces
    nothing. A request for a deleted recording makes nothing at all."""
    org, user, recording_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bot_id = f"thumb-{uuid.uuid4()}"
    await db.execute(
        "INSERT INTO recordings (id, org_id, user_id, bot_id, s3_upload_status)"
        " VALUES ($1, $2, $3, $4, 'complete')",
        recording_id,
        org,
        user,
        bot_id,
    )
    video = recording_key(org, user, recording_id, "video", "mp4")
    thumbnail = recording_key(org, user, recording_id, "thumbnail", "jpg")
    await s3.put_object(Bucket=stack.s3_bucket, Key=video, Body=make_recording(4.0).video)
    request = ThumbnailRequested(
        bot_id=bot_id,
        recording_id=recording_id,
        org_id=org,
        bucket=stack.s3_bucket,
        video_key=video,
        thumbnail_key=thumbnail,
    )
    envelope = Envelope("id", "/t", request.type, datetime.now(UTC), request)
    assert stack.s3_endpoint_url is not None
    proxy = S3FaultProxy(stack.s3_endpoint_url)
    hold = Hold(lambda r: r.method == "PUT" and r.url.path.endswith(thumbnail))
    proxy.holds.append(hold)
    await proxy.start()
    publisher = EventPublisher(stack.settings(service_name="uploader"))
    await publisher.start()
    access = ProviderAccess("http://127.0.0.1:9", None, "http://127.0.0.1:9", None)
    try:
        async with (
            s3_client(stack.settings(s3_endpoint_url=proxy.url)) as proxied,
            aiohttp.ClientSession() as http,
        ):
            thumbnailer = Thumbnailer(proxied, publisher, db, width=160, at_seconds=1.0)
            making = asyncio.ensure_future(thumbnailer.handle(envelope))
            await hold.wait_reached(30)
            deleter = MediaDeleter(db, s3, stack.s3_bucket, publisher, access, http)
            outcome = await deleter.delete(recording_id, by="ops@test", reason="operator")
            assert outcome is not None
            assert outcome.deletion.deleted_keys == [video]  # no thumbnail when it listed
            hold.open()
            await asyncio.wait_for(making, 30)
            # Asked again (a redelivery): nothing is made for a deleted recording.
            await thumbnailer.handle(envelope)
    finally:
        hold.open()
        await publisher.stop()
        await proxy.stop()
    listing = await s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=video.rsplit("/", 1)[0])
    assert listing.get("Contents", []) == []
    assert await events_for(stack, "thumbnail.generated", bot_id) == []
