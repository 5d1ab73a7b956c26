"""The event catalog: every fact that crosses Kafka, in the order of the flow.

One topic per event type, named by the type; every event is keyed by `bot_id` so all facts about
one recording land on one partition, in order. Each model has a schema version that travels in the
CloudEvent's `dataschema`; the envelope itself lives in `notetaker.common.envelope`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Event(BaseModel):
    """Base of every payload: its topic/type, its schema version, and the bot it is about."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: ClassVar[str]
    version: ClassVar[int] = 1

    bot_id: str = Field(min_length=1, max_length=200)

    def fact_key(self) -> str:
        """What makes two deliveries of this event the same fact (for a stable CloudEvent id)."""
        return self.bot_id

    @classmethod
    def dataschema(cls) -> str:
        return f"urn:notetaker:event:{cls.type}:v{cls.version}"


# --- 1. From the providers (ingest) -------------------------------------------------------------

# What the product put in the bot's create request (`extra`), handed back by the provider on each
# delivery. Every field added after an event's first version is optional, so an event written by
# the previous version still parses (tests/common/test_event_compatibility.py).
Extra = dict[str, Any] | None

# What a provider hands over beside the video and audio, each at a URL that expires with them:
# the transcript JSON as delivered, the raw transcription, the diarization, the chat. Each is made
# permanent under the recording's prefix (`<kind>.<ext>`), as the video is.
ArtifactKind = Literal["transcription", "raw_transcription", "diarization", "chat_messages"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = (
    "transcription",
    "raw_transcription",
    "diarization",
    "chat_messages",
)
# The meeting's participants or speakers as the provider listed them (`{"id", "name"}` each).
People = list[dict[str, Any]] | None
# The lists the provider hands over inline (in the webhook, not at a URL): the uploader writes
# each one it was given as `<kind>.json` under the recording's prefix too.
PeopleKind = Literal["participants", "speakers"]
PEOPLE_KINDS: tuple[PeopleKind, ...] = ("participants", "speakers")
# Every kind of artifact stored beside the media (`recording_artifacts.kind`).
StoredKind = ArtifactKind | PeopleKind


class BotStatusChanged(Event):
    """A meeting bot moved to a new state (joining, in call, recording, ...)."""

    type: ClassVar[str] = "bot.status"
    status: str
    changed_at: datetime | None = None
    started_at: datetime | None = None  # when the recording started (`in_call_recording`)
    error_message: str | None = None  # why, for a status that is an error
    error_type: str | None = None  # v1's machine-readable kind of that error
    extra: Extra = None

    def fact_key(self) -> str:
        return f"{self.bot_id}:{self.status}:{self.changed_at}"


class RecordingCompleted(Event):
    """The provider has a recording; its URLs expire (about 4 hours after `urls_received_at`).
    Without `video_url` the recording is audio-only (`recording_mode: audio_only`)."""

    type: ClassVar[str] = "recording.completed"
    provider: Literal["meetingbaas"] = "meetingbaas"
    # The provider API that delivered it, and so the one that signs its URLs again. Events from
    # before this field were all read as v2.
    provider_api: Literal["v1", "v2"] = "v2"
    video_url: str | None = None
    audio_url: str | None = None
    urls_received_at: datetime
    duration_seconds: float | None = None
    provider_transcript: bool = False  # the provider sends a transcript too
    extra: Extra = None
    # The artifacts' URLs (signed like the video's), by kind; none: the provider gave none.
    artifact_urls: dict[ArtifactKind, str] = Field(default_factory=dict)
    participants: People = None
    speakers: People = None


class RecordingFailed(Event):
    """The bot never produced a recording (not admitted, crashed, ...)."""

    type: ClassVar[str] = "recording.failed"
    error_code: str
    error_message: str = ""
    extra: Extra = None


class Utterance(BaseModel):
    model_config = ConfigDict(frozen=True)

    speaker: str
    start: float
    end: float
    text: str


class KeptBodyRef(BaseModel):
    """A webhook body ingest kept (`webhook_bodies`, its primary key): where a transcript too
    large to travel inline in an event is read from."""

    model_config = ConfigDict(frozen=True)

    provider: Literal["meetingbaas", "gladia"]
    delivery_id: str


class TranscriptReady(Event):
    """A transcript exists: inline, at a provider URL, as a provider job to fetch, in a kept
    webhook body (`body_ref`: an inline transcript too large for the event), or (with only
    `provider_api`) to be fetched from the provider's API: MeetingBaaS v1's
    `transcription_complete` names only the bot."""

    type: ClassVar[str] = "transcript.ready"
    provider: Literal["meetingbaas", "gladia"]
    utterances: list[Utterance] | None = None
    transcript_url: str | None = None
    job_id: str | None = None
    language: str | None = None
    extra: Extra = None
    provider_api: Literal["v1"] | None = None  # fetch it from MeetingBaaS v1's meeting data
    revision: str | None = None  # which of the provider's transcripts (a retranscription's time)
    summary: str | None = None  # the provider's summary of the meeting (Gladia's summarization)
    # The delivery whose kept body holds the transcript (`utterances` then absent): ingest's
    # pointer instead of a transcript larger than NOTETAKER_INLINE_TRANSCRIPT_MAX_BYTES.
    body_ref: KeptBodyRef | None = None

    def fact_key(self) -> str:
        # A retranscription is a fact of its own; every other transcript keeps the id it had.
        return f"{self.bot_id}:{self.revision}" if self.revision else self.bot_id

    def full_text(self) -> str:
        return " ".join(u.text for u in self.utterances or [])


# --- 2. Uploads (uploader, scheduler) ------------------------------------------------------------


class RecordingUploadRequested(Event):
    """A retry of an upload is due (emitted by the scheduler from the database)."""

    type: ClassVar[str] = "recording.upload_requested"
    recording_id: uuid.UUID
    attempt: int = Field(ge=1)

    def fact_key(self) -> str:
        return f"{self.recording_id}:{self.attempt}"


class StoredArtifact(BaseModel):
    """One artifact made permanent: its object, size and checksum (`sha256-composite:` S3's
    composite checksum of a copied artifact; `sha256:` the SHA-256 of a people list's JSON, as
    S3 holds it in `ChecksumSHA256`)."""

    model_config = ConfigDict(frozen=True)

    kind: StoredKind
    key: str
    size_bytes: int = Field(ge=0)
    checksum: str


class RecordingUploaded(Event):
    """The recording is permanent: its objects are in the private bucket."""

    type: ClassVar[str] = "recording.uploaded"
    recording_id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bucket: str
    video_key: str | None = None  # None: an audio-only recording (then `audio_key` is set)
    audio_key: str | None = None
    size_bytes: int = Field(ge=0)  # every object stored: video, audio and the artifacts
    checksum: str
    provider_transcript: bool = False
    # Added after the first version (optional): the artifacts stored beside the media, and what
    # the provider said about the meeting, for the meetings row.
    artifacts: list[StoredArtifact] = Field(default_factory=list)
    duration_seconds: float | None = None
    participants: People = None
    speakers: People = None

    @model_validator(mode="after")
    def _names_its_media(self) -> RecordingUploaded:
        if self.video_key is None and self.audio_key is None:
            raise ValueError("a recording.uploaded names its video_key or its audio_key")
        return self

    @property
    def media_key(self) -> str:
        """The recording's source: the video, or an audio-only recording's audio."""
        key = self.video_key or self.audio_key
        assert key is not None  # _names_its_media
        return key


class RecordingUploadFailed(Event):
    """An upload attempt failed; `final` means no more retries."""

    type: ClassVar[str] = "recording.upload_failed"
    recording_id: uuid.UUID
    attempt: int
    error: str
    final: bool

    def fact_key(self) -> str:
        return f"{self.recording_id}:{self.attempt}"


class StorageUsage(Event):
    """Bytes and requests one step cost, for the cost model."""

    type: ClassVar[str] = "storage.usage"
    org_id: uuid.UUID
    recording_id: uuid.UUID
    step: str
    bytes_stored: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    put_requests: int = 0
    get_requests: int = 0
    occurred_at: datetime

    def fact_key(self) -> str:
        return f"{self.recording_id}:{self.step}"


# --- 3. Meetings (transcript-sync, thumbnailer) --------------------------------------------------


class ThumbnailRequested(Event):
    type: ClassVar[str] = "thumbnail.requested"
    recording_id: uuid.UUID
    org_id: uuid.UUID
    bucket: str
    video_key: str
    thumbnail_key: str


class ThumbnailGenerated(Event):
    type: ClassVar[str] = "thumbnail.generated"
    recording_id: uuid.UUID
    bucket: str
    thumbnail_key: str
    width: int
    height: int
    size_bytes: int


class MeetingSynced(Event):
    """The meetings row changed: media columns now as listed."""

    type: ClassVar[str] = "meeting.synced"
    meeting_id: uuid.UUID
    org_id: uuid.UUID
    has_video: bool
    has_transcript: bool
    has_thumbnail: bool

    def fact_key(self) -> str:
        return f"{self.bot_id}:{self.has_video}:{self.has_transcript}:{self.has_thumbnail}"


CATALOG: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        BotStatusChanged,
        RecordingCompleted,
        RecordingFailed,
        TranscriptReady,
        RecordingUploadRequested,
        RecordingUploaded,
        RecordingUploadFailed,
        StorageUsage,
        ThumbnailRequested,
        ThumbnailGenerated,
        MeetingSynced,
    )
}

