"""The whole pipeline for end-to-end tests: five service processes plus the provider simulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from notetaker.common.envelope import Envelope, from_message
from notetaker.devstack.pipeline import Pipeline, start_pipeline
from notetaker.devstack.stack import Stack
from tests.conftest import records_up_to_marker


# Package scope: the pipeline's consumers stop before other packages start their own workers.
@pytest.fixture(scope="package")
async def pipeline(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    running = await start_pipeline(
        stack,
        Path(tmp_path_factory.mktemp("services")),
        per_service_env={
            # A join effect that keeps failing (e.g. a Fathom bot) is dead-lettered quickly here.
            "transcript_sync": {"NOTETAKER_EFFECT_ATTEMPTS": "3"},
            "scheduler": {
                "NOTETAKER_GLADIA_POLL_AFTER_SECONDS": "2",
                "NOTETAKER_GLADIA_POLL_EVERY_SECONDS": "1",
            },
        },
    )
    yield running
    await running.stop()


@dataclass(frozen=True)
class Meeting:
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    bot_id: str


async def meeting_with_bot(db: asyncpg.Pool, bot_id: str) -> Meeting:
    """A calendar meeting whose bot the scheduler deployed: the meetings and recordings rows."""
    org, user = uuid.uuid4(), uuid.uuid4()
    meeting_id = await db.fetchval(
        "INSERT INTO meetings (org_id, owner_user_id, title, start_time, meeting_url, source,"
        " bot_id) VALUES ($1, $2, 'e2e', $3, 'https://meet.google.com/x', 'notetaker', $4)"
        " RETURNING id",
        org,
        user,
        datetime.now(UTC),
        bot_id,
    )
    await db.execute(
        "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id) VALUES ($1, $2, $3, $4)",
        org,
        user,
        meeting_id,
        bot_id,
    )
    return Meeting(meeting_id, org, user, bot_id)


async def events_for(stack: Stack, topic: str, bot_id: str) -> list[Envelope]:
    """Every event about `bot_id` on `topic` published before the call, in partition order.

    Read up to an end marker (`records_up_to_marker`), so the list is complete: `== []` proves
    nothing was published, and a topic that cannot be read raises AssertionError instead."""
    records = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, topic, bot_id
    )
    return [from_message(record.headers, record.key, record.value) for record in records]


@dataclass(frozen=True)
class Stored:
    """The pipeline after a meeting went through it: the meeting's final row."""

    pipeline: Pipeline
    row: asyncpg.Record


@pytest.fixture(scope="package")
async def one_stored_meeting(pipeline: Pipeline, db: asyncpg.Pool) -> Stored:
    """A meeting taken through the pipeline (recording, thumbnail and transcript stored), so the
    labelled series have samples; shared by the tests that read the services' metrics."""
    from tests.e2e.test_pipeline import completed_meeting  # here: it imports this module

    _, row = await completed_meeting(pipeline, db, transcription=True)
    return Stored(pipeline, row)


@pytest.fixture
def after_one_meeting(one_stored_meeting: Stored) -> Pipeline:
    return one_stored_meeting.pipeline


async def post_v1_webhook(pipeline: Pipeline, body: str | bytes, timeout: float) -> httpx.Response:
    """A MeetingBaaS v1 webhook (authenticated by its API key) to the pipeline's ingest; its
    answer."""
    headers = {
        "content-type": "application/json",
        "x-meeting-baas-api-key": pipeline.keys["api_key"],
    }
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await http.post(
            f"{pipeline.ingest_url}/webhooks/meetingbaas", content=body, headers=headers
        )
