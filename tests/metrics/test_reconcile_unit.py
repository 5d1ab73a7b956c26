"""Reconciliation's pure parts: which keys belong to whom, what drift is corrected, and the
bounded drift series an operator sees."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from notetaker.common.s3 import recording_key, recording_prefix
from notetaker.metrics.exporter import OTHER, export_drift
from notetaker.metrics.reconcile import (
    LatestDrift,
    Listing,
    OrgDrift,
    correction,
    drift_ratio,
    parse_key,
)

ORG, USER, RECORDING = (uuid.UUID(int=n) for n in (1, 2, 3))


def test_keys_of_the_uploader_layout_name_their_org_and_recording() -> None:
    assert parse_key(recording_key(ORG, USER, RECORDING, "video", "mp4")) == (ORG, RECORDING)
    assert parse_key(f"meeting-recordings/{ORG}/stray.bin") == (ORG, None)
    assert parse_key("meeting-recordings/not-an-org/x/y/z") is None
    assert parse_key(f"elsewhere/{ORG}/{USER}/{RECORDING}/video.mp4") is None


@pytest.mark.parametrize(
    ("previous", "drift", "corrected"),
    [
        (None, -500, 0),  # the first run ever corrects nothing: nothing to confirm it
        (0, -500, 0),  # first seen now: an object or event may be on its way
        (-500, -500, -500),  # seen twice: corrected
        (-800, -500, -500),  # only what persisted
        (-300, -500, -300),
        (700, 700, 700),  # S3 holds more than counted, twice
        (700, -700, 0),  # one way then the other: in-flight races, never corrected
        (-500, 0, 0),
    ],
)
def test_only_drift_that_persisted_across_two_runs_is_corrected(
    previous: int | None, drift: int, corrected: int
) -> None:
    assert correction(previous, drift) == corrected


def test_drift_ratio_is_a_share_of_the_larger_side() -> None:
    assert drift_ratio(1000, 750) == 0.25
    assert drift_ratio(0, 10) == 1.0  # S3 holds what was never counted
    assert drift_ratio(10, 0) == 1.0  # everything gone from S3
    assert drift_ratio(0, 0) == 0.0


def samples(name: str) -> dict[str, float]:
    return {
        s.labels.get("org_id", ""): s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
    }


def test_drift_series_are_the_top_orgs_and_every_org_past_the_alert_percentage() -> None:
    big, third, alerting, edge, tiny = (uuid.UUID(int=n) for n in (10, 11, 12, 13, 14))
    orgs = [  # the largest drift first, as `latest` reads them
        OrgDrift(big, 1_000_000, 400_000, 0, 0),  # -600,000 (60 %)
        OrgDrift(third, 3_000, 2_000, 0, 0),  # -1,000 (a third)
        OrgDrift(alerting, 1_000, 900, 0, 0),  # -100 (10 %): past 5 %, below the top 2
        OrgDrift(edge, 1_000, 950, 0, 0),  # -50 (exactly 5 %: not past it)
        OrgDrift(tiny, 1_000, 999, 0, 0),  # -1 (0.1 %)
    ]
    latest = LatestDrift(
        level_bytes=sum(o.level_bytes for o in orgs),
        s3_bytes=sum(o.s3_bytes for o in orgs),
        corrected_bytes=-50,
        orgs=orgs,
    )
    export_drift(latest, top=2, alert_percent=5.0)
    drift = samples("notetaker_storage_reconciliation_drift_bytes")
    assert drift == {str(big): -600_000, str(third): -1_000, str(alerting): -100, OTHER: -51}
    assert sum(drift.values()) == latest.s3_bytes - latest.level_bytes
    ratio = samples("notetaker_storage_reconciliation_drift_ratio")
    assert ratio == {str(big): 0.6, str(third): 0.333333, str(alerting): 0.1}  # 6 places
    assert samples("notetaker_storage_reconciliation_platform_drift_bytes") == {"": -601_151}
    assert samples("notetaker_storage_reconciliation_platform_drift_ratio") == {
        "": 0.597566  # 601,151 / 1,006,000, 6 places
    }
    assert samples("notetaker_storage_reconciliation_corrected_bytes") == {"": -50}
    # The org just below the top gets no series of its own unless past the percentage.
    export_drift(latest, top=3, alert_percent=5.0)
    assert set(samples("notetaker_storage_reconciliation_drift_bytes")) == {
        str(big),
        str(third),
        str(alerting),
        OTHER,
    }
    export_drift(LatestDrift(10, 10, 0, []), top=2, alert_percent=5.0)
    assert samples("notetaker_storage_reconciliation_drift_bytes") == {}
    assert samples("notetaker_storage_reconciliation_platform_drift_ratio") == {"": 0.0}


def test_a_thumbnail_counts_in_its_orgs_bytes_apart_from_the_upload() -> None:
    # The thumbnail is charged (its own usage events), so its org's bytes hold it; it is kept
    # apart from the upload's objects, whose event is another.
    org, user, recording = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    listing = Listing(started_at=datetime(2026, 1, 2, tzinfo=UTC))
    listing.add(recording_key(org, user, recording, "video", "mp4"), 1_000)
    listing.add(recording_key(org, user, recording, "chat_messages", "json"), 30)
    listing.add(recording_key(org, user, recording, "thumbnail", "jpg"), 4_000)
    listing.add(recording_prefix(org, user, recording) + "gladia-result.json", 7)
    assert (listing.objects, listing.bytes) == (4, 5_037)
    assert listing.by_org == {org: 5_037}
    assert listing.by_recording == {recording: (org, 1_030)}
    assert listing.later == {
        (recording, "thumbnail"): (org, 4_000),
        (recording, "gladia_result"): (org, 7),
    }
    assert recording_key(org, user, recording, "thumbnail", "jpg") in listing.keys