TOPICS: tuple[str, ...] = tuple(CATALOG)


# Headers a dead-lettered record carries beside the original ones.
DLQ_ERROR_HEADER = "notetaker_error"
DLQ_OFFSET_HEADER = "notetaker_original_offset"
DLQ_HEADERS = (DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER)
# Header of a dead letter replayed to its original topic: `<dlq topic>:<partition>:<offset>`.
REPLAYED_FROM_HEADER = "notetaker_replayed_from"

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def dead_letter_headers(
    headers: Iterable[tuple[str, bytes]], error: str, offset: int
) -> list[tuple[str, bytes]]:
    """A dead letter's headers: the record's own, then the error (cut at 4,000 bytes) and the
    offset it had on its original topic."""
    return [
        *headers,
        (DLQ_ERROR_HEADER, error.encode()[:4000]),
        (DLQ_OFFSET_HEADER, str(offset).encode()),
    ]


def is_dlq_topic(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)


def original_topic(topic: str) -> str:
    """The topic a dead-letter topic's records came from (`bot.status.dlq` -> `bot.status`)."""
    return topic.removesuffix(DLQ_SUFFIX)


def parse(event_type: str, data: Any) -> Event:
    """Validate `data` as the payload of `event_type`; raises KeyError or ValidationError."""
    return CATALOG[event_type].model_validate(data)
