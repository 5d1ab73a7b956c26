"""Retry timing, source expiry, part sizing and file naming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notetaker.uploader.transfer import S3_MAX_PARTS, part_size_for
from notetaker.uploader.upload import extension, plan_failure, source_expired

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def test_retries_wait_2_then_5_minutes_and_the_third_failure_is_final() -> None:
    delays = [120, 300, 600]
    first = plan_failure(0, 3, delays, NOW)
    assert (first.retry_count, first.next_retry_at) == (1, NOW + timedelta(minutes=2))
    second = plan_failure(1, 3, delays, NOW)
    assert (second.retry_count, second.next_retry_at) == (2, NOW + timedelta(minutes=5))
    third = plan_failure(2, 3, delays, NOW)
    assert third.final
    assert third.retry_count == 3
    fourth_of_four = plan_failure(2, 4, delays, NOW)
    assert fourth_of_four.next_retry_at == NOW + timedelta(minutes=10)


def test_source_older_than_its_validity_is_expired() -> None:
    assert source_expired(NOW - timedelta(hours=4, seconds=1), NOW, 4 * 3600)
    assert not source_expired(NOW - timedelta(hours=3, minutes=59), NOW, 4 * 3600)
    assert not source_expired(None, NOW, 4 * 3600)


def test_part_size_grows_past_the_10000_part_limit() -> None:
    assert part_size_for(None, 5 * MIB) == 5 * MIB
    assert part_size_for(1024 * MIB, 5 * MIB) == 5 * MIB
    huge = 100 * 1024 * MIB
    size = part_size_for(huge, 5 * MIB)
    assert size > 5 * MIB
    assert -(-huge // size) <= S3_MAX_PARTS


def test_extension_from_presigned_url() -> None:
    assert extension("http://h/rec/video.mp4?X-Amz-Signature=x", "bin") == "mp4"
    assert extension("http://h/rec/audio.flac", "m4a") == "flac"
    assert extension("http://h/rec/download", "mp4") == "mp4"
