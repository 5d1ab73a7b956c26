"""Fixtures of the metrics tests, and the admin API in the test's process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from notetaker.metrics import admin
from notetaker.metrics.settings import MetricsSettings
from tests.conftest import OwnDatabase


@pytest.fixture
def own_db(own_database: OwnDatabase) -> asyncpg.Pool:
    """The pool of a database of the test's own (`own_database`)."""
    return own_database.pool


@asynccontextmanager
async def admin_api(db: asyncpg.Pool, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The metrics service's admin API over `db`, in this process, its admin token `token`: a
    client of it (the requests carry no token of their own)."""
    app = Starlette(routes=admin.routes(MetricsSettings(admin_tokens=[SecretStr(token)]), db))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as http:
        yield http
