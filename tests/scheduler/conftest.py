"""What the scheduler's tests share: calendar meetings, and a MeetingBaaS to deploy bots on."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from notetaker.devstack.simulator import ProviderSimulator
from tests.conftest import quiet_simulator


async def add_meeting(db: asyncpg.Pool, starts_in: timedelta, **columns: object) -> uuid.UUID:
    """A calendar row as the product writes it (a notetaker meeting, no bot yet); its id."""
    values = {
        "org_id": uuid.uuid4(),
        "owner_user_id": uuid.uuid4(),
        "start_time": datetime.now(UTC) + starts_in,
        "meeting_url": "https://meet.google.com/x",
        "source": "notetaker",
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    meeting_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO meetings ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608
        *values.values(),
    )
    return meeting_id


def meeting_url() -> str:
    """A Google Meet URL no other meeting has."""
    code = secrets.token_hex(5)
    return f"https://meet.google.com/{code[:3]}-{code[3:7]}-{code[7:]}"


@pytest.fixture
async def meetingbaas() -> AsyncIterator[ProviderSimulator]:
    """The simulator's MeetingBaaS API; its bots stay in their meetings (no webhooks: nobody
    listens), and serve a few bytes, not a made-up video."""
    async with quiet_simulator() as simulator:
        yield simulator
