"""Settings shared by every service: where Kafka, PostgreSQL and S3 are, and how to log.

Each service subclasses `NotetakerSettings` with its own fields; all read `NOTETAKER_*` from the
environment (or a `.env` file). Defaults work on the embedded dev stack's standard ports.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notetaker.common.source_policy import SourcePolicy


def split_secrets(value: object) -> object:
    """`a,b` in the environment becomes two secrets (current and next, for rotation)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class NotetakerSettings(BaseSettings):
    """Infrastructure every service talks to."""

    model_config = SettingsConfigDict(
        env_prefix="NOTETAKER_", env_file=".env", extra="ignore", frozen=True
    )

    service_name: str = Field("notetaker", description="Name used in logs and CloudEvent source.")
    log_level: str = Field("INFO", description="Python log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: str = Field("json", description="`json` for machines, `console` for humans.")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers."
    )
    kafka_idempotence: bool = Field(
        False,
        description="Idempotent producer; turn on for real Kafka (Tansu refuses it).",
    )
    kafka_topic_partitions: int = Field(
        3, description="Partitions for topics this system creates (all equal, for the join)."
    )
    kafka_replication_factor: int = Field(1, description="Replication factor for created topics.")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/notetaker",
        description="PostgreSQL DSN (asyncpg).",
    )
    database_pool_max: int = Field(10, description="Largest number of pooled connections.")

    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint; empty means AWS itself (MinIO or moto locally)."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_bucket: str = Field("notetaker-recordings", description="Private bucket for recordings.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 access key; empty uses the AWS default credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")

    source_allowed_host_suffixes: Annotated[list[str], NoDecode, BeforeValidator(split_secrets)] = (
        Field(
            [],
            description="Hosts provider URLs may name (comma-separated suffixes); empty: any.",
        )
    )
    source_allow_loopback: bool = Field(
        False,
        description="Dev stack only: provider URLs may reach loopback (the local simulator).",
    )

    def source_policy(self) -> SourcePolicy:
        """What provider URLs these settings let the service fetch."""
        return SourcePolicy(
            allow_loopback=self.source_allow_loopback,
            allowed_host_suffixes=tuple(self.source_allowed_host_suffixes),
        )
