"""What each provider delivery means in our catalog: one table per provider, easy to extend.

Payload models follow the providers' documented formats (samples and links to the public docs
in tests/fixtures/providers), with bounds that reject absurd values; a mapper turns a validated
payload into zero or more catalog events. An event type we do not know maps to nothing: it is
stored and acknowledged, never rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from notetaker.common import gladia
from notetaker.common.events import (
    ARTIFACT_KINDS,
    ArtifactKind,
    BotStatusChanged,
    Event,
    RecordingCompleted,
    RecordingFailed,
    TranscriptReady,
    Utterance,
)

BotId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # a timestamp outside these is no provider's clock


def _plausible_time(value: datetime | None) -> datetime | None:
    if value is not None and not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"timestamp is not between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


Time = Annotated[
    datetime | None,
    AfterValidator(_plausible_time),
    Field(
        description=f"An ISO 8601 time in the years {EARLIEST_YEAR} to {LATEST_YEAR}.",
        json_schema_extra={
            "x-earliest": f"{EARLIEST_YEAR}-01-01T00:00:00Z",
            "x-latest": f"{LATEST_YEAR}-12-31T23:59:59.999999Z",
        },
    ),
]
Url = Annotated[HttpUrl, Field(max_length=4096)]
Seconds = Annotated[float, Field(ge=0, le=7 * 24 * 3600)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class BotData(_Payload):
    bot_id: BotId
    # Where the v2 guide and v1 put the create request's `extra`; the v2 reference pages put it
    # beside `data` (MeetingBaasDelivery.extra).
    extra: dict[str, Any] | None = None
    sent_at: Time = None  # the OpenAPI file's place for it; the guide's is beside `data`


class StatusData(BotData):
    class Status(_Payload):
        code: str = Field(min_length=1, max_length=100)
        created_at: Time = None
        # When the recording started: an ISO time, or Unix seconds in the v2 guide.
        start_time: Time = None
        error_message: str | None = Field(None, max_length=10_000)
        error_type: str | None = Field(None, max_length=200)  # v1 `meeting_error`

        @field_validator("start_time", mode="before")
        @classmethod
        def _zero_is_unknown(cls, value: Any) -> Any:
            # The v2 reference page's example sends 0, which is no start time.
            return None if value == 0 else value

    status: Status


class Person(_Payload):
    """A participant or speaker as v2 lists them: `{"id": ..., "name": ...}`."""

    id: int | str | None = None
    name: str = Field("", max_length=500)


People = Annotated[list[Person], Field(max_length=10_000)]


class CompletedV2Data(BotData):
    # The v2 webhook guide names the video `mp4`; the reference pages and OpenAPI file `video`.
    video: Url | None = None
    mp4: Url | None = None
    audio: Url | None = None
    transcription: Url | None = None
    # The other artifacts, each at a URL that expires with the video's (ARTIFACT_KINDS).
    raw_transcription: Url | None = None
    diarization: Url | None = None
    chat_messages: Url | None = None
    duration_seconds: Seconds | None = None
    data_deleted: bool = False
    participants: People | None = None
    speakers: People | None = None

    @property
    def video_url(self) -> str | None:
        found = self.video or self.mp4
        return str(found) if found else None

    def artifact_urls(self) -> dict[ArtifactKind, str]:
        """Every artifact URL the delivery names (the transcript JSON among them)."""
        urls = {kind: getattr(self, kind) for kind in ARTIFACT_KINDS}
        return {kind: str(url) for kind, url in urls.items() if url is not None}


def _people(people: list[Person] | None) -> list[dict[str, Any]] | None:
    return None if people is None else [p.model_dump(mode="json") for p in people]


class FailedV2Data(BotData):
    error_code: str = Field("unknown", max_length=200)
    error_message: str = Field("", max_length=10_000)


class Word(_Payload):
    start: Seconds
    end: Seconds
    word: str = Field(max_length=1000)


class V1Segment(_Payload):
    speaker: str = Field("", max_length=500)
    words: list[Word] = Field([], max_length=100_000)


class CompletedV1Data(BotData):
    mp4: Url
    audio: Url | None = None
    transcript: list[V1Segment] = Field([], max_length=100_000)
    # v1 lists the speakers by name only.
    speakers: list[Annotated[str, Field(max_length=500)]] | None = Field(None, max_length=10_000)

    @field_validator("audio", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class FailedV1Data(BotData):
    error: str = Field("unknown", max_length=200)
    message: str = Field("", max_length=10_000)


class TranscriptionV1Data(BotData):
    transcript: list[V1Segment] = Field([], max_length=100_000)


class MeetingBaasDelivery(_Payload):
    """Every MeetingBaaS webhook: `event` names the type, `data` its payload. `sent_at` and
    `extra` sit beside `data` or inside it, depending on the page documenting the event."""

    event: str = Field(min_length=1, max_length=100)
    data: dict[str, Any]
    sent_at: Time = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Delivered:
    """What a mapper knows beside the payload: when it arrived, and the delivery's `extra`."""

    received_at: datetime
    extra: dict[str, Any] | None = None


