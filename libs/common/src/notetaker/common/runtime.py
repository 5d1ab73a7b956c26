"""Running a service process: stop cleanly on SIGTERM/SIGINT, never hide a crashed task, and
start while a dependency is down (wait for it, answering /healthz meanwhile) instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import uvicorn

from notetaker.common.failures import Kind, classify
from notetaker.common.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


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


async def until_reachable(
    dependency: str,
    connect: Callable[[], Awaitable[T]],
    stop: asyncio.Event | None = None,
    *,
    wait_initial: float = 0.2,
    wait_max: float = 5.0,
) -> T | None:
    """`await connect()`, tried again while it fails for an outage (`failures.classify`: Kafka,
    PostgreSQL or S3 unreachable), backing off from `wait_initial` to `wait_max` seconds with
    jitter, without bound. Any other error is raised: a wrong setting does not heal by waiting.

    Returns what `connect` returned, or None once `stop` is set (never None without `stop`;
    cancel the caller instead). Each failed try logs `dependency.unreachable` with the error, so
    an operator sees what the process waits for."""
    delay = wait_initial
    tries = 0
    while True:
        tries += 1
        try:
            result = await connect()
        except Exception as exc:
            if classify(exc) is not Kind.OUTAGE:
                raise
            log.warning(
                "dependency.unreachable",
                dependency=dependency,
                attempt=tries,
                retry_in_seconds=round(delay, 1),
                error=repr(exc)[:300],
            )
        else:
            if tries > 1:
                log.info("dependency.reachable", dependency=dependency, attempts=tries)
            return result
        pause = delay * random.uniform(0.8, 1.2)
        if stop is None:
            await asyncio.sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return None
        delay = min(wait_max, delay * 2)


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await `work`, or cancel it when `stop` is set first: (True, its result) or (False, None)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


@contextlib.asynccontextmanager
async def serving(server: uvicorn.Server) -> AsyncIterator[asyncio.Task[None]]:
    """Serve `server` (the probes first of all: /healthz answers while the process still waits
    for its dependencies) until the block ends, then let it finish its requests."""
    task = asyncio.create_task(server.serve())
    try:
        yield task
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
