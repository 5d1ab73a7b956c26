"""A local MeetingBaaS + Gladia, speaking their real formats, for the demo and end-to-end tests.

MeetingBaaS side: `POST /v2/bots` deploys a bot that sends Svix-signed `bot.status_change`
webhooks, then `bot.completed` (or `bot.failed`) to ingest, with recording URLs that look and
behave like presigned S3 URLs (signed, expiring, range requests). A bot created with a
`callback_config` also calls that URL itself with `bot.completed` or `bot.failed`, sending the
configured secret in `x-mb-secret` (before the account webhook, so the callback is the delivery
that counts). `GET /v2/bots` lists bots as MeetingBaaS does, filtered by `extra` (`field:value,...`)
and newest first. A bot's recording URLs are signed anew by `GET /v2/bots/{bot_id}` (v2) and
`GET /bots/meeting_data?bot_id=...` (v1), each answering in its API's documented shape (samples in
`tests/fixtures/providers/meetingbaas/`); once the recording is deleted (`deleted_recordings`, by
a test or by `delete_data`), both answer as MeetingBaaS does for deleted data. Tests can make
`POST /v2/bots` refuse a meeting URL (`refused_meeting_urls`) or hold its answer after the bot
exists (`hold_next_create`). `POST /bots/{bot_id}/delete_data` (API v1) deletes a bot's
recording and transcript as MeetingBaaS does (`{"ok": true, "status": "deleted"}`, then
`alreadyDeleted`; its recording URLs answer 404 from then on); tests can make it answer an error
status instead (`delete_data_status`, e.g. 429 as its rate limit does).

Gladia side: `POST /v2/pre-recorded` accepts a job and calls its callback URL with the result;
`GET /v2/pre-recorded/{id}` answers the job; `DELETE /v2/pre-recorded/{id}` deletes a finished
job (202, no body; 403 while it runs, 404 for a job it does not have); every Gladia API request
is counted (`gladia_requests`). `/sim/...` lets tests steer bots and see what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from standardwebhooks.webhooks import Webhook

from notetaker.common.logs import configure_logging, get_logger
from notetaker.devstack.media import Recording, demo_recording
from notetaker.devstack.stack import free_port

log = get_logger(__name__)

TRANSCRIPT = [
    ("Ada Lovelace", 0.5, "Welcome to the weekly product sync."),
    ("Alan Turing", 2.1, "Thanks. The upload pipeline is live."),
    ("Ada Lovelace", 4.0, "Great, recordings are permanent now."),
]


@dataclass
class SimulatorConfig:
    ingest_url: str
    svix_secret: str
    api_key: str
    gladia_api_key: str
    port: int = 0
    url_validity_seconds: int = 14_400
    status_delay_seconds: float = 0.2
    completed_delay_seconds: float = 0.5
    gladia_delay_seconds: float = 0.5
    gladia_send_callbacks: bool = True
    # Tries of each webhook (5xx or unreachable: again, backing off to 5 s between tries). Svix
    # retries for a day; 6 tries cover about 10 s, the outage tests ask for more.
    delivery_attempts: int = 6


@dataclass
class Bot:
    bot_id: str
    meeting_url: str
    transcription: bool
    fail: bool
    recording: Recording
    extra: dict[str, Any]
    video_delay: float = 0.0
    callback: dict[str, Any] | None = None  # the create-bot request's `callback_config`
    audio_only: bool = False  # `recording_mode: audio_only`: no video, `video` null
    status: str = "created"
    completed_body: str | None = None
    completed_id: str | None = None
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    downloads: dict[str, int] = field(default_factory=dict)
    artifact_downloads: dict[str, int] = field(default_factory=dict)
    # Artifacts named in `bot.completed` whose URL answers 404 (the provider no longer has them)
    gone_artifacts: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    bot_name: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    joined_at: datetime | None = None
    exited_at: datetime | None = None
    webhook_version: int = 2  # 1: the account webhook of `complete`/`failed` is API v1's
    # URLs signed at or before this second answer 403 (revoked, as an expired URL does)
    revoked_through: datetime | None = None
    lies: int = 0  # the next this many video GETs declare the whole length and send half
    revoke_completed_urls: bool = False
    completed_v1_body: str | None = None


@dataclass(eq=False)
class CreateHold:
    """The answer to a create-bot request, held after the bot was created (as a response lost
    on its way back, or a caller that dies before reading it) until the test opens it; only a
    request for `meeting_id` (its `extra`) when that is set."""

    meeting_id: str | None = None
    bot_id: str | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.opened.set()

    async def wait_reached(self, timeout: float) -> str:
        """The id of the bot created and held; fail the test after `timeout` seconds."""
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no create-bot request came within {timeout:.0f}s") from None
        assert self.bot_id is not None
        return self.bot_id


@dataclass
class GladiaJob:
    id: str
    audio_url: str
    callback_url: str | None
    status: str = "queued"
    callbacks: list[int] = field(default_factory=list)
    custom_metadata: dict[str, Any] | None = None
    # The job's result (`payload` of its callback, `result` of `GET /v2/pre-recorded/{id}`), and
    # the callback's body exactly as posted, once it was.
    result: dict[str, Any] = field(default_factory=lambda: _gladia_result())
    delivered: bytes | None = None


def _transcription_document() -> list[dict[str, Any]]:
    """MeetingBaaS transcript: speaker segments with timed words."""
    segments = []
    for speaker, start, text in TRANSCRIPT:
        words, t = [], start
        for word in text.split():
            words.append({"start": round(t, 2), "end": round(t + 0.3, 2), "word": word})
            t += 0.35
        segments.append({"speaker": speaker, "words": words})
    return segments


def artifacts(bot: Bot) -> dict[str, bytes]:
    """The artifacts a completed bot hands over beside its video and audio, by file name: the
    transcript JSON, the raw transcription and the diarization when it was transcribed, and the
    meeting's chat."""
    files: dict[str, bytes] = {
        "chat_messages.json": json.dumps(
            [
                {"sender": "Ada Lovelace", "sent_at": 2.5, "text": "Slides are in the doc."},
                {"sender": "Alan Turing", "sent_at": 4.0, "text": f"Thanks ({bot.bot_id})"},
            ]
        ).encode()
    }
    if bot.transcription:
        files["transcription.json"] = json.dumps(_transcription_document()).encode()
        files["raw_transcription.json"] = json.dumps(
            {"bot_id": bot.bot_id, "provider": "gladia", "result": _gladia_result()}
        ).encode()
        files["diarization.jsonl"] = "".join(
            json.dumps({"speaker": speaker, "start": start, "end": start + 1.5}) + "\n"
            for speaker, start, _ in TRANSCRIPT
        ).encode()
    return files


