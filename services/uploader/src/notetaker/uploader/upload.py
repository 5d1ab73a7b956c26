"""Handling `recording.completed` and `recording.upload_requested`: one attempt per event.

Decisions (is the source still valid, when to retry) are plain functions; the handler does the
I/O. A failed attempt is recorded and announced, never retried by sleeping here: the scheduler
re-emits `recording.upload_requested` when the retry is due.

An attempt runs under the recording's upload lease (`lease.py`): a worker that finds it held by
another leaves the recording to it; one that loses it stops without writing or aborting
anything, unless it lost it to a deletion of the recording's media: then it deletes what is under
the recording's prefix (what it stored after the deletion listed it), and so does every later
event about the recording. Every way an attempt can end is one of: complete; `failed` with a
reason and a `recording.upload_failed` event (any error but an outage of our own PostgreSQL,
Kafka or S3, unexpected ones included, as reason `internal`); or a resume (an outage, a lost
lease, a stopped worker: the consumer redelivers the event, or the scheduler re-requests the row
once its lease has run out).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import posixpath
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter, Histogram

from notetaker.common.deletion import media_deleted, purge_prefix
from notetaker.common.envelope import Envelope
from notetaker.common.events import (
    PEOPLE_KINDS,
    ArtifactKind,
    PeopleKind,
    RecordingCompleted,
    RecordingUploaded,
    RecordingUploadFailed,
    RecordingUploadRequested,
    StorageUsage,
    StoredArtifact,
)
from notetaker.common.failures import Kind, classify
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.meetingbaas import ProviderError, RecordingGone, fresh_recording_urls
from notetaker.common.s3 import MediaKind, S3Client, recording_key, recording_prefix
from notetaker.common.source_policy import REASON as FORBIDDEN
from notetaker.uploader import recordings
from notetaker.uploader.keys import SourceUrlCipher
from notetaker.uploader.lease import LeaseLost, UploadLease, worker_name
from notetaker.uploader.ledger import PostgresPartLedger
from notetaker.uploader.recordings import Recording
from notetaker.uploader.settings import UploaderSettings
from notetaker.uploader.transfer import (
    TOO_LARGE,
    IntegrityError,
    MinRate,
    SourceError,
    StoredObject,
    abort_unfinished,
    stream_to_s3,
)

log = get_logger(__name__)

ATTEMPTS = Counter("notetaker_uploader_attempts_total", "Upload attempts by outcome.", ["outcome"])
# Both outcomes from the start, at 0: the failing share (dashboard, NotetakerUploadsFailing) reads
# 0 while nothing failed, instead of no data.
for _outcome in ("complete", "failed"):
    ATTEMPTS.labels(_outcome)
FAILURES = Counter(
    "notetaker_uploader_failures_total", "Failed upload attempts by reason.", ["reason"]
)
BYTES = Counter("notetaker_uploader_bytes_total", "Bytes copied into S3.")
PARTS = Counter(
    "notetaker_uploader_parts_total", "Multipart parts, by whether uploaded or resumed.", ["how"]
)
DURATION = Histogram(
    "notetaker_uploader_upload_duration_seconds",
    "Time to copy one recording (all its files).",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)


# A source refusing the URL it was given: its signature expired, or it was revoked.
REFRESHABLE = ("source_http_403", "source_http_410")
# An artifact whose source has none (404), or that the policy refuses (where it leads, its
# size): asking again cannot help, and the recording completes without it (its row says why)
# rather than fail its video over it.
ARTIFACT_GONE = ("source_http_404", FORBIDDEN, TOO_LARGE)


class SourceExpired(Exception):
    """The provider URL is past its validity and cannot be signed again here."""


class UnknownRecording(Exception):
    """An event for a bot with no `recordings` row (the scheduler writes it when deploying)."""


@dataclass(frozen=True)
class FailurePlan:
    retry_count: int
    next_retry_at: datetime | None

    @property
    def final(self) -> bool:
        return self.next_retry_at is None


def plan_failure(
    attempts_so_far: int, max_attempts: int, delays_seconds: list[int], now: datetime
) -> FailurePlan:
    """After a failed attempt: when to try again, or never (None) once attempts are used up.

    The wait after the n-th failed attempt is the n-th delay (the last repeats): with the
    defaults (4 attempts; 2, 5 and 10 minutes) the first attempt and three retries, 2, 5 and 10
    minutes apart, and the fourth failure is final."""
    attempts = attempts_so_far + 1
    if attempts >= max_attempts:
        return FailurePlan(attempts, None)
    delay = delays_seconds[min(attempts, len(delays_seconds)) - 1]
    return FailurePlan(attempts, now + timedelta(seconds=delay))


def failure_reason(exc: Exception) -> str:
    """A bounded label for the failures counter."""
    if isinstance(exc, SourceError):
        return exc.reason
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, ClientError | BotoCoreError):
        return "s3"
    return "internal"


def source_expired(received_at: datetime | None, now: datetime, validity_seconds: int) -> bool:
    return received_at is not None and now - received_at > timedelta(seconds=validity_seconds)


def extension(url: str, default: str) -> str:
    ext = posixpath.splitext(urlparse(url).path)[1].lstrip(".").lower()
    return ext if ext.isalnum() and 0 < len(ext) <= 5 else default


CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}


def people_json(people: list[dict[str, Any]]) -> bytes:
    """A people list as it is stored: the list as delivered (its entries in the provider's
    order), each entry's keys sorted, so every attempt writes the same bytes (the list waits in
    a jsonb column between attempts, which does not keep key order)."""
    return json.dumps(people, sort_keys=True, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Copied:
    """What one attempt stored: the video and the audio (whichever the recording has), the
    provider's artifacts, by kind, and the people lists it handed over inline."""

    video: StoredObject | None
    audio: StoredObject | None
    artifacts: dict[ArtifactKind, StoredObject]
    missing: dict[ArtifactKind, str]  # artifacts not to be had, and why (`ARTIFACT_GONE`)
    # `checksum`: the object's SHA-256 (base64), as S3 holds it, not a composite
    people: dict[PeopleKind, StoredObject] = dataclasses.field(default_factory=dict)

    @property
    def objects(self) -> list[StoredObject]:
        return [o for o in (self.video, self.audio) if o is not None] + [
            *self.artifacts.values(),
            *self.people.values(),
        ]

    def stored_artifacts(self) -> list[StoredArtifact]:
        return [
            StoredArtifact(
                kind=kind,
                key=o.key,
                size_bytes=o.size_bytes,
                checksum=f"sha256-composite:{o.checksum}",
            )
            for kind, o in self.artifacts.items()
        ] + [
            StoredArtifact(
                kind=kind, key=o.key, size_bytes=o.size_bytes, checksum=f"sha256:{o.checksum}"
            )
            for kind, o in self.people.items()
        ]


