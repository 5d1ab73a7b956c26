"""A source slower than the floor, on average over a window, fails the attempt as
`source_stalled` instead of holding an upload slot for ever; the copy's own waits for S3 do not
count against the source.

The copies below run against a real in-process source; the window arithmetic (a source exactly
at the floor, each window judged on its own bytes, the message) is pinned with a clock the test
sets, since no real clock lands on a window's end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.uploader import transfer
from notetaker.uploader.transfer import (
    MinRate,
    SourceError,
    _StallWatch,
    source_session,
    stream_to_s3,
)
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


async def copy(s3: FakeS3, url: str, min_rate: MinRate, part_size: int = PART) -> object:
    async with source_session(5.0, LOOPBACK) as http:
        return await stream_to_s3(
            http,
            s3.client(),
            url=url,
            bucket="bk",
            key=KEY,
            content_type="video/mp4",
            part_size=part_size,
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
    # About 350 kB/s against a floor of 20 kB/s over a second: a loaded machine's hiccups
    # cannot take it under.
    await copy(s3, files.url("video.mp4"), MinRate(20_000, 1.0))
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


async def test_a_slow_source_is_caught_while_its_parts_go_to_s3(files: RecordingSource) -> None:
    # 16 KiB parts: one goes to S3 every few chunks, long before the window ends. Only the time
    # each part waited for a slot is taken off the source's; the rest still counts.
    files.faults["video.mp4"] = SLOW
    with pytest.raises(SourceError) as stalled:
        await copy(FakeS3(), files.url("video.mp4"), MinRate(2_000_000, 0.5), part_size=16 * 1024)
    assert stalled.value.reason == "source_stalled"


# --- the window, by a clock the test sets ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(transfer, "time", fake)
    return fake


def stalled_message(rate: int, seconds: int, floor: int) -> str:
    return (
        f"source sent {rate} bytes/s over {seconds}s, under the {floor} bytes/s floor"
        " (NOTETAKER_SOURCE_MIN_BYTES_PER_SECOND)"
    )


def test_a_source_exactly_at_the_floor_is_not_stalled(clock: Clock) -> None:
    watch = _StallWatch(MinRate(100, 10))
    clock.now += 9
    watch.check(0)  # not a whole window yet: not judged
    clock.now += 1
    watch.check(1000)  # 1,000 bytes in exactly 10 s: 100 bytes/s, the floor itself


def test_a_source_is_judged_once_a_whole_window_has_passed(clock: Clock) -> None:
    watch = _StallWatch(MinRate(100, 10))
    clock.now += 10
    with pytest.raises(SourceError) as stalled:
        watch.check(500)
    assert stalled.value.reason == "source_stalled"
    assert str(stalled.value) == stalled_message(50, 10, 100)


def test_each_window_is_judged_on_its_own_bytes(clock: Clock) -> None:
    # A fast first window earns no credit: a source that then slows is caught in the next one.
    watch = _StallWatch(MinRate(100, 10))
    clock.now += 10
    watch.check(5000)
    clock.now += 10
    watch.check(6000)  # 1,000 more bytes in 10 s: at the floor
    clock.now += 10
    with pytest.raises(SourceError) as stalled:
        watch.check(6500)
    assert str(stalled.value) == stalled_message(50, 10, 100)


def test_time_spent_waiting_for_s3_is_not_the_sources(clock: Clock) -> None:
    watch = _StallWatch(MinRate(100, 10))
    clock.now += 30
    watch.paused(30)  # the copy stopped reading while S3 took its parts
    watch.check(0)  # no source time has passed
    clock.now += 10
    watch.check(1000)


def test_without_a_floor_a_source_is_never_judged(clock: Clock) -> None:
    watch = _StallWatch(None)
    clock.now += 3600
    watch.check(0)
