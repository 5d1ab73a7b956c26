"""A source slower than the floor, on average over a window, fails the attempt as
`source_stalled` instead of holding an upload slot for ever; the copy's own waits for S3 do not
count against the source."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.uploader.transfer import MinRate, SourceError, source_session, stream_to_s3
from tests.uploader.test_transfer_unit import KEY, LOOPBACK, FakeS3

DATA = bytes(range(256)) * 2000  # 512,000 bytes
PART = 128 * 1024
# 7000-byte chunks, one every 0.02 s: about 350 kB/s, so the copy takes about 1.5 s.
SLOW = Fault(delay_per_chunk=0.02)


@pytest.fixture
async def files() -> AsyncIterator[RecordingSource]:
    source = RecordingSource(chunk_size=7000)
    source.files["video.mp4"] = DATA
    await source.start()
    yield source
    await source.stop()


async def copy(s3: FakeS3, url: str, min_rate: MinRate) -> object:
    async with source_session(5.0, LOOPBACK) as http:
        return await stream_to_s3(
            http,
            s3.client(),
            url=url,
            bucket="bk",
            key=KEY,
            content_type="video/mp4",
            part_size=PART,
            parts_in_flight=1,
            min_rate=min_rate,
        )


async def test_a_source_under_the_floor_fails_as_stalled(files: RecordingSource) -> None:
    files.faults["video.mp4"] = SLOW
    with pytest.raises(SourceError) as stalled:
        await copy(FakeS3(), files.url("video.mp4"), MinRate(2_000_000, 0.3))
    assert stalled.value.reason == "source_stalled"
    assert "NOTETAKER_SOURCE_MIN_BYTES_PER_SECOND" in str(stalled.value)


async def test_a_source_over_the_floor_is_copied_whole(files: RecordingSource) -> None:
    files.faults["video.mp4"] = SLOW
    s3 = FakeS3()
    await copy(s3, files.url("video.mp4"), MinRate(50_000, 0.3))
    assert s3.objects[KEY][0] == DATA


async def test_waiting_for_a_slow_s3_does_not_count_against_the_source(
    files: RecordingSource,
) -> None:
    # A fast source behind one slot and an S3 that takes 0.5 s a part: the source is read at
    # about 250 kB/s overall, under the floor, but only because the copy stops reading while
    # S3 works.
    s3 = FakeS3(part_delay=0.5)
    await copy(s3, files.url("video.mp4"), MinRate(1_000_000, 0.3))
    assert s3.objects[KEY][0] == DATA
