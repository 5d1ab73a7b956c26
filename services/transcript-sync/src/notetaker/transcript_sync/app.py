"""The Faust app: one agent joins upload, transcript and thumbnail events per bot.

Faust acks a message whose handler raised (`stream_ack_exceptions`), so nothing may escape the
agent: every effect is retried and, when it keeps failing, the event goes to its dead-letter topic
with the error and the join state is left as it was (a replay then redoes the work).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import faust
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from notetaker.common.db import create_pool
from notetaker.common.envelope import EnvelopeError, from_message
from notetaker.common.events import Event, MeetingSynced
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.metrics import CONSUMER_DLQ
from notetaker.common.s3 import S3Client, s3_client, s3_location
from notetaker.transcript_sync import media, meetings, transcripts
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
from notetaker.transcript_sync.meetings import MeetingMedia
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.transcript_sync.transport import Transport

log = get_logger(__name__)

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


class Resources:
    """Connections the effects need, opened on first use inside the worker's event loop."""

    publisher: EventPublisher
    http: httpx.AsyncClient
    sources: aiohttp.ClientSession

    def __init__(self, settings: TranscriptSyncSettings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self.pool: asyncpg.Pool | None = None
        self._s3_context: Any = None
        self.s3: S3Client | None = None

    async def ready(self) -> None:
        async with self._lock:
            if self.pool is None:
                # aiokafka and httpx bind to the running loop: create them inside the worker.
                self.publisher = EventPublisher(self.settings)
                self.http = httpx.AsyncClient(timeout=30.0)
                # Provider transcript URLs: only what the source URL policy allows.
                self.sources = self.settings.source_policy().session(
                    timeout=aiohttp.ClientTimeout(total=120, sock_connect=10, sock_read=30)
                )
                await self.publisher.start()
                self._s3_context = s3_client(self.settings)
                self.s3 = await self._s3_context.__aenter__()
                self.pool = await create_pool(self.settings)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            await self.publisher.stop()
            await self._s3_context.__aexit__(None, None, None)
            await self.http.aclose()
            await self.sources.close()


class Join:
    def __init__(self, settings: TranscriptSyncSettings, resources: Resources) -> None:
        self.settings = settings
        self.resources = resources
        self.can_transcribe = bool(settings.gladia_api_key and settings.gladia_callback_keys)

    async def process(
        self,
        table: Any,
        *,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]],
        offset: int,
    ) -> None:
        await self.resources.ready()
        headers = list(headers)

        async def park(error: str) -> None:
            await self.resources.publisher.dead_letter(
                topic=topic,
                key=key,
                value=value,
                headers=headers,
                offset=offset,
                error=error,
                group=self.settings.faust_app_id,
            )

        try:
            envelope = from_message(headers, key, value)
        except EnvelopeError as exc:
            await park(f"unparseable: {exc}")
            return
        event = envelope.event
        state = JoinState.model_validate(table.get(event.bot_id) or {})
        new_state, effects = decide(state, event, can_transcribe=self.can_transcribe)
        for effect in effects:
            try:
                await self._with_retries(event, effect)
            except Exception as exc:
                log.exception(
                    "join.effect_failed",
                    bot_id=event.bot_id,
                    event_id=envelope.id,
                    effect=type(effect).__name__,
                )
                await park(f"{type(effect).__name__} failed: {exc!r}")
                return
        if new_state != state:
            table[event.bot_id] = new_state.model_dump(mode="json")
        log.info(
            "join.applied",
            bot_id=event.bot_id,
            event_type=event.type,
            event_id=envelope.id,
            effects=[type(e).__name__ for e in effects],
        )

    async def _with_retries(self, event: Event, effect: Effect) -> None:
        attempts = self.settings.effect_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._apply(event, effect)
                EFFECTS.labels(type(effect).__name__).inc()
                return
            except Exception as exc:
                if attempt == attempts:
                    raise
                delay = min(10.0, 0.25 * 2 ** (attempt - 1))
                log.warning(
                    "join.effect_retry",
                    bot_id=event.bot_id,
                    attempt=attempt,
                    effect=type(effect).__name__,
                    error=repr(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    async def _apply(self, event: Event, effect: Effect) -> None:
        r = self.resources
        assert r.pool is not None
        assert r.s3 is not None
        bot_id = event.bot_id
        if isinstance(effect, RequestThumbnail):
            await r.publisher.publish(effect.request)
            return
        if isinstance(effect, RequestTranscription):
            await self._request_transcription(bot_id, effect, r.s3)
            return
        media: MeetingMedia
        if isinstance(effect, WriteVideo):
            audio = s3_location(effect.bucket, effect.audio_key) if effect.audio_key else None
            video = s3_location(effect.bucket, effect.video_key)
            media = await meetings.write_video(r.pool, bot_id, video, audio)
        elif isinstance(effect, WriteTranscript):
            utterances = await transcripts.resolve(
                r.http,
                r.sources,
                effect.transcript,
                self.settings.gladia_api_url,
                self.settings.gladia_api_key,
            )
            media = await meetings.write_transcript(
                r.pool, bot_id, effect.transcript.provider, utterances
            )
            await meetings.complete_transcription_job(r.pool, bot_id)
        elif isinstance(effect, WriteThumbnail):
            location = s3_location(effect.bucket, effect.thumbnail_key)
            media = await meetings.write_thumbnail(r.pool, bot_id, location)
        elif isinstance(effect, MarkFailed):
            media = await meetings.mark_failed(r.pool, bot_id, effect.error)
        if media.changed:
            await r.publisher.publish(
                MeetingSynced(
                    bot_id=bot_id,
                    meeting_id=media.id,
                    org_id=media.org_id,
                    has_video=media.has_video,
                    has_transcript=media.has_transcript,
                    has_thumbnail=media.has_thumbnail,
                )
            )

    async def _request_transcription(
        self, bot_id: str, effect: RequestTranscription, s3: S3Client
    ) -> None:
        assert self.settings.gladia_api_key is not None
        audio_url = await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": effect.bucket, "Key": effect.audio_key},
            ExpiresIn=self.settings.presigned_url_seconds,
        )
        pool = self.resources.pool
        assert pool is not None
        # The row comes first: a callback is accepted only for a request id that has one.
        request_id = uuid.uuid4()
        expires = int(time.time()) + self.settings.gladia_callback_token_seconds
        await meetings.open_transcription_job(
            pool, bot_id, "gladia", request_id, datetime.fromtimestamp(expires, UTC)
        )
        job_id = await transcripts.request_gladia_job(
            self.resources.http,
            gladia_url=self.settings.gladia_api_url,
            gladia_key=self.settings.gladia_api_key,
            audio_url=audio_url,
            callback_base=self.settings.ingest_public_url,
            callback_key=self.settings.gladia_callback_keys[0],
            request_id=request_id,
            expires=expires,
            bot_id=bot_id,
        )
        await meetings.record_transcription_job(pool, request_id, job_id)
        log.info(
            "transcription.requested",
            bot_id=bot_id,
            provider="gladia",
            job_id=job_id,
            request_id=str(request_id),
        )


def create_app(settings: TranscriptSyncSettings) -> faust.App:
    app = faust.App(
        settings.faust_app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",  # state is rebuilt from the changelog topic on start
        datadir=settings.faust_data_dir,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.faust_rebalance_timeout_seconds,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        web_port=settings.http_port,
        web_bind="0.0.0.0",
        web_in_thread=False,
        topic_disable_leader=True,
    )
    app.transport = Transport(app.conf.broker_consumer, app)
    resources = Resources(settings)
    join = Join(settings, resources)
    for topic in SOURCE_TOPICS:  # at 0 from the start: the first dead letter is an increase
        CONSUMER_DLQ.labels(settings.faust_app_id, topic)
    table = app.Table("meeting-join", default=dict, partitions=settings.kafka_topic_partitions)
    source = app.topic(
        *SOURCE_TOPICS,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source)
    async def join_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            headers = message.headers
            pairs = headers.items() if isinstance(headers, dict) else headers or []
            await join.process(
                table,
                topic=message.topic,
                key=message.key,
                value=message.value,
                headers=pairs,
                offset=message.offset,
            )

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        return web.json({"ready": assigned}, status=200 if assigned else 503)

    @app.page("/meetings/{meeting_id}/media/{kind}")
    async def media_page(web: Any, request: Any, meeting_id: str, kind: str) -> Any:
        try:
            orgs = media.orgs_of(
                request.headers.get("authorization", ""), settings.media_token_keys
            )
        except media.MediaRefused as refused:
            return web.json({"title": refused.reason, "status": 401}, status=401)
        await resources.ready()
        assert resources.pool is not None
        assert resources.s3 is not None
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
        # aiohttp refuses a content_type that carries a charset, and the exposition format's
        # type carries one: the whole type goes as a header instead.
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()

    return app
