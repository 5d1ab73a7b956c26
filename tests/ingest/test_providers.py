"""Each provider payload (the fixtures, in the providers' formats) maps to the right events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from notetaker.common.events import (
    BotStatusChanged,
    RecordingCompleted,
    RecordingFailed,
    TranscriptReady,
)
from notetaker.ingest.providers import (
    GladiaCallback,
    MeetingBaasDelivery,
    gladia_events,
    meetingbaas_events,
)
from tests.fixtures import PROVIDER_SAMPLES

NOW = datetime(2026, 11, 20, 10, 33, 6, tzinfo=UTC)


def fixture(name: str) -> Any:
    """A provider sample, its placeholder port filled in (tests/fixtures/providers/README.md)."""
    text = (PROVIDER_SAMPLES / name).read_text()
    return json.loads(text.replace("127.0.0.1:PORT", "127.0.0.1:8080"))


def mb(name: str) -> list[Any]:
    return meetingbaas_events(MeetingBaasDelivery.model_validate(fixture(name)), NOW)


def test_v2_completed_gives_recording_and_transcript_pointer() -> None:
    recording, transcript = mb("meetingbaas/v2-bot.completed.json")
    assert isinstance(recording, RecordingCompleted)
    assert recording.bot_id == "7f3c2a4e-1b6d-4c8e-9a0f-2d5e8b1c3a77"
    assert recording.video_url.startswith("http://127.0.0.1:8080/recordings/7f3c2a4e/video.mp4")
    assert recording.audio_url is not None
    assert recording.audio_url.endswith("X-Amz-Signature=placeholder")
    assert recording.urls_received_at == NOW
    assert recording.provider_transcript is True
    assert recording.provider_api == "v2"
    assert isinstance(transcript, TranscriptReady)
    assert transcript.transcript_url is not None
    assert transcript.transcript_url.endswith("transcription.json")


def test_v2_failed_gives_recording_failed_and_status_change_gives_bot_status() -> None:
    (failed,) = mb("meetingbaas/v2-bot.failed.json")
    assert isinstance(failed, RecordingFailed)
    assert failed.error_code == "BOT_NOT_ACCEPTED"
    (status,) = mb("meetingbaas/v2-bot.status_change.json")
    assert isinstance(status, BotStatusChanged)
    assert status.status == "in_call_recording"


def test_v1_complete_carries_the_transcript_inline_and_v1_failed_gives_its_code() -> None:
    recording, transcript = mb("meetingbaas/v1-complete.json")
    assert isinstance(recording, RecordingCompleted)
    assert recording.provider_api == "v1"  # its URL is signed again by the v1 API
    assert recording.audio_url is None
    assert isinstance(transcript, TranscriptReady)
    assert transcript.utterances is not None
    assert [u.text for u in transcript.utterances] == ["Hello Alan.", "Hello Ada."]
    assert transcript.utterances[0].speaker == "Ada Lovelace"
    (failed,) = mb("meetingbaas/v1-failed.json")
    assert isinstance(failed, RecordingFailed)
    assert failed.error_code == "CannotJoinMeeting"


def test_unknown_event_type_maps_to_nothing() -> None:
    delivery = MeetingBaasDelivery(event="bot.teleported", data={"bot_id": "b"})
    assert meetingbaas_events(delivery, NOW) == []


def test_gladia_success_callback_with_full_result_gives_inline_utterances() -> None:
    callback = GladiaCallback.model_validate(
        fixture("gladia/v2-callback.transcription.success.json")
    )
    (event,) = gladia_events(callback, "bot-9")
    assert isinstance(event, TranscriptReady)
    assert event.provider == "gladia"
    assert event.bot_id == "bot-9"
    assert event.utterances is not None
    assert event.full_text() == "Hello Alan. Hello Ada."
    assert event.language == "en"


def test_gladia_id_only_webhook_points_at_the_job() -> None:
    callback = GladiaCallback.model_validate(
        fixture("gladia/v2-webhook.transcription.success.json")
    )
    (event,) = gladia_events(callback, "bot-9")
    assert isinstance(event, TranscriptReady)
    assert event.utterances is None
    assert event.job_id == "45463597-20b7-4af7-b3b3-f5fb778203ab"


def test_gladia_error_callback_maps_to_nothing() -> None:
    callback = GladiaCallback.model_validate(fixture("gladia/v2-callback.transcription.error.json"))
    assert gladia_events(callback, "bot-9") == []
