"""Reconciliation against the real stack: PostgreSQL (a database of the test's own, since a run
reconciles every org) and the S3 server (a bucket of the test's own). What an operator sees: the
stored level before and after, the drift series the metrics service serves, the meetings rows,
and the run's record."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from notetaker.common.deletion import MediaDeleter, ProviderAccess
from notetaker.common.envelope import event_id
from notetaker.common.events import Event, StorageUsage
from notetaker.common.kafka import EventPublisher
from notetaker.common.s3 import S3Client, recording_key, s3_location
from notetaker.metrics import reconcile as reconcile_module
from notetaker.metrics.app import UsageRecorder
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.reconcile import Listing, reconcile, reconcile_forever, usage_event_id
from notetaker.metrics.settings import MetricsSettings
from notetaker.metrics.usage import Prices, apply, month_to_date
from notetaker.scheduler.retention import apply_retention

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)
HOUR = timedelta(hours=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def bucket(own_bucket: str) -> str:
    return own_bucket


@dataclass(frozen=True)
class Stored:
    org_id: uuid.UUID
    recording_id: uuid.UUID
    meeting_id: uuid.UUID
    bot_id: str
    size: int


async def store(
    db: asyncpg.Pool,
    s3: S3Client,
    bucket: str,
    org: uuid.UUID,
    video: int,
    audio: int,
    *,
    counted: bool = True,
    status: str = "complete",
) -> Stored:
    """A recording as the pipeline leaves it: meeting and recording rows, its video and audio
    objects, and (when `counted`) its upload's usage event applied, with the uploader's event id."""
    user, recording, meeting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bot = f"bot-{recording.hex[:12]}"
    video_key = recording_key(org, user, recording, "video", "mp4")
    audio_key = recording_key(org, user, recording, "audio", "mp3")
    await s3.put_object(Bucket=bucket, Key=video_key, Body=b"v" * video)
    await s3.put_object(Bucket=bucket, Key=audio_key, Body=b"a" * audio)
    await db.execute(
        "INSERT INTO meetings (id, org_id, owner_user_id, start_time, source, bot_id, video_url,"
        " audio_url, recording_status) VALUES ($1, $2, $3, now(), 'notetaker', $4, $5, $6,"
        " 'available')",
        meeting,
        org,
        user,
        bot,
        s3_location(bucket, video_key),
        s3_location(bucket, audio_key),
    )
    await db.execute(
        "INSERT INTO recordings (id, org_id, user_id, meeting_id, bot_id, s3_upload_status,"
        " s3_video_key, s3_audio_key, s3_file_size_bytes)"
        " VALUES ($1, $2, $3, $4, $5, $6::s3_upload_status, $7, $8, $9)",
        recording,
        org,
        user,
        meeting,
        bot,
        status,
        video_key,
        audio_key,
        video + audio,
    )
    stored = Stored(org, recording, meeting, bot, video + audio)
    if counted:
        await count_upload(db, stored)
    return stored


async def count_upload(db: asyncpg.Pool, stored: Stored) -> None:
    event = StorageUsage(
        bot_id=stored.bot_id,
        org_id=stored.org_id,
        recording_id=stored.recording_id,
        step="upload",
        bytes_stored=stored.size,
        bytes_uploaded=stored.size,
        put_requests=2,
        occurred_at=datetime.now(UTC),
    )
    assert await apply(db, usage_event_id(stored.recording_id, "upload"), event, PRICES)


async def levels(db: asyncpg.Pool) -> dict[uuid.UUID, int]:
    today = datetime.now(UTC).date()
    return {uuid.UUID(c.org_id): round(c.stored_bytes) for c in await month_to_date(db, today)}


async def scraped(db: asyncpg.Pool) -> dict[str, dict[str, float]]:
    """The drift families of /metrics after the metrics service's refresh."""
    await UsageRecorder(MetricsSettings(storage_drift_alert_percent=5.0), db).refresh()
    found: dict[str, dict[str, float]] = {"drift_bytes": {}, "drift_ratio": {}}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.name.startswith("notetaker_storage_reconciliation_"):
                name = sample.name.removeprefix("notetaker_storage_reconciliation_")
                found.setdefault(name, {})[sample.labels.get("org_id", "")] = sample.value
    return found


async def meeting_row(db: asyncpg.Pool, stored: Stored) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT recording_status, video_url, audio_url, media_deleted_at IS NOT NULL AS gone"
        " FROM meetings WHERE id = $1",
        stored.meeting_id,
    )
    return row


