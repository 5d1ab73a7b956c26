"""The upload lease's `run` (`services/uploader/.../lease.py`), in process: the work it runs
stops when the attempt is stopped, so nothing of a stopped attempt goes on copying."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

import asyncpg
import pytest

from notetaker.uploader.lease import UploadLease


async def test_stopping_an_attempt_stops_its_work_before_the_lease_is_handed_back() -> None:
    """A revoked partition's drain stops the attempt by cancelling it; the copy it runs must
    stop with it, not go on writing parts beside the next owner of the recording. (The lease is
    long: no renewal, so no database, is needed while the test runs.)"""
    lease = UploadLease(cast(asyncpg.Pool, None), uuid.uuid4(), token=1, seconds=3600)
    copying, stopped = asyncio.Event(), asyncio.Event()

    async def copy() -> None:
        copying.set()
        try:
            await asyncio.Event().wait()  # a copy that would run for ever
        finally:
            stopped.set()

    attempt = asyncio.create_task(lease.run(copy))
    await copying.wait()
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert stopped.is_set()  # stopped by the time `run` has returned, not later
