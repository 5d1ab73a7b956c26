"""Ingest settings: the webhook secrets and keys per provider, and the request limits."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from notetaker.common.sealing import fernet_keys
from notetaker.common.settings import NotetakerSettings, Secrets

SVIX_PREFIX = "whsec_"
SVIX_MIN_KEY_BYTES = 24  # Standard Webhooks: secrets of 24 to 64 bytes


def _svix_secrets(secrets: list[SecretStr]) -> list[SecretStr]:
    for secret in secrets:
        value = secret.get_secret_value()
        try:
            key = base64.b64decode(value.removeprefix(SVIX_PREFIX), validate=True)
        except binascii.Error:
            key = b""
        if not value.startswith(SVIX_PREFIX) or len(key) < SVIX_MIN_KEY_BYTES:
            raise ValueError(
                f"holds a secret that is not a Svix signing secret ({SVIX_PREFIX} and the base64"
                f" of at least {SVIX_MIN_KEY_BYTES} bytes, as the MeetingBaaS dashboard shows it)"
            )
    return secrets


class IngestSettings(NotetakerSettings):
    service_name: str = Field("ingest", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8000, description="Port of the webhook endpoints, probes and /metrics.")
    meetingbaas_webhook_secrets: Annotated[Secrets, AfterValidator(_svix_secrets)] = Field(
        default_factory=list,
        description="MeetingBaaS v2 Svix signing secrets (`whsec_...`), comma-separated.",
    )
    meetingbaas_callback_keys: Secrets = Field(
        default_factory=list,
        description="Keys deriving each bot's x-mb-secret from its meeting (same as scheduler).",
    )
    meetingbaas_api_keys: Secrets = Field(
        default_factory=list,
        description="MeetingBaaS API keys accepted on v1 webhooks (x-meeting-baas-api-key).",
    )
    gladia_callback_keys: Secrets = Field(
        default_factory=list,
        description="Keys checking Gladia callback tokens (shared with transcript-sync).",
    )
    source_url_keys: Annotated[Secrets, AfterValidator(fernet_keys)] = Field(
        default_factory=list,
        description="Fernet keys sealing the kept webhook bodies (the uploader's: first encrypts,"
        " all decrypt); empty: no body is kept.",
    )
    max_body_bytes: int = Field(
        16_777_216,
        ge=1,
        description="Largest webhook body accepted, in bytes (past it: 413); room for a long"
        " meeting's inline v1 transcript (about 1 MiB an hour with word timings).",
    )
    inline_transcript_max_bytes: int = Field(
        262_144,
        ge=1,
        description="Largest transcript.ready event carrying its transcript inline, in bytes;"
        " past it the event points at the kept webhook body instead (needs"
        " NOTETAKER_SOURCE_URL_KEYS). Well under Kafka's 1 MB message limit.",
    )
    publish_timeout_seconds: float = Field(
        5.0, description="Longest wait for Kafka's acknowledgement before answering 503."
    )
    reject_unknown_bots: bool = Field(
        True, description="Answer 404 to events about bots the scheduler did not deploy."
    )