def people(bot: Bot) -> dict[str, list[dict[str, Any]]]:
    """The people lists a completed bot handed over inline, by the file the uploader stores
    each as (`participants.json`, `speakers.json`): as its v2 `bot.completed` carried them, or
    v1's `complete` speakers (names only) as `{"id": null, "name"}`, as ingest reads them.
    None before it completed."""
    if bot.webhook_version == 1:
        if bot.completed_v1_body is None:
            return {}
        names = json.loads(bot.completed_v1_body)["data"]["speakers"]
        return {"speakers.json": [{"id": None, "name": n} for n in names]}
    if bot.completed_body is None:
        return {}
    data = json.loads(bot.completed_body)["data"]
    return {f"{k}.json": data[k] for k in ("participants", "speakers") if data.get(k) is not None}


# What a v1 retranscription (`transcription_complete`) hands back through `GET /bots/meeting_data`.
RETRANSCRIPT = [("Ada Lovelace", 1.0, "Welcome to the retranscribed product sync.")]


def _v1_transcripts(bot_id: int) -> list[dict[str, Any]]:
    """`bot_data.transcripts` of v1's meeting data (`Transcript` and `Word` in `openapi.json`)."""
    transcripts = []
    for n, (speaker, start, text) in enumerate(RETRANSCRIPT, 1):
        words, t = [], start
        for i, word in enumerate(text.split(), 1):
            words.append(
                {"id": n * 1000 + i, "bot_id": bot_id, "text": word, "user_id": None}
                | {"start_time": round(t, 2), "end_time": round(t + 0.3, 2)}
            )
            t += 0.35
        transcripts.append(
            {"id": n, "bot_id": bot_id, "speaker": speaker, "lang": "en", "user_id": None}
            | {"start_time": start, "end_time": round(t, 2), "words": words}
        )
    return transcripts


def _gladia_result() -> dict[str, Any]:
    utterances = [
        {
            "start": start,
            "end": start + 1.5,
            "confidence": 0.95,
            "channel": 0,
            "speaker": index % 2,
            "language": "en",
            "text": text,
            "words": [],
        }
        for index, (_, start, text) in enumerate(TRANSCRIPT)
    ]
    return {
        "metadata": {
            "audio_duration": 6.0,
            "number_of_distinct_channels": 1,
            "billing_time": 6.0,
            "transcription_time": 0.5,
        },
        "transcription": {
            "languages": ["en"],
            "full_transcript": " ".join(t for _, _, t in TRANSCRIPT),
            "utterances": utterances,
        },
    }


