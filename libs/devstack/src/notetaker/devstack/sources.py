"""A recording source for tests: serves bytes over HTTP, honestly or with injected faults.

Faults a provider URL shows in the wild: an error status (expired: 403, gone: 404), a body shorter
than its Content-Length (connection cut), a slow trickle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from notetaker.devstack.stack import free_port


@dataclass
class Fault:
    status: int = 200
    truncate_at: int | None = None  # stop sending after this many bytes
    delay_per_chunk: float = 0.0


@dataclass
class RecordingSource:
    """Serves `files[name]` at /files/{name}; `faults[name]` changes how."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    chunk_size: int = 256 * 1024
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    async def _serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.requests.append(name)
        if name not in self.files:
            return Response(status_code=404)
        fault = self.faults.get(name, Fault())
        if fault.status != 200:
            return Response(b"<Error><Code>AccessDenied</Code></Error>", status_code=fault.status)
        data = self.files[name]

        async def body() -> AsyncIterator[bytes]:
            limit = len(data) if fault.truncate_at is None else fault.truncate_at
            for start in range(0, limit, self.chunk_size):
                if fault.delay_per_chunk:
                    await asyncio.sleep(fault.delay_per_chunk)
                yield data[start : min(limit, start + self.chunk_size)]

        return StreamingResponse(
            body(),
            headers={"content-length": str(len(data)), "content-type": "video/mp4"},
        )

    async def start(self) -> None:
        app = Starlette(routes=[Route("/files/{name}", self._serve)])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
