"""The Faust app: one agent joins upload, transcript and thumbnail events per bot.

Every event ends **settled** (its effects durable, its dead letter acknowledged by Kafka, or it is
parked in the database) or **unsettled** (the worker stopped or lost its partitions while the event
waited): only a settled event's offset is committed (`transport.py`), an unsettled one is read
again. Nothing escapes the agent. The failure policy (`notetaker.common.failures`) decides:

- *permanent* (the record is not an event of our catalog, the meeting is not ours, a provider
  refuses the request): dead-lettered at once, counted under the app's consumer group;
- *outage* (our PostgreSQL, Kafka or S3 unreachable, including opening the connections): waited
  out, without end, while /readyz answers 503; never dead-lettered or parked;
- *transient* (a provider's 5xx or 429, anything unforeseen): retried in place with jittered
  backoff up to `NOTETAKER_EFFECT_ATTEMPTS` tries (60 s at most), then parked in `parked_events`.
  The join table belongs to the agent's partition, so a parked event is not retried here: a
  background task republishes it when due to its original topic, with its key, value and headers
  and a `notetaker_parked_attempts` header (a second park goes on counting), and deletes its row.

An event about a meeting whose media was deleted (`meetings.media_deleted`, checked before the
event is decided and by every `meetings` write) is settled without an effect and the meeting's
state is forgotten: deleted stays deleted, whatever comes late or is replayed.

The join state of an event that failed is left as it was, so its retry (a republished parked
event, a replayed dead letter) redoes the work; every effect is idempotent for that: `meetings`
writes are guarded, `meeting.synced` goes through the outbox (`outbox.py`), a Gladia job is
submitted at most once per bot (`_request_transcription`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
from faust.tables.manager import TableManager
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from notetaker.common.consumer import dead_letter
from notetaker.common.envelope import EnvelopeError, from_message
from notetaker.common.events import Event, TranscriptReady
from notetaker.common.failures import Kind, OutagePolicy, RetryPolicy, attempts, classify
from notetaker.common.logs import get_logger
from notetaker.common.metrics import CONSUMER_DLQ
from notetaker.common.parking import PARKED, Parked, Parking, PostgresParking, show_waiting
from notetaker.common.s3 import s3_location
from notetaker.transcript_sync import archive, media, meetings, outbox, transcripts
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
    transcript_id,
)
from notetaker.transcript_sync.meetings import MeetingMedia, MeetingMediaDeleted
from notetaker.transcript_sync.resources import Resources
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.transcript_sync.transport import App, Consumer, Transport

log = get_logger(__name__)

T = TypeVar("T")

SOURCE_TOPICS = (
    "recording.uploaded",
    "recording.upload_failed",
    "recording.failed",
    "transcript.ready",
    "thumbnail.generated",
)
EFFECTS = Counter(
    "notetaker_transcript_sync_effects_total", "Join effects carried out, by kind.", ["effect"]
)
JOIN_STATES = Gauge(
    "notetaker_transcript_sync_join_states",
    "Meetings whose join state this worker holds: those in flight (a complete meeting's state is"
    " deleted), so it follows the meetings under way, not the history.",
)
BACKGROUND_SECONDS = 5.0  # how often parked events and the outbox are looked at
# How many times a republished parked event was parked already (its next park goes on counting).
ATTEMPTS_HEADER = "notetaker_parked_attempts"


class SubmitUnanswered(Exception):
    """A Gladia submit is still unanswered and its job not listed: retried later (transient)."""


class Abandoned(Exception):
    """The worker is stopping or losing its partitions: the event is left unsettled."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def parked_attempts(headers: Iterable[tuple[str, bytes]]) -> int:
    """How many times the event was parked before (its `notetaker_parked_attempts` header)."""
    for name, value in headers:
        if name == ATTEMPTS_HEADER:
            with contextlib.suppress(ValueError):
                return max(0, int(value))
    return 0