# The extension of an object whose URL names none.
DEFAULTS: dict[MediaKind, str] = {
    "video": "mp4",
    "audio": "m4a",
    "thumbnail": "jpg",
    "transcription": "json",
    "raw_transcription": "json",
    "diarization": "jsonl",
    "chat_messages": "json",
}


class Uploader:
    def __init__(
        self,
        settings: UploaderSettings,
        pool: asyncpg.Pool,
        s3: S3Client,
        http: aiohttp.ClientSession,
        publisher: EventPublisher,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.s3 = s3
        self.http = http
        self.publisher = publisher
        self.worker = worker_name()
        # Leases of attempts that stopped (an outage, mostly) and could not be handed back then:
        # this worker's next attempt at the recording hands each back before it takes the lease,
        # instead of finding it "busy" and leaving the recording until the lease runs out.
        self._unreleased: dict[uuid.UUID, UploadLease] = {}
        self.cipher = SourceUrlCipher(settings.source_url_keys)

    async def handle(self, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, RecordingCompleted):
            await recordings.save_source(self.pool, event, self.cipher)
        elif not isinstance(event, RecordingUploadRequested):
            return
        recording = await recordings.find_by_bot(self.pool, event.bot_id, self.cipher)
        if recording is None:
            raise UnknownRecording(
                f"no recordings row for bot {event.bot_id}: was the bot deployed by the scheduler?"
            )
        if recording.deleted:
            await self._deleted(recording)
            return
        if recording.status == "complete":
            # Done before (maybe we died before announcing it): announce again, same event id.
            log.info(
                "upload.already_complete", bot_id=recording.bot_id, recording_id=str(recording.id)
            )
            await self._announce(recording)
            return
        if (
            isinstance(event, RecordingUploadRequested)
            and event.attempt != recording.retry_count + 1
        ):
            await self._stale_request(recording, event.attempt)
            return
        if isinstance(event, RecordingCompleted) and recording.status == "failed":
            # A redelivered (or resent) webhook after a failed attempt: the next attempt is the
            # scheduler's to request when its wait is over (the URLs are kept for it), or there
            # is none; starting one here would use it up early.
            log.info(
                "upload.waiting_for_retry",
                bot_id=recording.bot_id,
                recording_id=str(recording.id),
                next_retry_at=recording.next_retry_at,
            )
            return
        if recording.video_url is None and recording.audio_url is None:
            raise UnknownRecording(f"recording {recording.id} has no source URL yet")
        await self.attempt(recording)

    async def _stale_request(self, recording: Recording, attempt: int) -> None:
        """A request for an attempt that is over (a redelivery of an old one): nothing to copy.
        When it is the attempt that failed last, its `recording.upload_failed` is sent again (same
        event id): the worker may have recorded the failure and died before Kafka had the event."""
        log.info(
            "upload.stale_request",
            bot_id=recording.bot_id,
            recording_id=str(recording.id),
            attempt=attempt,
            attempts_so_far=recording.retry_count,
        )
        if recording.status == "failed" and attempt == recording.retry_count:
            await self.publisher.publish(
                RecordingUploadFailed(
                    bot_id=recording.bot_id,
                    recording_id=recording.id,
                    attempt=attempt,
                    error=recording.error or "",
                    final=recording.next_retry_at is None,
                )
            )

    async def attempt(self, recording: Recording) -> None:
        # Every line logged while the recording is tried names it (start, resume, progress, end).
        with structlog.contextvars.bound_contextvars(
            bot_id=recording.bot_id, recording_id=str(recording.id)
        ):
            earlier = self._unreleased.get(recording.id)
            if earlier is not None:  # fenced by its token: a lease taken over since is kept
                await earlier.release()
                del self._unreleased[recording.id]
            lease = await UploadLease.take(
                self.pool, recording.id, self.worker, self.settings.upload_lease_seconds
            )
            if lease is None:
                # Another worker copies it; if that one dies, its lease runs out and the
                # scheduler requests the recording again.
                log.info("upload.busy")
                return
            try:
                await lease.run(lambda: self._attempt(recording, lease))
            except LeaseLost:
                if await media_deleted(self.pool, recording.id):
                    # Deleted while copying: what this attempt stored after the deletion listed
                    # the recording's objects is removed here (listing the prefix again).
                    await self._deleted(recording)
                else:
                    log.warning("upload.lease_lost", token=lease.token)
            except BaseException:
                # An outage or a stop: whoever tries next need not wait for the lease to run out.
                try:
                    await asyncio.wait_for(lease.release(), 5)
                except Exception:
                    self._unreleased[recording.id] = lease  # the next try here hands it back
                raise

    async def _attempt(self, recording: Recording, lease: UploadLease) -> None:
        log.info("upload.started", attempt=recording.retry_count + 1, lease=lease.token)
        started = datetime.now(UTC)
        try:
            copied = await self._copy_fresh(recording, lease)
        except LeaseLost:
            raise
        except RecordingGone as exc:
            await self._fail(recording, lease, str(exc), final=True, reason="source_gone")
            return
        except SourceExpired as exc:
            await self._fail(recording, lease, str(exc), final=True, reason="source_expired")
            return
        except Exception as exc:
            if classify(exc) is Kind.OUTAGE:
                # Our own PostgreSQL, Kafka or S3 is unavailable: not this recording's failure,
                # and no attempt used up. The consumer pauses and retries the event until it
                # answers (the next attempt resumes from the parts S3 holds).
                log.warning("upload.dependency_unavailable", error=f"{type(exc).__name__}: {exc}")
                raise
            await self._fail(
                recording,
                lease,
                f"{type(exc).__name__}: {exc}",
                final=isinstance(exc, SourceError) and exc.permanent,
                reason=failure_reason(exc),
            )
            return
        # The video, or the audio of an audio-only recording, is the recording's source.
        video, audio = copied.video, copied.audio
        source = video or audio
        assert source is not None
        stored = copied.objects
        size = sum(o.size_bytes for o in stored)  # what the org stores: the artifacts too
        await recordings.mark_complete(
            self.pool,
            lease,
            video_key=video.key if video else None,
            audio_key=audio.key if audio else None,
            size_bytes=size,
            checksum=f"sha256-composite:{source.checksum}",
            artifacts=copied.stored_artifacts(),
            missing=copied.missing,
        )
        elapsed = (datetime.now(UTC) - started).total_seconds()
        ATTEMPTS.labels("complete").inc()
        BYTES.inc(size)
        DURATION.observe(elapsed)
        log.info(
            "upload.complete",
            size_bytes=size,
            seconds=round(elapsed, 3),
            video_key=video.key if video else None,
            audio_key=audio.key if audio else None,
            artifacts=sorted([*copied.artifacts, *copied.people]),
            parts=sum(o.parts for o in stored),
        )
        done = await recordings.find_by_bot(self.pool, recording.bot_id, self.cipher)
        assert done is not None
        await self._announce(done, parts=sum(o.parts for o in stored))

    async def _copy_fresh(self, recording: Recording, lease: UploadLease) -> Copied:
        """Copy the recording's files, with URLs the provider signed anew when the ones kept are
        past their validity, before a retry, and once more when the source refuses them (403,
        410); each copy continues from the parts S3 holds."""
        expired = source_expired(
            recording.urls_received_at, datetime.now(UTC), self.settings.source_url_validity_seconds
        )
        if expired or recording.retry_count > 0:
            recording = await self._refreshed(recording, lease, "expired" if expired else "retry")
        try:
            return await self._copy_files(recording, lease)
        except SourceError as exc:
            if exc.reason not in REFRESHABLE or self.settings.meetingbaas_api_key is None:
                raise
            recording = await self._refreshed(recording, lease, exc.reason)
        return await self._copy_files(recording, lease)

    async def _copy_files(self, recording: Recording, lease: UploadLease) -> Copied:
        """The video and the audio, whichever the recording has (an audio-only one, no video),
        then each artifact the provider named, every one through the same copy; then the people
        lists it handed over inline."""
        video = await self._copy(recording, lease, "video", recording.video_url)
        audio = await self._copy(recording, lease, "audio", recording.audio_url)
        artifacts: dict[ArtifactKind, StoredObject] = {}
        missing: dict[ArtifactKind, str] = {}
        for kind, url in sorted(recording.artifact_urls.items()):
            try:
                artifact = await self._copy(recording, lease, kind, url)
            except SourceError as exc:
                if exc.reason not in ARTIFACT_GONE:
                    raise  # retried with the recording, as a failure of the video's would be
                log.warning("upload.artifact_missing", kind=kind, reason=exc.reason)
                missing[kind] = exc.reason
                continue
            assert artifact is not None
            artifacts[kind] = artifact
        people: dict[PeopleKind, StoredObject] = {}
        for who in PEOPLE_KINDS:
            listed = recording.participants if who == "participants" else recording.speakers
            if listed is not None:
                people[who] = await self._write_people(recording, lease, who, listed)
        return Copied(video, audio, artifacts, missing, people)

    async def _write_people(
        self,
        recording: Recording,
        lease: UploadLease,
        kind: PeopleKind,
        people: list[dict[str, Any]],
    ) -> StoredObject:
        """A people list as `<kind>.json` under the recording's prefix: one put, made only while
        the lease holds, with its SHA-256, which S3 checks the body against (and refuses a body
        that differs) and keeps. A retry writes the same bytes to the same key."""
        body = people_json(people)
        key = recording_key(recording.org_id, recording.user_id, recording.id, kind, "json")
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        await lease.check()
        await self.s3.put_object(
            Bucket=self.settings.s3_bucket,
            Key=key,
            Body=body,
            ContentType=CONTENT_TYPES["json"],
            ServerSideEncryption="AES256",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        return StoredObject(key, len(body), digest, parts=1, resumed_parts=0)

    async def _refreshed(self, recording: Recording, lease: UploadLease, why: str) -> Recording:
        """The recording with fresh provider URLs (kept, sealed); without a MeetingBaaS key,
        URLs past their validity fail the recording as before (`SourceExpired`)."""
        key = self.settings.meetingbaas_api_key
        if key is None:
            if why == "expired":
                raise SourceExpired(
                    "provider URL expired (received at "
                    f"{recording.urls_received_at:%Y-%m-%d %H:%M}Z) and no MeetingBaaS key is"
                    " set to ask for a new one (NOTETAKER_MEETINGBAAS_API_KEY)"
                )
            return recording
        try:
            urls = await fresh_recording_urls(
                self.settings.meetingbaas_api_url,
                key.get_secret_value(),
                recording.bot_id,
                self.settings.meetingbaas_timeout_seconds,
                api=recording.provider_api,
            )
        except ProviderError as exc:
            # The provider's failure, not an outage of ours: it uses up the attempt.
            raise SourceError(str(exc), reason="provider_refresh") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(
                f"asking MeetingBaaS for fresh URLs of bot {recording.bot_id} failed:"
                f" {type(exc).__name__}",
                reason="provider_refresh",
            ) from exc
        if recording.video_url is not None and urls.video is None:
            # Not an audio-only recording: its video is gone, and the audio alone is not it.
            raise RecordingGone(f"MeetingBaaS has no video for bot {recording.bot_id} any more")
        received = datetime.now(UTC)
        await recordings.save_fresh_source(
            self.pool,
            lease,
            self.cipher,
            video_url=urls.video,
            audio_url=urls.audio,
            received_at=received,
            artifact_urls=urls.artifacts,
        )
        log.info("upload.urls_refreshed", why=why, api=recording.provider_api)
        return dataclasses.replace(
            recording,
            video_url=urls.video,
            audio_url=urls.audio,
            urls_received_at=received,
            # An artifact the answer does not sign again keeps the URL it had.
            artifact_urls={**recording.artifact_urls, **urls.artifacts},
        )

    async def _copy(
        self, recording: Recording, lease: UploadLease, kind: MediaKind, url: str | None
    ) -> StoredObject | None:
        if url is None:
            return None
        key = recording_key(
            recording.org_id, recording.user_id, recording.id, kind, extension(url, DEFAULTS[kind])
        )
        ext = key.rpartition(".")[2]
        stored = await stream_to_s3(
            self.http,
            self.s3,
            url=url,
            bucket=self.settings.s3_bucket,
            key=key,
            content_type=CONTENT_TYPES.get(ext, "application/octet-stream"),
            part_size=self.settings.upload_part_size_bytes,
            parts_in_flight=self.settings.upload_parts_in_flight,
            ledger=PostgresPartLedger(self.pool, lease),
            lease=lease,
            progress_every_seconds=self.settings.upload_progress_log_seconds,
            max_bytes=self.settings.upload_max_recording_bytes,
            min_rate=MinRate(
                self.settings.source_min_bytes_per_second, self.settings.source_rate_window_seconds
            ),
        )
        PARTS.labels("uploaded").inc(stored.parts - stored.resumed_parts)
        PARTS.labels("resumed").inc(stored.resumed_parts)
        return stored

    def _keys(self, recording: Recording) -> list[str]:
        """The object keys this recording's files go to."""
        urls: list[tuple[MediaKind, str | None]] = [
            ("video", recording.video_url),
            ("audio", recording.audio_url),
            *sorted(recording.artifact_urls.items()),
        ]
        return [
            recording_key(
                recording.org_id,
                recording.user_id,
                recording.id,
                kind,
                extension(url, DEFAULTS[kind]),
            )
            for kind, url in urls
            if url
        ]

    async def _fail(
        self, recording: Recording, lease: UploadLease, error: str, *, final: bool, reason: str
    ) -> None:
        plan = plan_failure(
            recording.retry_count,
            1 if final else self.settings.upload_max_attempts,
            self.settings.upload_retry_delays_seconds,
            datetime.now(UTC),
        )
        FAILURES.labels(reason).inc()
        if plan.final:
            # Failed for good: nothing will resume these parts, so stop paying for them.
            for key in self._keys(recording):
                await abort_unfinished(
                    self.s3,
                    self.settings.s3_bucket,
                    key,
                    PostgresPartLedger(self.pool, lease),
                    lease,
                )
        await recordings.mark_failed(
            self.pool,
            lease,
            error=error,
            retry_count=plan.retry_count,
            next_retry_at=plan.next_retry_at,
        )
        ATTEMPTS.labels("failed").inc()
        log.warning(
            "upload.failed",
            bot_id=recording.bot_id,
            recording_id=str(recording.id),
            error=error,
            reason=reason,
            final=plan.final,
            attempt=plan.retry_count,
            next_retry_at=plan.next_retry_at,
        )
        await self.publisher.publish(
            RecordingUploadFailed(
                bot_id=recording.bot_id,
                recording_id=recording.id,
                attempt=recording.retry_count + 1,
                error=error,
                final=plan.final,
            )
        )

    async def _deleted(self, recording: Recording) -> None:
        """An event about a recording whose media was deleted: nothing is copied or announced,
        and whatever is under its prefix is deleted (an attempt that stored an object after
        the deletion's listing, and died before removing it). An upload that completed before
        the deletion still has its usage announced (same event id as ever): the deletion took
        those bytes off the org's level, so they must have been put on it."""
        purged = await purge_prefix(
            self.s3,
            self.settings.s3_bucket,
            recording_prefix(recording.org_id, recording.user_id, recording.id),
        )
        log.info(
            "upload.media_deleted",
            bot_id=recording.bot_id,
            recording_id=str(recording.id),
            objects_removed=len(purged.keys),
            uploads_aborted=len(purged.uploads_aborted),
        )
        if recording.status == "complete" and recording.size_bytes is not None:
            await self._announce(recording)

    async def _announce(self, recording: Recording, parts: int = 0) -> None:
        assert recording.size_bytes is not None
        usage = StorageUsage(
            bot_id=recording.bot_id,
            org_id=recording.org_id,
            recording_id=recording.id,
            step="upload",
            bytes_stored=recording.size_bytes,
            bytes_uploaded=recording.size_bytes,
            put_requests=parts + 2,  # create + parts + complete
            occurred_at=datetime.now(UTC),
        )
        if recording.deleted:
            await self.publisher.publish(usage)
            return
        await self.publisher.publish_all(
            [
                RecordingUploaded(
                    bot_id=recording.bot_id,
                    recording_id=recording.id,
                    org_id=recording.org_id,
                    user_id=recording.user_id,
                    bucket=self.settings.s3_bucket,
                    video_key=recording.video_key,
                    audio_key=recording.audio_key,
                    size_bytes=recording.size_bytes,
                    checksum=recording.checksum or "",
                    provider_transcript=recording.provider_transcript,
                    artifacts=list(recording.artifacts),
                    duration_seconds=recording.duration_seconds,
                    participants=recording.participants,
                    speakers=recording.speakers,
                ),
                usage,
            ]
        )
