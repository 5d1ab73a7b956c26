"""A real ingest process for HTTP tests, and a Kafka reader that is not ours (librdkafka)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from tests.conftest import records_up_to_marker
from tests.fixtures import PROVIDER_SAMPLES


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Ingest:
    url: str
    old_secret: str
    new_secret: str
    old_callback_key: str  # ingest holds both MeetingBaaS callback keys: a rotation
    new_callback_key: str
    api_key: str
    old_gladia_key: str  # and both Gladia callback keys
    new_gladia_key: str
    max_body: int
    process: ServiceProcess

    def signed(
        self,
        body: str,
        secret: str | None = None,
        msg_id: str | None = None,
        when: datetime | None = None,
    ) -> dict[str, str]:
        when = when or datetime.now(UTC)
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        return {
            "content-type": "application/json",
            "svix-id": msg_id,
            "svix-timestamp": str(int(when.timestamp())),
            "svix-signature": Webhook(secret or self.new_secret).sign(msg_id, when, body),
        }

    def callback_secret(self, meeting_id: uuid.UUID | str, key: str | None = None) -> str:
        """The x-mb-secret the scheduler registers for a bot of `meeting_id` (new key unless
        told)."""
        subject = callback_tokens.meetingbaas_callback_subject(str(meeting_id))
        return callback_tokens.mint(key or self.new_callback_key, subject)

    def gladia_url(
        self,
        request_id: uuid.UUID | str,
        expires: int | None = None,
        key: str | None = None,
        token: str | None = None,
    ) -> str:
        """The callback URL transcript-sync gives Gladia for a request (an hour, new key)."""
        expires = int(time.time()) + 3600 if expires is None else expires
        subject = callback_tokens.gladia_job_subject(str(request_id), expires)
        token = token or callback_tokens.mint(key or self.new_gladia_key, subject)
        return f"{self.url}/webhooks/gladia?request_id={request_id}&expires={expires}&token={token}"


def ingest_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "NOTETAKER_LOG_FORMAT": "json", **stack.env(), **extra}


@pytest.fixture(scope="session")
def ingest(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    old, new = whsec(), whsec()
    port = free_port()
    values = {
        "old_secret": old,
        "new_secret": new,
        "old_callback_key": secrets.token_urlsafe(16),
        "new_callback_key": secrets.token_urlsafe(16),
        "api_key": secrets.token_urlsafe(16),
        "old_gladia_key": secrets.token_urlsafe(16),
        "new_gladia_key": secrets.token_urlsafe(16),
        "max_body": 65_536,
    }
    env = ingest_env(
        stack,
        NOTETAKER_HTTP_PORT=str(port),
        NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS=f"{old},{new}",
        NOTETAKER_MEETINGBAAS_CALLBACK_KEYS=f"{values['new_callback_key']},{values['old_callback_key']}",
        NOTETAKER_MEETINGBAAS_API_KEYS=str(values["api_key"]),
        NOTETAKER_GLADIA_CALLBACK_KEYS=f"{values['new_gladia_key']},{values['old_gladia_key']}",
        NOTETAKER_MAX_BODY_BYTES=str(values["max_body"]),
    )
    process = ServiceProcess("ingest", env, port, tmp_path_factory.mktemp("ingest") / "ingest.log")
    process.start()
    process.wait_ready()
    yield Ingest(url=process.url, process=process, **values)  # type: ignore[arg-type]
    process.stop()


async def known_bot(db: asyncpg.Pool, bot_id: str | None = None) -> str:
    """A bot the scheduler deployed (it has a recordings row)."""
    bot_id = bot_id or str(uuid.uuid4())
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (bot_id) DO NOTHING",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    return bot_id


async def bot_with_meeting(db: asyncpg.Pool) -> tuple[str, uuid.UUID]:
    """A bot the scheduler deployed for a calendar meeting: (bot id, meeting id)."""
    bot_id = str(uuid.uuid4())
    org, user = uuid.uuid4(), uuid.uuid4()
    meeting_id: uuid.UUID = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, start_time, meeting_url, source, bot_id)"
        " VALUES ($1, $2, now(), 'https://meet.google.com/x', 'notetaker', $3) RETURNING id",
        org,
        user,
        bot_id,
    )
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id) VALUES ($1, $2, $3, $4)",
        org,
        user,
        meeting_id,
        bot_id,
    )
    return bot_id, meeting_id


async def gladia_job(
    db: asyncpg.Pool, bot_id: str | None = None, job_id: str | None = None
) -> uuid.UUID:
    """The row transcript-sync writes before it asks Gladia for a job (`job_id`: after Gladia
    answered); its request id."""
    request_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO transcription_jobs (request_id, bot_id, provider, job_id, token_expires_at)"
        " VALUES ($1, $2, 'gladia', $3, $4)",
        request_id,
        bot_id or await known_bot(db),
        job_id,
        datetime.now(UTC) + timedelta(hours=1),
    )
    return request_id


JSON = {"content-type": "application/json"}


def fixture_body(name: str, bot_id: str) -> str:
    """A provider sample with its placeholders (port, bot id) filled in."""
    data: dict[str, Any] = json.loads(
        (PROVIDER_SAMPLES / name).read_text().replace("127.0.0.1:PORT", "127.0.0.1:8080")
    )
    if "data" in data:
        data["data"]["bot_id"] = bot_id
    return json.dumps(data)


def gladia_body(job_id: str | None = None) -> str:
    """Gladia's callback for a finished job (the provider sample), for `job_id` when given."""
    data = json.loads(fixture_body("gladia/v2-callback.transcription.success.json", ""))
    if job_id is not None:
        data["id"] = job_id
    return json.dumps(data)


# What ingest publishes to: a refused or ignored delivery must leave every one of them untouched.
INGEST_TOPICS = ("bot.status", "recording.completed", "recording.failed", "transcript.ready")


async def kafka_records(
    stack: Stack, topic: str, key: str, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Every record on `topic` keyed `key` published before the call, read with confluent-kafka
    (librdkafka), not our code, up to an end marker (`records_up_to_marker`): the list is
    complete, and a topic that cannot be read raises AssertionError instead of reading as empty."""
    records = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, topic, key, timeout
    )
    return [
        {
            "key": key,
            "headers": {k: v.decode() for k, v in record.headers},
            "data": json.loads(record.value),
            "partition": record.partition,
        }
        for record in records
    ]


async def assert_nothing_published(
    stack: Stack, key: str, topics: tuple[str, ...] = INGEST_TOPICS
) -> None:
    """Proven, not assumed: each topic is read up to an end marker written after the caller's
    request, so "no record" means none was published, not that none turned up in time."""
    for topic in topics:
        records = await kafka_records(stack, topic, key)
        assert records == [], f"{len(records)} record(s) keyed {key!r} on {topic}: {records}"


async def post(url: str, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=body, headers=headers)
