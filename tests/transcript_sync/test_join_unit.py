"""The join's `decide()`, in process: for every order and repetition of a meeting's events, the
meeting gets each write exactly once, with the values the events carried, and nothing else.

What a user sees of the join is the effects (the `meetings` row, the thumbnail and Gladia
requests) and, across a restart, the saved state; both are checked here value by value.
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from notetaker.common.events import (
    BotStatusChanged,
    Event,
    RecordingFailed,
    RecordingUploaded,
    RecordingUploadFailed,
    ThumbnailGenerated,
    ThumbnailRequested,
    TranscriptReady,
    Utterance,
)
from notetaker.transcript_sync.join import (
    Effect,
    JoinState,
    MarkFailed,
    MeetingDetails,
    RequestThumbnail,
    RequestTranscription,
    WriteThumbnail,
    WriteTranscript,
    WriteVideo,
    decide,
    transcript_id,
)

ORG = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
USER = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
REC = uuid.UUID("00000000-0000-0000-0000-0000000000c3")
THUMBNAIL_KEY = f"meeting-recordings/{ORG}/{USER}/{REC}/thumbnail.jpg"


def uploaded(
    *,
    provider_transcript: bool = False,
    video_key: str | None = "k/video.mp4",
    audio_key: str | None = "k/audio.flac",
) -> RecordingUploaded:
    return RecordingUploaded(
        bot_id="bot-1",
        recording_id=REC,
        org_id=ORG,
        user_id=USER,
        bucket="bk",
        video_key=video_key,
        audio_key=audio_key,
        size_bytes=10,
        checksum="c",
        provider_transcript=provider_transcript,
    )


def inline(*texts: str) -> TranscriptReady:
    return TranscriptReady(
        bot_id="bot-1",
        provider="meetingbaas",
        utterances=[
            Utterance(speaker="A", start=i, end=i + 1, text=t) for i, t in enumerate(texts)
        ],
    )


TRANSCRIPT = inline("hello", "bye")
THUMB = ThumbnailGenerated(
    bot_id="bot-1",
    recording_id=REC,
    bucket="bk",
    thumbnail_key=THUMBNAIL_KEY,
    width=320,
    height=180,
    size_bytes=100,
)
FINAL = RecordingUploadFailed(
    bot_id="bot-1", recording_id=REC, attempt=3, error="SourceError: 403", final=True
)
RETRYING = RecordingUploadFailed(
    bot_id="bot-1", recording_id=REC, attempt=1, error="SourceError: 403", final=False
)
BOT_FAILED = RecordingFailed(bot_id="bot-1", error_code="BOT_NOT_ACCEPTED", error_message="no")

WRITE_VIDEO = WriteVideo("bk", "k/video.mp4", "k/audio.flac")
REQUEST_THUMBNAIL = RequestThumbnail(
    ThumbnailRequested(
        bot_id="bot-1",
        recording_id=REC,
        org_id=ORG,
        bucket="bk",
        video_key="k/video.mp4",
        thumbnail_key=THUMBNAIL_KEY,
    )
)


def run(
    events: list[Event], *, can_transcribe: bool = False, state: JoinState | None = None
) -> tuple[JoinState, list[Effect]]:
    state, done = state or JoinState(), []
    for event in events:
        state, effects = decide(state, event, can_transcribe=can_transcribe)
        done += effects
    return state, done


# --- the recording ------------------------------------------------------------------------------


def test_an_upload_writes_the_video_and_asks_for_a_thumbnail_beside_it() -> None:
    state, effects = run([uploaded()])
    assert effects == [WRITE_VIDEO, REQUEST_THUMBNAIL]
    assert state == JoinState(
        bucket="bk",
        recording_id=REC,
        org_id=ORG,
        video_key="k/video.mp4",
        audio_key="k/audio.flac",
    )


def test_an_upload_writes_what_the_provider_said_about_the_meeting_with_the_video() -> None:
    people = [{"id": None, "name": "Ada Lovelace"}]
    event = uploaded().model_copy(
        update={"duration_seconds": 1820.0, "participants": people, "speakers": []}
    )
    _, effects = run([event])
    assert effects[0] == WriteVideo(
        "bk",
        "k/video.mp4",
        "k/audio.flac",
        details=MeetingDetails(duration_seconds=1820.0, participants=people, speakers=[]),
    )
    # An upload that says nothing about the meeting leaves the row's fields as they are.
    _, effects = run([uploaded()])
    assert effects[0] == WriteVideo("bk", "k/video.mp4", "k/audio.flac", details=None)


def test_the_same_upload_again_changes_nothing() -> None:
    first, _ = run([uploaded()])
    again, effects = decide(first, uploaded(), can_transcribe=True)
    assert (again, effects) == (first, [])


def test_a_new_upload_of_the_recording_is_written_again_without_a_second_thumbnail() -> None:
    state, _ = run([uploaded(), THUMB])
    state, effects = decide(state, uploaded(video_key="k/video.webm"), can_transcribe=False)
    assert effects == [WriteVideo("bk", "k/video.webm", "k/audio.flac")]
    assert (state.video_key, state.thumbnail_key) == ("k/video.webm", THUMBNAIL_KEY)


def test_a_video_without_audio_is_written_with_no_audio() -> None:
    state, effects = run([uploaded(audio_key=None)])
    assert effects[0] == WriteVideo("bk", "k/video.mp4", None)
    assert state.audio_key is None


def test_an_audio_only_upload_writes_the_audio_and_asks_for_no_thumbnail() -> None:
    state, effects = run([uploaded(video_key=None)])
    assert effects == [WriteVideo("bk", None, "k/audio.flac")]
    assert (state.video_key, state.audio_key, state.media_key()) == (
        None,
        "k/audio.flac",
        "k/audio.flac",
    )
    again, effects = decide(state, uploaded(video_key=None), can_transcribe=True)
    assert (again, effects) == (state, [])


def test_an_upload_event_without_video_or_audio_does_not_parse() -> None:
    with pytest.raises(ValueError, match="names its video_key or its audio_key"):
        uploaded(video_key=None, audio_key=None)


# --- Gladia -------------------------------------------------------------------------------------


def test_gladia_transcribes_the_audio_when_no_transcript_is_coming() -> None:
    state, effects = run([uploaded()], can_transcribe=True)
    # the video is written with the job's intent, so its rows say a transcript is awaited
    owed = WriteVideo("bk", "k/video.mp4", "k/audio.flac", transcribe=True)
    assert effects == [owed, REQUEST_THUMBNAIL, RequestTranscription("bk", "k/audio.flac")]
    assert state.gladia_requested


def test_gladia_transcribes_the_video_when_there_is_no_audio() -> None:
    _, effects = run([uploaded(audio_key=None)], can_transcribe=True)
    assert effects[-1] == RequestTranscription("bk", "k/video.mp4")


def test_gladia_transcribes_an_audio_only_recording_from_its_audio() -> None:
    state, effects = run([uploaded(video_key=None)], can_transcribe=True)
    owed = WriteVideo("bk", None, "k/audio.flac", transcribe=True)
    assert effects == [owed, RequestTranscription("bk", "k/audio.flac")]
    assert state.awaiting_transcript


@pytest.mark.parametrize(
    ("events", "can_transcribe"),
    [
        ([uploaded()], False),  # Gladia is not configured
        ([uploaded(provider_transcript=True)], True),  # the provider's transcript is coming
        ([TRANSCRIPT, uploaded()], True),  # a transcript is already written
    ],
)
def test_gladia_is_not_asked_when_it_cannot_or_need_not(
    events: list[Event], can_transcribe: bool
) -> None:
    state, effects = run(events, can_transcribe=can_transcribe)
    assert not [e for e in effects if isinstance(e, RequestTranscription)]
    assert not [e for e in effects if isinstance(e, WriteVideo) and e.transcribe]
    assert not state.gladia_requested


def test_gladia_is_asked_once_per_meeting_even_for_a_new_upload() -> None:
    _, effects = run([uploaded(), uploaded(video_key="k/v2.mp4")], can_transcribe=True)
    assert [e for e in effects if isinstance(e, RequestTranscription)] == [
        RequestTranscription("bk", "k/audio.flac")
    ]
    assert [e.transcribe for e in effects if isinstance(e, WriteVideo)] == [True, False]


# --- the transcript -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (TranscriptReady(bot_id="b", provider="gladia", job_id="job-1"), "gladia:job-1"),
        (
            TranscriptReady(bot_id="b", provider="meetingbaas", transcript_url="https://t/1"),
            "meetingbaas:https://t/1",
        ),
        (
            TranscriptReady(bot_id="b", provider="gladia", job_id="j", transcript_url="https://t"),
            "gladia:j",
        ),
        (inline("a", "b", "c"), "meetingbaas:3"),
        (TranscriptReady(bot_id="b", provider="meetingbaas"), "meetingbaas:0"),
        (
            TranscriptReady(bot_id="b", provider="meetingbaas", provider_api="v1", revision="r1"),
            "meetingbaas:r1",
        ),
        (
            TranscriptReady(
                bot_id="b", provider="meetingbaas", transcript_url="https://t/1", revision="r1"
            ),
            "meetingbaas:https://t/1",
        ),
    ],
)
def test_which_transcript_was_written_is_remembered_by_provider_and_source(
    event: TranscriptReady, expected: str
) -> None:
    # saved in the join's changelog: a changed format would rewrite transcripts on replay
    assert transcript_id(event) == expected
    state, effects = decide(JoinState(), event, can_transcribe=False)
    assert (state.transcript_id, effects) == (expected, [WriteTranscript(event)])


def test_the_same_transcript_twice_is_written_once() -> None:
    state, effects = run([TRANSCRIPT, TRANSCRIPT])
    assert effects == [WriteTranscript(TRANSCRIPT)]
    again, none = decide(state, TRANSCRIPT, can_transcribe=True)
    assert (again, none) == (state, [])


def test_a_different_transcript_replaces_the_first() -> None:
    gladia = TranscriptReady(bot_id="bot-1", provider="gladia", job_id="job-1")
    gladia_2 = TranscriptReady(bot_id="bot-1", provider="gladia", job_id="job-2")
    _, effects = run([TRANSCRIPT, gladia, gladia_2, gladia])
    assert effects == [
        WriteTranscript(TRANSCRIPT),
        WriteTranscript(gladia),
        WriteTranscript(gladia_2),
        WriteTranscript(gladia),
    ]


def test_each_v1_retranscription_replaces_the_transcript_before_it_once() -> None:
    first, second = (
        TranscriptReady(bot_id="bot-1", provider="meetingbaas", provider_api="v1", revision=r)
        for r in ("2026-12-03T10:00:00+00:00", "2026-12-03T11:00:00+00:00")
    )
    _, effects = run([TRANSCRIPT, first, first, second, second])
    assert effects == [WriteTranscript(TRANSCRIPT), WriteTranscript(first), WriteTranscript(second)]


def test_a_transcript_leaves_the_rest_of_the_state_alone() -> None:
    before, _ = run([uploaded(), THUMB])
    after, _ = decide(before, TRANSCRIPT, can_transcribe=False)
    assert after == before.model_copy(update={"transcript_id": "meetingbaas:2"})


# --- the thumbnail ------------------------------------------------------------------------------


def test_a_thumbnail_is_written_once_and_a_new_one_again() -> None:
    state, effects = run([uploaded(), THUMB, THUMB])
    assert effects == [WRITE_VIDEO, REQUEST_THUMBNAIL, WriteThumbnail("bk", THUMBNAIL_KEY)]
    assert state.thumbnail_key == THUMBNAIL_KEY
    other = THUMB.model_copy(update={"thumbnail_key": "k/t2.jpg", "bucket": "bk2"})
    state, effects = decide(state, other, can_transcribe=False)
    assert effects == [WriteThumbnail("bk2", "k/t2.jpg")]
    assert state.thumbnail_key == "k/t2.jpg"
    assert state.bucket == "bk"  # the thumbnail's bucket is not the recording's


# --- failures -----------------------------------------------------------------------------------


def test_an_upload_failure_with_a_retry_coming_changes_nothing() -> None:
    assert run([RETRYING, RETRYING]) == (JoinState(), [])


def test_a_final_upload_failure_marks_the_meeting_once() -> None:
    state, effects = run([FINAL, FINAL])
    assert effects == [MarkFailed("SourceError: 403")]
    assert state == JoinState(failure="SourceError: 403")


def test_a_different_final_failure_is_marked_again() -> None:
    other = FINAL.model_copy(update={"error": "IntegrityError: size"})
    _, effects = run([FINAL, other, BOT_FAILED])
    assert effects == [
        MarkFailed("SourceError: 403"),
        MarkFailed("IntegrityError: size"),
        MarkFailed("BOT_NOT_ACCEPTED: no"),
    ]


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        ("BOT_NOT_ACCEPTED", "no", "BOT_NOT_ACCEPTED: no"),
        ("NO_VIDEO", "", "NO_VIDEO"),
        ("CRASH", "disk full:", "CRASH: disk full"),
        ("CRASH", " ", "CRASH"),
        ("BOX", "", "BOX"),  # only the separator is stripped, not the code's own letters
        ("BOT_ERROR", "XX", "BOT_ERROR: XX"),
    ],
)
def test_a_bot_failure_marks_the_meeting_with_its_code_and_message(
    code: str, message: str, error: str
) -> None:
    event = RecordingFailed(bot_id="bot-1", error_code=code, error_message=message)
    assert run([event]) == (JoinState(failure=error), [MarkFailed(error)])


@pytest.mark.parametrize("failure", [FINAL, BOT_FAILED])
def test_a_late_failure_never_hides_a_recording_we_have(failure: Event) -> None:
    state, effects = run([uploaded(), failure])
    assert effects == [WRITE_VIDEO, REQUEST_THUMBNAIL]
    assert state.failure is None


def test_an_upload_after_a_failure_clears_it() -> None:
    state, effects = run([FINAL, uploaded()])
    assert effects == [MarkFailed("SourceError: 403"), WRITE_VIDEO, REQUEST_THUMBNAIL]
    assert state.failure is None
    assert state.video_key == "k/video.mp4"


# --- when a meeting is complete (its state is deleted) -------------------------------------------


def test_a_meeting_is_complete_once_video_thumbnail_and_provider_transcript_are_written() -> None:
    with_transcript = uploaded(provider_transcript=True)
    assert not run([with_transcript])[0].complete()
    assert not run([with_transcript, THUMB])[0].complete()  # the provider's transcript is to come
    assert not run([with_transcript, TRANSCRIPT])[0].complete()  # the thumbnail is to come
    assert run([with_transcript, THUMB, TRANSCRIPT])[0].complete()
    assert run([TRANSCRIPT, uploaded(), THUMB])[0].complete()


def test_a_meeting_gladia_transcribes_is_complete_only_with_its_transcript() -> None:
    state, _ = run([uploaded(), THUMB], can_transcribe=True)
    assert state.awaiting_transcript
    assert not state.complete()
    assert run([inline("from gladia")], state=state)[0].complete()


def test_a_meeting_without_any_transcript_to_come_is_complete_with_video_and_thumbnail() -> None:
    state, _ = run([uploaded(), THUMB], can_transcribe=False)
    assert not state.awaiting_transcript
    assert state.complete()
    assert not run([uploaded()])[0].complete()  # the thumbnail is to come


def test_an_audio_only_meeting_is_complete_with_its_audio_and_transcript_and_no_thumbnail() -> None:
    audio_only = uploaded(video_key=None, provider_transcript=True)
    assert not run([audio_only])[0].complete()  # the provider's transcript is to come
    assert run([audio_only, TRANSCRIPT])[0].complete()
    assert run([TRANSCRIPT, audio_only])[0].complete()
    assert run([uploaded(video_key=None)], can_transcribe=False)[0].complete()
    gladia, _ = run([uploaded(video_key=None)], can_transcribe=True)
    assert not gladia.complete()
    assert run([inline("from gladia")], state=gladia)[0].complete()
    failed = run([audio_only, TRANSCRIPT])[0].model_copy(update={"failure": "SourceError: 403"})
    assert not failed.complete()


@pytest.mark.parametrize("failure", [FINAL, BOT_FAILED])
def test_a_late_failure_never_hides_an_audio_only_recording(failure: Event) -> None:
    state, effects = run([uploaded(video_key=None), failure])
    assert effects == [WriteVideo("bk", None, "k/audio.flac")]
    assert state.failure is None


def test_a_meeting_that_failed_for_good_is_complete_and_one_on_its_way_is_not() -> None:
    assert run([FINAL])[0].complete()
    assert run([BOT_FAILED])[0].complete()
    assert not run([RETRYING])[0].complete()
    assert not run([TRANSCRIPT])[0].complete()
    assert not JoinState().complete()


def test_a_failure_marked_over_a_video_is_not_a_complete_meeting() -> None:
    done, _ = run([uploaded(), THUMB])
    assert done.complete()
    assert not done.model_copy(update={"failure": "SourceError: 403"}).complete()


# --- events the join does not use, and every order ----------------------------------------------


def test_an_event_the_join_does_not_use_changes_nothing() -> None:
    state, _ = run([uploaded()])
    status = BotStatusChanged(bot_id="bot-1", status="in_call_recording")
    assert decide(state, status, can_transcribe=True) == (state, [])


@pytest.mark.parametrize("can_transcribe", [False, True])
def test_every_order_and_repetition_gives_each_write_once(can_transcribe: bool) -> None:
    upload = uploaded()
    for order in itertools.permutations([upload, TRANSCRIPT, THUMB, FINAL, RETRYING]):
        if order.index(THUMB) < order.index(upload):
            continue  # a thumbnail is made from the upload: it cannot come first
        doubled = [e for event in order for e in (event, event)]
        state, effects = run(doubled, can_transcribe=can_transcribe)
        failed_first = order.index(FINAL) < order.index(upload)
        # Gladia: only if the upload came before any transcript (its intent with the video)
        transcribe = can_transcribe and order.index(upload) < order.index(TRANSCRIPT)
        expected: list[Effect] = [
            WriteVideo("bk", "k/video.mp4", "k/audio.flac", transcribe=transcribe),
            REQUEST_THUMBNAIL,
            WriteTranscript(TRANSCRIPT),
            WriteThumbnail("bk", THUMBNAIL_KEY),
        ]
        expected += [MarkFailed("SourceError: 403")] if failed_first else []
        expected += [RequestTranscription("bk", "k/audio.flac")] if transcribe else []
        assert sorted(map(repr, effects)) == sorted(map(repr, expected)), order
        assert state == JoinState(
            bucket="bk",
            recording_id=REC,
            org_id=ORG,
            video_key="k/video.mp4",
            audio_key="k/audio.flac",
            transcript_id="meetingbaas:2",
            thumbnail_key=THUMBNAIL_KEY,
            failure=None,
            gladia_requested=can_transcribe and order.index(upload) < order.index(TRANSCRIPT),
            awaiting_transcript=can_transcribe or order.index(TRANSCRIPT) < order.index(upload),
        ), order
        assert state.complete(), order
