"""The command's settings: the services' shared base, plus what deleting media needs (the
providers, to delete their copies), the storage price a reconciliation charges, and the key
ring that opens kept webhook bodies. Read from the
same `NOTETAKER_*` variables as the services."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from notetaker.common.deletion import ProviderAccess
from notetaker.common.sealing import fernet_keys
from notetaker.common.settings import NotetakerSettings, Secret, Secrets


class CliSettings(NotetakerSettings):
    service_name: str = Field("notetaker-cli", description="Name in logs and CloudEvent source.")
    meetingbaas_api_url: str = Field(
        "https://api.meetingbaas.com", description="MeetingBaaS API base URL."
    )
    meetingbaas_api_key: Secret | None = Field(
        None, description="MeetingBaaS API key; empty: its copies are not asked to be deleted."
    )
    gladia_api_url: str = Field("https://api.gladia.io", description="Gladia API base URL.")
    gladia_api_key: Secret | None = Field(
        None, description="Gladia API key; empty: its jobs are not asked to be deleted."
    )
    meetingbaas_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest one MeetingBaaS (or Gladia) request may take."
    )
    source_url_keys: Annotated[Secrets, AfterValidator(fernet_keys)] = Field(
        default_factory=list,
        description="Fernet keys of ingest's kept webhook bodies (`webhooks show --body`,"
        " `webhooks reapply`); empty: the bodies cannot be read.",
    )
    storage_price_usd_per_gb_month: float = Field(
        0.023,
        description="S3 storage, per GB-month, as the metrics service charges it: what a"
        " correction by `notetaker costs reconcile` is charged at.",
    )

    def provider_access(self) -> ProviderAccess:
        return ProviderAccess(
            meetingbaas_api_url=self.meetingbaas_api_url,
            meetingbaas_api_key=(
                self.meetingbaas_api_key.get_secret_value() if self.meetingbaas_api_key else None
            ),
            gladia_api_url=self.gladia_api_url,
            gladia_api_key=self.gladia_api_key.get_secret_value() if self.gladia_api_key else None,
            timeout_seconds=self.meetingbaas_timeout_seconds,
        )