class ProviderSimulator:
    def __init__(self, config: SimulatorConfig, recording: Recording | None = None) -> None:
        self.config = config
        self.port = config.port or free_port()
        self.recording = recording
        self.bots: dict[str, Bot] = {}
        self.jobs: dict[str, GladiaJob] = {}
        self.gladia_requests: list[tuple[str, str]] = []  # (method, path) of each API request
        # A bot's Gladia result, when a test gives one (else the transcript every job returns).
        self.gladia_results: dict[str, dict[str, Any]] = {}
        self.create_requests: list[dict[str, Any]] = []  # body of each `POST /v2/bots`
        self.refused_meeting_urls: set[str] = set()  # `POST /v2/bots` answers 400 for these
        self.deleted_recordings: set[str] = set()  # bots whose recording the provider dropped
        # (API, bot id) of each request for a bot's fresh URLs: ("v2", id) for `GET
        # /v2/bots/{id}`, ("v1", id) for `GET /bots/meeting_data?bot_id=id`.
        self.refreshes: list[tuple[str, str]] = []
        self.transcript_fetches: list[str] = []  # v1 meeting data asked with its transcripts
        self.data_deletions: list[str] = []  # bot id of each `POST /bots/{bot_id}/delete_data`
        self.delete_data_status: int | None = None  # answer delete_data with this status
        self.deleted_jobs: list[str] = []  # Gladia jobs deleted (`DELETE /v2/pre-recorded/...`)
        self._create_holds: list[CreateHold] = []
        self._url_key = secrets.token_bytes(32)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.app = self._build_app()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=15.0)
        if self.recording is None:
            self.recording = await asyncio.to_thread(demo_recording)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._serve_task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for hold in self._create_holds:
            hold.open()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await self._serve_task
        if self._http is not None:
            await self._http.aclose()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the Python API tests use -------------------------------------------------------------

    def create_bot(
        self,
        meeting_url: str = "https://meet.google.com/abc-defg-hij",
        *,
        transcription: bool = True,
        fail: bool = False,
        hold_completed: bool = False,
        extra: dict[str, Any] | None = None,
        video_delay: float = 0.0,
        callback: dict[str, Any] | None = None,
        audio_only: bool = False,
        recording: Recording | None = None,
        webhook_version: int = 2,
    ) -> str:
        """Deploy a bot; `video_delay` makes its video URL answer that many seconds late;
        `callback` is a `callback_config` (`url`, `secret`) the bot calls when it ends;
        `audio_only` records no video (`recording_mode: audio_only`: `video` is null);
        `recording` is what it serves (the simulator's by default); `webhook_version` 1 sends
        its end as API v1's `complete`/`failed` (with `x-meeting-baas-api-key`)."""
        assert self.recording is not None, "start() the simulator first"
        bot = Bot(
            str(uuid.uuid4()),
            meeting_url,
            transcription,
            fail,
            recording or self.recording,
            extra or {},
            video_delay,
            callback if callback and callback.get("url") else None,
            audio_only,
            webhook_version=webhook_version,
        )
        if not hold_completed:
            bot.released.set()
        self.bots[bot.bot_id] = bot
        self._spawn(self._live(bot))
        return bot.bot_id

    def hold_next_create(self, meeting_id: str | None = None) -> CreateHold:
        """Hold the answer to the next `POST /v2/bots` that creates a bot (for `meeting_id`, if
        given) until the test opens it; the bot exists (and is listed) meanwhile."""
        hold = CreateHold(meeting_id)
        self._create_holds.append(hold)
        return hold

    def bots_for_meeting(self, meeting_id: str) -> list[str]:
        """Ids of the bots created with `extra.meeting_id` = `meeting_id`, oldest first."""
        return [b.bot_id for b in self.bots.values() if b.extra.get("meeting_id") == meeting_id]

    def complete(self, bot_id: str) -> None:
        """Let a bot created with `hold_completed` finish its meeting."""
        self.bots[bot_id].released.set()

    def bot(self, bot_id: str) -> dict[str, Any]:
        bot = self.bots[bot_id]
        assert self.recording is not None
        return {
            "bot_id": bot.bot_id,
            "status": bot.status,
            "video_sha256": bot.recording.video_sha256,
            "video_size": len(bot.recording.video),
            "audio_sha256": bot.recording.audio_sha256,
            "audio_size": len(bot.recording.audio),
            "webhooks": bot.webhooks,
            "downloads": bot.downloads,
            # Every artifact the bot hands over: its size and SHA-256 as served, by file name.
            "artifacts": {
                name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in artifacts(bot).items()
            },
            "artifact_downloads": bot.artifact_downloads,
            # The people lists it handed over inline (not served at a URL), by file name.
            "people": people(bot),
        }

    async def resend_completed(self, bot_id: str, new_delivery_id: bool = False) -> int:
        """Deliver `bot.completed` again: a Svix retry (same id) or a new delivery of it."""
        bot = self.bots[bot_id]
        assert bot.completed_body is not None, "the bot has not completed yet"
        if bot.webhook_version == 1:  # v1 has no delivery id: the same body again
            assert bot.completed_v1_body is not None
            return await self._post_retrying(
                bot, "bot.completed", bot.completed_v1_body, self._v1_headers(), "v1", None, 1
            )
        delivery_id = f"msg_{uuid.uuid4().hex}" if new_delivery_id else bot.completed_id
        assert delivery_id is not None
        return await self._deliver(
            bot, "bot.completed", bot.completed_body, delivery_id, attempts=1
        )

    async def resend_status(self, bot_id: str) -> int:
        """Deliver a `bot.status_change` (in call, recording) again, as a new delivery: late,
        and out of order once the bot has completed."""
        bot = self.bots[bot_id]
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        status = {"code": "in_call_recording", "created_at": now, "start_time": now}
        body = json.dumps(
            {
                "event": "bot.status_change",
                "data": {"bot_id": bot_id, "status": status},
                "sent_at": now,
            }
        )
        delivery_id = f"msg_{uuid.uuid4().hex}"
        return await self._deliver(
            bot, "bot.status_change", body, delivery_id, self.config.delivery_attempts
        )

    def revoke_urls(self, bot_id: str) -> None:
        """Every URL of the bot's recording signed so far answers 403 from now on (as an
        expired one does); the URLs `GET /v2/bots/{bot_id}` signs from now on work."""
        self.bots[bot_id].revoked_through = datetime.now(UTC).replace(microsecond=0)

    def revoke_at_completion(self, bot_id: str) -> None:
        """The URLs the bot's `bot.completed` carries answer 403 from the start (a provider's
        URL that expired before it was fetched): only refreshed ones work."""
        self.bots[bot_id].revoke_completed_urls = True

    def lie_about_length(self, bot_id: str, times: int = 1) -> None:
        """The bot's next `times` video downloads declare the whole length and send half."""
        self.bots[bot_id].lies = times

    def signed_url(self, bot_id: str, name: str, issued: datetime | None = None) -> str:
        issued = issued or datetime.now(UTC)
        revoked = self.bots[bot_id].revoked_through if bot_id in self.bots else None
        if revoked is not None and issued <= revoked + timedelta(seconds=1):
            issued = revoked + timedelta(seconds=1)  # a URL signed anew is past the revocation
        stamp = issued.strftime("%Y%m%dT%H%M%SZ")
        expires = self.config.url_validity_seconds
        signature = self._signature(bot_id, name, stamp, expires)
        return (
            f"{self.base_url}/recordings/{bot_id}/{name}?X-Amz-Date={stamp}"
            f"&X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )

    def bot_details(self, bot: Bot) -> dict[str, Any]:
        """The bot as v2's `GET /v2/bots/{bot_id}` describes it (every field its OpenAPI
        description requires), with freshly signed URLs of its recording once it has one; `null`
        for every artifact, and `artifacts_deleted`, once the recording is deleted."""
        deleted = bot.bot_id in self.deleted_recordings
        ready = bot.status == "completed" and not deleted
        base = f"{self.base_url}/recordings/{bot.bot_id}"
        transcribed = ready and bot.transcription
        has_video = not bot.audio_only
        names = ["Ada Lovelace", "Alan Turing"] if bot.joined_at else []
        return {
            "bot_id": bot.bot_id,
            "bot_name": bot.bot_name,
            "meeting_url": bot.meeting_url,
            "meeting_platform": _platform(bot.meeting_url),
            "recording_mode": "audio_only" if bot.audio_only else "speaker_view",
            "status": bot.status,
            "created_at": _time(bot.created_at),
            "joined_at": _time(bot.joined_at),
            "exited_at": _time(bot.exited_at),
            "duration_seconds": 6 if bot.status == "completed" else None,
            "participants": [{"name": n, "id": i} for i, n in enumerate(names, 1)],
            "speakers": [{"name": n, "id": i} for i, n in enumerate(names, 1)],
            "artifacts_deleted": deleted,
            "video": self.signed_url(bot.bot_id, "video.mp4") if ready and has_video else None,
            "audio": self.signed_url(bot.bot_id, "audio.flac") if ready else None,
            "diarization": f"{base}/diarization.jsonl" if transcribed else None,
            "raw_transcription": f"{base}/raw_transcription.json" if transcribed else None,
            "transcription": f"{base}/transcription.json" if transcribed else None,
            "chat_messages": f"{base}/chat_messages.json" if ready else None,
            "transcription_ids": None,
            "transcription_provider": "gladia" if bot.transcription else None,
            "error_code": "BOT_NOT_ACCEPTED" if bot.status == "failed" else None,
            "error_message": (
                "The bot was not admitted to the meeting" if bot.status == "failed" else None
            ),
            "tokens": None,
            "extra": bot.extra,
            "zoom_config": None,
        }

    def meeting_data(self, bot: Bot, include_transcripts: bool = False) -> dict[str, Any]:
        """The bot's recording as v1's `GET /bots/meeting_data` answers it (every field its
        OpenAPI description requires, transcripts left out as `include_transcripts=false` asks):
        a freshly signed `mp4`, an empty string for a file that does not exist (no WAV here;
        none at all once the recording is deleted)."""
        ready = bot.status == "completed" and bot.bot_id not in self.deleted_recordings
        return {
            "bot_data": {
                "bot": {
                    "id": uuid.UUID(bot.bot_id).int % 2**31,
                    "uuid": bot.bot_id,
                    "account_id": 1,
                    "bot_param_id": 1,
                    "bot_name": bot.bot_name,
                    "meeting_url": bot.meeting_url,
                    "created_at": _time(bot.created_at),
                    "bot_joined_at": _time(bot.joined_at),
                    "bot_exited_at": _time(bot.exited_at),
                    "ended_at": _time(bot.exited_at),
                    "mp4_s3_path": f"{bot.bot_id}.mp4" if ready else "",
                    "diarization_v2": False,
                    "is_stopped": bot.exited_at is not None,
                    "reserved": False,
                    "extra": bot.extra,
                    "transcription_custom_parameters": {},
                    "webhook_url": f"{self.config.ingest_url}/webhooks/meetingbaas",
                },
                "transcripts": (
                    _v1_transcripts(uuid.UUID(bot.bot_id).int % 2**31)
                    if include_transcripts and ready
                    else []
                ),
            },
            "duration": 6 if bot.status == "completed" else 0,
            "mp4": self.signed_url(bot.bot_id, "video.mp4") if ready else "",
            "audio": "",
            "meeting_participants_file": "",
            "speaker_diarization_file": "",
            "speaker_diarization_file_network": "",
        }

    # --- the bot's life -----------------------------------------------------------------------

    async def _live(self, bot: Bot) -> None:
        for code in ("joining_call", "in_waiting_room", "in_call_recording"):
            await asyncio.sleep(self.config.status_delay_seconds)
            bot.status = code
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await self._send(
                bot,
                "bot.status_change",
                {
                    "bot_id": bot.bot_id,
                    "status": {"code": code, "created_at": now, "start_time": now},
                },
            )
        bot.joined_at = datetime.now(UTC)
        await bot.released.wait()
        await asyncio.sleep(self.config.completed_delay_seconds)
        bot.exited_at = datetime.now(UTC)
        if bot.fail:
            bot.status = "failed"
            await self._send(
                bot,
                "bot.failed",
                {
                    "bot_id": bot.bot_id,
                    "error_code": "BOT_NOT_ACCEPTED",
                    "error_message": "The bot was not admitted to the meeting",
                },
            )
            return
        bot.status = "completed"
        base = f"{self.base_url}/recordings/{bot.bot_id}"
        names = [p["name"] for p in ({"name": "Ada Lovelace"}, {"name": "Alan Turing"})]
        data = {
            "bot_id": bot.bot_id,
            "event_id": str(uuid.uuid4()),
            "duration_seconds": 6,
            "joined_at": _time(bot.joined_at),
            "exited_at": _time(bot.exited_at),
            "video": None if bot.audio_only else self.signed_url(bot.bot_id, "video.mp4"),
            "audio": self.signed_url(bot.bot_id, "audio.flac"),
            "transcription": f"{base}/transcription.json" if bot.transcription else None,
            "raw_transcription": f"{base}/raw_transcription.json" if bot.transcription else None,
            "diarization": f"{base}/diarization.jsonl" if bot.transcription else None,
            "chat_messages": f"{base}/chat_messages.json",
            "participants": [{"id": None, "name": n} for n in names],
            "speakers": [{"id": None, "name": n} for n in names],
        }
        if bot.revoke_completed_urls:
            bot.revoked_through = datetime.now(UTC).replace(microsecond=0)
        await self._send(bot, "bot.completed", data)

    async def _send(self, bot: Bot, event: str, data: dict[str, Any]) -> None:
        sent_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = json.dumps({"event": event, "data": data, "sent_at": sent_at})
        delivery_id = f"msg_{uuid.uuid4().hex}"
        if event == "bot.completed":
            bot.completed_body, bot.completed_id = body, delivery_id
        if bot.callback is not None and event in ("bot.completed", "bot.failed"):
            callback_body = json.dumps({"event": event, "data": data, "extra": bot.extra})
            await self._call_back(bot, event, callback_body, self.config.delivery_attempts)
        if bot.webhook_version == 1 and event in ("bot.completed", "bot.failed"):
            await self._deliver_v1(bot, event, data)
            return
        await self._deliver(bot, event, body, delivery_id, self.config.delivery_attempts)

    async def _deliver_v1(self, bot: Bot, event: str, data: dict[str, Any]) -> int:
        """API v1's account webhook (`complete`: the mp4 and the transcript inline; `failed`),
        authenticated by the API key, retried like v2's."""
        if event == "bot.completed":
            transcript = _transcription_document() if bot.transcription else []
            v1 = {
                "event": "complete",
                "data": {
                    "bot_id": bot.bot_id,
                    "mp4": data["video"],
                    "speakers": [s["speaker"] for s in transcript],
                    "transcript": transcript,
                },
            }
        else:
            v1 = {"event": "failed", "data": {"bot_id": bot.bot_id, "error": data["error_code"]}}
        body = json.dumps(v1)
        if event == "bot.completed":
            bot.completed_v1_body = body
        return await self._post_retrying(bot, event, body, self._v1_headers(), "v1", None)

    def _v1_headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "x-meeting-baas-api-key": self.config.api_key}

    async def _call_back(self, bot: Bot, event: str, body: str, attempts: int) -> int:
        """POST the bot's own callback to its `callback_config` URL, with its secret in
        `x-mb-secret`, retrying on errors and 5xx."""
        assert self._http is not None
        assert bot.callback is not None
        headers = {"content-type": "application/json"}
        if bot.callback.get("secret"):
            headers["x-mb-secret"] = str(bot.callback["secret"])
        method = str(bot.callback.get("method") or "POST")
        status = 0
        for attempt in range(1, attempts + 1):
            outcome = None
            try:
                response = await self._http.request(
                    method, str(bot.callback["url"]), content=body, headers=headers
                )
                status = response.status_code
                if 200 <= status < 300:
                    outcome = response.json().get("status")
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: an answer not JSON
                log.warning("simulator.callback_unreachable", error=repr(exc), attempt=attempt)
                status = 0
            bot.webhooks.append(
                {
                    "event": event,
                    "channel": "callback",
                    "status": status,
                    "outcome": outcome,
                    "at": time.time(),
                }
            )
            if 200 <= status < 300 or 400 <= status < 500:
                return status
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return status

    async def _deliver(
        self, bot: Bot, event: str, body: str, delivery_id: str, attempts: int
    ) -> int:
        """POST a Svix-signed delivery, retrying like Svix on errors and 5xx."""
        return await self._post_retrying(bot, event, body, {}, "svix", delivery_id, attempts)

    async def _post_retrying(
        self,
        bot: Bot,
        event: str,
        body: str,
        headers: dict[str, str],
        channel: str,
        delivery_id: str | None,
        attempts: int | None = None,
    ) -> int:
        """POST a webhook to ingest until it is acknowledged (2xx) or refused (4xx): Svix's
        schedule compressed (0.4 s doubling to 5 s between tries); a Svix delivery is signed
        anew for each try."""
        assert self._http is not None
        status = 0
        for attempt in range(1, (attempts or self.config.delivery_attempts) + 1):
            now = datetime.now(UTC)
            if delivery_id is not None:
                headers = {
                    "content-type": "application/json",
                    "svix-id": delivery_id,
                    "svix-timestamp": str(int(now.timestamp())),
                    "svix-signature": Webhook(self.config.svix_secret).sign(delivery_id, now, body),
                }
            try:
                response = await self._http.post(
                    f"{self.config.ingest_url}/webhooks/meetingbaas",
                    content=body,
                    headers=headers,
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                log.warning("simulator.webhook_unreachable", error=repr(exc), attempt=attempt)
                status = 0
            record: dict[str, Any] = {
                "event": event,
                "channel": channel,
                "status": status,
                "at": time.time(),
            }
            if delivery_id is not None:
                record["svix_id"] = delivery_id
            bot.webhooks.append(record)
            if 200 <= status < 300 or 400 <= status < 500:
                return status
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        return status

    # --- Gladia -------------------------------------------------------------------------------

    async def _run_job(self, job: GladiaJob) -> None:
        assert self._http is not None
        job.status = "processing"
        await asyncio.sleep(self.config.gladia_delay_seconds)
        job.status = "done"
        if not (self.config.gladia_send_callbacks and job.callback_url):
            return
        body = {"id": job.id, "event": "transcription.success", "payload": job.result}
        job.delivered = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        for attempt in range(1, 6):
            try:
                response = await self._http.post(
                    job.callback_url, content=job.delivered, headers=headers
                )
                job.callbacks.append(response.status_code)
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                job.callbacks.append(0)
            await asyncio.sleep(0.2 * 2**attempt)

    # --- HTTP ---------------------------------------------------------------------------------

    def _signature(self, bot_id: str, name: str, stamp: str, expires: int) -> str:
        message = f"{bot_id}/{name}/{stamp}/{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def _serve_file(
        self, request: Request, bot: Bot, name: str, data: bytes, content_type: str
    ) -> Response:
        query = request.query_params
        stamp = query.get("X-Amz-Date", "")
        expires = int(query.get("X-Amz-Expires", "0") or 0)
        expected = self._signature(bot.bot_id, name, stamp, expires)
        if not hmac.compare_digest(expected, query.get("X-Amz-Signature", "")):
            return _s3_error(
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        issued = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if datetime.now(UTC) > issued + timedelta(seconds=expires):
            return _s3_error(403, "AccessDenied", "Request has expired")
        if bot.revoked_through is not None and issued <= bot.revoked_through:
            return _s3_error(403, "AccessDenied", "Request has expired")
        headers = {"accept-ranges": "bytes", "content-type": content_type}
        if request.method == "GET":
            bot.downloads[name] = bot.downloads.get(name, 0) + 1
        if request.method == "GET" and name == "video.mp4" and bot.lies > 0:
            bot.lies -= 1
            return _lying_response(data, headers)
        return _ranged(request, data, headers)

    def _serve_artifact(self, request: Request, bot: Bot, name: str) -> Response | None:
        """An artifact, unsigned as in the samples' `bot.completed` (ranges answered)."""
        data = artifacts(bot).get(name)
        if data is None or name in bot.gone_artifacts:
            return None
        if request.method == "GET":
            bot.artifact_downloads[name] = bot.artifact_downloads.get(name, 0) + 1
        kind = "application/x-ndjson" if name.endswith(".jsonl") else "application/json"
        return _ranged(request, data, {"accept-ranges": "bytes", "content-type": kind})

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="MeetingBaaS + Gladia simulator")

        @app.middleware("http")
        async def count_gladia_requests(request: Request, call_next: Any) -> Response:
            # Every request to Gladia's API, whatever its path goes on to match (or not).
            if request.url.path.startswith("/v2/pre-recorded"):
                self.gladia_requests.append((request.method, request.url.path))
            response: Response = await call_next(request)
            return response

        def bad_key(presented: str | None, expected: str) -> bool:
            return not hmac.compare_digest((presented or "").encode(), expected.encode())

        @app.post("/v2/bots")
        async def create_bot(
            request: Request, x_meeting_baas_api_key: str | None = Header(None)
        ) -> JSONResponse:
            if bad_key(x_meeting_baas_api_key, self.config.api_key):
                return JSONResponse({"success": False, "error": "Invalid API key"}, 401)
            body = await request.json()
            self.create_requests.append(body)
            if body.get("meeting_url", "") in self.refused_meeting_urls:
                message = "The meeting URL is not a supported meeting platform URL"
                return JSONResponse(
                    {
                        "success": False,
                        "error": "Bad Request",
                        "code": "FST_ERR_VALIDATION",
                        "statusCode": 400,
                        "message": message,
                    },
                    400,
                )
            bot_id = self.create_bot(
                body.get("meeting_url", ""),
                transcription=bool(body.get("transcription_enabled", True)),
                extra=body.get("extra") or {},
                callback=body.get("callback_config"),
                audio_only=body.get("recording_mode") == "audio_only",
            )
            self.bots[bot_id].bot_name = str(body.get("bot_name") or "")
            meeting_id = (body.get("extra") or {}).get("meeting_id")
            holds = [
                h
                for h in self._create_holds
                if h.bot_id is None and h.meeting_id in (None, meeting_id)
            ]
            if holds:
                holds[0].bot_id = bot_id
                holds[0].reached.set()
                await holds[0].opened.wait()
            return JSONResponse({"success": True, "data": {"bot_id": bot_id}})

        @app.get("/v2/bots")
        async def list_bots(
            extra: str | None = None,
            limit: int = 50,
            x_meeting_baas_api_key: str | None = Header(None),
        ) -> JSONResponse:
            if bad_key(x_meeting_baas_api_key, self.config.api_key):
                return JSONResponse({"success": False, "error": "Invalid API key"}, 401)
            wanted = dict(pair.split(":", 1) for pair in (extra or "").split(",") if ":" in pair)
            # Bots without a field asked for are left out; values match exactly.
            found = [
                bot
                for bot in self.bots.values()
                if all(k in bot.extra and str(bot.extra[k]) == v for k, v in wanted.items())
            ]
            found.sort(key=lambda b: b.created_at, reverse=True)  # newest first
            data = [
                {
                    "bot_id": bot.bot_id,
                    "bot_name": bot.bot_name,
                    "meeting_url": bot.meeting_url,
                    "extra": bot.extra,
                    "status": bot.status,
                    "created_at": bot.created_at.isoformat().replace("+00:00", "Z"),
                }
                for bot in found[: max(1, min(limit, 250))]
            ]
            return JSONResponse(
                {"success": True, "data": data, "cursor": None, "prev_cursor": None}
            )

        @app.get("/v2/bots/{bot_id}")
        async def get_bot(
            bot_id: str, x_meeting_baas_api_key: str | None = Header(None)
        ) -> JSONResponse:
            """A bot's details (v2), with freshly signed URLs of its recording once it has one
            (the ones its `bot.completed` carried expire); 404 for a bot it does not know."""
            if bad_key(x_meeting_baas_api_key, self.config.api_key):
                return _v2_error(401, "Unauthorized", "FST_ERR_FORBIDDEN", "Invalid API key")
            bot = self.bots.get(bot_id)
            if bot is None:
                return _v2_error(
                    404,
                    "Not Found",
                    "FST_ERR_BOT_NOT_FOUND_BY_ID",
                    f"Bot with ID '{bot_id}' not found",
                )
            self.refreshes.append(("v2", bot_id))
            return JSONResponse({"success": True, "data": self.bot_details(bot)})

        @app.get("/bots/meeting_data")
        async def get_meeting_data(
            bot_id: str = "",
            include_transcripts: str = "false",
            x_meeting_baas_api_key: str | None = Header(None),
        ) -> JSONResponse:
            """A bot's recording (v1), its `mp4` signed anew; 404 for a bot it does not know.
            With `include_transcripts=true`, the transcript a retranscription made
            (`RETRANSCRIPT`): what a v1 `transcription_complete` announces."""
            if bad_key(x_meeting_baas_api_key, self.config.api_key):
                return JSONResponse({"error": "Invalid API key"}, 401)
            bot = self.bots.get(bot_id)
            if bot is None:
                return JSONResponse({"error": "Bot not found"}, 404)
            if include_transcripts == "true":
                self.transcript_fetches.append(bot_id)
                return JSONResponse(self.meeting_data(bot, include_transcripts=True))
            self.refreshes.append(("v1", bot_id))
            return JSONResponse(self.meeting_data(bot))

        @app.post("/bots/{bot_id}/delete_data")
        async def delete_data(
            bot_id: str, x_meeting_baas_api_key: str | None = Header(None)
        ) -> JSONResponse:
            """API v1's data deletion: the bot's recording, transcript and logs."""
            if bad_key(x_meeting_baas_api_key, self.config.api_key):
                return JSONResponse({"success": False, "error": "Invalid API key"}, 401)
            self.data_deletions.append(bot_id)
            if self.delete_data_status is not None:
                return JSONResponse({"ok": False}, self.delete_data_status)
            if bot_id not in self.bots:
                return JSONResponse({"success": False, "error": "Bot not found"}, 404)
            if bot_id in self.deleted_recordings:
                return JSONResponse({"ok": True, "status": "alreadyDeleted"})
            self.deleted_recordings.add(bot_id)
            return JSONResponse({"ok": True, "status": "deleted"})

        @app.api_route("/recordings/{bot_id}/{name}", methods=["GET", "HEAD"])
        async def recording(request: Request, bot_id: str, name: str) -> Response:
            bot = self.bots.get(bot_id)
            if bot is None or bot_id in self.deleted_recordings:
                return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
            if name == "video.mp4" and not bot.audio_only:
                await asyncio.sleep(bot.video_delay if request.method == "GET" else 0)
                return self._serve_file(request, bot, name, bot.recording.video, "video/mp4")
            if name == "audio.flac":
                return self._serve_file(request, bot, name, bot.recording.audio, "audio/flac")
            served = self._serve_artifact(request, bot, name)
            return served or _s3_error(404, "NoSuchKey", "The specified key does not exist.")

        @app.post("/v2/pre-recorded", status_code=201)
        async def create_job(request: Request, x_gladia_key: str | None = Header(None)) -> Any:
            if bad_key(x_gladia_key, self.config.gladia_api_key):
                return JSONResponse({"statusCode": 401, "message": "Invalid API key"}, 401)
            body = await request.json()
            metadata = body.get("custom_metadata")
            job = GladiaJob(
                str(uuid.uuid4()),
                body.get("audio_url", ""),
                (body.get("callback_config") or {}).get("url"),
                custom_metadata=metadata,
            )
            bot_id = metadata.get("bot_id") if isinstance(metadata, dict) else None
            if bot_id in self.gladia_results:
                job.result = self.gladia_results[bot_id]
            self.jobs[job.id] = job
            self._spawn(self._run_job(job))
            return {"id": job.id, "result_url": f"{self.base_url}/v2/pre-recorded/{job.id}"}

        @app.get("/v2/pre-recorded")
        async def list_jobs(
            custom_metadata: str | None = None, x_gladia_key: str | None = Header(None)
        ) -> Any:
            """The jobs whose custom_metadata holds every pair of the given JSON object."""
            if bad_key(x_gladia_key, self.config.gladia_api_key):
                return JSONResponse({"statusCode": 401, "message": "Invalid API key"}, 401)
            wanted = json.loads(custom_metadata) if custom_metadata else {}
            items = [
                {"id": job.id, "status": job.status, "custom_metadata": job.custom_metadata}
                for job in self.jobs.values()
                if wanted.items() <= (job.custom_metadata or {}).items()
            ]
            return {"first": "", "current": "", "next": None, "items": items}

        @app.get("/v2/pre-recorded/{job_id}")
        async def get_job(job_id: str, x_gladia_key: str | None = Header(None)) -> Any:
            if bad_key(x_gladia_key, self.config.gladia_api_key):
                return JSONResponse({"statusCode": 401, "message": "Invalid API key"}, 401)
            job = self.jobs.get(job_id)
            if job is None:
                return JSONResponse({"statusCode": 404, "message": "Job not found"}, 404)
            answer: dict[str, Any] = {
                "id": job.id,
                "status": job.status,
                "file": {"source": job.audio_url},
            }
            if job.status == "done":
                answer["result"] = job.result
            return answer

        @app.delete("/v2/pre-recorded/{job_id}")
        async def delete_job(job_id: str, x_gladia_key: str | None = Header(None)) -> Response:
            if bad_key(x_gladia_key, self.config.gladia_api_key):
                return JSONResponse({"statusCode": 401, "message": "Invalid API key"}, 401)
            job = self.jobs.get(job_id)
            if job is None:
                return JSONResponse({"statusCode": 404, "message": "Job not found"}, 404)
            if job.status not in ("done", "error"):
                message = "The transcription job is not in a deletable state"
                return JSONResponse({"statusCode": 403, "message": message}, 403)
            del self.jobs[job_id]
            self.deleted_jobs.append(job_id)
            return Response(status_code=202)

        @app.post("/sim/bots")
        async def sim_create_bot(request: Request) -> dict[str, str]:
            body = await request.json()
            bot_id = self.create_bot(
                body.get("meeting_url", "https://meet.google.com/abc-defg-hij"),
                transcription=bool(body.get("transcription_enabled", True)),
                fail=bool(body.get("fail", False)),
                hold_completed=bool(body.get("hold_completed", False)),
            )
            return {"bot_id": bot_id}

        @app.get("/sim/bots/{bot_id}")
        async def sim_bot(bot_id: str) -> Any:
            if bot_id not in self.bots:
                return JSONResponse({"error": "no such bot"}, 404)
            return self.bot(bot_id)

        @app.post("/sim/bots/{bot_id}/complete")
        async def sim_complete(bot_id: str) -> dict[str, str]:
            self.complete(bot_id)
            return {"status": "released"}

        @app.post("/sim/bots/{bot_id}/resend-completed")
        async def sim_resend(bot_id: str) -> dict[str, int]:
            return {"ingest_status": await self.resend_completed(bot_id)}

        return app


