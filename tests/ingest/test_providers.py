"""Each provider payload (the fixtures, in the providers' formats) maps to the right events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

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
    gladia_failure,
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
    assert recording.video_url is not None
    assert recording.video_url.startswith("http://127.0.0.1:8080/recordings/7f3c2a4e/video.mp4")
    assert recording.audio_url is not None
    assert recording.audio_url.endswith("X-Amz-Signature=placeholder")
    assert recording.urls_received_at == NOW
    assert recording.provider_transcript is True
    assert recording.provider_api == "v2"
    assert isinstance(transcript, TranscriptReady)
    assert transcript.transcript_url is not None
    assert transcript.transcript_url.endswith("transcription.json")


def test_v2_completed_carries_every_artifact_url_and_the_people_it_lists() -> None:
    recording, _ = mb("meetingbaas/v2-bot.completed.json")
    assert isinstance(recording, RecordingCompleted)
    base = "http://127.0.0.1:8080/recordings/7f3c2a4e"
    assert recording.artifact_urls == {
        "transcription": f"{base}/transcription.json",
        "raw_transcription": f"{base}/raw_transcription.json",
        "diarization": f"{base}/diarization.jsonl",
    }
    people = [{"id": None, "name": "Ada Lovelace"}, {"id": None, "name": "Alan Turing"}]
    assert (recording.participants, recording.speakers) == (people, people)
    # The guide's shape (video named `mp4`) keeps its artifacts too.
    guide, _ = mb("meetingbaas/v2-bot.completed.guide.json")
    assert isinstance(guide, RecordingCompleted)
    assert sorted(guide.artifact_urls) == ["diarization", "transcription"]
    # A delivery without artifacts (null URLs, empty lists) names none.
    (callback,) = mb("meetingbaas/v2-callback.completed.json")
    assert isinstance(callback, RecordingCompleted)
    assert (callback.artifact_urls, callback.participants) == ({}, [])


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
    assert recording.speakers == [
        {"id": None, "name": "Ada Lovelace"},
        {"id": None, "name": "Alan Turing"},
    ]
    assert recording.artifact_urls == {}  # v1 hands over no artifact URLs
    assert recording.audio_url is None
    assert isinstance(transcript, TranscriptReady)
    assert transcript.utterances is not None
    assert [u.text for u in transcript.utterances] == ["Hello Alan.", "Hello Ada."]
    assert transcript.utterances[0].speaker == "Ada Lovelace"
    (failed,) = mb("meetingbaas/v1-failed.json")
    assert isinstance(failed, RecordingFailed)
    assert failed.error_code == "CannotJoinMeeting"


def test_the_guide_names_the_video_mp4_and_the_reference_video() -> None:
    guide, _ = mb("meetingbaas/v2-bot.completed.guide.json")
    reference, _ = mb("meetingbaas/v2-bot.completed.reference.json")
    assert isinstance(guide, RecordingCompleted)
    assert isinstance(reference, RecordingCompleted)
    assert guide.video_url == (
        "http://127.0.0.1:8080/recordings/123e4567/video.mp4"
        "?X-Amz-Expires=14400&X-Amz-Signature=placeholder"
    )
    assert reference.video_url is not None
    assert reference.video_url.endswith("X-Amz-Signature=placeholder")


def test_extra_is_read_inside_data_or_beside_it_and_carried_on_every_event() -> None:
    inside = mb("meetingbaas/v2-bot.completed.guide.json")
    beside = mb("meetingbaas/v2-bot.completed.reference.json")
    assert [e.extra for e in inside] == [{"customer_id": "12345"}] * 2
    assert [e.extra for e in beside] == [{"meeting": "weekly sync"}] * 2
    (failed,) = mb("meetingbaas/v1-failed.documented.json")
    assert failed.extra == {"foo": "bar"}
    (plain,) = mb("meetingbaas/v2-bot.failed.json")
    assert plain.extra is None


def test_sent_at_is_accepted_inside_data_and_beside_it_but_must_be_a_time() -> None:
    inside = fixture("meetingbaas/v2-bot.failed.reference.json")
    assert mb("meetingbaas/v2-bot.failed.reference.json")
    inside["data"]["sent_at"] = "3026-01-01T00:00:00Z"
    with pytest.raises(ValidationError):
        meetingbaas_events(MeetingBaasDelivery.model_validate(inside), NOW)


def test_status_failure_reasons_and_start_time_are_kept() -> None:
    (guide,) = mb("meetingbaas/v2-bot.status_change.guide.json")
    assert isinstance(guide, BotStatusChanged)
    assert guide.started_at == datetime(2025, 1, 15, 11, 50, tzinfo=UTC)  # Unix seconds
    assert guide.extra == {"customer_id": "12345"}
    (reference,) = mb("meetingbaas/v2-bot.status_change.reference.json")
    assert isinstance(reference, BotStatusChanged)
    assert (reference.status, reference.started_at) == ("failed", None)  # its 0: unknown
    assert reference.error_message == "The bot lost its connection to the meeting"
    (v1,) = mb("meetingbaas/v1-bot.status_change.meeting_error.json")
    assert isinstance(v1, BotStatusChanged)
    assert (v1.error_type, v1.error_message) == (
        "network_error",
        "The connection to the meeting was lost",
    )
    (iso,) = mb("meetingbaas/v2-bot.status_change.json")
    assert isinstance(iso, BotStatusChanged)
    assert iso.started_at == datetime(2026, 11, 20, 10, 1, 10, tzinfo=UTC)


def test_a_completed_bot_without_video_is_an_audio_only_recording() -> None:
    recording, transcript = mb("meetingbaas/v2-bot.completed.audio-only.json")
    assert isinstance(recording, RecordingCompleted)
    assert recording.video_url is None
    assert recording.audio_url is not None
    assert recording.audio_url.startswith("http://127.0.0.1:8080/recordings/2b4d6f80/audio.flac")
    assert recording.provider_transcript is True
    assert isinstance(transcript, TranscriptReady)


def test_a_completed_bot_whose_data_is_deleted_failed_with_that_reason() -> None:
    (failed,) = mb("meetingbaas/v2-bot.completed.data-deleted.json")
    assert isinstance(failed, RecordingFailed)
    assert failed.error_code == "DATA_DELETED"
    nothing = fixture("meetingbaas/v2-bot.completed.audio-only.json")
    nothing["data"]["audio"] = None
    (failed,) = meetingbaas_events(MeetingBaasDelivery.model_validate(nothing), NOW)
    assert isinstance(failed, RecordingFailed)
    assert failed.error_code == "NO_MEDIA"


def test_v1_complete_keeps_its_audio_and_v1_failed_its_message() -> None:
    recording, _ = mb("meetingbaas/v1-complete.documented.json")
    assert isinstance(recording, RecordingCompleted)
    assert recording.audio_url == "http://127.0.0.1:8080/recordings/123e4567/audio123.wav?token=abc"
    (failed,) = mb("meetingbaas/v1-failed.documented.json")
    assert isinstance(failed, RecordingFailed)
    assert (failed.error_code, failed.error_message) == (
        "meeting_not_found",
        "Could not join meeting: The meeting ID was not found or has expired",
    )


def test_a_v1_retranscription_names_only_the_bot_and_is_fetched_from_the_v1_api() -> None:
    (ready,) = mb("meetingbaas/v1-transcription_complete.json")
    assert isinstance(ready, TranscriptReady)
    assert (ready.provider, ready.provider_api, ready.revision) == (
        "meetingbaas",
        "v1",
        NOW.isoformat(),
    )
    assert (ready.utterances, ready.transcript_url, ready.job_id) == (None, None, None)


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
    assert event.summary is None  # no summarization asked for


def test_gladia_callback_with_a_summary_carries_it() -> None:
    body = fixture("gladia/v2-callback.transcription.success.json")
    body["payload"]["summarization"] = {"success": True, "results": " Ada and Alan met. "}
    (event,) = gladia_events(GladiaCallback.model_validate(body), "bot-9")
    assert isinstance(event, TranscriptReady)
    assert event.summary == "Ada and Alan met."
    body["payload"]["summarization"] = {"success": False, "results": None}
    (failed,) = gladia_events(GladiaCallback.model_validate(body), "bot-9")
    assert isinstance(failed, TranscriptReady)
    assert failed.summary is None


def test_gladia_id_only_webhook_points_at_the_job() -> None:
    callback = GladiaCallback.model_validate(
        fixture("gladia/v2-webhook.transcription.success.json")
    )
    (event,) = gladia_events(callback, "bot-9")
    assert isinstance(event, TranscriptReady)
    assert event.utterances is None
    assert event.job_id == "45463597-20b7-4af7-b3b3-f5fb778203ab"


def test_gladia_error_callback_maps_to_nothing_and_gives_its_reason() -> None:
    callback = GladiaCallback.model_validate(fixture("gladia/v2-callback.transcription.error.json"))
    assert gladia_events(callback, "bot-9") == []
    assert gladia_failure(callback) == ("422", "audio_url could not be downloaded")
    bare = GladiaCallback(event="transcription.error")
    assert gladia_failure(bare) == ("", "")
    with pytest.raises(ValidationError):
        gladia_failure(GladiaCallback(event="transcription.error", error={"message": ["x"]}))
    success = fixture("gladia/v2-webhook.transcription.success.json")
    assert gladia_failure(GladiaCallback.model_validate(success)) is None
