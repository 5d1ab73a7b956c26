"""Thumbnails are charged: the thumbnailer (real, on the stack's S3 and a database of the test's
own) counts the JPEG it stores in its org's stored level, a regenerated one moves the level by
the difference, a deletion takes it off with the recording, and reconciliation with S3 finds the
level true all along, also while a thumbnail's usage event is still on its way.

Kafka is what the thumbnailer and the deletion path publish, kept (`Captured`) and delivered to
the cost model by the test: when it chooses (an event in flight), and twice (as Kafka may)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.envelope import Envelope, event_id
from notetaker.common.events import StorageUsage, ThumbnailGenerated, ThumbnailRequested
from notetaker.common.later_objects import record_later_object
from notetaker.common.s3 import S3Client, recording_key, s3_location
from notetaker.devstack.media import make_recording
from notetaker.metrics.reconcile import Reconciliation, reconcile, usage_event_id
from notetaker.metrics.usage import apply
from notetaker.uploader import thumbnails
from notetaker.uploader.thumbnails import Thumbnailer
from tests.metrics.test_reconcile import HOUR, PRICES, T0, Captured, after_listing, levels

NO_PROVIDERS = ProviderAccess("http://127.0.0.1:9", None, "http://127.0.0.1:9", None)


@pytest.fixture
def bucket(own_bucket: str) -> str:
    return own_bucket


@functools.cache
def video() -> bytes:
    return make_recording(4.0).video


@dataclass(frozen=True)
class Recorded:
    org_id: uuid.UUID
    recording_id: uuid.UUID
    bot_id: str
    size: int
    request: ThumbnailRequested


async def stored_recording(db: asyncpg.Pool, s3: S3Client, bucket: str) -> Recorded:
    """A meeting whose video the upload stored and counted (its usage event applied)."""
    org, user, recording, meeting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bot = f"bot-{recording.hex[:12]}"
    body = await asyncio.to_thread(video)
    video_key = recording_key(org, user, recording, "video", "mp4")
    await s3.put_object(Bucket=bucket, Key=video_key, Body=body)
    await db.execute(
        "INSERT INTO meetings (id, org_id, owner_user_id, start_time, source, bot_id, video_url,"
        " recording_status) VALUES ($1, $2, $3, now(), 'notetaker', $4, $5, 'available')",
        meeting,
        org,
        user,
        bot,
        s3_location(bucket, video_key),
    )
    await db.execute(
        "INSERT INTO recordings (id, org_id, user_id, meeting_id, bot_id, s3_upload_status,"
        " s3_video_key, s3_file_size_bytes) VALUES ($1, $2, $3, $4, $5, 'complete', $6, $7)",
        recording,
        org,
        user,
        meeting,
        bot,
        video_key,
        len(body),
    )
    upload = StorageUsage(
        bot_id=bot,
        org_id=org,
        recording_id=recording,
        step="upload",
        bytes_stored=len(body),
        bytes_uploaded=len(body),
        put_requests=1,
        occurred_at=datetime.now(UTC),
    )
    assert await apply(db, usage_event_id(recording, "upload"), upload, PRICES)
    request = ThumbnailRequested(
        bot_id=bot,
        recording_id=recording,
        org_id=org,
        bucket=bucket,
        video_key=video_key,
        thumbnail_key=recording_key(org, user, recording, "thumbnail", "jpg"),
    )
    return Recorded(org, recording, bot, len(body), request)


async def make_thumbnail(
    db: asyncpg.Pool, s3: S3Client, recorded: Recorded, kafka: Captured, width: int = 160
) -> None:
    thumbnailer = Thumbnailer(s3, kafka, db, width=width, at_seconds=1.0)
    request = recorded.request
    await thumbnailer.handle(Envelope("id", "/t", request.type, datetime.now(UTC), request))


async def deliver(db: asyncpg.Pool, kafka: Captured) -> None:
    """Every usage event published so far, delivered to the cost model twice; then forgotten."""
    for event in kafka.events * 2:
        if isinstance(event, StorageUsage):
            await apply(db, event_id(event), event, PRICES)
    kafka.events.clear()


async def thumbnail_size(s3: S3Client, recorded: Recorded) -> int:
    head = await s3.head_object(Bucket=recorded.request.bucket, Key=recorded.request.thumbnail_key)
    return int(head["ContentLength"])


async def reconciled(db: asyncpg.Pool, s3: S3Client, bucket: str, slot: int) -> Reconciliation:
    run = await reconcile(db, s3, bucket, PRICES, slot=T0 + slot * HOUR, by="test")
    assert run is not None
    return run


async def assert_no_drift(db: asyncpg.Pool, s3: S3Client, bucket: str, first_slot: int) -> None:
    """Two runs in a row find the level true: nothing drifts, nothing is corrected."""
    for slot in (first_slot, first_slot + 1):
        run = await reconciled(db, s3, bucket, slot)
        assert [(o.org_id, o.drift_bytes) for o in run.drifting] == []
        assert run.corrected_bytes == 0


async def test_a_stored_thumbnail_raises_its_orgs_level_by_its_size_and_s3_agrees(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    recorded = await stored_recording(own_db, s3, bucket)
    assert await levels(own_db) == {recorded.org_id: recorded.size}
    kafka = Captured()
    await make_thumbnail(own_db, s3, recorded, kafka)
    generated = [e for e in kafka.events if isinstance(e, ThumbnailGenerated)]
    assert len(generated) == 1
    jpeg = await thumbnail_size(s3, recorded)
    assert generated[0].size_bytes == jpeg > 0
    await deliver(own_db, kafka)

    assert await levels(own_db) == {recorded.org_id: recorded.size + jpeg}
    await assert_no_drift(own_db, s3, bucket, 0)
    assert await levels(own_db) == {recorded.org_id: recorded.size + jpeg}


async def test_a_regenerated_thumbnail_moves_the_level_by_the_difference_once(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    recorded = await stored_recording(own_db, s3, bucket)
    kafka = Captured()
    await make_thumbnail(own_db, s3, recorded, kafka, width=160)
    small = await thumbnail_size(s3, recorded)
    await deliver(own_db, kafka)
    assert await levels(own_db) == {recorded.org_id: recorded.size + small}

    # Regenerated larger (`notetaker thumbnails regenerate` after the width was raised), and
    # the same request handled twice (a redelivery), its events delivered twice each.
    await make_thumbnail(own_db, s3, recorded, kafka, width=320)
    await make_thumbnail(own_db, s3, recorded, kafka, width=320)
    large = await thumbnail_size(s3, recorded)
    assert large != small
    await deliver(own_db, kafka)
    assert await levels(own_db) == {recorded.org_id: recorded.size + large}
    await assert_no_drift(own_db, s3, bucket, 0)

    # And back to the small one: a change again, by the difference.
    await make_thumbnail(own_db, s3, recorded, kafka, width=160)
    await deliver(own_db, kafka)
    assert await thumbnail_size(s3, recorded) == small
    assert await levels(own_db) == {recorded.org_id: recorded.size + small}
    await assert_no_drift(own_db, s3, bucket, 2)


async def delete(db: asyncpg.Pool, s3: S3Client, bucket: str, recorded: Recorded) -> Captured:
    kafka = Captured()
    async with aiohttp.ClientSession() as http:
        deleter = MediaDeleter(db, s3, bucket, kafka, NO_PROVIDERS, http)
        outcome = await deleter.delete(recorded.recording_id, by="ops@test", reason="operator")
        assert outcome is not None
        assert outcome.deletion.done
    return kafka


async def test_deleting_a_meeting_with_a_thumbnail_takes_the_level_back_to_zero(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    recorded = await stored_recording(own_db, s3, bucket)
    kafka = Captured()
    await make_thumbnail(own_db, s3, recorded, kafka)
    await deliver(own_db, kafka)
    assert await levels(own_db) == {
        recorded.org_id: recorded.size + await thumbnail_size(s3, recorded)
    }

    await deliver(own_db, await delete(own_db, s3, bucket, recorded))
    assert await levels(own_db) == {recorded.org_id: 0}
    await assert_no_drift(own_db, s3, bucket, 0)
    # Regenerating it afterwards (a request still on its way) makes and counts nothing.
    await make_thumbnail(own_db, s3, recorded, kafka, width=320)
    assert kafka.events == []
    assert await levels(own_db) == {recorded.org_id: 0}
    await assert_no_drift(own_db, s3, bucket, 2)


async def test_a_deletion_while_the_thumbnails_event_is_on_its_way_still_ends_at_zero(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    recorded = await stored_recording(own_db, s3, bucket)
    thumbnailer_kafka = Captured()
    await make_thumbnail(own_db, s3, recorded, thumbnailer_kafka)
    deletion_kafka = await delete(own_db, s3, bucket, recorded)
    # The deletion's event lands first; reconciliation meanwhile finds nothing to correct.
    await deliver(own_db, deletion_kafka)
    await assert_no_drift(own_db, s3, bucket, 0)
    await deliver(own_db, thumbnailer_kafka)
    assert await levels(own_db) == {recorded.org_id: 0}
    await assert_no_drift(own_db, s3, bucket, 2)


async def test_reconciliation_while_a_thumbnails_usage_event_is_not_applied_finds_no_drift(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = await stored_recording(own_db, s3, bucket)
    kafka = Captured()
    # Written and recorded, its event not applied yet: in flight, across two runs.
    await make_thumbnail(own_db, s3, recorded, kafka, width=160)
    small = await thumbnail_size(s3, recorded)
    await assert_no_drift(own_db, s3, bucket, 0)
    run = await reconciled(own_db, s3, bucket, 2)
    assert run.orgs[0].in_flight_bytes == small
    await deliver(own_db, kafka)
    assert await levels(own_db) == {recorded.org_id: recorded.size + small}
    await assert_no_drift(own_db, s3, bucket, 3)

    # Regenerated larger, its event (the difference) not applied yet.
    await make_thumbnail(own_db, s3, recorded, kafka, width=320)
    large = await thumbnail_size(s3, recorded)
    await assert_no_drift(own_db, s3, bucket, 5)
    run = await reconciled(own_db, s3, bucket, 7)
    assert run.orgs[0].in_flight_bytes == large - small
    await deliver(own_db, kafka)
    await assert_no_drift(own_db, s3, bucket, 8)

    # Written and not recorded yet (the thumbnailer between its put and its record).
    kafka_later = Captured()
    await s3.put_object(
        Bucket=bucket, Key=recorded.request.thumbnail_key, Body=b"\xff\xd8\xff" + b"j" * 99
    )
    await assert_no_drift(own_db, s3, bucket, 10)

    # Recorded and counted between a run's listing and its comparison: the listing saw the
    # object before the change; the run knows the change was counted since it began.
    async def recorded_and_counted() -> None:
        await make_thumbnail(own_db, s3, recorded, kafka_later, width=160)
        await deliver(own_db, kafka_later)

    after_listing(monkeypatch, recorded_and_counted)
    raced = await reconciled(own_db, s3, bucket, 12)
    assert raced.drifting == []
    assert await levels(own_db) == {recorded.org_id: recorded.size + small}
    await assert_no_drift(own_db, s3, bucket, 13)


async def test_a_thumbnail_recorded_as_its_meeting_is_deleted_is_counted_nowhere(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion marks the recording between the thumbnailer's second check and its record:
    the record refuses it, the JPEG (listed by the purge, or deleted by the thumbnailer) is gone,
    and nothing was added that the deletion did not take off."""
    recorded = await stored_recording(own_db, s3, bucket)
    checks: list[bool] = []
    deleted: list[Captured] = []

    async def deleted_right_after_the_check(pool: asyncpg.Pool, recording_id: uuid.UUID) -> bool:
        checks.append(True)
        if len(checks) == 2:  # the check after the put answers "not deleted", then it is
            deleted.append(await delete(own_db, s3, bucket, recorded))
        return False

    monkeypatch.setattr(thumbnails, "media_deleted", deleted_right_after_the_check)
    kafka = Captured()
    await make_thumbnail(own_db, s3, recorded, kafka)
    assert kafka.events == []  # neither counted nor announced
    await deliver(own_db, deleted[0])
    assert await levels(own_db) == {recorded.org_id: 0}
    listing = await s3.list_objects_v2(
        Bucket=bucket, Prefix=recorded.request.thumbnail_key.rsplit("/", 1)[0]
    )
    assert listing.get("Contents", []) == []
    await assert_no_drift(own_db, s3, bucket, 0)


