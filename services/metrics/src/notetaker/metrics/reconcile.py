"""Reconciliation of the stored level with S3: what the bucket holds per org, listed, against the
level the usage events built; the drift exported and, where it persists, corrected.

A run (`reconcile`) lists `meeting-recordings/` with ListObjectsV2, page by page (one request
per 1,000 objects: its cost grows with the objects, and it runs once per schedule slot), sums
each org's bytes from the keys (`meeting-recordings/{org}/{user}/{recording}/...`), then, in one
transaction holding the storage-level lock exclusively (as the daily rollup does: no usage event
is applied meanwhile, so the levels and the applied events read agree), compares:

- **S3 bytes** of an org = bytes listed under its prefix (every object: the upload's, and the
  later objects, the thumbnail and Gladia's result, which are charged too), less what the level
  does not count yet (in flight: the level will count it when its event lands): the objects of
  uploads whose usage event is not applied yet, and of a later object (`later_objects.py`, one
  event per change of it, whose step its `recording_artifacts` row names) the listed bytes less
  what the level counts of it: all of them when no row records it yet (written, its event not
  published yet), the change's bytes when the row's event is not applied yet; plus the bytes of
  deletions that emptied the prefix before the listing and whose usage event is not applied
  yet (the level will lose them when it lands); plus what the events applied since the listing
  began changed that the listing cannot show (uploads counted since then that it did not find,
  later objects counted since then less what the listing saw of them, less deletions since then
  that are counted: `since_listing_bytes`);
- **drift** = S3 bytes - level.

Where an S3 Inventory configuration is set (`inventory.py`), the listing is instead the newest
inventory report, its time the report's creation: every part above is reckoned from then, so a
report a day old does not make the day since look like drift. A report is used by one run (the
runs after skip until a new one is delivered, so a correction needs two reports); a stale,
missing or malformed one is logged and the run lists the bucket.

A drift is corrected only when it **persists across two consecutive runs**, and only by the part
that persisted (the smaller of the two, same sign; the previous run's drift counted after its
own correction): an object completing while the bucket is listed (a listing is no snapshot),
or an event landing then, shows as drift in one run and not in the next, so it is never corrected,
while an object the bucket's lifecycle rule deleted (which no event reports) shows in both and
is taken off at the second run. The correction changes the level from its time on, as a usage
event would (`usage.shift_level`): the rollup and the month to date charge from the corrected
level on; the days before stay as billed.

A complete recording whose video object is gone from the listing (and whose row was last changed
before the listing began) is marked expired: `media_deleted_at` on the recording and its meeting,
the meeting's media URLs and the artifacts' keys cleared and its `recording_status`
`media_expired`, so every writer refuses it as after a deletion and readers see why there is no
media.

Several replicas: a run holds a session advisory lock (another replica skips the slot), and the
run's row (`storage_reconciliations`, keyed by the slot) is written in the transaction that
corrects: a slot is reconciled, and a level corrected, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from notetaker.common.deletion import MEDIA_EXPIRED
from notetaker.common.envelope import event_id
from notetaker.common.events import StorageUsage
from notetaker.common.later_objects import LATER_KINDS, later_kind
from notetaker.common.logs import get_logger
from notetaker.common.s3 import RECORDINGS_PREFIX, S3Client
from notetaker.metrics.usage import GIB, STORAGE_LEVEL_LOCK, Prices, shift_level

if TYPE_CHECKING:
    from notetaker.metrics.inventory import InventorySource

log = get_logger(__name__)

# One reconciliation at a time, whichever replica or command runs it (a session lock).
RECONCILE_LOCK = 0x72636E6C

# An inventory report may miss objects written or deleted shortly before it was made (AWS: it is
# eventually consistent): a recording is judged gone from a report only when its row is older.
INVENTORY_SETTLE = timedelta(days=1)


@dataclass
class Listing:
    """What one listing of the recordings prefix found."""

    started_at: datetime
    requests: int = 0
    source: str = "list"  # or "inventory": an S3 Inventory report made at `started_at`
    manifest_key: str | None = None  # the report's manifest.json
    objects: int = 0
    bytes: int = 0
    by_org: dict[uuid.UUID, int] = field(default_factory=dict)
    # recording -> (org, bytes of its upload's objects listed under its prefix)
    by_recording: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)
    # (recording, kind) -> (org, bytes) of the later objects listed (the thumbnail, Gladia's
    # result: `later_objects.py`), each counted by events of its own
    later: dict[tuple[uuid.UUID, str], tuple[uuid.UUID, int]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)

    @property
    def settled_before(self) -> datetime:
        """Objects written before this are in the listing if they exist (a ListObjectsV2
        listing is strongly consistent; an inventory report, only after a while)."""
        return self.started_at - (INVENTORY_SETTLE if self.source == "inventory" else timedelta())

    def add(self, key: str, size: int) -> None:
        self.objects += 1
        self.bytes += size
        self.keys.add(key)
        owner = parse_key(key)
        if owner is None:
            return
        org, recording = owner
        self.by_org[org] = self.by_org.get(org, 0) + size
        if recording is None:
            return
        kind = later_kind(key)
        if kind is not None:
            self.later[(recording, kind)] = (org, size)
            return
        _, held = self.by_recording.get(recording, (org, 0))
        self.by_recording[recording] = (org, held + size)


def parse_key(key: str) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """The org (and recording, when the key names one) a key of the recordings prefix belongs
    to; None for a key outside the layout `meeting-recordings/{org}/{user}/{recording}/...`."""
    if not key.startswith(RECORDINGS_PREFIX):
        return None
    parts = key[len(RECORDINGS_PREFIX) :].split("/")
    try:
        org = uuid.UUID(parts[0])
    except ValueError:
        return None
    recording = None
    if len(parts) >= 4:
        try:
            recording = uuid.UUID(parts[2])
        except ValueError:
            recording = None
    return org, recording


async def list_recordings(s3: S3Client, bucket: str, *, page_size: int = 1000) -> Listing:
    """Every object under the recordings prefix, page by page (ListObjectsV2 continuation)."""
    listing = Listing(started_at=datetime.now(UTC))
    token: str | None = None
    while True:
        page = await (
            s3.list_objects_v2(
                Bucket=bucket, Prefix=RECORDINGS_PREFIX, MaxKeys=page_size, ContinuationToken=token
            )
            if token
            else s3.list_objects_v2(Bucket=bucket, Prefix=RECORDINGS_PREFIX, MaxKeys=page_size)
        )
        listing.requests += 1
        for item in page.get("Contents", []):
            listing.add(item["Key"], int(item.get("Size", 0)))
        if not page.get("IsTruncated"):
            return listing
        token = page.get("NextContinuationToken")


def correction(previous_remaining: int | None, drift: int) -> int:
    """The part of `drift` to correct: what persisted since the previous run (whose drift, less
    what it corrected, is `previous_remaining`; None when there was no previous run): the smaller
    of the two when both point the same way, else nothing."""
    if previous_remaining is None:
        return 0
    if drift > 0 and previous_remaining > 0:
        return min(drift, previous_remaining)
    if drift < 0 and previous_remaining < 0:
        return max(drift, previous_remaining)
    return 0


def drift_ratio(level_bytes: int, s3_bytes: int) -> float:
    """The drift as a share of the larger of the level and the S3 bytes (0 when both are 0)."""
    larger = max(abs(level_bytes), abs(s3_bytes))
    return abs(s3_bytes - level_bytes) / larger if larger else 0.0


@dataclass(frozen=True)
class OrgDrift:
    org_id: uuid.UUID
    level_bytes: int
    listed_bytes: int
    in_flight_bytes: int
    pending_deletion_bytes: int
    corrected_bytes: int = 0
    expired_recordings: tuple[uuid.UUID, ...] = ()
    # What the usage events applied since the listing began changed that the listing cannot
    # show: uploads it did not find (+) and deletions of what it found (-).
    since_listing_bytes: int = 0

    @property
    def s3_bytes(self) -> int:
        return (
            self.listed_bytes
            - self.in_flight_bytes
            + self.pending_deletion_bytes
            + self.since_listing_bytes
        )

    @property
    def drift_bytes(self) -> int:
        return self.s3_bytes - self.level_bytes

    @property
    def ratio(self) -> float:
        return drift_ratio(self.level_bytes, self.s3_bytes)

    @property
    def worth_a_row(self) -> bool:
        return bool(
            self.drift_bytes
            or self.corrected_bytes
            or self.expired_recordings
            or self.since_listing_bytes
        )


@dataclass(frozen=True)
class Reconciliation:
    slot: datetime
    listing: Listing
    orgs: list[OrgDrift]  # every org with a level or objects, the largest drift first

    @property
    def level_bytes(self) -> int:
        return sum(o.level_bytes for o in self.orgs)

    @property
    def s3_bytes(self) -> int:
        return sum(o.s3_bytes for o in self.orgs)

    @property
    def corrected_bytes(self) -> int:
        return sum(o.corrected_bytes for o in self.orgs)

    @property
    def drifting(self) -> list[OrgDrift]:
        return [o for o in self.orgs if o.drift_bytes]

    @property
    def expired(self) -> list[uuid.UUID]:
        return [r for o in self.orgs for r in o.expired_recordings]


def usage_event_id(recording_id: uuid.UUID, step: str) -> str:
    """The CloudEvent id of a recording's `storage.usage` for `step` (a function of the fact)."""
    return event_id(
        StorageUsage(
            bot_id="-",
            org_id=uuid.UUID(int=0),
            recording_id=recording_id,
            step=step,
            occurred_at=datetime.now(UTC),
        )
    )


