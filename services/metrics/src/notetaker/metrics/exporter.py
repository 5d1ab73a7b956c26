"""Prometheus gauges for storage and cost, with a bounded set of org labels, and for where
uploads stand.

The top N orgs by cost get their own series; the rest are summed under org_id="other", so the
sum over all series is always the platform total. The full breakdown stays in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Gauge

from notetaker.metrics.daily import DAYS, TYPES, OrgDays, Spike
from notetaker.metrics.projections import WINDOW_DAYS, Projection
from notetaker.metrics.reconcile import LatestDrift, drift_ratio
from notetaker.metrics.uploads import UploadStates
from notetaker.metrics.usage import OrgCost

STORED_BYTES = Gauge(
    "notetaker_storage_stored_bytes", "Bytes of recordings held in S3, per org.", ["org_id"]
)
COST_MTD = Gauge(
    "notetaker_storage_cost_usd_month_to_date",
    "Storage, transfer and request cost this calendar month, in USD, per org; downloads are the"
    " org's share of each day's tiered egress cost of the platform (the first 100 GB of the month"
    " free, then by tier: NOTETAKER_PRICE_EGRESS_TIERS), in proportion to its GB that day.",
    ["org_id"],
)
MONTH_END = Gauge(
    "notetaker_storage_cost_usd_projected_month_end",
    "This calendar month's cost projected to its last day, in USD, per org: the month to date,"
    " plus the days left at today's stored level, plus the same days at the mean daily upload"
    f" and request cost of the last {WINDOW_DAYS} days, plus the org's share of the platform's"
    f" downloads going on at their mean GB a day of the last {WINDOW_DAYS} days, priced through"
    " the egress tiers from the month's total so far (its share: its GB over the platform's in"
    " those days).",
    ["org_id"],
)
NEXT_MONTH = Gauge(
    "notetaker_storage_cost_usd_projected_next_month",
    "Next calendar month's cost projected, in USD, per org: today's stored level held all month,"
    f" plus its mean daily change over the last {WINDOW_DAYS} days continued through next month"
    f" (never below nothing stored), plus the mean daily upload and request cost of the last"
    f" {WINDOW_DAYS} days for each of its days, plus the same share of the platform's downloads"
    " at the same rate over next month, priced through the egress tiers from nothing (the free"
    " 100 GB again).",
    ["org_id"],
)
DAILY = Gauge(
    "notetaker_storage_cost_usd_daily",
    "Cost of one UTC day, in USD, per org and type (storage: GiB-hours held that day; upload:"
    " transfer in; download: the org's share of the platform's tiered egress cost of the day, in"
    " proportion to its GB; requests: S3 requests), from the daily rows the rollup completes:"
    " day=today (so far), yesterday, day_before (the day before yesterday). The top N orgs by"
    " these three days' cost have their own series, and so does every org whose yesterday is a"
    " spike (over NOTETAKER_COST_SPIKE_RATIO times the day before and NOTETAKER_COST_SPIKE_MIN_USD"
    " more), whatever its rank; the rest are summed as org_id=other.",
    ["org_id", "type", "day"],
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

DRIFT_BYTES = Gauge(
    "notetaker_storage_reconciliation_drift_bytes",
    "Bytes S3 holds minus the stored level, per org, as the latest reconciliation found them"
    " (before it corrected any): negative when S3 holds less (objects deleted behind the"
    " pipeline's back, e.g. by the bucket's lifecycle rule), positive when it holds more (usage"
    " never counted). Uploads and deletions whose usage event is still on its way are left out."
    " The orgs with the largest drifts and every org past the alert percentage have their own"
    " series; the rest are summed as org_id=other. A drift seen by two runs in a row is"
    " corrected by the second, so it shows for at most two runs.",
    ["org_id"],
)
DRIFT_RATIO = Gauge(
    "notetaker_storage_reconciliation_drift_ratio",
    "The drift of notetaker_storage_reconciliation_drift_bytes as a share of the larger of the"
    " org's stored level and its bytes in S3 (0 to 1), per org with a series of its own.",
    ["org_id"],
)
PLATFORM_DRIFT_BYTES = Gauge(
    "notetaker_storage_reconciliation_platform_drift_bytes",
    "Bytes S3 holds minus the stored levels of every org, as the latest reconciliation found"
    " them (before it corrected any).",
)
PLATFORM_DRIFT_RATIO = Gauge(
    "notetaker_storage_reconciliation_platform_drift_ratio",
    "The platform's reconciliation drift as a share of the larger of the summed levels and the"
    " bytes in S3 (0 to 1).",
)
CORRECTED_BYTES = Gauge(
    "notetaker_storage_reconciliation_corrected_bytes",
    "Bytes the latest reconciliation added to the stored levels (negative: took off), the drift"
    " that persisted since the run before.",
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


def export_projections(projections: Sequence[Projection], top: int, threshold: float) -> None:
    """The `top` orgs by projected month end get their own series, and so does every org whose
    month end passes `threshold` (so each can alert, whatever its rank); the rest are summed as
    `other`, so the series add up to the platform's projections."""
    kept: list[Projection] = []
    rest: list[Projection] = []
    for rank, row in enumerate(projections):
        (kept if rank < top or row.month_end_usd > threshold else rest).append(row)
    MONTH_END.clear()
    NEXT_MONTH.clear()
    for row in kept:
        MONTH_END.labels(row.org_id).set(round(row.month_end_usd, 6))
        NEXT_MONTH.labels(row.org_id).set(round(row.next_month_usd, 6))
    if rest:
        MONTH_END.labels(OTHER).set(round(sum(p.month_end_usd for p in rest), 6))
        NEXT_MONTH.labels(OTHER).set(round(sum(p.next_month_usd for p in rest), 6))


