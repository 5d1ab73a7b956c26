"""What the scheduler's tests share: calendar meetings, a MeetingBaaS to deploy bots on, and one
round of the poller of overdue Gladia jobs against a Gladia the test plays."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from notetaker.common.kafka import EventPublisher
from notetaker.devstack.simulator import ProviderSimulator
from notetaker.scheduler.transcriptions import poll_overdue_jobs
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


async def poll_gladia(
    db: asyncpg.Pool,
    publisher: EventPublisher,
    gladia: Callable[[httpx.Request], httpx.Response],
) -> int:
    """One round of the poller of overdue Gladia jobs (overdue after a minute), against a Gladia
    that answers every request with `gladia`; how many finished jobs it announced."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(gladia)) as http:
        return await poll_overdue_jobs(
            db,
            http,
            publisher,
            api_url="https://gladia.example",
            api_key=SecretStr("gladia-api-key-of-ours"),
            overdue_seconds=60,
            every_seconds=60,
        )