class Join:
    def __init__(
        self,
        settings: TranscriptSyncSettings,
        resources: Resources,
        *,
        parking: Parking | None = None,
        retry: RetryPolicy | None = None,
        outage: OutagePolicy | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.group = settings.faust_app_id
        self.source = f"/notetaker/{settings.service_name}"
        self.can_transcribe = bool(settings.gladia_api_key and settings.gladia_callback_keys)
        self.retry = retry or RetryPolicy(attempts=settings.effect_attempts)
        self.outage = outage or OutagePolicy()
        self._parking = parking
        self._outages = 0
        # Set while the worker stops or rebalances (the consumer's flow is stopped): an event
        # waiting out an outage is given up then, unsettled.
        self.interrupted = asyncio.Event()

    @property
    def in_outage(self) -> bool:
        return self._outages > 0

    def ready(self) -> bool:
        """The connections are open and no dependency is down (what /readyz reports)."""
        return self.resources.opened and not self.in_outage

    @property
    def parking(self) -> Parking:
        if self._parking is None:
            self._parking = PostgresParking(self.resources.pool)
        return self._parking

    async def open(self) -> None:
        """Open the connections, waiting out an outage (not interrupted: the worker's start)."""
        await self._durably(self.resources.open, "open", interruptible=False)

    async def process(
        self,
        table: Any,
        *,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]],
        offset: int,
        partition: int = 0,
    ) -> bool:
        """Handle one record; True once it is settled (applied, dead-lettered or parked), False
        when it must be read again. Never raises."""
        record = Record(topic, partition, offset, key, value, list(headers))
        try:
            return await self._process(table, record)
        except Abandoned:
            log.info("join.event_unsettled", topic=topic, partition=partition, offset=offset)
        except Exception:
            log.exception("join.event_unsettled", topic=topic, partition=partition, offset=offset)
        return False

    async def _process(self, table: Any, record: Record) -> bool:
        if not self.resources.opened:
            await self._durably(self.resources.open, "open")
        try:
            envelope = from_message(record.headers, record.key, record.value)
        except EnvelopeError as exc:
            log.error("join.unparseable_event", topic=record.topic, error=str(exc))
            await self._dead_letter(record, f"unparseable: {exc}")
            return True
        event = envelope.event
        context = {"bot_id": event.bot_id, "event_type": event.type, "event_id": envelope.id}
        current: Effect | None = None
        try:
            if await self._media_deleted(event.bot_id):
                return self._drop(table, event.bot_id, context)
            saved = table.get(event.bot_id)
            if saved:
                state = JoinState.model_validate(saved)
                if "awaiting_transcript" not in saved:  # saved by the version before the field
                    state = await self._awaiting_from_rows(state, event.bot_id)
            else:
                state = await self._state_from_rows(event.bot_id)
            new_state, effects = decide(state, event, can_transcribe=self.can_transcribe)
            for effect in effects:
                current = effect
                await self._carry_out(event, effect)
        except Abandoned:
            raise
        except MeetingMediaDeleted:  # deleted while the event was applied: nothing more
            return self._drop(table, event.bot_id, context)
        except Exception as exc:
            kind = classify(exc)
            what = f"{type(current).__name__} failed: {exc!r}" if current else repr(exc)
            if kind is Kind.PERMANENT:
                log.error("join.event_refused", error=what, **context)
                await self._dead_letter(record, f"permanent: {what}")
            else:
                log.warning("join.event_parked", error=what, **context)
                await self._park(record, f"{kind.value}: {what}")
            return True
        if new_state.complete():
            if saved:  # nothing more to come: a tombstone, compacted away with its history
                if new_state.transcript_id is not None:
                    await self._keep_transcript_ref(event.bot_id, new_state.transcript_id)
                del table[event.bot_id]
        elif new_state != state:
            table[event.bot_id] = new_state.model_dump(mode="json")
        log.info("join.applied", effects=[type(e).__name__ for e in effects], **context)
        return True

    async def _media_deleted(self, bot_id: str) -> bool:
        return await self._durably(
            lambda: meetings.media_deleted(self.resources.pool, bot_id), "deleted check"
        )

    def _drop(self, table: Any, bot_id: str, context: dict[str, str]) -> bool:
        """An event about a meeting whose media was deleted changes nothing (a late, replayed
        or redelivered one): settled without an effect, and the meeting's state forgotten."""
        if table.get(bot_id):
            del table[bot_id]
        log.info("join.media_deleted", **context)
        return True

    async def _state_from_rows(self, bot_id: str) -> JoinState:
        """The state of a bot the table has none for: a complete meeting's (its state deleted)
        as its rows say, else the empty state. Only a complete meeting's rows say all: a new one
        whose first event failed half-way has the writes that landed in its rows but not the
        requests (a thumbnail, a Gladia job) still owed, and its retry must redo them all (so
        has one whose rows carry a failure over a video: see `JoinState.complete`)."""
        rows = await self._rows(bot_id)
        return rows if rows.complete() else JoinState()

    async def _rows(self, bot_id: str) -> JoinState:
        """What the bot's rows say (`meetings.join_state`), waiting out a database outage."""
        return await self._durably(
            lambda: meetings.join_state(self.resources.pool, bot_id), "join state"
        )

    async def _awaiting_from_rows(self, state: JoinState, bot_id: str) -> JoinState:
        """A state saved before `awaiting_transcript` existed (read as False): whether a
        transcript is on its way, as `decide` would have said (one written, a Gladia job asked
        for) or the rows say (the provider has one). Without it, a meeting in flight across the
        upgrade would count as complete once its thumbnail lands, its state deleted before its
        transcript, and the transcript's state then kept for ever."""
        rows = await self._rows(bot_id)
        awaiting = (
            state.transcript_id is not None or state.gladia_requested or rows.awaiting_transcript
        )
        return state.model_copy(update={"awaiting_transcript": awaiting})

    async def _keep_transcript_ref(self, bot_id: str, ref: str) -> None:
        """Before a complete meeting's state is deleted: a row whose transcript was written
        before migration 0008 gets the `transcript_ref` the state knows, so a late duplicate of
        that transcript is recognised from the rows (not fetched, written and announced again)."""
        await self._durably(
            lambda: meetings.keep_transcript_ref(self.resources.pool, bot_id, ref),
            "transcript ref",
        )

    async def _durably(
        self, op: Callable[[], Awaitable[T]], what: str, *, interruptible: bool = True
    ) -> T:
        """`op`, tried again and again while it fails for an outage (OutagePolicy, no end) and
        not-ready meanwhile; any other error is raised. Interrupted (`interrupted`): Abandoned."""
        task = asyncio.ensure_future(self._through_outages(op, what))
        if not interruptible:
            return await task
        waiter = asyncio.ensure_future(self.interrupted.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise Abandoned(what)
        return task.result()

    async def _through_outages(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        waiting = False
        try:
            async for attempt in attempts(self.outage):
                with attempt:
                    if attempt.num > 1 and not waiting:
                        waiting = True
                        self._outages += 1
                        log.warning("join.outage", waiting_for=what)
                    result = await op()
        finally:
            if waiting:
                self._outages -= 1
                log.info("join.outage_over", waited_for=what)
        return result

    async def _carry_out(self, event: Event, effect: Effect) -> None:
        """One effect under the policy: transient errors retried in place to the bound, outages
        waited out; what is left (permanent, or transient past the bound) is raised."""

        async def with_retries() -> None:
            async for attempt in attempts(self.retry):
                with attempt:
                    await self._apply(event, effect)

        await self._durably(with_retries, type(effect).__name__)
        EFFECTS.labels(type(effect).__name__).inc()

    async def _dead_letter(self, record: Record, error: str) -> None:
        """Dead-letter `record`, waiting out a Kafka outage: settled only once Kafka has it."""

        await self._durably(
            lambda: dead_letter(self.resources.publisher, record, error=error, group=self.group),
            "dead letter",
        )

    async def _park(self, record: Record, error: str) -> None:
        """Park `record` in the database (waiting out an outage of it), counting its attempts on
        from a republished event's header."""
        parked = Parked.of(
            record,
            group=self.group,
            error=error,
            attempts=parked_attempts(record.headers) + 1,
            headers=[(k, v) for k, v in record.headers if k != ATTEMPTS_HEADER],
        )

        await self._durably(lambda: self.parking.park(parked), "park")

    async def republish_parked(self, limit: int = 100) -> int:
        """Put the parked events that are due back on their topics (each a lease, then its row
        deleted once Kafka has it), and refresh the parked gauge; how many went back."""
        parking = self.parking
        due = await parking.claim(self.group, SOURCE_TOPICS, limit)
        for event in due:
            headers = [(k, v) for k, v in event.headers if k != ATTEMPTS_HEADER]
            headers.append((ATTEMPTS_HEADER, str(event.attempts).encode()))
            await self.resources.send(event.topic, event.key, event.value, headers)
            await parking.done(event)
            log.info(
                "join.parked_event_republished",
                topic=event.topic,
                offset=event.offset,
                attempts=event.attempts,
            )
        await show_waiting(parking, self.group, SOURCE_TOPICS)
        return len(due)

    async def sweep_outbox(self) -> int:
        """Publish `meeting.synced` records whose event never came back to publish them."""
        return await outbox.sweep(self.resources.pool, self.resources.send, self.source)

    async def _apply(self, event: Event, effect: Effect) -> None:
        r = self.resources
        bot_id = event.bot_id
        if isinstance(effect, RequestThumbnail):
            await r.publisher.publish(effect.request)
            return
        if isinstance(effect, RequestTranscription):
            await self._request_transcription(bot_id, effect)
            return
        written: MeetingMedia
        if isinstance(effect, WriteVideo):
            audio = s3_location(effect.bucket, effect.audio_key) if effect.audio_key else None
            video = s3_location(effect.bucket, effect.video_key) if effect.video_key else None
            intent = self._job_intent() if effect.transcribe else None
            written = await meetings.write_video(
                r.pool,
                self.source,
                bot_id,
                video,
                audio,
                transcription=intent,
                details=effect.details,
            )
        elif isinstance(effect, WriteTranscript):
            transcript = await self._transcript(effect.transcript)
            written = await meetings.write_transcript(
                r.pool,
                self.source,
                bot_id,
                effect.transcript.provider,
                transcript.utterances,
                transcript_id(effect.transcript),
                language=transcript.language,
                summary=transcript.summary,
            )
            await meetings.complete_transcription_job(r.pool, bot_id)
        elif isinstance(effect, WriteThumbnail):
            location = s3_location(effect.bucket, effect.thumbnail_key)
            written = await meetings.write_thumbnail(r.pool, self.source, bot_id, location)
        elif isinstance(effect, MarkFailed):
            written = await meetings.mark_failed(r.pool, self.source, bot_id, effect.error)
        # This change's meeting.synced, and any an earlier try committed but did not publish.
        await outbox.flush(r.pool, r.send, self.source, bot_id.encode())
        if written.changed:
            log.info("meeting.synced", bot_id=bot_id, meeting_id=str(written.id))
        if isinstance(effect, WriteTranscript) and transcript.delivered is not None:
            # After the row: an S3 outage (waited out) or an error here fails the effect, whose
            # retry writes the same row again (unchanged, nothing announced) and then stores.
            await archive.archive_gladia_result(
                r.pool,
                r.s3,
                r.publisher,
                bucket=self.settings.s3_bucket,
                bot_id=bot_id,
                body=transcript.delivered,
            )

    async def _transcript(self, event: TranscriptReady) -> transcripts.Transcript:
        """The transcript of a transcript.ready event, with Gladia's document as delivered when
        it is still to be archived (`Transcript.delivered`).

        A Gladia transcript that must be read (not inline) is read from our archived copy when
        we have one (a retry, a replay: the job's result does not change), else from the kept
        callback body (`body_ref`) or Gladia's API. An inline one is the event's; its document
        is the callback's body ingest kept."""
        r, settings = self.resources, self.settings
        keys = settings.source_url_keys
        if event.provider == "gladia" and event.utterances is None:
            stored = await archive.stored_gladia_result(
                r.pool, r.s3, bucket=settings.s3_bucket, bot_id=event.bot_id
            )
            if stored is not None:
                return transcripts.archived_transcript(event, stored)
        if event.body_ref is not None:  # too large for its event: in its body
            return await transcripts.kept_transcript(r.pool, keys, event)
        transcript = await transcripts.resolve_transcript(
            r.http,
            r.sources,
            event,
            settings.gladia_api_url,
            settings.gladia_api_key,
            meetingbaas_url=settings.meetingbaas_api_url,
            meetingbaas_key=settings.meetingbaas_api_key,
        )
        if event.provider == "gladia" and transcript.delivered is None:
            body = await transcripts.delivered_gladia_body(r.pool, keys, event)
            if body is None:
                log.warning("gladia_result.not_kept", bot_id=event.bot_id, job_id=event.job_id)
            else:
                transcript = dataclasses.replace(transcript, delivered=body)
        return transcript

    def _job_intent(self) -> meetings.JobIntent:
        """A Gladia job's intent: a request id of ours and its callback token's expiry."""
        expires = int(time.time()) + self.settings.gladia_callback_token_seconds
        return meetings.JobIntent("gladia", uuid.uuid4(), datetime.fromtimestamp(expires, UTC))

    async def _request_transcription(self, bot_id: str, effect: RequestTranscription) -> None:
        """Submit one Gladia job for the bot, at most once: the job's row (our request id) was
        written with the video and is marked as tried before the job is submitted; a bot whose
        row has Gladia's job id is done, and one whose submit was tried before (it failed after
        or during the submit) asks Gladia for a job under that request id before it submits
        again."""
        settings = self.settings
        assert settings.gladia_api_key is not None
        pool, http = self.resources.pool, self.resources.http
        start = await meetings.start_transcription_job(
            pool, bot_id, self._job_intent(), settings.gladia_submit_settle_seconds
        )
        job = start.job
        context = {"bot_id": bot_id, "provider": "gladia", "request_id": str(job.request_id)}
        if job.job_id is not None:
            log.info("transcription.already_requested", job_id=job.job_id, **context)
            return
        assert job.token_expires_at is not None
        expires = int(job.token_expires_at.timestamp())
        if start.tried:
            found = await transcripts.find_gladia_job(
                http,
                gladia_url=settings.gladia_api_url,
                gladia_key=settings.gladia_api_key,
                request_id=job.request_id,
                bot_id=bot_id,
            )
            if found is not None:
                await meetings.record_transcription_job(pool, job.request_id, found)
                log.info("transcription.found", job_id=found, **context)
                return
            if start.unsettled:
                # The last submit got no answer: Gladia may list its job only later.
                raise SubmitUnanswered(
                    f"Gladia has not answered the last submit for bot {bot_id} and lists no job"
                    f" for it yet: not submitted again before"
                    f" {settings.gladia_submit_settle_seconds:g} s have passed"
                )
        audio_url = await self.resources.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": effect.bucket, "Key": effect.audio_key},
            ExpiresIn=settings.presigned_url_seconds,
        )
        try:
            job_id = await transcripts.request_gladia_job(
                http,
                gladia_url=settings.gladia_api_url,
                gladia_key=settings.gladia_api_key,
                audio_url=audio_url,
                callback_base=settings.ingest_public_url,
                callback_key=settings.gladia_callback_keys[0],
                request_id=job.request_id,
                expires=expires,
                bot_id=bot_id,
            )
        except transcripts.ProviderAnswered:
            await meetings.answered_without_job(pool, job.request_id)
            raise
        await meetings.record_transcription_job(pool, job.request_id, job_id)
        log.info("transcription.requested", job_id=job_id, **context)


def create_app(settings: TranscriptSyncSettings) -> faust.App:
    app = App(
        settings.faust_app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",  # state is rebuilt from the changelog topic on start
        datadir=settings.faust_data_dir,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        producer_max_batch_size=settings.faust_producer_max_batch_bytes,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.faust_rebalance_timeout_seconds,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=1.0,
        web_port=settings.http_port,
        web_bind="0.0.0.0",
        web_in_thread=False,
        topic_disable_leader=True,
    )
    app.transport = Transport(app.conf.broker_consumer, app)
    resources = Resources(settings)
    join = Join(settings, resources)
    for topic in SOURCE_TOPICS:  # at 0 from the start: the first one is an increase
        CONSUMER_DLQ.labels(join.group, topic)
        PARKED.labels(join.group, topic)
    table = app.Table("meeting-join", default=dict, partitions=settings.kafka_topic_partitions)
    source = app.topic(
        *SOURCE_TOPICS,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    def consumer() -> Consumer:
        return cast(Consumer, app.consumer)

    @app.agent(source)
    async def join_events(stream: Any) -> None:
        join.interrupted = consumer().flow_stopped
        async for event in stream.events():
            message = event.message
            headers = message.headers
            pairs = headers.items() if isinstance(headers, dict) else headers or []
            settled = await join.process(
                table,
                topic=message.topic,
                partition=message.partition,
                key=message.key,
                value=message.value,
                headers=pairs,
                offset=message.offset,
            )
            if settled:
                consumer().settle(message)

    async def open_connections() -> None:
        await join.open()  # /readyz says not ready until they are open

    async def background(name: str, work: Callable[[], Awaitable[int]]) -> None:
        if not resources.opened:
            return
        try:
            await work()
        except Exception as exc:  # the database or Kafka down: next round
            log.warning("join.background_failed", task=name, error=repr(exc))

    async def republish_parked() -> None:
        await background("republish_parked", join.republish_parked)

    async def sweep_outbox() -> None:
        await background("sweep_outbox", join.sweep_outbox)

    app.task(open_connections)
    app.timer(interval=BACKGROUND_SECONDS)(republish_parked)
    app.timer(interval=BACKGROUND_SECONDS)(sweep_outbox)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        recovery = cast(TableManager, app.tables).recovery
        # Ready once the first recovery is over (the agent reads events from then on), the
        # connections are open and no dependency is down.
        recovered = recovery.completed.is_set() and not recovery.in_recovery
        ready = assigned and recovered and join.ready()
        body = {
            "ready": ready,
            "assigned": assigned,
            "recovered": recovered,
            "connections": resources.opened,
            "outage": join.in_outage,
        }
        return web.json(body, status=200 if ready else 503)

    @app.page("/meetings/{meeting_id}/media/{kind}")
    async def media_page(web: Any, request: Any, meeting_id: str, kind: str) -> Any:
        try:
            orgs = media.orgs_of(
                request.headers.get("authorization", ""), settings.media_token_keys
            )
        except media.MediaRefused as refused:
            return web.json({"title": refused.reason, "status": 401}, status=401)
        try:
            await resources.open()
        except ConnectionError:
            return web.json({"title": "unavailable", "status": 503}, status=503)
        try:
            link = await media.media_link(
                resources.pool,
                resources.s3,
                resources.publisher,
                meeting_id=meeting_id,
                kind=kind,
                orgs=orgs,
                expires_in=settings.media_url_seconds,
            )
        except media.MediaRefused as refused:
            return web.json(
                {"title": refused.reason, "status": refused.status}, status=refused.status
            )
        return web.json(
            {"url": link.url, "expires_in": link.expires_in, "size_bytes": link.size_bytes}
        )

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        JOIN_STATES.set(len(table))
        # aiohttp refuses a content_type that carries a charset, and the exposition format's
        # type carries one: the whole type goes as a header instead.
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()

    return app
