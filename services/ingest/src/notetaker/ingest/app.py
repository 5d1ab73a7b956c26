"""The ingest app: FastAPI wired to Kafka (publisher) and PostgreSQL (delivery dedup).

The service starts and answers even while Kafka is down: readiness fails and webhooks get 503
(so the provider retries) until the producer connects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notetaker.common.db import create_pool
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.metrics import metrics_endpoint
from notetaker.common.sealing import SourceUrlCipher
from notetaker.ingest import receipts
from notetaker.ingest.handlers import router
from notetaker.ingest.problems import REJECTED, Problem, documented
from notetaker.ingest.settings import IngestSettings

log = get_logger(__name__)
access_log = get_logger("notetaker.ingest.access")


class Publisher:
    """The Kafka producer, (re)connected in the background so the app never fails to start."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._publisher: EventPublisher | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        """Connect to Kafka, waiting out an outage (`EventPublisher.start`: backoff up to 5 s,
        no bound); until then webhooks are answered 503."""
        candidate = EventPublisher(self.settings)
        await candidate.start()
        self._publisher = candidate
        log.info("kafka.connected")

    def current(self) -> EventPublisher:
        if self._publisher is None:
            raise Problem(503, "kafka_unavailable", "Kafka is unavailable, retry later")
        return self._publisher

    async def reachable(self) -> bool:
        if self._publisher is None:
            return False
        try:
            await asyncio.wait_for(self._publisher.producer.client.fetch_all_metadata(), 2)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._publisher is not None:
            await self._publisher.stop()


class AccessLog:
    """One structured line per webhook request (a plain ASGI middleware: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state", {})
            access_log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                delivery_id=state.get("delivery_id"),
                bot_id=state.get("bot_id"),
                outcome=state.get("outcome"),
            )


def create_app(settings: IngestSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.publisher = Publisher(settings)
        app.state.publisher.start()
        app.state.pool = await create_pool(settings)
        app.state.cipher = (
            SourceUrlCipher(settings.source_url_keys) if settings.source_url_keys else None
        )
        if app.state.cipher is None:
            log.warning("ingest.bodies_not_kept", hint="set NOTETAKER_SOURCE_URL_KEYS")
        log.info("ingest.started", port=settings.http_port)
        try:
            yield
        finally:
            # uvicorn has drained in-flight requests by now; close the producer last.
            await app.state.pool.close()
            await app.state.publisher.stop()
            log.info("ingest.stopped")

    app = FastAPI(
        title="notetaker ingest",
        summary="Receives MeetingBaaS and Gladia webhooks and turns them into Kafka events.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(router)

    app.add_middleware(AccessLog)

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        provider = request.url.path.rsplit("/", 1)[-1]
        REJECTED.labels(provider, exc.reason).inc()
        request.state.outcome = exc.reason
        if request.url.path.startswith("/webhooks/") and hasattr(app.state, "pool"):
            state = request.state
            body = getattr(state, "body", None)
            await receipts.record(
                app.state.pool,
                provider=provider,
                delivery_id=getattr(state, "delivery_id", None),
                bot_id=receipts.refused_bot(body, getattr(state, "bot_id", None)),
                event_type=getattr(state, "event_type", None)
                or (receipts.claimed_event(body) if body else None),
                status=exc.status,
                outcome=f"refused: {exc.reason}",
            )
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10])
        return await problem(request, Problem(422, "invalid_request", "Request is invalid", detail))

    @app.exception_handler(KafkaError)
    @app.exception_handler(TimeoutError)
    async def kafka_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("webhook.kafka_unavailable", error=repr(exc), path=request.url.path)
        return await problem(
            request, Problem(503, "kafka_unavailable", "Kafka is unavailable, retry later")
        )

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(OSError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("webhook.database_unavailable", error=repr(exc), path=request.url.path)
        return await problem(
            request, Problem(503, "database_unavailable", "Database is unavailable, retry later")
        )

    @app.get("/healthz", tags=["probes"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="Readiness: Kafka answers",
        responses=documented(503),
    )
    async def readyz(request: Request) -> JSONResponse:
        if not await request.app.state.publisher.reachable():
            return Problem(503, "kafka_unavailable", "Kafka is unreachable").response("/readyz")
        return JSONResponse({"ready": True})

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    return app
