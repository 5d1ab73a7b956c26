"""Serving a local ASGI app inside the running event loop (simulator, test sources, proxies)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn


class InLoopServer:
    """uvicorn on 127.0.0.1:`port`, started and stopped from the caller's event loop."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # it failed to start: raise why
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
