"""The join decides the same meeting whatever order or repetition events arrive in."""

from __future__ import annotations

import itertools
import uuid

from notetaker.common.events import (
    Event,
    RecordingFailed,
    RecordingUploaded,
    RecordingUploadFailed,
    ThumbnailGenerated,
    TranscriptReady,
    Utterance,
)
from notetaker.transcript_sync.join import (
    Effect,
    JoinState,
    MarkFailed,
    RequestThumbnail,
    RequestTranscription,
    WriteThumbnail,
    WriteTranscript,
    WriteVideo,
    decide,
)

ORG, USER, REC = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def uploaded(provider_transcript: bool = True) -> RecordingUploaded:
    return RecordingUploaded(
        bot_id="b",
        recording_id=REC,
        org_id=ORG,
        user_id=USER,
        bucket="bk",
        video_key="k/video.mp4",
        audio_key="k/audio.flac",
        size_bytes=10,
        checksum="c",
        provider_transcript=provider_transcript,
    )


TRANSCRIPT = TranscriptReady(
    bot_id="b",
    provider="meetingbaas",
    utterances=[Utterance(speaker="A", start=0, end=1, text="hi")],
)
THUMB = ThumbnailGenerated(
    bot_id="b",
    recording_id=REC,
    bucket="bk",
    thumbnail_key="k/thumbnail.jpg",
    width=320,
    height=180,
    size_bytes=100,
)


def run(events: list[Event], can_transcribe: bool = False) -> tuple[JoinState, list[Effect]]:
    state, all_effects = JoinState(), []
    for event in events:
        state, effects = decide(state, event, can_transcribe=can_transcribe)
        all_effects += effects
    return state, all_effects


def kinds(effects: list[Effect]) -> list[str]:
    return sorted(type(e).__name__ for e in effects)


def test_any_order_any_repetition_gives_the_same_writes_once() -> None:
    expected = ["RequestThumbnail", "WriteThumbnail", "WriteTranscript", "WriteVideo"]
    for order in itertools.permutations([uploaded(), TRANSCRIPT, THUMB]):
        if order.index(THUMB) < order.index(uploaded()):
            continue  # a thumbnail is made from the upload: it cannot come first
        doubled = [e for event in order for e in (event, event)]
        state, effects = run(doubled)
        assert kinds(effects) == expected, order
        assert state.video_key == "k/video.mp4"
        assert state.thumbnail_key == "k/thumbnail.jpg"


def test_thumbnail_requested_beside_the_video() -> None:
    _, effects = run([uploaded()])
    (request,) = [e for e in effects if isinstance(e, RequestThumbnail)]
    assert request.request.thumbnail_key == f"meeting-recordings/{ORG}/{USER}/{REC}/thumbnail.jpg"
    assert request.request.video_key == "k/video.mp4"


def test_gladia_is_asked_only_when_no_transcript_is_coming() -> None:
    _, effects = run([uploaded(provider_transcript=False)], can_transcribe=True)
    assert [e for e in effects if isinstance(e, RequestTranscription)] == [
        RequestTranscription("bk", "k/audio.flac")
    ]
    _, effects = run([uploaded(provider_transcript=True)], can_transcribe=True)
    assert not any(isinstance(e, RequestTranscription) for e in effects)
    _, effects = run([TRANSCRIPT, uploaded(provider_transcript=False)], can_transcribe=True)
    assert not any(isinstance(e, RequestTranscription) for e in effects)
    _, effects = run([uploaded(False), uploaded(False)], can_transcribe=True)
    assert sum(isinstance(e, RequestTranscription) for e in effects) == 1


def test_final_failure_marks_the_meeting_but_never_hides_a_video() -> None:
    final = RecordingUploadFailed(bot_id="b", recording_id=REC, attempt=3, error="boom", final=True)
    retrying = RecordingUploadFailed(
        bot_id="b", recording_id=REC, attempt=1, error="boom", final=False
    )
    assert run([retrying])[1] == []
    assert run([final, final])[1] == [MarkFailed("boom")]
    assert run([uploaded(), final])[1][0] == WriteVideo("bk", "k/video.mp4", "k/audio.flac")
    assert not any(isinstance(e, MarkFailed) for e in run([uploaded(), final])[1])
    bot_failed = RecordingFailed(bot_id="b", error_code="BOT_NOT_ACCEPTED", error_message="no")
    assert run([bot_failed])[1] == [MarkFailed("BOT_NOT_ACCEPTED: no")]


def test_a_different_transcript_is_written_again() -> None:
    other = TranscriptReady(bot_id="b", provider="gladia", job_id="job-1")
    _, effects = run([TRANSCRIPT, other])
    assert [type(e) for e in effects] == [WriteTranscript, WriteTranscript]
    _, effects = run([THUMB])
    assert effects == [WriteThumbnail("bk", "k/thumbnail.jpg")]
