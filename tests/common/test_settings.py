"""A secret or token that is set but empty or malformed stops a service at start, with a message
naming the variable; a good one, or several (rotation), is read as given."""

from __future__ import annotations

import base64

import pytest
from pydantic_settings import BaseSettings

from notetaker.common.settings import NotetakerSettings, load_settings
from notetaker.ingest.settings import IngestSettings
from notetaker.metrics.settings import MetricsSettings
from notetaker.scheduler.settings import SchedulerSettings
from notetaker.transcript_sync.settings import TranscriptSyncSettings

GOOD = "a-secret-of-enough-length"
SVIX = "whsec_" + base64.b64encode(bytes(range(32))).decode()

SECRET_SETTINGS: list[tuple[type[NotetakerSettings], str, str]] = [
    (IngestSettings, "NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS", SVIX),
    (IngestSettings, "NOTETAKER_MEETINGBAAS_CALLBACK_KEYS", GOOD),
    (IngestSettings, "NOTETAKER_MEETINGBAAS_API_KEYS", GOOD),
    (IngestSettings, "NOTETAKER_GLADIA_CALLBACK_KEYS", GOOD),
    (TranscriptSyncSettings, "NOTETAKER_GLADIA_API_KEY", GOOD),
    (TranscriptSyncSettings, "NOTETAKER_GLADIA_CALLBACK_KEYS", GOOD),
    (TranscriptSyncSettings, "NOTETAKER_MEDIA_TOKEN_KEYS", GOOD),
    (MetricsSettings, "NOTETAKER_ADMIN_TOKENS", GOOD),
    (SchedulerSettings, "NOTETAKER_MEETINGBAAS_API_KEY", GOOD),
    (SchedulerSettings, "NOTETAKER_MEETINGBAAS_CALLBACK_KEYS", GOOD),
    (SchedulerSettings, "NOTETAKER_GLADIA_API_KEY", GOOD),
]
IDS = [f"{cls.__name__}-{name}" for cls, name, _ in SECRET_SETTINGS]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Only what a test sets: no NOTETAKER_* from outside, no .env file."""
    import os

    for name in list(os.environ):
        if name.startswith("NOTETAKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))


def refusal(settings: type[BaseSettings]) -> str:
    with pytest.raises(SystemExit) as stopped:
        load_settings(settings)  # type: ignore[type-var]
    return str(stopped.value.code)


@pytest.mark.parametrize(("settings", "name", "good"), SECRET_SETTINGS, ids=IDS)
@pytest.mark.parametrize("bad", ["", "   ", "short", "has white space in it"])
def test_a_secret_set_but_empty_or_malformed_stops_the_service(
    monkeypatch: pytest.MonkeyPatch,
    settings: type[NotetakerSettings],
    name: str,
    good: str,
    bad: str,
) -> None:
    monkeypatch.setenv(name, bad)
    message = refusal(settings)
    assert name in message
    assert "cannot start" in message


LISTS = [(cls, name, good) for cls, name, good in SECRET_SETTINGS if name.endswith("S")]


@pytest.mark.parametrize(("settings", "name", "good"), LISTS, ids=[n for _, n, _ in LISTS])
@pytest.mark.parametrize("pattern", ["{good},", ",{good}", "{good},,{good}"])
def test_an_empty_entry_in_a_list_of_secrets_stops_the_service(
    monkeypatch: pytest.MonkeyPatch,
    settings: type[NotetakerSettings],
    name: str,
    good: str,
    pattern: str,
) -> None:
    monkeypatch.setenv(name, pattern.format(good=good))
    assert name in refusal(settings)


@pytest.mark.parametrize(("settings", "name", "good"), SECRET_SETTINGS, ids=IDS)
def test_a_good_secret_is_read_as_given(
    monkeypatch: pytest.MonkeyPatch, settings: type[NotetakerSettings], name: str, good: str
) -> None:
    monkeypatch.setenv(name, good)
    value = getattr(load_settings(settings), name.removeprefix("NOTETAKER_").lower())
    values = value if isinstance(value, list) else [value]
    assert [v.get_secret_value() for v in values] == [good]


def test_several_secrets_are_read_in_order_for_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTETAKER_ADMIN_TOKENS", f"{GOOD}-old, {GOOD}-new")
    tokens = load_settings(MetricsSettings).admin_tokens
    assert [t.get_secret_value() for t in tokens] == [f"{GOOD}-old", f"{GOOD}-new"]


def test_an_unset_secret_leaves_the_feature_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(MetricsSettings).admin_tokens == []
    assert load_settings(SchedulerSettings).meetingbaas_api_key is None
    assert load_settings(SchedulerSettings).meetingbaas_callback_keys == []


def test_the_callback_keys_of_a_rotation_are_read_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler signs with the first; ingest accepts every one."""
    monkeypatch.setenv("NOTETAKER_MEETINGBAAS_CALLBACK_KEYS", f"{GOOD}-new,{GOOD}-old")
    for settings in (SchedulerSettings, IngestSettings):
        keys = load_settings(settings).meetingbaas_callback_keys  # type: ignore[attr-defined]
        assert [k.get_secret_value() for k in keys] == [f"{GOOD}-new", f"{GOOD}-old"]


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_gladia_token_lifetime_must_be_a_positive_number_of_seconds(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert TranscriptSyncSettings().gladia_callback_token_seconds == 2 * 24 * 3600
    monkeypatch.setenv("NOTETAKER_GLADIA_CALLBACK_TOKEN_SECONDS", value)
    assert "NOTETAKER_GLADIA_CALLBACK_TOKEN_SECONDS" in refusal(TranscriptSyncSettings)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_",  # the prefix alone: every request failed with a 500 before this check
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"too short a key").decode(),
        base64.b64encode(bytes(range(32))).decode(),  # the key without its prefix
    ],
)
def test_a_svix_secret_that_is_not_a_signing_key_stops_ingest(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS", secret)
    message = refusal(IngestSettings)
    assert "NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS" in message
    key = secret.removeprefix("whsec_")
    assert not key or key not in message  # the message never echoes the secret
