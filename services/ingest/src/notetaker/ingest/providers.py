"""What each provider delivery means in our catalog: one table per provider, easy to extend.

Payload models follow the providers' documented formats (see shared/fixtures); a mapper turns a
validated payload into zero or more catalog events. An event type we do not know maps to nothing:
it is stored and acknowledged, never rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from notetaker.common.events import (
    BotStatusChanged,
    Event,
    RecordingCompleted,
    RecordingFailed,
    TranscriptReady,
    Utterance,
)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class BotData(_Payload):
    bot_id: str = Field(min_length=1, max_length=200)


class StatusData(BotData):
    class Status(_Payload):
        code: str
        created_at: datetime | None = None

    status: Status


class CompletedV2Data(BotData):
    video: str | None = None
    audio: str | None = None
    transcription: str | None = None
    duration_seconds: float | None = Field(None, ge=0, le=7 * 24 * 3600)


class FailedV2Data(BotData):
    error_code: str = "unknown"
    error_message: str = ""


class Word(_Payload):
    start: float
    end: float
    word: str


class V1Segment(_Payload):
    speaker: str = ""
    words: list[Word] = []


class CompletedV1Data(BotData):
    mp4: str
    transcript: list[V1Segment] = []


class FailedV1Data(BotData):
    error: str = "unknown"


class MeetingBaasDelivery(_Payload):
    event: str = Field(min_length=1, max_length=100)
    data: dict[str, Any]
    sent_at: datetime | None = None


Mapper = Callable[[dict[str, Any], datetime], list[Event]]


def _status(data: dict[str, Any], _: datetime) -> list[Event]:
    d = StatusData.model_validate(data)
    return [BotStatusChanged(bot_id=d.bot_id, status=d.status.code, changed_at=d.status.created_at)]


def _completed_v2(data: dict[str, Any], received_at: datetime) -> list[Event]:
    d = CompletedV2Data.model_validate(data)
    if not d.video:
        # A completed bot without a video is a recording that failed on the provider's side.
        return [RecordingFailed(bot_id=d.bot_id, error_code="NO_VIDEO", error_message="")]
    events: list[Event] = [
        RecordingCompleted(
            bot_id=d.bot_id,
            video_url=d.video,
            audio_url=d.audio,
            urls_received_at=received_at,
            duration_seconds=d.duration_seconds,
            provider_transcript=bool(d.transcription),
        )
    ]
    if d.transcription:
        events.append(
            TranscriptReady(bot_id=d.bot_id, provider="meetingbaas", transcript_url=d.transcription)
        )
    return events


def _failed_v2(data: dict[str, Any], _: datetime) -> list[Event]:
    d = FailedV2Data.model_validate(data)
    return [
        RecordingFailed(bot_id=d.bot_id, error_code=d.error_code, error_message=d.error_message)
    ]


def _completed_v1(data: dict[str, Any], received_at: datetime) -> list[Event]:
    d = CompletedV1Data.model_validate(data)
    events: list[Event] = [
        RecordingCompleted(
            bot_id=d.bot_id,
            video_url=d.mp4,
            urls_received_at=received_at,
            provider_transcript=bool(d.transcript),
        )
    ]
    if d.transcript:
        events.append(
            TranscriptReady(
                bot_id=d.bot_id,
                provider="meetingbaas",
                utterances=[segment_utterance(s) for s in d.transcript if s.words],
            )
        )
    return events


def _failed_v1(data: dict[str, Any], _: datetime) -> list[Event]:
    d = FailedV1Data.model_validate(data)
    return [RecordingFailed(bot_id=d.bot_id, error_code=d.error)]


def segment_utterance(segment: V1Segment) -> Utterance:
    return Utterance(
        speaker=segment.speaker,
        start=segment.words[0].start,
        end=segment.words[-1].end,
        text=" ".join(w.word.strip() for w in segment.words),
    )


# provider event -> what it means for us
MEETINGBAAS: dict[str, Mapper] = {
    "bot.status_change": _status,
    "bot.completed": _completed_v2,
    "bot.failed": _failed_v2,
    "complete": _completed_v1,
    "failed": _failed_v1,
}

# Events that state a final fact about a bot: a second delivery of one is a duplicate even when
# the provider gives it a new delivery id.
MEETINGBAAS_TERMINAL = frozenset({"bot.completed", "bot.failed", "complete", "failed"})


def meetingbaas_events(delivery: MeetingBaasDelivery, received_at: datetime) -> list[Event]:
    mapper = MEETINGBAAS.get(delivery.event)
    return mapper(delivery.data, received_at) if mapper else []


# --- Gladia v2 pre-recorded callbacks ---------------------------------------------------------


class GladiaUtterance(_Payload):
    start: float
    end: float
    text: str
    speaker: int | str = 0
    language: str | None = None


class GladiaTranscription(_Payload):
    languages: list[str] = []
    utterances: list[GladiaUtterance] = []


class GladiaResult(_Payload):
    transcription: GladiaTranscription


class GladiaCallback(_Payload):
    """Both callback shapes: the full result (`payload.transcription`) or only the job id."""

    id: str | None = None
    event: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] | None = None


def gladia_events(callback: GladiaCallback, bot_id: str) -> list[Event]:
    if callback.event != "transcription.success":
        return []  # errors are stored; the scheduler's poller and transcript-sync decide next
    job_id = callback.id or (callback.payload or {}).get("id")
    payload = callback.payload or {}
    if "transcription" not in payload:
        return [TranscriptReady(bot_id=bot_id, provider="gladia", job_id=job_id)]
    result = GladiaResult.model_validate(payload)
    languages = result.transcription.languages
    return [
        TranscriptReady(
            bot_id=bot_id,
            provider="gladia",
            job_id=job_id,
            language=languages[0] if languages else None,
            utterances=[
                Utterance(speaker=f"Speaker {u.speaker}", start=u.start, end=u.end, text=u.text)
                for u in result.transcription.utterances
            ],
        )
    ]
