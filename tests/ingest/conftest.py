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
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from tests.fixtures import PROVIDER_SAMPLES


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Ingest:
    url: str
    old_secret: str
    new_secret: str
    callback_secret: str
    api_key: str
    gladia_key: str
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

    def gladia_url(self, bot_id: str) -> str:
        token = callback_tokens.mint(self.gladia_key, bot_id)
        return f"{self.url}/webhooks/gladia?bot_id={bot_id}&token={token}"


def ingest_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "NOTETAKER_LOG_FORMAT": "json", **stack.env(), **extra}


@pytest.fixture(scope="session")
def ingest(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    old, new = whsec(), whsec()
    port = free_port()
    values = {
        "old_secret": old,
        "new_secret": new,
        "callback_secret": secrets.token_urlsafe(16),
        "api_key": secrets.token_urlsafe(16),
        "gladia_key": secrets.token_urlsafe(16),
        "max_body": 65_536,
    }
    env = ingest_env(
        stack,
        NOTETAKER_HTTP_PORT=str(port),
        NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS=f"{old},{new}",
        NOTETAKER_MEETINGBAAS_CALLBACK_SECRETS=str(values["callback_secret"]),
        NOTETAKER_MEETINGBAAS_API_KEYS=str(values["api_key"]),
        NOTETAKER_GLADIA_CALLBACK_KEYS=str(values["gladia_key"]),
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


def fixture_body(name: str, bot_id: str) -> str:
    """A provider sample with its placeholders (port, bot id) filled in."""
    data: dict[str, Any] = json.loads(
        (PROVIDER_SAMPLES / name).read_text().replace("127.0.0.1:PORT", "127.0.0.1:8080")
    )
    if "data" in data:
        data["data"]["bot_id"] = bot_id
    return json.dumps(data)


def _read(bootstrap: str, topic: str, key: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found, done = [], {p for p in partitions if ends[p] == 0}
        deadline = time.monotonic() + 20
        while len(done) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            offset, partition, value = message.offset(), message.partition(), message.value()
            assert offset is not None
            assert partition is not None
            if offset + 1 >= ends[partition]:
                done.add(partition)
            if message.key() == key.encode():
                assert value is not None
                headers = message.headers() or []
                pairs = headers.items() if isinstance(headers, dict) else headers
                found.append(
                    {
                        "key": key,
                        "headers": {k: v.decode() if isinstance(v, bytes) else v for k, v in pairs},
                        "data": json.loads(value),
                        "partition": partition,
                    }
                )
        return found
    finally:
        consumer.close()


async def kafka_records(stack: Stack, topic: str, key: str) -> list[dict[str, Any]]:
    """Records on `topic` keyed `key`, read with confluent-kafka (librdkafka), not our code."""
    return await asyncio.to_thread(_read, stack.kafka_bootstrap_servers, topic, key)


async def post(url: str, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=body, headers=headers)
