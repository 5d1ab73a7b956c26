"""A rolling upgrade: records the previous version wrote (before `extra`, the failure reasons on
`bot.status`, audio-only recordings, the provider's artifacts and what it said about the meeting)
are still read by the new code, with the same CloudEvent ids, and the join decides them as
before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from notetaker.common.envelope import event_id, from_message
from notetaker.common.events import (
    BotStatusChanged,
    KeptBodyRef,
    RecordingCompleted,
    RecordingFailed,
    RecordingUploaded,
    TranscriptReady,
)
from notetaker.transcript_sync.join import (
    JoinState,
    RequestThumbnail,
    WriteTranscript,
    WriteVideo,
    decide,
)

RECORDING = uuid.UUID("00000000-0000-0000-0000-0000000000c3")
ORG = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
USER = uuid.UUID("00000000-0000-0000-0000-0000000000b2")

# Each event's payload exactly as the previous version (main at 64fc421) serialized it.
PREVIOUS: dict[str, dict[str, Any]] = {
    "bot.status": {
        "bot_id": "bot-1",
        "status": "in_call_recording",
        "changed_at": "2026-11-20T10:01:12Z",
    },
    "recording.completed": {
        "bot_id": "bot-1",
        "provider": "meetingbaas",
        "provider_api": "v2",
        "video_url": "https://example.com/video.mp4?X-Amz-Signature=s",
        "audio_url": None,
        "urls_received_at": "2026-11-20T10:33:06Z",
        "duration_seconds": 1820.0,
        "provider_transcript": True,
    },
    "recording.failed": {
        "bot_id": "bot-1",
        "error_code": "NO_VIDEO",
        "error_message": "",
    },
    "transcript.ready": {
        "bot_id": "bot-1",
        "provider": "meetingbaas",
        "utterances": None,
        "transcript_url": "https://example.com/transcription.json",
        "job_id": None,
        "language": None,
    },
    "recording.uploaded": {
        "bot_id": "bot-1",
        "recording_id": str(RECORDING),
        "org_id": str(ORG),
        "user_id": str(USER),
        "bucket": "bk",
        "video_key": "k/video.mp4",
        "audio_key": "k/audio.flac",
        "size_bytes": 10,
        "checksum": "c",
        "provider_transcript": False,
    },
}


def _record(event_type: str, data: dict[str, Any]) -> ce_kafka.KafkaMessage:
    """The record the previous version put on Kafka (its envelope is unchanged)."""
    attributes = {
        "id": str(uuid.uuid4()),
        "source": "/notetaker/previous",
        "type": event_type,
        "specversion": "1.0",
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
        "dataschema": f"urn:notetaker:event:{event_type}:v1",
        "subject": "bot-1",
    }
    cloud_event = CloudEvent(attributes=attributes, data=data)
    return ce_kafka.to_binary(cloud_event, JSONFormat(), key_mapper=lambda _: b"bot-1")


def _read(event_type: str) -> Any:
    record = _record(event_type, PREVIOUS[event_type])
    assert isinstance(record.key, bytes)
    return from_message(list(record.headers.items()), record.key, record.value).event


@pytest.mark.parametrize("event_type", sorted(PREVIOUS))
def test_the_previous_versions_events_parse_unchanged(event_type: str) -> None:
    event = _read(event_type)
    assert event.type == event_type
    # Every field the previous version wrote reads back as written.
    assert event.model_dump(mode="json") | PREVIOUS[event_type] == event.model_dump(mode="json")
    if hasattr(event, "extra"):
        assert event.extra is None


def test_the_new_optional_fields_are_absent_from_a_previous_event_and_ids_stay_the_same() -> None:
    status = _read("bot.status")
    assert isinstance(status, BotStatusChanged)
    assert (status.started_at, status.error_message, status.error_type) == (None, None, None)
    # The CloudEvent id (a function of the fact) is what it was: redeliveries stay duplicates.
    same = BotStatusChanged(
        bot_id="bot-1",
        status="in_call_recording",
        changed_at=datetime(2026, 11, 20, 10, 1, 12, tzinfo=UTC),
    )
    assert event_id(status) == event_id(same)
    completed = _read("recording.completed")
    assert isinstance(completed, RecordingCompleted)
    assert completed.video_url == "https://example.com/video.mp4?X-Amz-Signature=s"
    # No artifacts to copy, nobody listed: the video is copied as before, with the same id.
    assert (completed.artifact_urls, completed.participants, completed.speakers) == ({}, None, None)
    assert event_id(completed) == event_id(
        RecordingCompleted(
            bot_id="bot-1", urls_received_at=datetime(2026, 11, 20, 10, 33, 6, tzinfo=UTC)
        )
    )
    assert isinstance(_read("recording.failed"), RecordingFailed)
    transcript = _read("transcript.ready")
    assert isinstance(transcript, TranscriptReady)
    assert event_id(transcript) == event_id(TranscriptReady(bot_id="bot-1", provider="gladia"))


def test_the_join_decides_a_previous_upload_as_before() -> None:
    uploaded = _read("recording.uploaded")
    assert isinstance(uploaded, RecordingUploaded)
    assert (uploaded.artifacts, uploaded.duration_seconds, uploaded.participants) == (
        [],
        None,
        None,
    )
    state, effects = decide(JoinState(), uploaded, can_transcribe=False)
    assert effects[0] == WriteVideo("bk", "k/video.mp4", "k/audio.flac")
    assert isinstance(effects[1], RequestThumbnail)
    assert state.media_key() == "k/video.mp4"


def test_a_previous_inline_transcript_reads_without_a_pointer_and_is_written_as_before() -> None:
    """The previous version's inline `transcript.ready` (no `body_ref`) parses, keeps its id and
    its transcript id, and the join writes it from its own utterances, as before."""
    data = {
        "bot_id": "bot-1",
        "provider": "meetingbaas",
        "utterances": [{"speaker": "Ada", "start": 0.0, "end": 1.5, "text": "Welcome."}],
        "transcript_url": None,
        "job_id": None,
        "language": None,
        "extra": None,
        "provider_api": None,
        "revision": None,
        "summary": None,
    }
    record = _record("transcript.ready", data)
    assert isinstance(record.key, bytes)
    event = from_message(list(record.headers.items()), record.key, record.value).event
    assert isinstance(event, TranscriptReady)
    assert event.body_ref is None
    assert event.full_text() == "Welcome."
    assert event_id(event) == event_id(TranscriptReady(bot_id="bot-1", provider="meetingbaas"))
    state, effects = decide(JoinState(), event, can_transcribe=False)
    assert effects == [WriteTranscript(event)]
    assert state.transcript_id == "meetingbaas:1"


def test_a_pointer_event_is_a_transcript_of_its_own_body() -> None:
    """A new `transcript.ready` pointing at a kept body round-trips, and names its transcript
    by that body: a redelivery is recognised, another delivery's body is another transcript."""
    ref = KeptBodyRef(provider="meetingbaas", delivery_id="abc")
    event = TranscriptReady(bot_id="bot-1", provider="meetingbaas", body_ref=ref)
    back = TranscriptReady.model_validate_json(event.model_dump_json())
    assert back.body_ref == ref
    assert back.utterances is None
    state, effects = decide(JoinState(), back, can_transcribe=False)
    assert effects == [WriteTranscript(back)]
    assert decide(state, back, can_transcribe=False)[1] == []
    other = back.model_copy(
        update={"body_ref": KeptBodyRef(provider="meetingbaas", delivery_id="d")}
    )
    assert decide(state, other, can_transcribe=False)[1] == [WriteTranscript(other)]
