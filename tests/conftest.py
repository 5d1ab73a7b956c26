"""Stack fixtures: the embedded stack (or testcontainers when Docker answers), started once.

Tests that need the stack ask for `stack`; the services and the provider simulator are started
by the e2e fixtures in tests/e2e/conftest.py.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest

from notetaker.common.logs import configure_logging
from notetaker.common.s3 import S3Client, s3_client
from notetaker.devstack.stack import Stack, docker_available, start_stack

T = TypeVar("T")

pytest_plugins = ["tests.leaks"]


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[Stack]:
    configure_logging("tests", "WARNING", "console")
    running = await start_stack(containers=docker_available())
    yield running
    running.stop()


@pytest.fixture(scope="session")
async def db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def s3(stack: Stack) -> AsyncIterator[S3Client]:
    async with s3_client(stack.settings()) as client:
        yield client


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def promtool_path() -> str:
    """Debian's promtool (`make tools` installs it); its absence fails the test, never skips it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed. Install Debian's prometheus package:"
            " `sudo apt-get update && sudo apt-get install -y prometheus` (or run `make tools`)."
        )
    return path
