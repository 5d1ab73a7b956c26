"""The CloudEvents envelope: what goes on the wire and what comes back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from notetaker.common.envelope import EnvelopeError, from_message, to_message
from notetaker.common.events import CATALOG, TOPICS, RecordingCompleted, TranscriptReady


def completed(bot_id: str = "bot-1") -> RecordingCompleted:
    return RecordingCompleted(
        bot_id=bot_id, video_url="http://x/v.mp4", urls_received_at=datetime.now(UTC)
    )


def test_binary_mode_headers_key_and_payload() -> None:
    message = to_message(completed(), "/notetaker/test")
    assert message.key == b"bot-1"
    assert message.headers["ce_type"] == b"recording.completed"
    assert message.headers["ce_specversion"] == b"1.0"
    assert message.headers["ce_source"] == b"/notetaker/test"
    assert message.headers["content-type"] == b"application/json"
    assert message.headers["ce_dataschema"] == b"urn:notetaker:event:recording.completed:v1"
    assert json.loads(message.value)["video_url"] == "http://x/v.mp4"


def test_same_fact_same_id_different_fact_different_id() -> None:
    first = to_message(completed(), "/a").headers["ce_id"]
    again = to_message(completed(), "/b").headers["ce_id"]
    other = to_message(completed("bot-2"), "/a").headers["ce_id"]
    assert first == again
    assert first != other


def test_an_encoded_event_decodes_back_to_the_same_event() -> None:
    event = TranscriptReady(bot_id="b", provider="gladia", job_id="j")
    message = to_message(event, "/x")
    assert message.key == b"b"  # keyed by the bot id
    envelope = from_message(list(message.headers.items()), message.key, message.value)
    assert envelope.event == event
    assert envelope.type == "transcript.ready"


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ([], b"{}"),
        (
            [
                ("ce_type", b"nope"),
                ("ce_id", b"1"),
                ("ce_source", b"/"),
                ("ce_specversion", b"1.0"),
            ],
            b"{}",
        ),
        (
            [
                ("ce_type", b"recording.completed"),
                ("ce_id", b"1"),
                ("ce_source", b"/"),
                ("ce_specversion", b"1.0"),
                ("content-type", b"application/json"),
            ],
            b"not json",
        ),
        (
            [
                ("ce_type", b"recording.completed"),
                ("ce_id", b"1"),
                ("ce_source", b"/"),
                ("ce_specversion", b"1.0"),
                ("content-type", b"application/json"),
            ],
            b'{"bot_id": "b"}',
        ),
    ],
)
def test_garbage_is_an_envelope_error(headers: list[tuple[str, bytes]], value: bytes) -> None:
    with pytest.raises(EnvelopeError):
        from_message(headers, b"k", value)


# The contract with every producer and consumer, written out by hand: the event types (which are
# the topic names), the model each decodes to, and its schema version (in `dataschema`).
CONTRACT = {
    ("bot.status", "BotStatusChanged", 1),
    ("recording.completed", "RecordingCompleted", 1),
    ("recording.failed", "RecordingFailed", 1),
    ("transcript.ready", "TranscriptReady", 1),
    ("recording.upload_requested", "RecordingUploadRequested", 1),
    ("recording.uploaded", "RecordingUploaded", 1),
    ("recording.upload_failed", "RecordingUploadFailed", 1),
    ("storage.usage", "StorageUsage", 1),
    ("thumbnail.requested", "ThumbnailRequested", 1),
    ("thumbnail.generated", "ThumbnailGenerated", 1),
    ("meeting.synced", "MeetingSynced", 1),
}


def test_the_catalog_is_the_written_contract() -> None:
    assert {(name, model.__name__, model.version) for name, model in CATALOG.items()} == CONTRACT
    assert set(TOPICS) == {name for name, _, _ in CONTRACT}
    for name, _, version in CONTRACT:
        assert CATALOG[name].dataschema() == f"urn:notetaker:event:{name}:v{version}"
