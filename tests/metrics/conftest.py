"""Fixtures of the metrics tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from notetaker.common.db import migrate
from notetaker.devstack.stack import Stack


@pytest.fixture
async def own_db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A fresh, migrated database on the stack's server, dropped afterwards."""
    name = f"rollup_{uuid.uuid4().hex[:12]}"
    admin: asyncpg.Connection = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(stack.database_url)._replace(path=f"/{name}"))
    await migrate(dsn)
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()
