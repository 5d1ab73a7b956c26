"""Every documented provider example goes through the running ingest endpoint and produces the
events the table beside the samples says (tests/fixtures/providers/README.md, "Every documented
example"): the answer names them, and Kafka holds exactly one record of each."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from notetaker.devstack.stack import Stack
from tests.fixtures import PROVIDER_SAMPLES
from tests.ingest.conftest import Ingest, bot_with_meeting, gladia_job, kafka_records, post

# Samples that are no webhook: requests we send and the providers' answers to them.
NOT_WEBHOOKS = re.compile(r"\.(request|response)\.json$")


@dataclass(frozen=True)
class Example:
    sample: str
    source: str
    events: tuple[str, ...]


def documented_examples() -> list[Example]:
    readme = (PROVIDER_SAMPLES / "README.md").read_text()
    section = readme.split("## Every documented example", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    examples = []
    for row in rows:
        sample, source, events = (cell.strip() for cell in row.strip("|").split(" | "))
        listed = () if events == "none" else tuple(e.strip() for e in events.split(","))
        examples.append(Example(sample.strip("`"), source, listed))
    return examples


EXAMPLES = documented_examples()


def test_every_webhook_sample_has_a_row_and_every_row_a_sample_and_a_source() -> None:
    on_disk = {
        str(path.relative_to(PROVIDER_SAMPLES))
        for path in PROVIDER_SAMPLES.glob("*/*.json")
        if not NOT_WEBHOOKS.search(path.name)
    }
    assert sorted(e.sample for e in EXAMPLES) == sorted(on_disk)
    assert all(e.source for e in EXAMPLES)
    assert len(EXAMPLES) == len({e.sample for e in EXAMPLES})


def _body(sample: str, bot_id: str) -> str:
    text = (PROVIDER_SAMPLES / sample).read_text().replace("127.0.0.1:PORT", "127.0.0.1:8080")
    data: dict[str, Any] = json.loads(text)
    if "bot_id" in data.get("data", {}):
        data["data"]["bot_id"] = bot_id
    return json.dumps(data)


async def _deliver(ingest: Ingest, db: asyncpg.Pool, sample: str, body: str, bot_id: str) -> Any:
    name = sample.split("/", 1)[1]
    if sample.startswith("gladia/"):
        request_id = await gladia_job(db, bot_id)
        return await post(ingest.gladia_url(request_id), body, {"content-type": "application/json"})
    if name.startswith("v1-"):
        headers = {"content-type": "application/json", "x-meeting-baas-api-key": ingest.api_key}
    elif name.startswith("v2-callback."):
        query = "SELECT meeting_id FROM recordings WHERE bot_id = $1"
        meeting_id = await db.fetchval(query, bot_id)
        headers = {
            "content-type": "application/json",
            "x-mb-secret": ingest.callback_secret(meeting_id),
        }
    else:
        headers = ingest.signed(body)
    return await post(f"{ingest.url}/webhooks/meetingbaas", body, headers)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.sample for e in EXAMPLES])
async def test_each_documented_example_produces_the_events_its_row_names(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack, example: Example
) -> None:
    bot_id, _ = await bot_with_meeting(db)
    body = _body(example.sample, bot_id)
    answer = await _deliver(ingest, db, example.sample, body, bot_id)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "published" if example.events else "ignored",
        "events": list(example.events),
    }
    for topic in example.events:
        (record,) = await kafka_records(stack, topic, bot_id)
        assert record["headers"]["ce_type"] == topic
        assert record["data"]["bot_id"] == bot_id


async def test_a_gladia_error_callback_keeps_its_reason_on_the_job(
    ingest: Ingest, db: asyncpg.Pool
) -> None:
    """`transcription.error` publishes nothing, but why the job failed is kept on its row (and
    the same again for a redelivery)."""
    bot_id, _ = await bot_with_meeting(db)
    sample = "gladia/v2-callback.transcription.error.json"
    body = _body(sample, bot_id)
    request_id = await gladia_job(db, bot_id)
    for _ in range(2):
        answer = await post(
            ingest.gladia_url(request_id), body, {"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
    row = await db.fetchrow(
        "SELECT error_code, error_message FROM transcription_jobs WHERE request_id = $1",
        request_id,
    )
    assert (row["error_code"], row["error_message"]) == ("422", "audio_url could not be downloaded")


async def test_each_v1_retranscription_notice_is_published_though_the_bodies_are_alike(
    ingest: Ingest, db: asyncpg.Pool, stack: Stack
) -> None:
    """v1 gives no delivery id and the notice names only the bot: a second retranscription is
    not taken for a retry of the first."""
    bot_id, _ = await bot_with_meeting(db)
    body = _body("meetingbaas/v1-transcription_complete.json", bot_id)
    for _ in range(2):
        answer = await _deliver(
            ingest, db, "meetingbaas/v1-transcription_complete.json", body, bot_id
        )
        assert answer.json() == {"status": "published", "events": ["transcript.ready"]}
    records = await kafka_records(stack, "transcript.ready", bot_id)
    assert len({r["data"]["revision"] for r in records}) == 2
    assert len({r["headers"]["ce_id"] for r in records}) == 2  # two facts, two CloudEvent ids
