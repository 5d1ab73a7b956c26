"""Prometheus gauges for storage and cost, with a bounded set of org labels, and for where
uploads stand.

The top N orgs by cost get their own series; the rest are summed under org_id="other", so the
sum over all series is always the platform total. The full breakdown stays in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Gauge

from notetaker.metrics.uploads import UploadStates
from notetaker.metrics.usage import OrgCost

STORED_BYTES = Gauge(
    "notetaker_storage_stored_bytes", "Bytes of recordings held in S3, per org.", ["org_id"]
)
COST_MTD = Gauge(
    "notetaker_storage_cost_usd_month_to_date",
    "Storage, transfer and request cost this calendar month, in USD, per org.",
    ["org_id"],
)
ORGS = Gauge("notetaker_storage_orgs", "Orgs with any storage usage recorded.")
UPLOADS = Gauge(
    "notetaker_uploads",
    "Recordings by upload status (failed: a retry is due; failed_final: failed for good).",
    ["status"],
)
OLDEST_UNFINISHED = Gauge(
    "notetaker_upload_oldest_unfinished_age_seconds",
    "Seconds since the oldest upload neither complete nor failed for good became available.",
)

OTHER = "other"


def capped(costs: Sequence[OrgCost], top: int) -> list[OrgCost]:
    """The `top` most expensive orgs, plus one `other` row summing the rest (if any)."""
    head, tail = list(costs[:top]), costs[top:]
    if tail:
        head.append(
            OrgCost(
                OTHER,
                sum(c.stored_bytes for c in tail),
                sum(c.month_to_date_usd for c in tail),
            )
        )
    return head


def export(costs: Sequence[OrgCost], top: int) -> None:
    rows = capped(costs, top)
    STORED_BYTES.clear()
    COST_MTD.clear()
    for row in rows:
        STORED_BYTES.labels(row.org_id).set(row.stored_bytes)
        COST_MTD.labels(row.org_id).set(round(row.month_to_date_usd, 6))
    ORGS.set(len(costs))


def export_uploads(states: UploadStates) -> None:
    for status, count in states.by_status.items():
        UPLOADS.labels(status).set(count)
    OLDEST_UNFINISHED.set(round(states.oldest_unfinished_seconds, 1))
