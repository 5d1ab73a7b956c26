"""Ingest settings: the webhook secrets per provider and the request limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from notetaker.common.settings import NotetakerSettings, split_secrets

Secrets = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_secrets)]


class IngestSettings(NotetakerSettings):
    service_name: str = Field("ingest", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8000, description="Port of the webhook endpoints, probes and /metrics.")
    meetingbaas_webhook_secrets: Secrets = Field(
        default_factory=list,
        description="MeetingBaaS v2 Svix signing secrets (`whsec_...`), comma-separated.",
    )
    meetingbaas_callback_secrets: Secrets = Field(
        default_factory=list,
        description="Per-bot callback secrets (header x-mb-secret), comma-separated.",
    )
    meetingbaas_api_keys: Secrets = Field(
        default_factory=list,
        description="MeetingBaaS API keys accepted on v1 webhooks (x-meeting-baas-api-key).",
    )
    gladia_callback_keys: Secrets = Field(
        default_factory=list,
        description="Keys that mint Gladia callback tokens (shared with transcript-sync).",
    )
    max_body_bytes: int = Field(1_048_576, description="Largest webhook body accepted, in bytes.")
    publish_timeout_seconds: float = Field(
        5.0, description="Longest wait for Kafka's acknowledgement before answering 503."
    )
    reject_unknown_bots: bool = Field(
        True, description="Answer 404 to events about bots the scheduler did not deploy."
    )