async def _levels(conn: asyncpg.Connection) -> dict[uuid.UUID, int]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (org_id) org_id, value FROM s3_usage_metrics"
        " WHERE metric_type = 'storage_gb' ORDER BY org_id, date DESC"
    )
    return {r["org_id"]: round(float(r["value"]) * GIB) for r in rows}


async def _applied(conn: asyncpg.Connection, ids: Iterable[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT event_id FROM usage_events_applied WHERE event_id = ANY($1::text[])", list(ids)
    )
    return {r["event_id"] for r in rows}


async def _applied_since(conn: asyncpg.Connection, ids: Iterable[str], since: datetime) -> set[str]:
    rows = await conn.fetch(
        "SELECT event_id FROM usage_events_applied WHERE event_id = ANY($1::text[])"
        " AND applied_at >= $2",
        list(ids),
        since,
    )
    return {r["event_id"] for r in rows}


async def _in_flight(conn: asyncpg.Connection, listing: Listing) -> dict[uuid.UUID, int]:
    """Per org, the bytes listed for uploads whose usage event is not applied yet: recordings
    with a row, not deleted, not failed for good."""
    if not listing.by_recording:
        return {}
    ids = {rid: usage_event_id(rid, "upload") for rid in listing.by_recording}
    applied = await _applied(conn, ids.values())
    waiting = [rid for rid, eid in ids.items() if eid not in applied]
    rows = await conn.fetch(
        "SELECT id FROM recordings WHERE id = ANY($1::uuid[]) AND media_deleted_at IS NULL"
        " AND NOT (s3_upload_status = 'failed' AND s3_upload_next_retry_at IS NULL)",
        waiting,
    )
    found: dict[uuid.UUID, int] = {}
    for row in rows:
        org, held = listing.by_recording[row["id"]]
        found[org] = found.get(org, 0) + held
    return found


async def _pending_deletions(conn: asyncpg.Connection, listing: Listing) -> dict[uuid.UUID, int]:
    """Per org, the bytes of deletions that emptied their prefix before the listing and whose
    usage event (taking them off the level) is not applied yet."""
    rows = await conn.fetch(
        "SELECT recording_id, org_id, stored_bytes FROM media_deletions"
        " WHERE stored_bytes > 0 AND s3_done_at < $1"
        " AND (usage_done_at IS NULL OR usage_done_at > $1::timestamptz - interval '7 days')",
        listing.started_at,
    )
    ids = {r["recording_id"]: usage_event_id(r["recording_id"], "delete") for r in rows}
    applied = await _applied(conn, ids.values())
    found: dict[uuid.UUID, int] = {}
    for row in rows:
        if ids[row["recording_id"]] not in applied:
            found[row["org_id"]] = found.get(row["org_id"], 0) + int(row["stored_bytes"])
    return found


async def _since_listing(conn: asyncpg.Connection, listing: Listing) -> dict[uuid.UUID, int]:
    """Per org, what the usage events applied since the listing began changed in the level and
    the listing cannot show (a listing a day old, as an inventory report is, misses a day of
    them; one begun seconds ago, the few that raced it): the bytes of uploads counted since then
    whose recording the listing did not find (+), and of deletions that emptied their prefix
    since then and are counted (-)."""
    found: dict[uuid.UUID, int] = {}
    # An upload counted since the listing was changed since a little before it (its row is
    # updated as it completes, its event applied after; the window as for deletions).
    candidates = [
        r
        for r in await conn.fetch(
            "SELECT id, org_id, s3_file_size_bytes FROM recordings"
            " WHERE updated_at > $1::timestamptz - interval '7 days' AND s3_file_size_bytes > 0",
            listing.started_at,
        )
        if r["id"] not in listing.by_recording
    ]
    ids = {r["id"]: usage_event_id(r["id"], "upload") for r in candidates}
    since = await _applied_since(conn, ids.values(), listing.started_at)
    for row in candidates:
        if ids[row["id"]] in since:
            found[row["org_id"]] = found.get(row["org_id"], 0) + int(row["s3_file_size_bytes"])
    deletions = await conn.fetch(
        "SELECT recording_id, org_id, stored_bytes FROM media_deletions"
        " WHERE stored_bytes > 0 AND s3_done_at >= $1",
        listing.started_at,
    )
    gone = {r["recording_id"]: usage_event_id(r["recording_id"], "delete") for r in deletions}
    applied = await _applied(conn, gone.values())
    for row in deletions:
        if gone[row["recording_id"]] in applied:
            found[row["org_id"]] = found.get(row["org_id"], 0) - int(row["stored_bytes"])
    return found


async def _applied_when(conn: asyncpg.Connection, ids: Iterable[str]) -> dict[str, datetime]:
    rows = await conn.fetch(
        "SELECT event_id, applied_at FROM usage_events_applied WHERE event_id = ANY($1::text[])",
        list(ids),
    )
    return {r["event_id"]: r["applied_at"] for r in rows}


@dataclass
class LaterParts:
    """Per org, the later objects' parts of the comparison (see `_later_objects`)."""

    in_flight: dict[uuid.UUID, int] = field(default_factory=dict)
    since_listing: dict[uuid.UUID, int] = field(default_factory=dict)

    def add(self, part: dict[uuid.UUID, int], org: uuid.UUID, size: int) -> None:
        if size:
            part[org] = part.get(org, 0) + size


async def _later_objects(conn: asyncpg.Connection, listing: Listing) -> LaterParts:
    """The later objects (thumbnail, Gladia's result), each counted by one event per change
    (`later_objects.py`), whose row says the object's size, its last change's step and the bytes
    that step moves the level by: until that event is applied the level counts the size less
    those bytes. Per org:

    - in flight (subtracted): of an object listed, what the level does not count yet: the listed
      bytes less what the level counts (all of them for an object with no row yet, written and
      not recorded; the difference for a replacement whose event is not applied);
    - since the listing (added): of an object whose event was applied since the listing began,
      what the level counts less what the listing saw (the whole object when it did not see it);
    - of a recording whose deletion emptied its prefix before the listing, the bytes of a change
      not applied yet are in flight: the deletion's event takes off the object's whole size."""
    found = LaterParts()
    listed_recordings = list({rid for rid, _ in listing.later})
    rows = await conn.fetch(
        "SELECT a.recording_id, a.kind, a.size_bytes, a.usage_step,"
        " coalesce(a.usage_bytes, a.size_bytes) AS usage_bytes, r.org_id,"
        " EXISTS (SELECT 1 FROM media_deletions d WHERE d.recording_id = a.recording_id"
        "   AND d.s3_done_at < $3) AS purged_before"
        " FROM recording_artifacts a JOIN recordings r ON r.id = a.recording_id"
        " WHERE a.kind = ANY($1::text[]) AND a.usage_step IS NOT NULL"
        " AND (a.recording_id = ANY($2::uuid[])"
        "   OR a.updated_at > $3::timestamptz - interval '7 days')",
        list(LATER_KINDS),
        listed_recordings,
        listing.started_at,
    )
    recorded = {(r["recording_id"], r["kind"]): r for r in rows}
    ids = {key: usage_event_id(key[0], r["usage_step"]) for key, r in recorded.items()}
    applied = await _applied_when(conn, ids.values())
    unrecorded = [key for key in listing.later if key not in recorded]
    known = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM recordings WHERE id = ANY($1::uuid[])",
            list({rid for rid, _ in unrecorded}),
        )
    }
    for key in unrecorded:
        if key[0] in known:  # written, its event not published yet
            org, size = listing.later[key]
            found.add(found.in_flight, org, size)
    for key, row in recorded.items():
        org, size, change = row["org_id"], int(row["size_bytes"] or 0), int(row["usage_bytes"])
        applied_at = applied.get(ids[key])
        counted = size if applied_at is not None else size - change
        if row["purged_before"]:
            if applied_at is None:
                found.add(found.in_flight, org, change)
            continue
        listed = listing.later.get(key)
        listed_size = listed[1] if listed is not None else 0
        if applied_at is not None and applied_at >= listing.started_at:
            found.add(found.since_listing, org, counted - listed_size)
        elif listed is not None:
            found.add(found.in_flight, org, listed_size - counted)
    return found