async def test_objects_the_lifecycle_rule_deleted_lower_the_level_once_and_expire_the_meeting(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    expiring = await store(own_db, s3, bucket, org, 3_000, 1_000)
    kept = await store(own_db, s3, bucket, org, 5_000, 2_000)
    elsewhere = await store(own_db, s3, bucket, other, 700, 300)
    assert await levels(own_db) == {org: 11_000, other: 1_000}
    # A recording of a bucket the service was configured with before: not this listing's.
    moved = await store(own_db, s3, bucket, uuid.uuid4(), 100, 0, counted=False)
    await own_db.execute(
        "UPDATE meetings SET video_url = replace(video_url, $2, 'old-bucket') WHERE id = $1",
        moved.meeting_id,
        bucket,
    )
    await s3.delete_object(
        Bucket=bucket,
        Key=recording_key(
            moved.org_id, await user_of(own_db, moved), moved.recording_id, "video", "mp4"
        ),
    )
    await s3.delete_object(
        Bucket=bucket,
        Key=recording_key(
            moved.org_id, await user_of(own_db, moved), moved.recording_id, "audio", "mp3"
        ),
    )

    first = await reconcile(own_db, s3, bucket, PRICES, slot=T0, by="test")
    assert first is not None
    assert first.drifting == []
    assert first.listing.objects == 6
    assert (await meeting_row(own_db, moved))["recording_status"] == "available"
    drift = await scraped(own_db)
    assert drift["drift_bytes"] == {}
    assert drift["platform_drift_bytes"] == {"": 0}

    # The bucket's lifecycle rule deletes the objects: no code of ours is told.
    user = await user_of(own_db, expiring)
    for recording in (expiring, kept):  # the transcript JSON each had stored beside its video
        owner = await user_of(own_db, recording)
        await own_db.execute(
            "INSERT INTO recording_artifacts (recording_id, kind, s3_key, size_bytes, checksum)"
            " VALUES ($1, 'transcription', $2, 0, 'c')",
            recording.recording_id,
            recording_key(org, owner, recording.recording_id, "transcription", "json"),
        )
    for key in (
        recording_key(org, user, expiring.recording_id, "video", "mp4"),
        recording_key(org, user, expiring.recording_id, "audio", "mp3"),
    ):
        await s3.delete_object(Bucket=bucket, Key=key)

    seen = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + HOUR, by="test")
    assert seen is not None
    assert [(o.org_id, o.drift_bytes, o.corrected_bytes) for o in seen.drifting] == [
        (org, -4_000, 0)  # seen once: not corrected yet
    ]
    assert await levels(own_db) == {org: 11_000, other: 1_000}
    drift = await scraped(own_db)
    assert drift["drift_bytes"] == {str(org): -4_000}
    assert drift["drift_ratio"] == {str(org): pytest.approx(4_000 / 11_000, abs=1e-6)}
    assert drift["platform_drift_bytes"] == {"": -4_000}
    # Its meeting says the media expired instead of pointing at deleted objects.
    row = await meeting_row(own_db, expiring)
    assert (row["recording_status"], row["video_url"], row["audio_url"], row["gone"]) == (
        "media_expired",
        None,
        None,
        True,
    )
    assert (await meeting_row(own_db, kept))["recording_status"] == "available"
    assert (await meeting_row(own_db, elsewhere))["video_url"] is not None
    artifacts = {
        r["recording_id"]: r["s3_key"]
        for r in await own_db.fetch("SELECT recording_id, s3_key FROM recording_artifacts")
    }
    assert artifacts[expiring.recording_id] is None  # its row no longer leads to a deleted key
    assert artifacts[kept.recording_id] is not None

    # Two replicas on the next slot: one reconciles, the level drops once.
    runs = await asyncio.gather(
        *(reconcile(own_db, s3, bucket, PRICES, slot=T0 + 2 * HOUR, by=f"r{n}") for n in (1, 2))
    )
    (corrected,) = [r for r in runs if r is not None]
    assert [(o.org_id, o.drift_bytes, o.corrected_bytes) for o in corrected.drifting] == [
        (org, -4_000, -4_000)
    ]
    assert await levels(own_db) == {org: 7_000, other: 1_000}
    assert (await scraped(own_db))["corrected_bytes"] == {"": -4_000}
    # The slot again: nothing more.
    assert await reconcile(own_db, s3, bucket, PRICES, slot=T0 + 2 * HOUR, by="again") is None

    settled = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + 3 * HOUR, by="test")
    assert settled is not None
    assert settled.drifting == []
    assert settled.corrected_bytes == 0
    assert await levels(own_db) == {org: 7_000, other: 1_000}
    drift = await scraped(own_db)
    assert drift["drift_bytes"] == {}
    assert drift["platform_drift_bytes"] == {"": 0}
    # The correction is on record.
    record = await own_db.fetch(
        "SELECT slot, org_id, drift_bytes, corrected_bytes, expired_recordings"
        " FROM storage_reconciliation_orgs ORDER BY slot"
    )
    assert [tuple(r.values()) for r in record] == [
        (T0 + HOUR, org, -4_000, 0, [expiring.recording_id]),
        (T0 + 2 * HOUR, org, -4_000, -4_000, []),
    ]


async def user_of(db: asyncpg.Pool, stored: Stored) -> uuid.UUID:
    user: uuid.UUID = await db.fetchval(
        "SELECT user_id FROM recordings WHERE id = $1", stored.recording_id
    )
    return user


