"""Asking Gladia for a transcript, against the real database and a model of Gladia's API (an
httpx MockTransport that records every request): the job's row, with our request id and the
token's expiry, exists before Gladia is asked; the callback URL names the request and its expiry
with a token minted for both under the first key; Gladia's job id is stored once it answers, and
one that is not a plain id is refused. A job id goes into Gladia's API path only when plain."""

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
from notetaker.transcript_sync.app import Join, Resources
from notetaker.transcript_sync.join import RequestTranscription
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.transcript_sync.transcripts import TranscriptUnavailable, resolve

KEY, OLD_KEY = "callback-key-that-signs", "callback-key-retiring"
GLADIA_KEY = "gladia-api-key-of-ours"
LIFETIME = 3600


@dataclass
class Gladia:
    """Gladia's pre-recorded API: a job id per POST (`answers`, in order), each request kept
    with the job row the database held when the POST arrived."""

    db: asyncpg.Pool
    answers: list[httpx.Response] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    rows_at_submit: list[dict[str, Any] | None] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            callback = httpx.URL(json.loads(request.content)["callback_config"]["url"])
            row = await self.db.fetchrow(
                "SELECT * FROM transcription_jobs WHERE request_id = $1",
                uuid.UUID(callback.params["request_id"]),
            )
            self.rows_at_submit.append(dict(row) if row is not None else None)
            return self.answers.pop(0)
        return httpx.Response(200, json={"result": {"transcription": {"utterances": []}}})


class PresigningS3:
    async def generate_presigned_url(
        self, operation: str, Params: dict[str, str], ExpiresIn: int
    ) -> str:
        return f"https://s3.example/{Params['Bucket']}/{Params['Key']}?X-Amz-Signature=s"


@pytest.fixture
async def gladia(db: asyncpg.Pool) -> AsyncIterator[tuple[Join, Gladia]]:
    settings = TranscriptSyncSettings(
        gladia_api_url="https://gladia.example",
        gladia_api_key=SecretStr(GLADIA_KEY),
        gladia_callback_keys=[SecretStr(KEY), SecretStr(OLD_KEY)],
        gladia_callback_token_seconds=LIFETIME,
        ingest_public_url="https://ingest.example",
    )
    api = Gladia(db)
    resources = Resources(settings)
    resources.pool = db
    resources.http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    try:
        yield Join(settings, resources), api
    finally:
        await resources.http.aclose()


async def request_transcript(join: Join, bot_id: str) -> None:
    effect = RequestTranscription("recordings", f"{bot_id}/audio.flac")
    await join._request_transcription(bot_id, effect, cast(Any, PresigningS3()))


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


async def test_a_new_request_for_the_bot_replaces_its_row_and_the_old_request_id(
    gladia: tuple[Join, Gladia], db: asyncpg.Pool
) -> None:
    join, api = gladia
    bot_id = str(uuid.uuid4())
    api.answers += [created("first-job"), created("second-job")]
    await request_transcript(join, bot_id)
    first = await job_row(db, bot_id)
    await request_transcript(join, bot_id)
    second = await job_row(db, bot_id)
    assert second["request_id"] != first["request_id"]
    assert second["job_id"] == "second-job"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM transcription_jobs WHERE request_id = $1", first["request_id"]
        )
        == 0
    )


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
