"""Thumbnails of a real generated video: a JPEG of the configured size from a non-black frame,
read from S3 by range requests without fetching the whole recording."""

from __future__ import annotations

import asyncio
import io

import av

from notetaker.common.s3 import S3Client
from notetaker.devstack.media import make_recording
from notetaker.devstack.stack import Stack
from notetaker.uploader.thumbnails import S3RangeFile, render_thumbnail


def mean_luma(jpeg: bytes) -> float:
    with av.open(io.BytesIO(jpeg)) as container:
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