Mapper = Callable[[dict[str, Any], Delivered], list[Event]]


def _extra(d: BotData, delivered: Delivered) -> dict[str, Any] | None:
    return delivered.extra if delivered.extra is not None else d.extra


def _status(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = StatusData.model_validate(data)
    return [
        BotStatusChanged(
            bot_id=d.bot_id,
            status=d.status.code,
            changed_at=d.status.created_at,
            started_at=d.status.start_time,
            error_message=d.status.error_message,
            error_type=d.status.error_type,
            extra=_extra(d, delivered),
        )
    ]


def _completed_v2(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = CompletedV2Data.model_validate(data)
    extra = _extra(d, delivered)
    if d.video_url is None and d.audio is None:
        # Nothing to keep: the provider deleted the bot's data, or recorded nothing.
        code = "DATA_DELETED" if d.data_deleted else "NO_MEDIA"
        return [RecordingFailed(bot_id=d.bot_id, error_code=code, extra=extra)]
    events: list[Event] = [
        RecordingCompleted(
            bot_id=d.bot_id,
            provider_api="v2",
            video_url=d.video_url,  # None: an audio-only recording
            audio_url=str(d.audio) if d.audio else None,
            urls_received_at=delivered.received_at,
            duration_seconds=d.duration_seconds,
            provider_transcript=d.transcription is not None,
            extra=extra,
            artifact_urls=d.artifact_urls(),
            participants=_people(d.participants),
            speakers=_people(d.speakers),
        )
    ]
    if d.transcription is not None:
        events.append(
            TranscriptReady(
                bot_id=d.bot_id,
                provider="meetingbaas",
                transcript_url=str(d.transcription),
                extra=extra,
            )
        )
    return events


def _failed_v2(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = FailedV2Data.model_validate(data)
    return [
        RecordingFailed(
            bot_id=d.bot_id,
            error_code=d.error_code,
            error_message=d.error_message,
            extra=_extra(d, delivered),
        )
    ]


def _transcript_v1(
    bot_id: str, segments: list[V1Segment], extra: dict[str, Any] | None
) -> TranscriptReady:
    return TranscriptReady(
        bot_id=bot_id,
        provider="meetingbaas",
        utterances=[segment_utterance(s) for s in segments if s.words],
        extra=extra,
    )


def _completed_v1(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = CompletedV1Data.model_validate(data)
    extra = _extra(d, delivered)
    events: list[Event] = [
        RecordingCompleted(
            bot_id=d.bot_id,
            provider_api="v1",
            video_url=str(d.mp4),
            audio_url=str(d.audio) if d.audio else None,
            urls_received_at=delivered.received_at,
            provider_transcript=bool(d.transcript),
            extra=extra,
            speakers=None if d.speakers is None else [{"id": None, "name": n} for n in d.speakers],
        )
    ]
    if d.transcript:
        events.append(_transcript_v1(d.bot_id, d.transcript, extra))
    return events


def _failed_v1(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = FailedV1Data.model_validate(data)
    return [
        RecordingFailed(
            bot_id=d.bot_id,
            error_code=d.error,
            error_message=d.message,
            extra=_extra(d, delivered),
        )
    ]


def _transcription_v1(data: dict[str, Any], delivered: Delivered) -> list[Event]:
    d = TranscriptionV1Data.model_validate(data)
    extra = _extra(d, delivered)
    if d.transcript:
        return [_transcript_v1(d.bot_id, d.transcript, extra)]
    # As documented, a retranscription names only the bot: transcript-sync fetches the new
    # transcript from the v1 API. Its arrival time tells it from the transcript written before
    # (a redelivery of the same body is a duplicate delivery, refused before this).
    return [
        TranscriptReady(
            bot_id=d.bot_id,
            provider="meetingbaas",
            provider_api="v1",
            revision=delivered.received_at.isoformat(),
            extra=extra,
        )
    ]


def _nothing(data: dict[str, Any], _: Delivered) -> list[Event]:
    return []


def segment_utterance(segment: V1Segment) -> Utterance:
    return Utterance(
        speaker=segment.speaker,
        start=segment.words[0].start,
        end=segment.words[-1].end,
        text=" ".join(w.word.strip() for w in segment.words),
    )


# provider event -> what it means for us
MEETINGBAAS: dict[str, Mapper] = {
    "bot.status_change": _status,  # v2
    "bot.completed": _completed_v2,
    "bot.failed": _failed_v2,
    "complete": _completed_v1,  # v1
    "failed": _failed_v1,
    "transcription_complete": _transcription_v1,
    "calendar.sync_events": _nothing,  # calendars are not ours: stored, acknowledged
}

# Events that state a final fact about a bot: a second delivery of one is a duplicate even when
# the provider gives it a new delivery id.
MEETINGBAAS_TERMINAL = frozenset({"bot.completed", "bot.failed", "complete", "failed"})

# Events whose every delivery is news, though two bodies are alike: v1's retranscription notice
# names only the bot, and v1 gives no delivery id, so a second retranscription would otherwise
# look like a retry of the first (a retry fetches the same transcript again: no harm).
MEETINGBAAS_REPEATABLE = frozenset({"transcription_complete"})


def meetingbaas_events(delivery: MeetingBaasDelivery, received_at: datetime) -> list[Event]:
    mapper = MEETINGBAAS.get(delivery.event)
    return mapper(delivery.data, Delivered(received_at, delivery.extra)) if mapper else []


def meetingbaas_bot_id(delivery: MeetingBaasDelivery) -> str | None:
    """The bot a delivery is about, when it is about one (calendar events are not)."""
    if delivery.event not in MEETINGBAAS or delivery.event == "calendar.sync_events":
        value = delivery.data.get("bot_id")
        return value if isinstance(value, str) and len(value) <= 100 else None
    return BotData.model_validate(delivery.data).bot_id


# --- Gladia v2 pre-recorded callbacks ---------------------------------------------------------


class GladiaUtterance(_Payload):
    start: Seconds
    end: Seconds
    text: str = Field(max_length=100_000)
    speaker: int | str = 0
    language: str | None = Field(None, max_length=20)


class GladiaTranscription(_Payload):
    languages: list[str] = Field([], max_length=100)
    utterances: list[GladiaUtterance] = Field([], max_length=100_000)


class GladiaSummarization(_Payload):
    """The summarization add-on's result: the summary text in `results`."""

    success: bool = True
    results: str | None = Field(None, max_length=1_000_000)


class GladiaResult(_Payload):
    transcription: GladiaTranscription
    summarization: GladiaSummarization | None = None

    def summary(self) -> str | None:
        found = self.summarization
        text = found.results.strip() if found and found.success and found.results else ""
        return text or None


class GladiaError(_Payload):
    """Why a job failed (`transcription.error`): an HTTP-like status and a message."""

    code: int | str | None = None
    message: str = Field("", max_length=10_000)


class GladiaCallback(_Payload):
    """Both callback shapes: the full result (`payload.transcription`) or only the job id
    (`payload.id`). A job id is a plain id (`notetaker.common.gladia`): it goes into Gladia's
    API path with our key."""

    id: str | None = Field(None, max_length=100, pattern=gladia.JOB_ID_PATTERN)
    event: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] | None = None
    # A GladiaError, read by gladia_failure: a nested model here would put a `$defs` reference
    # in the request body schema, which the OpenAPI document cannot resolve.
    error: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _plain_payload_id(self) -> GladiaCallback:
        value = (self.payload or {}).get("id")
        if value is not None and not gladia.is_job_id(value):
            raise ValueError("payload.id is not a plain job id")
        return self

    @property
    def job_id(self) -> str | None:
        """The job the callback is about: `id`, else `payload.id`."""
        value = self.id or (self.payload or {}).get("id")
        return str(value) if value is not None else None


def gladia_failure(callback: GladiaCallback) -> tuple[str, str] | None:
    """A failed job's reason (code, message), kept on its `transcription_jobs` row."""
    if callback.event != "transcription.error":
        return None
    error = GladiaError.model_validate(callback.error or {})
    code = "" if error.code is None else str(error.code)
    return code[:200], error.message


def gladia_events(callback: GladiaCallback, bot_id: str) -> list[Event]:
    if callback.event != "transcription.success":
        return []  # an error's reason is kept on the job (gladia_failure); nothing to announce
    job_id = callback.job_id
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
            summary=result.summary(),
            utterances=[
                Utterance(speaker=f"Speaker {u.speaker}", start=u.start, end=u.end, text=u.text)
                for u in result.transcription.utterances
            ],
        )
    ]
