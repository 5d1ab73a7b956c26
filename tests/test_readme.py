"""The README documents every setting a service reads, and opens with the two commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from notetaker.ingest.settings import IngestSettings
from notetaker.metrics.settings import MetricsSettings
from notetaker.scheduler.settings import SchedulerSettings
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.uploader.settings import UploaderSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "settings",
    [IngestSettings, UploaderSettings, TranscriptSyncSettings, MetricsSettings, SchedulerSettings],
)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    missing = [
        f"NOTETAKER_{name.upper()}"
        for name in settings.model_fields
        if f"`NOTETAKER_{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_starts_with_the_run_and_test_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "up"],
        ["make", "test"],
    ]
