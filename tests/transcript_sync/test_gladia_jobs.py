"""Asking Gladia for a transcript, against the real database and a model of Gladia's API (an
httpx MockTransport that records every request): the job's row, with our request id and the
token's expiry, exists before Gladia is asked; the callback URL names the request and its expiry
with a token minted for both under the first key; Gladia's job id is stored once it answers, and
one that is not a plain id is refused. A job id goes into Gladia's API path only when plain.

A job is submitted at most once per bot (a recording): a second request finds the bot's row; one
whose job id was never recorded (the answer lost, or the database failing after the POST) asks
Gladia's job list for a job carrying our request id in its custom_metadata before it submits, and
submits under the same request id only when there is none."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from notetaker.common import callback_tokens
from notetaker.common.events import TranscriptReady
from notetaker.common.failures import Kind, classify, retry_after
from notetaker.transcript_sync import meetings
from notetaker.transcript_sync.app import Join, SubmitUnanswered
from notetaker.transcript_sync.join import RequestTranscription
from notetaker.transcript_sync.meetings import MeetingMediaDeleted
from notetaker.transcript_sync.resources import Resources
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.transcript_sync.transcripts import (
    REQUEST_ID_METADATA,
    ProviderAnswered,
    TranscriptUnavailable,
    resolve,
)
from tests.transcript_sync.fakes import (
    FaultyPool,
    Record,
    forget_group,
    once,
    scheduled_meeting,
    uploaded,
    worker,
)

KEY, OLD_KEY = "callback-key-that-signs", "callback-key-retiring"
GLADIA_KEY = "gladia-api-key-of-ours"
LIFETIME = 3600


@dataclass
class Gladia:
    """Gladia's pre-recorded API: `POST /v2/pre-recorded` creates a job (answered by `answers`
    in order, an exception raised as the client's and no job created, a new job id each when none
    is left), `GET /v2/pre-recorded?custom_metadata=`
    lists the jobs whose metadata holds the given pairs, `GET /v2/pre-recorded/{id}` answers a
    result. Every request is kept, each POST with the job row the database held when it came."""

    db: asyncpg.Pool
    answers: list[httpx.Response | Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    rows_at_submit: list[dict[str, Any] | None] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            callback = httpx.URL(body["callback_config"]["url"])
            row = await self.db.fetchrow(
                "SELECT * FROM transcription_jobs WHERE request_id = $1",
                uuid.UUID(callback.params["request_id"]),
            )
            self.rows_at_submit.append(dict(row) if row is not None else None)
            answer = self.answers.pop(0) if self.answers else created(str(uuid.uuid4()))
            if isinstance(answer, Exception):
                raise answer
            if answer.status_code in (200, 201):
                job_id = json.loads(answer.content)["id"]
                self.jobs[str(job_id)] = {
                    "id": job_id,
                    "status": "queued",
                    "created_at": f"2026-01-01T00:00:{len(self.jobs):02d}Z",
                    "custom_metadata": body.get("custom_metadata"),
                }
            return answer
        if request.url.path == "/v2/pre-recorded":
            wanted = json.loads(request.url.params["custom_metadata"])
            items = [
                job
                for job in self.jobs.values()
                if wanted.items() <= (job["custom_metadata"] or {}).items()
            ]
            return httpx.Response(
                200, json={"first": "", "current": "", "next": None, "items": items}
            )
        return httpx.Response(200, json={"result": {"transcription": {"utterances": []}}})

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]

    def lists(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET" and r.url.path == "/v2/pre-recorded"]


class PresigningS3:
    """Presigns, and keeps what is put (Gladia's archived result) in a dict."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    async def generate_presigned_url(
        self, operation: str, Params: dict[str, str], ExpiresIn: int
    ) -> str:
        return f"https://s3.example/{Params['Bucket']}/{Params['Key']}?X-Amz-Signature=s"

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self.objects[(Bucket, Key)] = Body

    async def delete_object(self, *, Bucket: str, Key: str) -> None:
        self.objects.pop((Bucket, Key), None)


GLADIA_SETTINGS: dict[str, Any] = {
    "gladia_api_url": "https://gladia.example",
    "gladia_api_key": SecretStr(GLADIA_KEY),
    "gladia_callback_keys": [SecretStr(KEY), SecretStr(OLD_KEY)],
    "gladia_callback_token_seconds": LIFETIME,
    "ingest_public_url": "https://ingest.example",
}


