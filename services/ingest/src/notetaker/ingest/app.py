"""The ingest app: FastAPI wired to Kafka (publisher) and PostgreSQL (delivery dedup)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from notetaker.common.db import create_pool
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger
from notetaker.common.metrics import metrics_endpoint
from notetaker.ingest.handlers import router
from notetaker.ingest.problems import REJECTED, Problem
from notetaker.ingest.settings import IngestSettings

log = get_logger(__name__)


def create_app(settings: IngestSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.publisher = EventPublisher(settings)
        await app.state.publisher.start()
        app.state.pool = await create_pool(settings.database_url, settings.database_pool_max)
        log.info("ingest.started", port=settings.http_port)
        try:
            yield
        finally:
            # uvicorn has drained in-flight requests by now; close the producer last.
            await app.state.pool.close()
            await app.state.publisher.stop()

    app = FastAPI(
        title="notetaker ingest",
        summary="Receives MeetingBaaS and Gladia webhooks and turns them into Kafka events.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        provider = request.url.path.rsplit("/", 1)[-1]
        REJECTED.labels(provider, exc.reason).inc()
        if exc.status != 401:
            log.info("webhook.rejected", provider=provider, reason=exc.reason, status=exc.status)
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await problem(
            request, Problem(422, "invalid_request", "Request is invalid", str(exc.errors()))
        )

    @app.exception_handler(KafkaError)
    async def kafka_down(request: Request, exc: KafkaError) -> JSONResponse:
        log.error("webhook.kafka_unavailable", error=repr(exc), path=request.url.path)
        return Problem(503, "kafka_unavailable", "Try again later").response(request.url.path)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        publisher: EventPublisher = request.app.state.publisher
        try:
            await asyncio.wait_for(publisher.producer.partitions_for("recording.completed"), 2)
        except (TimeoutError, KafkaError):
            return JSONResponse({"ready": False, "kafka": "unreachable"}, status_code=503)
        return JSONResponse({"ready": True})

    return app