def after_listing(monkeypatch: pytest.MonkeyPatch, then: Callable[[], Awaitable[None]]) -> None:
    """Run `then` between a run's listing and its comparison (once)."""
    real = reconcile_module.list_recordings
    pending = [then]

    async def listing(s3: S3Client, bucket: str, *, page_size: int = 1000) -> Listing:
        found = await real(s3, bucket, page_size=page_size)
        while pending:
            await pending.pop()()
        return found

    monkeypatch.setattr(reconcile_module, "list_recordings", listing)


async def test_uploads_in_flight_are_never_counted_twice_nor_lost(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    await reconcile(own_db, s3, bucket, PRICES, slot=T0, by="test")

    # Stored in S3, its usage event still on Kafka at the next run, and the one after.
    waiting = await store(own_db, s3, bucket, org, 2_000, 500, counted=False, status="uploading")
    for n in (1, 2):
        run = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + n * HOUR, by="test")
        assert run is not None
        assert run.drifting == []
        assert run.orgs[0].in_flight_bytes == 2_500
    await count_upload(own_db, waiting)
    assert await levels(own_db) == {org: 3_500}

    # Completed and counted between a run's listing and its comparison: the listing could not
    # see it, the run knows it was counted since the listing began: no drift.
    async def upload_completes() -> None:
        await count_upload(own_db, await store(own_db, s3, bucket, org, 4_000, 0, counted=False))

    after_listing(monkeypatch, upload_completes)
    raced = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + 3 * HOUR, by="test")
    assert raced is not None
    assert raced.drifting == []
    assert raced.orgs[0].since_listing_bytes == 4_000
    assert (await scraped(own_db))["drift_bytes"] == {}
    after = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + 4 * HOUR, by="test")
    assert after is not None
    assert after.drifting == []
    assert after.corrected_bytes == 0
    assert await levels(own_db) == {org: 7_500}


async def test_listing_pages_through_every_object(s3: S3Client, bucket: str) -> None:
    org = uuid.uuid4()
    for n in range(25):
        key = recording_key(org, org, uuid.UUID(int=n), "video", "mp4")
        await s3.put_object(Bucket=bucket, Key=key, Body=b"x" * (n + 1))
    listing = await reconcile_module.list_recordings(s3, bucket, page_size=10)
    assert (listing.requests, listing.objects, listing.by_org) == (3, 25, {org: 325})


class Captured(EventPublisher):
    """Kafka as far as the deletion path sees it: what it publishes is kept, to be delivered
    to the cost model by the test (and delivered again, as Kafka may)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


async def test_media_deleted_by_retention_lowers_the_level_once_and_its_meeting_says_expired(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    org = uuid.uuid4()
    old = await store(own_db, s3, bucket, org, 6_000, 2_000)
    young = await store(own_db, s3, bucket, org, 1_000, 500)
    await own_db.execute(
        "UPDATE recordings SET created_at = now() - interval '100 days' WHERE id = $1",
        old.recording_id,
    )
    assert await levels(own_db) == {org: 9_500}
    kafka = Captured()
    no_providers = ProviderAccess("http://127.0.0.1:9", None, "http://127.0.0.1:9", None)
    async with aiohttp.ClientSession() as http:
        deleter = MediaDeleter(own_db, s3, bucket, kafka, no_providers, http)

        async def retention_round() -> None:
            async with own_db.acquire() as conn:
                await apply_retention(conn, deleter, default_days=90, now=datetime.now(UTC))

        # Two scheduler rounds at once, then one more.
        await asyncio.gather(retention_round(), retention_round())
        await retention_round()
    for event in kafka.events * 2:  # every event delivered twice
        assert isinstance(event, StorageUsage)
        await apply(own_db, event_id(event), event, PRICES)

    assert await levels(own_db) == {org: 1_500}
    row = await meeting_row(own_db, old)
    assert (row["recording_status"], row["video_url"], row["audio_url"], row["gone"]) == (
        "media_expired",
        None,
        None,
        True,
    )
    assert (await meeting_row(own_db, young))["recording_status"] == "available"
    # S3 agrees with the level: reconciliation finds nothing to correct.
    for n in (0, 1):
        run = await reconcile(own_db, s3, bucket, PRICES, slot=T0 + n * HOUR, by="test")
        assert run is not None
        assert run.drifting == []
    assert await levels(own_db) == {org: 1_500}


async def test_the_service_loop_reconciles_the_current_slot_and_waits_for_the_next(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str
) -> None:
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    loop = asyncio.create_task(reconcile_forever(own_db, s3, bucket, PRICES, HOUR))
    try:
        for _ in range(100):
            runs = await own_db.fetch(
                "SELECT requested_by, objects_listed FROM storage_reconciliations"
            )
            if runs:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # and then nothing more until the next slot
        runs = await own_db.fetch(
            "SELECT requested_by, objects_listed FROM storage_reconciliations"
        )
        assert [tuple(r.values()) for r in runs] == [("metrics", 2)]
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
