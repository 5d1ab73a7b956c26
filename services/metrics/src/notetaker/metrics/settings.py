"""Metrics settings: prices (defaults from the original design) and the per-org label cap."""

from __future__ import annotations

from pydantic import Field

from notetaker.common.settings import NotetakerSettings, Secrets


class MetricsSettings(NotetakerSettings):
    service_name: str = Field("metrics", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8001, description="Port of /metrics, probes and the admin API.")
    storage_price_usd_per_gb_month: float = Field(0.023, description="S3 storage, per GB-month.")
    upload_price_usd_per_gb: float = Field(0.0, description="Ingress, per GB (free on AWS).")
    download_price_usd_per_gb: float = Field(0.09, description="Egress, per GB.")
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
    storage_drift_alert_percent: float = Field(
        5.0,
        ge=0,
        description="Drift between S3 and the stored level that alerts, in percent; every org"
        " past it gets its own drift series.",
    )
    admin_tokens: Secrets = Field(
        default_factory=list,
        description="Admin API bearer tokens (comma-separated, to rotate); unset: API off.",
    )
