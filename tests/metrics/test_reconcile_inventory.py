"""Reconciliation from S3 Inventory reports, against the real stack: reports written in AWS's
documented layout and format into a destination bucket of the test's own, read by a run
configured to use them. What an operator sees: the per-org drift and corrections, the stored
level, the run's record (its source and report) and, when a report cannot be used, a log line
saying why and a run that listed the bucket instead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import structlog

from notetaker.common.events import StorageUsage
from notetaker.common.s3 import RECORDINGS_PREFIX, S3Client, recording_key
from notetaker.metrics.inventory import InventorySource
from notetaker.metrics.reconcile import Reconciliation, reconcile, usage_event_id
from notetaker.metrics.usage import apply
from tests.conftest import scratch_bucket
from tests.metrics.inventory_reports import row, write_report
from tests.metrics.test_reconcile import (
    HOUR,
    PRICES,
    T0,
    Stored,
    count_upload,
    levels,
    meeting_row,
    store,
    user_of,
)

CONFIG = "recordings-daily"
PREFIX = "inventory"


@pytest.fixture
def bucket(own_bucket: str) -> str:
    return own_bucket


@pytest.fixture
async def destination(s3: S3Client) -> AsyncIterator[str]:
    """The bucket the inventory configuration delivers its reports to."""
    async with scratch_bucket(s3, "inv") as name:
        yield name


def source(destination: str, hours: float = 48) -> InventorySource:
    return InventorySource(destination, PREFIX, CONFIG, timedelta(hours=hours))


async def bucket_rows(s3: S3Client, bucket: str) -> list[list[str]]:
    """A row per object the bucket holds now, as the inventory would report it."""
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=RECORDINGS_PREFIX)
    return [row(bucket, o["Key"], int(o["Size"])) for o in listed.get("Contents", [])]


async def deliver(
    s3: S3Client, destination: str, bucket: str, created: datetime, rows: list[list[str]]
) -> str:
    """A report of `rows` in three data files (and a noncurrent version and a delete marker a
    listing would not show), made at `created`."""
    extra = [
        row(bucket, rows[0][1], 123_456, latest=False),
        row(
            bucket,
            f"{RECORDINGS_PREFIX}{uuid.uuid4()}/u/{uuid.uuid4()}/v.mp4",
            0,
            delete_marker=True,
        ),
    ]
    everything = rows + extra
    files = [everything[n::3] for n in range(3)]
    return await write_report(s3, destination, PREFIX, bucket, CONFIG, created, files)


def per_org(run: Reconciliation | None) -> list[tuple[uuid.UUID, int, int, int]]:
    assert run is not None
    return [(o.org_id, o.listed_bytes, o.s3_bytes, o.drift_bytes) for o in run.orgs]


async def runs(db: asyncpg.Pool) -> list[tuple[str, str | None, int]]:
    rows = await db.fetch(
        "SELECT source, manifest_key, objects_listed FROM storage_reconciliations ORDER BY slot"
    )
    return [(r["source"], r["manifest_key"], r["objects_listed"]) for r in rows]


async def lifecycle_deletes(db: asyncpg.Pool, s3: S3Client, bucket: str, stored: Stored) -> None:
    user = await user_of(db, stored)
    for key in (
        recording_key(stored.org_id, user, stored.recording_id, "video", "mp4"),
        recording_key(stored.org_id, user, stored.recording_id, "audio", "mp3"),
    ):
        await s3.delete_object(Bucket=bucket, Key=key)


async def test_a_report_gives_the_per_org_result_a_listing_gives_and_confirms_its_drift(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, destination: str
) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    expiring = await store(own_db, s3, bucket, org, 3_000, 1_000)
    await store(own_db, s3, bucket, org, 5_000, 2_000)
    await store(own_db, s3, bucket, other, 700, 300)
    await store(own_db, s3, bucket, other, 40, 0, counted=False, status="uploading")  # in flight
    await lifecycle_deletes(own_db, s3, bucket, expiring)  # no event says so
    assert await levels(own_db) == {org: 11_000, other: 1_000}

    listed = await reconcile(own_db, s3, bucket, PRICES, slot=T0, by="test")
    report = await deliver(
        s3, destination, bucket, datetime.now(UTC), await bucket_rows(s3, bucket)
    )
    read = await reconcile(
        own_db, s3, bucket, PRICES, slot=T0 + HOUR, by="test", inventory=source(destination)
    )
    # The same per org: S3 short of the level by what the lifecycle rule deleted.
    assert (
        per_org(read)
        == per_org(listed)
        == [
            (org, 7_000, 7_000, -4_000),
            (other, 1_040, 1_000, 0),
        ]
    )
    assert read is not None
    assert (read.listing.source, read.listing.objects) == ("inventory", 6)
    # The report confirms the listing's drift: corrected.
    assert [(o.org_id, o.corrected_bytes) for o in read.drifting] == [(org, -4_000)]
    assert await levels(own_db) == {org: 7_000, other: 1_000}
    assert await runs(own_db) == [("list", None, 6), ("inventory", report, 6)]

    # Until a new report is delivered, the next slots have nothing new to compare.
    assert (
        await reconcile(
            own_db, s3, bucket, PRICES, slot=T0 + 2 * HOUR, by="test", inventory=source(destination)
        )
        is None
    )
    assert len(await runs(own_db)) == 2


async def test_a_day_old_report_does_not_make_the_day_since_look_like_drift(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, destination: str
) -> None:
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    deleted = await store(own_db, s3, bucket, org, 2_000, 0)
    waiting = await store(own_db, s3, bucket, org, 300, 0, counted=False, status="uploading")
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    before = await bucket_rows(s3, bucket)  # what the bucket held when the report was made

    # Since the report: an upload stored and counted, one stored and not counted yet, one
    # recording deleted (its objects gone, its usage event applied), an in-flight one counted.
    await store(own_db, s3, bucket, org, 4_000, 0)
    await store(own_db, s3, bucket, org, 50, 0, counted=False, status="uploading")
    await lifecycle_deletes(own_db, s3, bucket, deleted)
    await own_db.execute(
        "INSERT INTO media_deletions (recording_id, meeting_id, bot_id, org_id, s3_prefix, reason,"
        " requested_by, stored_bytes, s3_done_at) VALUES ($1, $2, $3, $4, 'p', 'retention', 't',"
        " $5, now())",
        deleted.recording_id,
        deleted.meeting_id,
        deleted.bot_id,
        org,
        deleted.size,
    )
    await own_db.execute(
        "UPDATE recordings SET media_deleted_at = now() WHERE id = $1", deleted.recording_id
    )
    gone = StorageUsage(
        bot_id=deleted.bot_id,
        org_id=org,
        recording_id=deleted.recording_id,
        step="delete",
        bytes_stored=-deleted.size,
        occurred_at=datetime.now(UTC),
    )
    assert await apply(own_db, usage_event_id(deleted.recording_id, "delete"), gone, PRICES)
    await count_upload(own_db, waiting)
    assert await levels(own_db) == {org: 5_300}

    await deliver(s3, destination, bucket, day_ago, before)
    run = await reconcile(
        own_db, s3, bucket, PRICES, slot=T0, by="test", inventory=source(destination)
    )
    assert run is not None
    assert run.listing.source == "inventory"
    assert run.drifting == []
    (found,) = run.orgs
    assert (found.listed_bytes, found.since_listing_bytes, found.s3_bytes) == (
        3_300,  # what the report saw
        4_000 - 2_000,  # counted since: the upload it did not see, the deletion of one it did
        5_300,
    )
    # A newer report, made after all of it, agrees.
    await deliver(s3, destination, bucket, datetime.now(UTC), await bucket_rows(s3, bucket))
    again = await reconcile(
        own_db, s3, bucket, PRICES, slot=T0 + HOUR, by="test", inventory=source(destination)
    )
    assert again is not None
    assert (again.listing.source, again.drifting) == ("inventory", [])
    assert await levels(own_db) == {org: 5_300}


async def test_a_stale_report_is_refused_and_the_bucket_listed(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, destination: str
) -> None:
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    await store(own_db, s3, bucket, org, 2_000, 0)
    # Three days old: it saw only the first recording; read, it would seem a drift.
    rows = (await bucket_rows(s3, bucket))[:1]
    await deliver(s3, destination, bucket, datetime.now(UTC) - timedelta(hours=72), rows)
    with structlog.testing.capture_logs() as logs:
        run = await reconcile(
            own_db, s3, bucket, PRICES, slot=T0, by="test", inventory=source(destination, 48)
        )
    assert run is not None
    assert (run.listing.source, run.listing.objects, run.drifting) == ("list", 4, [])
    (stale,) = [line for line in logs if line["event"] == "storage.inventory_stale"]
    assert (stale["max_age_hours"], stale["fallback"]) == (48.0, "list")
    assert stale["age_hours"] > 48
    assert await runs(own_db) == [("list", None, 4)]


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        (b'{"sourceBucket": ', "not JSON"),
        (None, "lacks Size"),  # a schema without Size
    ],
)
async def test_a_malformed_report_is_named_in_the_log_and_the_bucket_listed(
    own_db: asyncpg.Pool,
    s3: S3Client,
    bucket: str,
    destination: str,
    manifest: bytes | None,
    says: str,
) -> None:
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    key = await write_report(
        s3,
        destination,
        PREFIX,
        bucket,
        CONFIG,
        datetime.now(UTC),
        [[row(bucket, "meeting-recordings/x", 1)]],
        schema="Bucket, Key, LastModifiedDate",
        manifest=manifest,
    )
    with structlog.testing.capture_logs() as logs:
        run = await reconcile(
            own_db, s3, bucket, PRICES, slot=T0, by="test", inventory=source(destination)
        )
    assert run is not None
    assert (run.listing.source, run.listing.objects, run.drifting) == ("list", 2, [])
    (unusable,) = [line for line in logs if line["event"] == "storage.inventory_unusable"]
    assert key in unusable["error"]
    assert says in unusable["error"]
    assert unusable["fallback"] == "list"


async def test_a_report_judges_a_recording_gone_only_once_it_had_time_to_appear_in_it(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, destination: str
) -> None:
    org = uuid.uuid4()
    kept = await store(own_db, s3, bucket, org, 500, 0)
    expired = await store(own_db, s3, bucket, org, 1_000, 0)
    recent = await store(own_db, s3, bucket, org, 2_000, 0)
    ages = ((kept, timedelta(days=5)), (expired, timedelta(days=3)), (recent, timedelta(hours=1)))
    for stored, age in ages:
        await own_db.execute(
            "UPDATE recordings SET updated_at = now() - $2::interval WHERE id = $1",
            stored.recording_id,
            age,
        )
    await lifecycle_deletes(own_db, s3, bucket, expired)
    # The report misses the recording stored an hour before it (S3 Inventory is eventually
    # consistent), as it misses the one the lifecycle rule deleted.
    rows = [r for r in await bucket_rows(s3, bucket) if str(recent.recording_id) not in r[1]]
    report = await deliver(s3, destination, bucket, datetime.now(UTC), rows)
    run = await reconcile(
        own_db, s3, bucket, PRICES, slot=T0, by="test", inventory=source(destination)
    )
    assert run is not None
    assert run.expired == [expired.recording_id]
    assert (await meeting_row(own_db, expired))["recording_status"] == "media_expired"
    assert (await meeting_row(own_db, recent))["recording_status"] == "available"
    assert (await meeting_row(own_db, kept))["recording_status"] == "available"

    # A listing in between (`notetaker costs reconcile`) does not make the report new again.
    await reconcile(own_db, s3, bucket, PRICES, slot=T0 + HOUR, by="by hand")
    assert (
        await reconcile(
            own_db, s3, bucket, PRICES, slot=T0 + 2 * HOUR, by="test", inventory=source(destination)
        )
        is None
    )
    assert [(s, m) for s, m, _ in await runs(own_db)] == [("inventory", report), ("list", None)]


async def test_a_report_still_being_delivered_is_not_read(
    own_db: asyncpg.Pool, s3: S3Client, bucket: str, destination: str
) -> None:
    """AWS writes manifest.checksum last: a dated folder without it is a report in progress."""
    org = uuid.uuid4()
    await store(own_db, s3, bucket, org, 1_000, 0)
    key = await deliver(s3, destination, bucket, datetime.now(UTC), await bucket_rows(s3, bucket))
    await s3.delete_object(Bucket=destination, Key=key.replace(".json", ".checksum"))
    with structlog.testing.capture_logs() as logs:
        run = await reconcile(
            own_db, s3, bucket, PRICES, slot=T0, by="test", inventory=source(destination)
        )
    assert run is not None
    assert (run.listing.source, run.listing.objects) == ("list", 2)
    (unusable,) = [line for line in logs if line["event"] == "storage.inventory_unusable"]
    assert "incomplete" in unusable["error"]