async def _mark_expired(
    conn: asyncpg.Connection, listing: Listing, bucket: str
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Mark the complete recordings whose video object the listing did not find (and whose row
    did not change since it began; for an inventory report, since a day before it) expired,
    with their meetings; per org, the recordings. A recording whose meeting names another
    bucket (one the service was configured with before) is not this listing's to judge."""
    rows = await conn.fetch(
        "SELECT r.id, r.org_id, r.bot_id, r.s3_video_key FROM recordings r"
        " WHERE r.s3_upload_status = 'complete' AND r.media_deleted_at IS NULL"
        " AND r.s3_video_key IS NOT NULL AND r.updated_at < $1"
        " AND NOT EXISTS (SELECT 1 FROM meetings m WHERE m.bot_id = r.bot_id"
        "   AND m.video_url IS NOT NULL AND m.video_url <> $2 || r.s3_video_key)",
        listing.settled_before,
        f"s3://{bucket}/",
    )
    gone = [r for r in rows if r["s3_video_key"] not in listing.keys]
    if not gone:
        return {}
    await conn.execute(
        "UPDATE recordings SET media_deleted_at = now(), s3_video_key = NULL,"
        " s3_audio_key = NULL, upload_lease_token = upload_lease_token + 1,"
        " upload_lease_expires_at = NULL, upload_lease_holder = NULL, updated_at = now()"
        " WHERE id = ANY($1::uuid[])",
        [r["id"] for r in gone],
    )
    # The provider's artifacts lie beside the video, under the same rule: their keys go too.
    await conn.execute(
        "UPDATE recording_artifacts SET s3_key = NULL, updated_at = now()"
        " WHERE recording_id = ANY($1::uuid[])",
        [r["id"] for r in gone],
    )
    await conn.execute(
        "UPDATE meetings SET media_deleted_at = now(), video_url = NULL, audio_url = NULL,"
        " thumbnail_url = NULL, recording_status = $2, updated_at = now()"
        " WHERE bot_id = ANY($1::text[]) AND source = 'notetaker'",
        [r["bot_id"] for r in gone],
        MEDIA_EXPIRED,
    )
    found: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row in gone:
        found.setdefault(row["org_id"], []).append(row["id"])
    return found


async def _previous(conn: asyncpg.Connection, slot: datetime) -> dict[uuid.UUID, int] | None:
    """The previous run's drift per org, less what it corrected (an org without a row had
    none); None when there was no previous run."""
    previous = await conn.fetchval(
        "SELECT max(slot) FROM storage_reconciliations WHERE slot < $1", slot
    )
    if previous is None:
        return None
    rows = await conn.fetch(
        "SELECT org_id, drift_bytes - corrected_bytes AS remaining"
        " FROM storage_reconciliation_orgs WHERE slot = $1",
        previous,
    )
    return {r["org_id"]: int(r["remaining"]) for r in rows}


async def reconcile(
    pool: asyncpg.Pool,
    s3: S3Client,
    bucket: str,
    prices: Prices,
    *,
    slot: datetime,
    by: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    inventory: InventorySource | None = None,
) -> Reconciliation | None:
    """Reconcile the slot; None when it was reconciled before, another run is under way, or
    (with `inventory`) the newest report is the one the previous run read."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RECONCILE_LOCK):
            return None
        try:
            if await conn.fetchval(
                "SELECT true FROM storage_reconciliations WHERE slot = $1", slot
            ):
                return None
            listing = None
            if inventory is not None:
                listing = await _from_inventory(conn, s3, bucket, inventory, clock())
                if listing == "unchanged":
                    return None
            if not isinstance(listing, Listing):
                listing = await list_recordings(s3, bucket)
            return await _compare_and_correct(conn, listing, bucket, prices, slot, by, clock)
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", RECONCILE_LOCK)


async def _from_inventory(
    conn: asyncpg.Connection, s3: S3Client, bucket: str, source: InventorySource, now: datetime
) -> Listing | str | None:
    """The newest inventory report's listing; "unchanged" when a run read that report before
    (a drift is corrected only once two reports agree); None (listing instead) when there is no
    usable report: missing, malformed or older than `source.max_age`, each logged."""
    from notetaker.metrics import inventory

    where = f"s3://{source.bucket}/{source.folder(bucket)}"
    try:
        key = await inventory.newest_manifest_key(s3, source, bucket)
        if await conn.fetchval(
            "SELECT true FROM storage_reconciliations WHERE manifest_key = $1", key
        ):
            log.info("storage.inventory_unchanged", manifest=key)
            return "unchanged"
        manifest = await inventory.read_manifest(s3, source, key, bucket)
        age = now - manifest.created_at
        if age > source.max_age:
            log.warning(
                "storage.inventory_stale",
                manifest=key,
                created_at=manifest.created_at.isoformat(),
                age_hours=round(age.total_seconds() / 3600, 1),
                max_age_hours=round(source.max_age.total_seconds() / 3600, 1),
                fallback="list",
            )
            return None
        return await inventory.read_report(s3, source, manifest, bucket)
    except inventory.InventoryError as exc:
        log.warning("storage.inventory_unusable", report=where, error=str(exc), fallback="list")
        return None


async def _compare_and_correct(
    conn: asyncpg.Connection,
    listing: Listing,
    bucket: str,
    prices: Prices,
    slot: datetime,
    by: str,
    clock: Callable[[], datetime],
) -> Reconciliation | None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", STORAGE_LEVEL_LOCK)
        if await conn.fetchval("SELECT true FROM storage_reconciliations WHERE slot = $1", slot):
            return None
        levels = await _levels(conn)
        in_flight = await _in_flight(conn, listing)
        pending = await _pending_deletions(conn, listing)
        since = await _since_listing(conn, listing)
        later = await _later_objects(conn, listing)
        for part, into in ((later.in_flight, in_flight), (later.since_listing, since)):
            for org, size in part.items():
                into[org] = into.get(org, 0) + size
        expired = await _mark_expired(conn, listing, bucket)
        previous = await _previous(conn, slot)
        now = clock()
        orgs: list[OrgDrift] = []
        every = (
            set(levels) | set(listing.by_org) | set(pending) | set(expired) | set(since)
        ) | set(in_flight)
        for org in sorted(every):
            found = OrgDrift(
                org_id=org,
                level_bytes=levels.get(org, 0),
                listed_bytes=listing.by_org.get(org, 0),
                in_flight_bytes=in_flight.get(org, 0),
                pending_deletion_bytes=pending.get(org, 0),
                expired_recordings=tuple(expired.get(org, [])),
                since_listing_bytes=since.get(org, 0),
            )
            remaining = None if previous is None else previous.get(org, 0)
            corrected = correction(remaining, found.drift_bytes)
            if corrected:
                await shift_level(conn, org, now, corrected / GIB, prices)
            orgs.append(
                OrgDrift(
                    found.org_id,
                    found.level_bytes,
                    found.listed_bytes,
                    found.in_flight_bytes,
                    found.pending_deletion_bytes,
                    corrected,
                    found.expired_recordings,
                    found.since_listing_bytes,
                )
            )
        orgs.sort(key=lambda o: (-abs(o.drift_bytes), str(o.org_id)))
        done = Reconciliation(slot, listing, orgs)
        await conn.execute(
            "INSERT INTO storage_reconciliations (slot, source, manifest_key, requested_by,"
            " listed_at, list_requests, objects_listed, bytes_listed, level_bytes, s3_bytes,"
            " drift_bytes, corrected_bytes, orgs_drifting, recordings_expired)"
            " VALUES ($1, $13, $14, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            slot,
            by[:200],
            listing.started_at,
            listing.requests,
            listing.objects,
            listing.bytes,
            done.level_bytes,
            done.s3_bytes,
            done.s3_bytes - done.level_bytes,
            done.corrected_bytes,
            len(done.drifting),
            len(done.expired),
            listing.source,
            listing.manifest_key,
        )
        await conn.executemany(
            "INSERT INTO storage_reconciliation_orgs (slot, org_id, level_bytes, listed_bytes,"
            " in_flight_bytes, pending_deletion_bytes, s3_bytes, drift_bytes, corrected_bytes,"
            " expired_recordings, since_listing_bytes)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [
                (
                    slot,
                    o.org_id,
                    o.level_bytes,
                    o.listed_bytes,
                    o.in_flight_bytes,
                    o.pending_deletion_bytes,
                    o.s3_bytes,
                    o.drift_bytes,
                    o.corrected_bytes,
                    list(o.expired_recordings),
                    o.since_listing_bytes,
                )
                for o in orgs
                if o.worth_a_row
            ],
        )
    log.info(
        "storage.reconciled",
        slot=slot.isoformat(),
        source=listing.source,
        manifest=listing.manifest_key,
        listed_at=listing.started_at.isoformat(),
        objects_listed=listing.objects,
        list_requests=listing.requests,
        orgs_drifting=len(done.drifting),
        drift_bytes=done.s3_bytes - done.level_bytes,
        corrected_bytes=done.corrected_bytes,
        recordings_expired=len(done.expired),
    )
    return done


@dataclass(frozen=True)
class LatestDrift:
    """What the latest run found, for the gauges."""

    level_bytes: int
    s3_bytes: int
    corrected_bytes: int
    orgs: list[OrgDrift]  # the orgs it found drifting, the largest drift first


async def latest(pool: asyncpg.Pool) -> LatestDrift | None:
    run = await pool.fetchrow(
        "SELECT slot, level_bytes, s3_bytes, corrected_bytes FROM storage_reconciliations"
        " ORDER BY slot DESC LIMIT 1"
    )
    if run is None:
        return None
    rows = await pool.fetch(
        "SELECT org_id, level_bytes, listed_bytes, in_flight_bytes, pending_deletion_bytes,"
        " corrected_bytes, expired_recordings, since_listing_bytes"
        " FROM storage_reconciliation_orgs"
        " WHERE slot = $1 AND drift_bytes <> 0 ORDER BY abs(drift_bytes) DESC, org_id",
        run["slot"],
    )
    return LatestDrift(
        int(run["level_bytes"]),
        int(run["s3_bytes"]),
        int(run["corrected_bytes"]),
        [
            OrgDrift(
                r["org_id"],
                int(r["level_bytes"]),
                int(r["listed_bytes"]),
                int(r["in_flight_bytes"]),
                int(r["pending_deletion_bytes"]),
                int(r["corrected_bytes"]),
                tuple(r["expired_recordings"]),
                int(r["since_listing_bytes"]),
            )
            for r in rows
        ],
    )


def slot_of(now: datetime, interval: timedelta) -> datetime:
    """The start of the schedule slot `now` falls in (slots are counted from the epoch)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + interval * ((now - epoch) // interval)


async def reconcile_forever(
    pool: asyncpg.Pool,
    s3: S3Client,
    bucket: str,
    prices: Prices,
    interval: timedelta,
    retry_seconds: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    inventory: InventorySource | None = None,
) -> None:
    """Reconcile the current slot now (unless done), then each slot as it begins."""
    while True:
        try:
            await reconcile(
                pool,
                s3,
                bucket,
                prices,
                slot=slot_of(clock(), interval),
                by="metrics",
                inventory=inventory,
            )
        except Exception as exc:  # S3 or the database: tried again, the service keeps going
            log.warning("storage.reconcile_failed", error=repr(exc), retry_in_seconds=retry_seconds)
            await asyncio.sleep(retry_seconds)
            continue
        now = clock()
        await asyncio.sleep((slot_of(now, interval) + interval - now).total_seconds())
