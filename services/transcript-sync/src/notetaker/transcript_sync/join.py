"""The join: what a new event changes about a meeting, as a pure function of the saved state.

State lives in a Faust table (changelog-backed) keyed by bot_id. `decide` returns the new state
and the effects to carry out; a repeated event returns no effects, so replays and redeliveries
change nothing.

A meeting's state is kept only while something is still to come (`JoinState.complete()`): once
its media (video and thumbnail, or an audio-only recording's audio) and awaited transcript are
written, or it failed for good, the state is
deleted, a tombstone on the changelog that Kafka's compaction removes, so the table and a
restart's recovery stay the size of the meetings in flight, not of the history. An event that
comes for a meeting without state whose rows say it is complete is decided from those rows
(`meetings.join_state`), which then hold everything `decide` looks at: a late duplicate changes
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from notetaker.common.events import (
    Event,
    RecordingFailed,
    RecordingUploaded,
    RecordingUploadFailed,
    ThumbnailGenerated,
    ThumbnailRequested,
    TranscriptReady,
)
from notetaker.common.s3 import recording_key


class JoinState(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str | None = None
    recording_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    video_key: str | None = None
    audio_key: str | None = None
    transcript_id: str | None = None  # which transcript was written (provider + source)
    thumbnail_key: str | None = None
    failure: str | None = None
    gladia_requested: bool = False
    # A transcript is on its way (the provider has one, or Gladia was asked for one).
    awaiting_transcript: bool = False

    def media_key(self) -> str | None:
        """The recording's stored source: its video, or an audio-only recording's audio (a
        method, not a property: mutmut does not mutate decorated functions)."""
        return self.video_key or self.audio_key

    def complete(self) -> bool:
        """Nothing more is expected: the media (the video and its thumbnail, or an audio-only
        recording's audio) and the awaited transcript are written, or the recording failed for
        good without any. A failure over stored media is never complete: `decide` never marks
        one over media it knows, so in rows it means the upload that wrote them is still to be
        applied (parked, or unsettled), and its retry must lift the failure."""
        if self.media_key() is None:
            return self.failure is not None
        transcript_done = self.transcript_id is not None or not self.awaiting_transcript
        thumbnail_done = self.thumbnail_key is not None or self.video_key is None
        return thumbnail_done and transcript_done and self.failure is None


@dataclass(frozen=True)
class MeetingDetails:
    """What the provider said about the meeting with its recording, for the fields the product
    shows (`None`: not said)."""

    duration_seconds: float | None = None
    participants: list[dict[str, Any]] | None = None
    speakers: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, event: RecordingUploaded) -> MeetingDetails | None:
        details = cls(event.duration_seconds, event.participants, event.speakers)
        return details if details != cls() else None


@dataclass(frozen=True)
class WriteVideo:
    """Write the video and audio (an audio-only recording: no video) into the meeting's row;
    `transcribe`: a Gladia transcript is
    owed for it (a `RequestTranscription` follows), and its intent is written with the video, so
    rows that hold the video always say whether a transcript is awaited."""

    bucket: str
    video_key: str | None
    audio_key: str | None
    transcribe: bool = False
    details: MeetingDetails | None = None


@dataclass(frozen=True)
class WriteTranscript:
    transcript: TranscriptReady


@dataclass(frozen=True)
class WriteThumbnail:
    bucket: str
    thumbnail_key: str


@dataclass(frozen=True)
class MarkFailed:
    error: str


@dataclass(frozen=True)
class RequestThumbnail:
    request: ThumbnailRequested


@dataclass(frozen=True)
class RequestTranscription:
    """Ask Gladia for a transcript of the stored audio (the provider gave none)."""

    bucket: str
    audio_key: str


Effect = (
    WriteVideo
    | WriteTranscript
    | WriteThumbnail
    | MarkFailed
    | RequestThumbnail
    | RequestTranscription
)


def transcript_id(event: TranscriptReady) -> str:
    source = event.job_id or event.transcript_url or event.revision
    if source is None and event.body_ref is not None:
        source = f"body:{event.body_ref.delivery_id}"
    return f"{event.provider}:{source or len(event.utterances or [])}"


def decide(
    state: JoinState, event: Event, *, can_transcribe: bool
) -> tuple[JoinState, list[Effect]]:
    """New state and effects for `event`; `can_transcribe`: Gladia is configured."""
    if isinstance(event, RecordingUploaded):
        return _uploaded(state, event, can_transcribe)
    if isinstance(event, TranscriptReady):
        if state.transcript_id == transcript_id(event):
            return state, []
        return state.model_copy(update={"transcript_id": transcript_id(event)}), [
            WriteTranscript(event)
        ]
    if isinstance(event, ThumbnailGenerated):
        if state.thumbnail_key == event.thumbnail_key:
            return state, []
        return state.model_copy(update={"thumbnail_key": event.thumbnail_key}), [
            WriteThumbnail(event.bucket, event.thumbnail_key)
        ]
    if isinstance(event, RecordingUploadFailed | RecordingFailed):
        return _failed(state, event)
    return state, []


def _uploaded(
    state: JoinState, event: RecordingUploaded, can_transcribe: bool
) -> tuple[JoinState, list[Effect]]:
    if state.media_key() == event.media_key:
        return state, []
    requested = state.gladia_requested
    transcript_coming = event.provider_transcript or state.transcript_id is not None
    transcribe = can_transcribe and not transcript_coming and not requested
    effects: list[Effect] = [
        WriteVideo(
            event.bucket,
            event.video_key,
            event.audio_key,
            transcribe=transcribe,
            details=MeetingDetails.of(event),
        )
    ]
    if state.thumbnail_key is None and event.video_key is not None:
        thumbnail_key = recording_key(
            event.org_id, event.user_id, event.recording_id, "thumbnail", "jpg"
        )
        effects.append(
            RequestThumbnail(
                ThumbnailRequested(
                    bot_id=event.bot_id,
                    recording_id=event.recording_id,
                    org_id=event.org_id,
                    bucket=event.bucket,
                    video_key=event.video_key,
                    thumbnail_key=thumbnail_key,
                )
            )
        )
    if transcribe:
        effects.append(RequestTranscription(event.bucket, event.audio_key or event.media_key))
        requested = True
    new_state = state.model_copy(
        update={
            "bucket": event.bucket,
            "recording_id": event.recording_id,
            "org_id": event.org_id,
            "video_key": event.video_key,
            "audio_key": event.audio_key,
            "failure": None,
            "gladia_requested": requested,
            "awaiting_transcript": transcript_coming or requested,
        }
    )
    return new_state, effects


def _failed(
    state: JoinState, event: RecordingUploadFailed | RecordingFailed
) -> tuple[JoinState, list[Effect]]:
    if isinstance(event, RecordingUploadFailed) and not event.final:
        return state, []  # a retry is coming
    if state.media_key() is not None:
        return state, []  # a late failure never hides a recording we have
    error = (
        event.error
        if isinstance(event, RecordingUploadFailed)
        else (f"{event.error_code}: {event.error_message}".rstrip(": "))
    )
    if state.failure == error:
        return state, []
    return state.model_copy(update={"failure": error}), [MarkFailed(error)]