def _v2_error(status: int, label: str, code: str, message: str) -> JSONResponse:
    """An error in API v2's envelope (`ErrorResponse` in its OpenAPI description)."""
    body = {
        "success": False,
        "error": label,
        "message": message,
        "code": code,
        "statusCode": status,
        "details": None,
    }
    return JSONResponse(body, status)


def _time(moment: datetime | None) -> str | None:
    """A time as MeetingBaaS writes it: ISO 8601 in UTC, milliseconds, `Z`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _platform(meeting_url: str) -> str:
    """MeetingBaaS's name for the platform of a meeting URL."""
    if "zoom." in meeting_url:
        return "zoom"
    return "teams" if "teams." in meeting_url else "meet"


def _ranged(request: Request, data: bytes, headers: dict[str, str]) -> Response:
    """`data`, or the one range of it the request asks for, as S3 answers."""
    spec = request.headers.get("range", "")
    if spec.startswith("bytes=") and "," not in spec:
        first, _, last = spec[6:].partition("-")
        start = int(first) if first else max(0, len(data) - int(last))
        end = min(len(data) - 1, int(last)) if first and last else len(data) - 1
        if start >= len(data) or start > end:
            return Response(status_code=416, headers={"content-range": f"bytes */{len(data)}"})
        headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1] if request.method == "GET" else b""
        headers["content-length"] = str(end - start + 1)
        return Response(body, status_code=206, headers=headers)
    headers["content-length"] = str(len(data))
    return Response(data if request.method == "GET" else b"", headers=headers)


def _lying_response(data: bytes, headers: dict[str, str]) -> Response:
    """A body that declares the whole file's length and stops after half of it."""

    async def half() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]

    declared = {**headers, "content-length": str(len(data))}
    return StreamingResponse(half(), headers=declared)


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


def main() -> None:
    parser = argparse.ArgumentParser(description="MeetingBaaS + Gladia simulator")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--ingest-url", default="http://127.0.0.1:8000")
    parser.add_argument("--svix-secret", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--gladia-api-key", required=True)
    args = parser.parse_args()
    configure_logging("simulator", "INFO", "console")
    simulator = ProviderSimulator(
        SimulatorConfig(
            ingest_url=args.ingest_url,
            svix_secret=args.svix_secret,
            api_key=args.api_key,
            gladia_api_key=args.gladia_api_key,
            port=args.port,
        )
    )

    async def run() -> None:
        await simulator.start()
        log.info("simulator.started", url=simulator.base_url)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