async def test_gladias_result_is_charged_like_the_thumbnail(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    """Any later object (here Gladia's result as transcript-sync archives it) is counted,
    reconciled and taken off by a deletion as the thumbnail is."""
    recorded = await stored_recording(own_db, s3, bucket)
    key = recorded.request.thumbnail_key.rsplit("/", 1)[0] + "/gladia-result.json"
    body = b'{"result": "' + b"x" * 1234 + b'"}'
    await s3.put_object(Bucket=bucket, Key=key, Body=body)
    kafka = Captured()
    assert await record_later_object(
        own_db,
        kafka,
        bot_id=recorded.bot_id,
        org_id=recorded.org_id,
        recording_id=recorded.recording_id,
        kind="gladia_result",
        key=key,
        size=len(body),
        checksum="sha256:gladia",
    )
    await assert_no_drift(own_db, s3, bucket, 0)  # its event not applied yet: in flight
    await deliver(own_db, kafka)
    assert await levels(own_db) == {recorded.org_id: recorded.size + len(body)}
    await assert_no_drift(own_db, s3, bucket, 2)
    await deliver(own_db, await delete(own_db, s3, bucket, recorded))
    assert await levels(own_db) == {recorded.org_id: 0}
    await assert_no_drift(own_db, s3, bucket, 4)
