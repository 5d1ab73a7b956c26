"""transcript-sync settings: the Faust worker, Gladia, and where callbacks come back."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from notetaker.common.sealing import fernet_keys
from notetaker.common.settings import NotetakerSettings, Secret, Secrets


class TranscriptSyncSettings(NotetakerSettings):
    service_name: str = Field("transcript-sync", description="Name in logs and CloudEvent source.")
    http_port: int = Field(8003, description="Faust web port: /healthz, /readyz, /metrics.")
    faust_app_id: str = Field(
        "notetaker-transcript-sync", description="Faust app id (consumer group, changelog)."
    )
    faust_data_dir: str = Field(
        default_factory=lambda: str(Path(tempfile.gettempdir()) / "notetaker-transcript-sync"),
        description="Faust's local data directory (writable).",
    )
    faust_rebalance_timeout_seconds: float = Field(
        4.0, description="How long a group join waits for other members (Tansu waits it all)."
    )
    faust_producer_max_batch_bytes: int = Field(
        16384,
        ge=1,
        description="Largest record batch the worker's producer sends; 1 (a record a batch) on"
        " Tansu, which reports a batch of several records short in its end offsets, so a"
        " restart would recover part of the join state.",
    )
    gladia_api_url: str = Field("https://api.gladia.io", description="Gladia API base URL.")
    gladia_api_key: Secret | None = Field(
        None, description="Gladia API key; empty means recordings without a transcript stay so."
    )
    gladia_callback_keys: Secrets = Field(
        default_factory=list, description="Keys minting Gladia callback tokens (1st signs)."
    )
    gladia_submit_settle_seconds: float = Field(
        120.0,
        ge=0,
        description="How long after a Gladia submit that got no answer (timed out, cut) a retry"
        " that does not find its job waits before it submits again.",
    )
    gladia_callback_token_seconds: int = Field(
        172_800, gt=0, description="How long a Gladia callback token is valid after the request."
    )
    meetingbaas_api_url: str = Field(
        "https://api.meetingbaas.com", description="MeetingBaaS API base URL (v1 transcripts)."
    )
    meetingbaas_api_key: Secret | None = Field(
        None, description="MeetingBaaS API key, to fetch a v1 retranscription's transcript."
    )
    ingest_public_url: str = Field(
        "http://127.0.0.1:8000", description="Public base URL of ingest, for Gladia's callback."
    )
    presigned_url_seconds: int = Field(
        3600, description="Lifetime of the presigned audio URL handed to Gladia."
    )
    media_token_keys: Secrets = Field(
        default_factory=list,
        description="HS256 keys of the product's media tokens (JWT, orgs claim); unset: off.",
    )
    media_url_seconds: int = Field(300, description="Lifetime of a presigned media URL.")
    effect_attempts: int = Field(
        8,
        ge=1,
        description="Tries of a join effect failing transiently before its event is parked.",
    )
    source_url_keys: Annotated[Secrets, AfterValidator(fernet_keys)] = Field(
        default_factory=list,
        description="Fernet keys opening the webhook bodies ingest keeps (the uploader's and"
        " ingest's): a transcript too large for its event is read from its body; empty: such a"
        " transcript is dead-lettered until they are set.",
    )
