"""Uploader settings: how big, how parallel, how patient."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from notetaker.common.sealing import fernet_keys
from notetaker.common.settings import NotetakerSettings, Secret, Secrets
from notetaker.uploader.transfer import MAX_RECORDING_BYTES

MIB = 1024 * 1024


def _fernet_keys(keys: list[SecretStr]) -> list[SecretStr]:
    if not keys:
        raise ValueError("needs at least one key (make one: python -m notetaker.uploader.keys)")
    return fernet_keys(keys)


class UploaderSettings(NotetakerSettings):
    service_name: str = Field("uploader", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8002, description="Port of /healthz, /readyz and /metrics.")
    upload_part_size_bytes: int = Field(
        5 * MIB, ge=5 * MIB, description="Multipart part size (S3 minimum 5 MiB)."
    )
    upload_parts_in_flight: int = Field(
        4, ge=1, le=32, description="Parts of one file uploading at once."
    )
    upload_concurrency: int = Field(4, ge=1, description="Recordings uploading at once.")
    upload_max_attempts: int = Field(
        4, ge=1, description="Attempts before `failed` for good: the first, then one per delay."
    )
    upload_retry_delays_seconds: list[int] = Field(
        [120, 300, 600],
        min_length=1,
        description="Wait after each failed attempt (JSON list, seconds; the last repeats).",
    )
    upload_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="Upload lease length (renewed every third); a dead worker's expires after it.",
    )
    upload_progress_log_seconds: float = Field(
        30.0, ge=0, description="Least time between two `upload.progress` lines of one file."
    )
    upload_max_recording_bytes: int = Field(
        40 * 1024 * MIB,
        ge=1,
        le=MAX_RECORDING_BYTES,
        description="Largest recording kept; a larger one fails as source_too_large.",
    )
    source_url_keys: Annotated[Secrets, AfterValidator(_fernet_keys)] = Field(
        description="Fernet keys encrypting provider URLs at rest (first encrypts, all decrypt)."
    )
    source_url_validity_seconds: int = Field(
        4 * 3600, description="How long a provider URL is valid after its webhook."
    )
    meetingbaas_api_url: str = Field(
        "https://api.meetingbaas.com", description="MeetingBaaS API base URL."
    )
    meetingbaas_api_key: Secret | None = Field(
        None, description="MeetingBaaS API key; empty: expired provider URLs are never refreshed."
    )
    meetingbaas_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a MeetingBaaS request may take, in all."
    )
    source_timeout_seconds: float = Field(
        60.0, description="Longest wait for the provider to send more bytes."
    )
    source_min_bytes_per_second: float = Field(
        16 * 1024, ge=0, description="Slowest a source may send, on average over the window."
    )
    source_rate_window_seconds: float = Field(
        60.0, gt=0, description="Window of that average; a slower source fails as stalled."
    )
    thumbnail_width: int = Field(320, description="Thumbnail width in pixels (height keeps ratio).")
    thumbnail_at_seconds: float = Field(3.0, description="Where in the video to take the frame.")