def gladia_settings() -> TranscriptSyncSettings:
    return TranscriptSyncSettings(**GLADIA_SETTINGS)


@pytest.fixture
async def gladia(db: asyncpg.Pool) -> AsyncIterator[tuple[Join, Gladia]]:
    api = Gladia(db)
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    resources = Resources.given(gladia_settings(), pool=db, http=http, s3=PresigningS3())
    try:
        yield Join(gladia_settings(), resources), api
    finally:
        await http.aclose()


async def request_transcript(join: Join, bot_id: str) -> None:
    effect = RequestTranscription("recordings", f"{bot_id}/audio.flac")
    await join._request_transcription(bot_id, effect)


async def job_row(db: asyncpg.Pool, bot_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM transcription_jobs WHERE bot_id = $1", bot_id)
    assert row is not None
    return dict(row)


def created(job_id: object) -> httpx.Response:
    return httpx.Response(201, json={"id": job_id, "result_url": "https://gladia.example/x"})


async def test_the_row_is_written_before_gladia_is_asked_and_gets_gladias_job_id(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    api.answers.append(created(job_id))
    before = int(time.time())
    await request_transcript(join, bot_id)

    (submitted,) = api.requests
    assert submitted.url == "https://gladia.example/v2/pre-recorded"
    assert submitted.headers["x-gladia-key"] == GLADIA_KEY
    body = json.loads(submitted.content)
    assert body["audio_url"].startswith(f"https://s3.example/recordings/{bot_id}/audio.flac?")
    callback = httpx.URL(body["callback_config"]["url"])
    assert str(callback.copy_with(query=None)) == "https://ingest.example/webhooks/gladia"
    assert set(callback.params) == {"request_id", "expires", "token"}
    request_id, expires = uuid.UUID(callback.params["request_id"]), int(callback.params["expires"])
    assert before + LIFETIME <= expires <= int(time.time()) + LIFETIME
    subject = callback_tokens.gladia_job_subject(str(request_id), expires)
    assert callback.params["token"] == callback_tokens.mint(KEY, subject)  # the first key signs

    # When Gladia was asked, the row already named the request, without Gladia's id ...
    (at_submit,) = api.rows_at_submit
    assert at_submit is not None
    assert (at_submit["bot_id"], at_submit["job_id"]) == (bot_id, None)
    assert int(at_submit["token_expires_at"].timestamp()) == expires
    # ... which it holds once Gladia answered.
    row = await job_row(db, bot_id)
    assert (row["request_id"], row["job_id"], row["status"]) == (request_id, job_id, "requested")
    assert row["provider"] == "gladia"
    assert row["completed_at"] is None


async def test_a_second_request_for_the_bot_submits_nothing(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    await request_transcript(join, bot_id)
    first = await job_row(db, bot_id)
    await request_transcript(join, bot_id)
    assert len(api.posts()) == 1
    assert await job_row(db, bot_id) == first


async def test_a_job_whose_id_was_not_recorded_is_found_not_submitted_again(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    database = FaultyPool(db)
    database.fault = once(
        ConnectionResetError("connection lost"),
        lambda sql: sql.startswith("UPDATE transcription_jobs SET job_id"),
    )
    join.resources.pool = database
    with pytest.raises(ConnectionResetError):
        await request_transcript(join, bot_id)  # Gladia has the job; we lost its id
    (job_id,) = api.jobs
    assert (await job_row(db, bot_id))["job_id"] is None

    await request_transcript(join, bot_id)  # the retry

    assert len(api.posts()) == 1
    (looked_up,) = api.lists()
    row = await job_row(db, bot_id)
    assert json.loads(looked_up.url.params["custom_metadata"]) == {
        REQUEST_ID_METADATA: str(row["request_id"])
    }
    assert looked_up.headers["x-gladia-key"] == GLADIA_KEY
    assert row["job_id"] == job_id


async def test_a_job_gladia_never_created_is_submitted_again_under_the_same_request(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    api.answers.append(httpx.Response(503, headers={"Retry-After": "7"}, text="busy"))
    with pytest.raises(ProviderAnswered) as refused:
        await request_transcript(join, bot_id)
    assert classify(refused.value) is Kind.TRANSIENT
    assert retry_after(refused.value) == 7.0
    first = await job_row(db, bot_id)

    await request_transcript(join, bot_id)

    first_post, second_post = api.posts()
    assert len(api.lists()) == 1  # looked up before submitting again
    request_ids = [
        httpx.URL(json.loads(p.content)["callback_config"]["url"]).params["request_id"]
        for p in (first_post, second_post)
    ]
    assert request_ids == [str(first["request_id"])] * 2
    assert json.loads(second_post.content)["custom_metadata"][REQUEST_ID_METADATA] == str(
        first["request_id"]
    )
    (job_id,) = api.jobs
    row = await job_row(db, bot_id)
    assert (row["request_id"], row["job_id"]) == (first["request_id"], job_id)
    # The token of the second submit is valid from the second submit on.
    callback = httpx.URL(json.loads(second_post.content)["callback_config"]["url"])
    assert int(row["token_expires_at"].timestamp()) == int(callback.params["expires"])


async def test_gladia_refusing_our_key_is_permanent(gladia: tuple[Join, Gladia]) -> None:
    join, api = gladia
    api.answers.append(httpx.Response(401, json={"message": "Invalid API key"}))
    with pytest.raises(ProviderAnswered) as refused:
        await request_transcript(join, str(uuid.uuid4()))
    assert classify(refused.value) is Kind.PERMANENT


async def test_one_gladia_job_per_recording_when_recording_its_id_fails_after_the_post(
    db: asyncpg.Pool,
) -> None:
    """The whole path: an upload without a provider transcript asks Gladia for one; storing the
    job id fails (the database drops the connection right after Gladia answered); the effect is
    tried again once the database answers, finds the job, and submits none."""
    api = Gladia(db)
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    running = worker(db, s3=PresigningS3(), http=http, **GLADIA_SETTINGS)
    running.database.fault = once(
        ConnectionResetError("connection lost"),
        lambda sql: sql.startswith("UPDATE transcription_jobs SET job_id"),
    )
    meeting = await scheduled_meeting(db)
    try:
        assert await running.handle(Record.of(uploaded(meeting, provider_transcript=False)))
    finally:
        await http.aclose()
        await forget_group(db, running.group)

    assert len(api.posts()) == 1
    (job_id,) = api.jobs
    assert (await job_row(db, meeting.bot_id))["job_id"] == job_id
    assert running.table[meeting.bot_id]["gladia_requested"] is True
    assert running.publisher.dead_letters == []


@pytest.mark.parametrize("job_id", ["../v2/pre-recorded", "a/b", "a?x=1", "", None, 42])
async def test_a_job_id_gladia_answers_that_is_not_a_plain_id_is_refused(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool, job_id: object
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    api.answers.append(created(job_id))
    with pytest.raises(TranscriptUnavailable, match="without a plain id"):
        await request_transcript(join, bot_id)
    assert (await job_row(db, bot_id))["job_id"] is None  # never stored, never polled


async def test_a_refused_job_leaves_its_row_without_a_job_id(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    api.answers.append(httpx.Response(401, json={"message": "Invalid API key"}))
    with pytest.raises(TranscriptUnavailable, match="HTTP 401"):
        await request_transcript(join, bot_id)
    assert (await job_row(db, bot_id))["job_id"] is None


@pytest.mark.parametrize("job_id", ["../admin", "..", "a/b", "a?b=1", "job\x00", "%2e%2e"])
async def test_a_transcript_job_id_that_is_not_plain_is_never_sent_to_gladia(
    gladia: tuple[Join, Gladia], job_id: str
) -> None:
    join, api = gladia
    event = TranscriptReady(bot_id="bot-1", provider="gladia", job_id=job_id)
    with pytest.raises(TranscriptUnavailable, match="not a plain id"):
        await resolve(
            join.resources.http,
            cast(Any, None),
            event,
            "https://gladia.example",
            SecretStr(GLADIA_KEY),
        )
    assert api.requests == []


async def test_a_plain_job_id_is_fetched_from_its_own_path_with_our_key(
    gladia: tuple[Join, Gladia],
) -> None:
    join, api = gladia
    event = TranscriptReady(bot_id="bot-1", provider="gladia", job_id="45463597-20b7")
    await resolve(
        join.resources.http, cast(Any, None), event, "https://gladia.example", SecretStr(GLADIA_KEY)
    )
    (fetched,) = api.requests
    assert (fetched.method, str(fetched.url)) == (
        "GET",
        "https://gladia.example/v2/pre-recorded/45463597-20b7",
    )
    assert fetched.headers["x-gladia-key"] == GLADIA_KEY


async def test_a_recording_deleted_between_the_intent_and_the_submit_gets_no_gladia_job(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    """The intent is written with the video; the media is deleted before the effect that submits
    the job runs (a worker slow, an event parked then republished): no job is submitted."""
    join, api = gladia
    meeting = await scheduled_meeting(db)
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)",
        meeting.org_id,
        meeting.user_id,
        meeting.bot_id,
    )
    await meetings.write_video(
        db, "/test", meeting.bot_id, "s3://recordings/v.mp4", None, transcription=join._job_intent()
    )
    assert (await job_row(db, meeting.bot_id))["submitted_at"] is None
    # The deletion's intent (what MediaDeleter._mark writes).
    await db.execute(
        "UPDATE recordings SET media_deleted_at = now() WHERE bot_id = $1", meeting.bot_id
    )
    await db.execute(
        "UPDATE meetings SET media_deleted_at = now() WHERE bot_id = $1", meeting.bot_id
    )

    with pytest.raises(MeetingMediaDeleted):
        await request_transcript(join, meeting.bot_id)

    assert api.requests == []
    assert (await job_row(db, meeting.bot_id))["submitted_at"] is None


async def test_a_submit_that_timed_out_while_gladia_still_creates_the_job_is_not_repeated(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    """The POST times out on our side; Gladia lists the job only a moment later. At most one job
    per recording: while the unanswered submit is younger than the settle time, a retry that does
    not find the job submits nothing (a transient error: tried again later), and once Gladia lists
    it the job is recorded, not submitted again."""
    join, api = gladia
    bot_id = str(uuid.uuid4())
    lagging: list[dict[str, Any]] = []
    model = api.__call__

    async def slow_gladia(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not lagging and not api.jobs:
            await model(request)  # Gladia accepted it ...
            lagging.append(api.jobs.popitem()[1])  # ... but does not list it yet
            raise httpx.ReadTimeout("timed out", request=request)
        return await model(request)

    join.resources.http = httpx.AsyncClient(transport=httpx.MockTransport(slow_gladia))
    try:
        with pytest.raises(httpx.ReadTimeout):
            await request_transcript(join, bot_id)
        with pytest.raises(SubmitUnanswered) as waiting:  # the effect's retry, seconds later
            await request_transcript(join, bot_id)
        assert classify(waiting.value) is Kind.TRANSIENT
        assert len(api.posts()) == 1
        job = lagging.pop()  # Gladia lists the job from now on
        api.jobs[str(job["id"])] = job
        await request_transcript(join, bot_id)
    finally:
        await join.resources.http.aclose()

    assert len(api.posts()) == 1
    row = await job_row(db, bot_id)
    assert (row["job_id"], row["unanswered_at"]) == (str(job["id"]), None)


async def test_a_submit_unanswered_for_the_settle_time_and_never_listed_is_submitted_again(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    """A POST that timed out and never became a job: once the settle time has passed since it
    (the test's clock: the row's `unanswered_at` moved back), the retry submits again."""
    join, api = gladia
    bot_id = str(uuid.uuid4())
    api.answers.append(httpx.ReadTimeout("timed out"))
    with pytest.raises(httpx.ReadTimeout):
        await request_transcript(join, bot_id)
    with pytest.raises(SubmitUnanswered):
        await request_transcript(join, bot_id)
    settle = join.settings.gladia_submit_settle_seconds
    await db.execute(
        "UPDATE transcription_jobs SET unanswered_at = now() - make_interval(secs => $2)"
        " WHERE bot_id = $1",
        bot_id,
        settle + 1,
    )
    await request_transcript(join, bot_id)
    assert len(api.posts()) == 2
    (job_id,) = api.jobs
    assert (await job_row(db, bot_id))["job_id"] == job_id
