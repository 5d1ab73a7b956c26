"""Running a service process: stop cleanly on SIGTERM/SIGINT, and never hide a crashed task."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence

from notetaker.common.logs import get_logger

log = get_logger(__name__)


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until it returns; SIGTERM or SIGINT sets `stop` (Kubernetes, Ctrl-C)."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


async def until_stopped(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Wait for `stop`, or for a task to end early (then log why, and stop the rest)."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is stopper:
            continue
        error = task.exception()
        log.error("service.task_ended", error=repr(error) if error else "returned early")
        stop.set()
