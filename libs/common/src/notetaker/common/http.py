"""The small HTTP surface every service has: /healthz, /readyz, /metrics; and serving an app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from notetaker.common.metrics import metrics_endpoint

ReadinessCheck = Callable[[], Awaitable[bool]]


def health_app(
    ready: ReadinessCheck,
    extra_routes: list[Route] | None = None,
    readiness_detail: Mapping[str, object] | None = None,
) -> Starlette:
    """/healthz, /readyz (`{"ready": ...}` and `readiness_detail`), /metrics and `extra_routes`."""

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        ok = await ready()
        body = {"ready": ok, **(readiness_detail or {})}
        return JSONResponse(body, status_code=200 if ok else 503)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *(extra_routes or []),
        ]
    )


def make_server(app: object, port: int, host: str = "0.0.0.0") -> uvicorn.Server:
    """A uvicorn server to run inside the service's own event loop (`await server.serve()`)."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,  # keep our structured logging
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)