def export_daily(orgs: Sequence[OrgDays], top: int, spike: Spike) -> None:
    """The `top` orgs by their last three days' cost get their own series, and so does every org
    whose yesterday is a `spike` (so each can alert, whatever its rank); the rest are summed as
    `other`. Every kept org has all days and types, 0 where it had no rows."""
    ranked = sorted(orgs, key=lambda o: (-o.total(), o.org_id))
    kept: list[OrgDays] = []
    rest: list[OrgDays] = []
    for rank, org in enumerate(ranked):
        alarming = spike.of(org.on(DAYS[1]), org.on(DAYS[2]))
        (kept if rank < top or alarming else rest).append(org)
    DAILY.clear()
    for org in kept:
        for day in DAYS.values():
            for kind in TYPES.values():
                DAILY.labels(org.org_id, kind, day).set(round(org.cost.get((day, kind), 0.0), 6))
    if rest:
        for day in DAYS.values():
            for kind in TYPES.values():
                total = sum(o.cost.get((day, kind), 0.0) for o in rest)
                DAILY.labels(OTHER, kind, day).set(round(total, 6))


def export_uploads(states: UploadStates) -> None:
    for status, count in states.by_status.items():
        UPLOADS.labels(status).set(count)
    OLDEST_UNFINISHED.set(round(states.oldest_unfinished_seconds, 1))


def export_drift(latest: LatestDrift | None, top: int, alert_percent: float) -> None:
    """The `top` orgs by drift (either way) and every org whose drift passes `alert_percent` get
    their own series; the rest are summed as `other` (bytes only: a ratio does not add up)."""
    DRIFT_BYTES.clear()
    DRIFT_RATIO.clear()
    if latest is None:
        return
    rest = 0
    for rank, org in enumerate(latest.orgs):
        if rank < top or org.ratio * 100 > alert_percent:
            DRIFT_BYTES.labels(str(org.org_id)).set(org.drift_bytes)
            DRIFT_RATIO.labels(str(org.org_id)).set(round(org.ratio, 6))
        else:
            rest += org.drift_bytes
    if rest:
        DRIFT_BYTES.labels(OTHER).set(rest)
    PLATFORM_DRIFT_BYTES.set(latest.s3_bytes - latest.level_bytes)
    PLATFORM_DRIFT_RATIO.set(round(drift_ratio(latest.level_bytes, latest.s3_bytes), 6))
    CORRECTED_BYTES.set(latest.corrected_bytes)
