"""Taking a pooled connection waits a bounded time: with every connection held, a query fails
with PoolExhausted (an OSError, so services answer 503 / retry) instead of waiting for ever."""

from __future__ import annotations

import asyncio

import pytest

from notetaker.common.db import PoolExhausted, create_pool
from notetaker.devstack.stack import Stack


async def test_a_pool_with_every_connection_held_gives_up_after_its_timeout(stack: Stack) -> None:
    settings = stack.settings(database_pool_max=1, database_acquire_timeout_seconds=0.5)
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as held:
            assert await held.fetchval("SELECT 1") == 1
            with pytest.raises(PoolExhausted, match="NOTETAKER_DATABASE_ACQUIRE_TIMEOUT_SECONDS"):
                # The deadline only guards the test: the pool's own 0.5 s must end it first.
                await asyncio.wait_for(pool.fetchval("SELECT 2"), 30)
            with pytest.raises(PoolExhausted):
                await asyncio.wait_for(pool.acquire(), 30)
        assert await pool.fetchval("SELECT 3") == 3  # free again once released
    finally:
        await pool.close()


async def test_json_columns_decode_through_the_pool(stack: Stack) -> None:
    pool = await create_pool(stack.settings())
    try:
        assert await pool.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}
    finally:
        await pool.close()
