"""Settings shared by every service: where Kafka, PostgreSQL and S3 are, and how to log.

Each service subclasses `NotetakerSettings` with its own fields; all read `NOTETAKER_*` from the
environment (or a `.env` file). Defaults work on the embedded dev stack's standard ports.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notetaker.common.source_policy import SourcePolicy

MIN_SECRET_CHARS = 16
DAY_MS = 24 * 60 * 60 * 1000
MIN_RETENTION_MS = 60 * 60 * 1000  # an hour: anything shorter is a typo (seconds for ms)


def split_secrets(value: object) -> object:
    """`a,b` in the environment becomes two secrets (current and next, for rotation)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _present(value: object) -> object:
    """A secret that is set must say something: an empty value, or an empty entry between
    commas, is a mistake in the deployment (it would compare equal to a missing header)."""
    if isinstance(value, str) and (
        not value.strip() or "" in (p.strip() for p in value.split(","))
    ):
        raise ValueError("is set but empty (or has an empty entry): give the secret, or unset it")
    return value


def _well_formed(secret: SecretStr) -> SecretStr:
    value = secret.get_secret_value()
    if len(value) < MIN_SECRET_CHARS or any(c.isspace() for c in value):
        raise ValueError(
            f"holds a secret shorter than {MIN_SECRET_CHARS} characters or with white space"
        )
    return secret


# A comma-separated list of secrets (several at once, to rotate) and a single secret.
Secrets = Annotated[
    list[Annotated[SecretStr, AfterValidator(_well_formed)]],
    NoDecode,
    BeforeValidator(split_secrets),
    BeforeValidator(_present),  # before validators run last to first: this one first
]
Secret = Annotated[SecretStr, BeforeValidator(_present), AfterValidator(_well_formed)]


S = TypeVar("S", bound="NotetakerSettings")


def load_settings(settings: type[S]) -> S:
    """The service's settings from the environment; a bad value stops the process at start with
    a message naming the variable, never a traceback or a service that half works."""
    try:
        return settings()
    except ValidationError as exc:
        prefix = settings.model_config.get("env_prefix", "")
        lines = [
            f"  {prefix}{'.'.join(str(part) for part in error['loc'][:1]).upper()}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        ]
        raise SystemExit(
            f"{settings.__name__}: cannot start, fix these settings:\n" + "\n".join(lines)
        ) from None


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
    kafka_rebalance_timeout_ms: int = Field(
        5_000,
        gt=0,
        description="How long the group waits for members to rejoin; keep above the drain.",
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=6_000,  # Kafka's group.min.session.timeout.ms by default
        description="How long a consumer that stopped heartbeating (killed) keeps its partitions.",
    )
    kafka_consumer_drain_seconds: float = Field(
        4.0,
        ge=0,
        description="How long a revoked partition's running events may finish before stopping.",
    )
    kafka_event_retention_ms: int = Field(
        7 * DAY_MS,
        description="retention.ms of the event topics this system creates (-1: for ever).",
    )
    kafka_dead_letter_retention_ms: int = Field(
        14 * DAY_MS,
        description="retention.ms of the .dlq topics it creates: time left to replay them.",
    )

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/notetaker",
        description="PostgreSQL DSN (asyncpg).",
    )
    database_pool_max: int = Field(10, description="Largest number of pooled connections.")
    database_acquire_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for a pooled connection before giving up."
    )

    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint; empty means AWS itself (MinIO or moto locally)."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_max_attempts: int = Field(
        6,
        ge=1,
        description="Tries of one S3 request (botocore's adaptive retries) before the caller"
        " sees the error (an outage, which the services wait out).",
    )
    s3_bucket: str = Field("notetaker-recordings", description="Private bucket for recordings.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 access key; empty uses the AWS default credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_lifecycle_expiration_days: int = Field(
        400,
        ge=2,
        description="Bucket rule expiring recordings: a safety net, longer than any retention.",
    )
    media_retention_days: int = Field(
        90, ge=1, description="How long an org's media is kept unless the org has its own."
    )

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

    @field_validator("kafka_event_retention_ms", "kafka_dead_letter_retention_ms")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value != -1 and value < MIN_RETENTION_MS:
            raise ValueError(
                f"must be -1 (keep for ever) or at least {MIN_RETENTION_MS} ms (an hour);"
                " it is in milliseconds"
            )
        return value

    @model_validator(mode="after")
    def _safety_net_outlasts_retention(self) -> NotetakerSettings:
        if self.media_retention_days >= self.s3_lifecycle_expiration_days:
            raise ValueError(
                f"NOTETAKER_MEDIA_RETENTION_DAYS ({self.media_retention_days}) must be shorter"
                " than NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS"
                f" ({self.s3_lifecycle_expiration_days}): the bucket rule is only a safety net"
            )
        return self

    def source_policy(self) -> SourcePolicy:
        """What provider URLs these settings let the service fetch."""
        return SourcePolicy(
            allow_loopback=self.source_allow_loopback,
            allowed_host_suffixes=tuple(self.source_allowed_host_suffixes),
        )
