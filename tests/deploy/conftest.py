"""What the deployment tests share: which settings each service reads."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from notetaker.cli.settings import CliSettings
from notetaker.common.settings import NotetakerSettings
from notetaker.ingest.settings import IngestSettings
from notetaker.metrics.settings import MetricsSettings
from notetaker.scheduler.settings import SchedulerSettings
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.uploader.settings import UploaderSettings

# Service folder -> the settings class its process reads.
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "uploader": UploaderSettings,
    "transcript-sync": TranscriptSyncSettings,
    "metrics": MetricsSettings,
    "scheduler": SchedulerSettings,
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (NOTETAKER_ + field name)."""
    return {f"NOTETAKER_{field.upper()}" for field in settings.model_fields}


@pytest.fixture(scope="session")
def service_env_names() -> dict[str, set[str]]:
    """Per service folder, every NOTETAKER_* variable its settings class reads."""
    return {service: env_names(settings) for service, settings in SETTINGS.items()}


@pytest.fixture(scope="session")
def migrate_env_names() -> set[str]:
    """What `python -m notetaker.common.migrate` reads (the shared base settings)."""
    return env_names(NotetakerSettings)


@pytest.fixture(scope="session")
def cli_env_names() -> set[str]:
    """What the `notetaker` command (the chart's toolbox) reads."""
    return env_names(CliSettings)
