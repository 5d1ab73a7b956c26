"""Metrics settings: prices (defaults from the original design) and the per-org label cap."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from notetaker.common.settings import NotetakerSettings, Secrets
from notetaker.metrics.egress import AWS_US_EAST, EgressTier, check_tiers

if TYPE_CHECKING:
    from notetaker.metrics.inventory import InventorySource


class MetricsSettings(NotetakerSettings):
    service_name: str = Field("metrics", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8001, description="Port of /metrics, probes and the admin API.")
    storage_price_usd_per_gb_month: float = Field(0.023, description="S3 storage, per GB-month.")
    upload_price_usd_per_gb: float = Field(0.0, description="Ingress, per GB (free on AWS).")
    price_egress_tiers: list[EgressTier] = Field(
        default_factory=lambda: list(AWS_US_EAST),
        description="Egress (data transfer out) tiers on the platform's month-to-date total, as"
        ' JSON: [{"up_to_gb": 100, "usd_per_gb": 0}, ..., {"up_to_gb": null, "usd_per_gb": 0.05}]'
        " (limits cumulative GB, ascending; the last open). Default: AWS S3 to the internet, US"
        " East, 2026-12-03: 100 GB free, $0.09 to 10 TB, $0.085 to 50 TB, $0.07 to 150 TB, $0.05"
        " beyond. Each org pays its share of each day's cost, in proportion to its GB.",
    )
    put_price_usd_per_1000: float = Field(0.005, description="PUT/COPY/POST/LIST, per 1,000.")
    get_price_usd_per_1000: float = Field(0.0004, description="GET and others, per 1,000.")
    cost_alert_threshold_usd: float = Field(50.0, description="Monthly cost that raises an alert.")
    cost_spike_ratio: float = Field(
        2.0,
        ge=0,
        description="Day-over-day spike: an org's day costing over this many times the day before",
    )
    cost_spike_min_usd: float = Field(
        2.0,
        ge=0,
        description="...and over this many USD more than it (so a cent that triples is no spike).",
    )
    metrics_top_orgs: int = Field(
        20, ge=0, description="Orgs with their own series; the rest are summed as org_id=other."
    )
    metrics_refresh_seconds: float = Field(15.0, description="How often gauges are recomputed.")
    usage_rollup_after_midnight_seconds: float = Field(
        300.0, ge=0, lt=86_400, description="When the daily storage rollup runs, after 00:00 UTC."
    )
    storage_reconcile_interval_seconds: float = Field(
        3600.0,
        ge=0,
        description="How often the stored level is reconciled with a listing of the S3 bucket"
        " (0: never); several replicas reconcile each interval once.",
    )
    s3_inventory_bucket: str = Field(
        "",
        description="Bucket an S3 Inventory configuration of the recordings bucket delivers its"
        " reports to (CSV format); set, reconciliation reads the newest report instead of listing"
        " the bucket (empty: always list).",
    )
    s3_inventory_prefix: str = Field(
        "",
        description="The inventory configuration's destination prefix: reports are read from"
        " <prefix>/<recordings bucket>/<config id>/<YYYY-MM-DDTHH-MMZ>/manifest.json.",
    )
    s3_inventory_config_id: str = Field(
        "", description="The inventory configuration's id (required with the bucket)."
    )
    s3_inventory_max_age_hours: float = Field(
        48.0,
        gt=0,
        description="A report older than this is refused (logged storage.inventory_stale) and the"
        " run lists the bucket instead, as it does when a report is missing or malformed.",
    )
    storage_drift_alert_percent: float = Field(
        5.0,
        ge=0,
        description="Drift between S3 and the stored level that alerts, in percent; every org"
        " past it gets its own drift series.",
    )

    @model_validator(mode="after")
    def _inventory_names_its_configuration(self) -> MetricsSettings:
        if self.s3_inventory_bucket and not self.s3_inventory_config_id:
            raise ValueError(
                "NOTETAKER_S3_INVENTORY_CONFIG_ID is required with NOTETAKER_S3_INVENTORY_BUCKET"
            )
        return self

    def inventory(self) -> InventorySource | None:
        """Where reconciliation reads inventory reports; None: it lists the bucket."""
        from notetaker.metrics.inventory import InventorySource

        if not self.s3_inventory_bucket:
            return None
        return InventorySource(
            self.s3_inventory_bucket,
            self.s3_inventory_prefix,
            self.s3_inventory_config_id,
            timedelta(hours=self.s3_inventory_max_age_hours),
        )

    @field_validator("price_egress_tiers")
    @classmethod
    def _tiers_price_every_gb_once(cls, tiers: list[EgressTier]) -> list[EgressTier]:
        return list(check_tiers(tiers))

    admin_tokens: Secrets = Field(
        default_factory=list,
        description="Admin API bearer tokens (comma-separated, to rotate); unset: API off.",
    )
