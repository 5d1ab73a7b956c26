"""While Kafka is unreachable ingest stays up: not ready, and webhooks get 503 so the provider
retries; once Kafka answers, it becomes ready and accepts without a restart. On SIGTERM it
finishes the webhook in flight, published, before it stops."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

from notetaker.common.kafka import ensure_topics
from notetaker.devstack.outage import HeldProxy
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import LocalProcess, Stack, free_port, start_tansu
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

        broker = start_tansu(tmp_path, port=kafka_port)
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


async def test_sigterm_lets_a_webhook_in_flight_finish_and_publish_before_ingest_stops(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    postgres = HeldProxy(database.hostname, database.port)
    await postgres.start()
    port, secret = free_port(), whsec()
    env = ingest_env(
        stack,
        NOTETAKER_HTTP_PORT=str(port),
        NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS=secret,
        NOTETAKER_DATABASE_URL=postgres.url_for(stack.database_url),
    )
    ingest = ServiceProcess("ingest", env, port, tmp_path / "ingest.log")
    ingest.start()
    try:
        await asyncio.to_thread(ingest.wait_ready)
        bot_id = await known_bot(db)
        body = fixture_body("meetingbaas/v2-bot.status_change.json", bot_id)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "svix-id": "msg_drain",
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": Webhook(secret).sign("msg_drain", now, body),
        }

        async with httpx.AsyncClient(timeout=30) as http:
            # One refused webhook first (its receipt is written), so ingest's pool has its
            # connection open (it opens them when first asked) and the webhook held below
            # carries the lookup's query, not a handshake.
            forged = {**headers, "svix-id": "msg_warm", "svix-signature": "v1,Zm9yZ2Vk"}
            first = await http.post(
                f"{ingest.url}/webhooks/meetingbaas", content=body, headers=forged
            )
            assert first.status_code == 401, first.text
            postgres.hold()
            request = asyncio.create_task(
                http.post(f"{ingest.url}/webhooks/meetingbaas", content=body, headers=headers)
            )

            # The handler has authenticated and parsed it, and asks whether it knows the bot.
            async def lookup_waiting() -> bool:
                return b"FROM recordings WHERE bot_id" in postgres.held

            await eventually(lookup_waiting, 15, "the webhook's bot lookup to reach PostgreSQL")
            assert ingest.process is not None
            ingest.process.terminate()

            async def draining() -> bool:  # uvicorn logs this only while a request is unfinished
                return "Waiting for connections to close" in ingest.log_path.read_text()

            await eventually(draining, 10, "ingest to wait, on SIGTERM, for the webhook in flight")
            assert not request.done()  # still held in PostgreSQL: SIGTERM came mid-request
            postgres.release()
            answer = await request
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "published"
        # Exits by itself once drained (uvicorn re-raises the SIGTERM it handled).
        assert await asyncio.to_thread(ingest.process.wait, 15) in (0, -signal.SIGTERM)
        assert len(await kafka_records(stack, "bot.status", bot_id)) == 1
        log = ingest.log_path.read_text()
        assert log.index('"msg_drain"') < log.index('"ingest.stopped"')
    finally:
        ingest.stop()
        await postgres.stop()
