"""Webhook dedup, in process: each provider delivery is published once, and a delivery whose
events Kafka did not take is not remembered, so the provider's retry goes through.

`publish_once` talks to PostgreSQL through `FakeDeliveries`, a model of `webhook_deliveries`
(primary key: provider and delivery id; a transaction rolls back on error) that knows exactly
the statements ingest sends, keywords and unquoted names read case-insensitively as PostgreSQL
reads them, and refuses anything else. tests/ingest/test_webhooks_http.py runs the real thing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

from notetaker.common.events import BotStatusChanged, Event, RecordingFailed
from notetaker.common.kafka import EventPublisher
from notetaker.ingest.deliveries import KEEP_BODY, KeptBody, media_deleted_of, publish_once

_LITERAL = re.compile(r"('(?:[^']|'')*')")


def normalized(sql: str) -> str:
    parts = _LITERAL.split(sql)
    return "".join(p if i % 2 else " ".join(p.lower().split()) for i, p in enumerate(parts))


INSERT_DELIVERIES = normalized(
    "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id, outcome)"
    " SELECT $1, d, $3, $4, $5 FROM unnest($2::text[]) AS d"
    " ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING delivery_id"
)
KEEP = normalized(KEEP_BODY)
MEDIA_DELETED = normalized("SELECT media_deleted_at IS NOT NULL FROM recordings WHERE bot_id = $1")


class Unknown(Exception):
    """A statement the model does not know: PostgreSQL would not run it either."""


@dataclass
class FakeDeliveries:
    rows: dict[tuple[str, str], tuple[str, str | None, str]] = field(default_factory=dict)
    bots: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)  # bots whose media was deleted
    # webhook_bodies: (provider, delivery id) -> (bot id, event type, headers, sealed, size)
    bodies: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeDeliveries]:
        yield self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        saved, saved_bodies = dict(self.rows), dict(self.bodies)
        try:
            yield
        except BaseException:
            self.rows, self.bodies = saved, saved_bodies
            raise

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, str]]:
        if normalized(sql) != INSERT_DELIVERIES:
            raise Unknown(sql)
        provider, ids, event_type, bot_id, outcome = args
        assert isinstance(ids, list)  # asyncpg sends a Python list as text[]
        inserted = []
        for delivery_id in ids:
            if (provider, delivery_id) not in self.rows:
                self.rows[(provider, delivery_id)] = (event_type, bot_id, outcome)
                inserted.append({"delivery_id": delivery_id})
        return inserted

    async def execute(self, sql: str, *args: Any) -> str:
        if normalized(sql) != KEEP:
            raise Unknown(sql)
        provider, delivery_id, bot_id, event_type, headers, sealed, size, _received = args
        assert isinstance(headers, dict)  # the pool's codec encodes jsonb
        assert (provider, delivery_id) not in self.bodies  # primary key
        self.bodies[(provider, delivery_id)] = (bot_id, event_type, headers, sealed, size)
        return "INSERT 0 1"

    async def fetchval(self, sql: str, *args: Any) -> bool | None:
        if normalized(sql) != MEDIA_DELETED:
            raise Unknown(sql)
        (bot_id,) = args
        return (bot_id in self.deleted) if bot_id in self.bots else None


@dataclass
class FakePublisher:
    published: list[list[Event]] = field(default_factory=list)
    hang: bool = False
    error: Exception | None = None
    markers: list[str | None] = field(default_factory=list)  # each batch's replayed_from

    async def publish_all(
        self, events: Sequence[Event], *, replayed_from: str | None = None
    ) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        self.published.append(list(events))
        self.markers.append(replayed_from)


COMPLETED = RecordingFailed(bot_id="bot-1", error_code="X")
STATUS = BotStatusChanged(bot_id="bot-1", status="joining")


async def deliver(
    db: FakeDeliveries,
    publisher: FakePublisher,
    ids: list[str],
    *,
    events: Sequence[Event] = (COMPLETED,),
    provider: str = "meetingbaas",
    outcome: str = "published",
    timeout: float = 5.0,
    kept: KeptBody | None = None,
    replayed_from: str | None = None,
) -> bool:
    return await publish_once(
        cast(asyncpg.Pool, db),
        cast(EventPublisher, publisher),
        provider=provider,
        delivery_ids=ids,
        event_type="bot.failed",
        bot_id="bot-1",
        events=events,
        outcome=outcome,
        timeout=timeout,
        kept=kept,
        replayed_from=replayed_from,
    )


async def test_a_new_delivery_is_published_and_remembered() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    assert await deliver(db, publisher, ["msg_1", "fact:bot.failed:bot-1"]) is True
    assert publisher.published == [[COMPLETED]]
    assert db.rows == {
        ("meetingbaas", "msg_1"): ("bot.failed", "bot-1", "published"),
        ("meetingbaas", "fact:bot.failed:bot-1"): ("bot.failed", "bot-1", "published"),
    }


async def test_the_same_delivery_again_is_a_duplicate_and_publishes_nothing() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["msg_1"])
    assert await deliver(db, publisher, ["msg_1"]) is False
    assert publisher.published == [[COMPLETED]]


async def test_a_final_fact_resent_under_a_new_id_is_a_duplicate_and_its_new_id_forgotten() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["msg_1", "fact:bot.failed:bot-1"])
    assert await deliver(db, publisher, ["msg_2", "fact:bot.failed:bot-1"]) is False
    assert publisher.published == [[COMPLETED]]
    assert ("meetingbaas", "msg_2") not in db.rows  # rolled back with the duplicate


async def test_one_new_id_among_known_ones_is_still_a_duplicate() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["a", "b"])
    assert await deliver(db, publisher, ["b", "c"]) is False
    assert await deliver(db, publisher, ["c", "a"]) is False
    assert sorted(k[1] for k in db.rows) == ["a", "b"]


async def test_the_same_id_from_another_provider_is_another_delivery() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["x"], provider="meetingbaas")
    assert await deliver(db, publisher, ["x"], provider="gladia") is True
    assert len(publisher.published) == 2


async def test_a_delivery_without_events_is_remembered_without_publishing() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    assert await deliver(db, publisher, ["cal_1"], events=[], outcome="ignored") is True
    assert publisher.published == []
    assert db.rows[("meetingbaas", "cal_1")][2] == "ignored"
    assert await deliver(db, publisher, ["cal_1"], events=[]) is False


async def test_events_are_published_together_in_order() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["m"], events=[STATUS, COMPLETED])
    assert publisher.published == [[STATUS, COMPLETED]]


async def test_when_kafka_does_not_answer_in_time_the_delivery_is_forgotten() -> None:
    db, publisher = FakeDeliveries(), FakePublisher(hang=True)
    task = asyncio.ensure_future(deliver(db, publisher, ["msg_1"], timeout=0.05))
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        pytest.fail("ingest waited for Kafka past its publish timeout")
    with pytest.raises(TimeoutError):
        task.result()
    assert db.rows == {}
    publisher.hang = False  # the provider's retry goes through
    assert await deliver(db, publisher, ["msg_1"]) is True
    assert publisher.published == [[COMPLETED]]


async def test_when_kafka_refuses_the_delivery_is_forgotten() -> None:
    db, publisher = FakeDeliveries(), FakePublisher(error=ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await deliver(db, publisher, ["msg_1"])
    assert db.rows == {}


async def test_a_bot_is_known_once_it_has_a_recording_and_says_whether_its_media_is_deleted() -> (
    None
):
    db = FakeDeliveries(bots={"bot-1", "bot-3"}, deleted={"bot-3"})
    assert await media_deleted_of(cast(asyncpg.Pool, db), "bot-1") is False
    assert await media_deleted_of(cast(asyncpg.Pool, db), "bot-2") is None
    assert await media_deleted_of(cast(asyncpg.Pool, db), "bot-3") is True


def body(sealed: bytes = b"sealed-1") -> KeptBody:
    return KeptBody(sealed, 42, datetime.now(UTC), {"svix-id": "msg_1"})


async def test_an_accepted_deliverys_body_is_kept_under_its_own_id_only() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    kept = body()
    assert await deliver(db, publisher, ["msg_1", "fact:bot.failed:bot-1"], kept=kept) is True
    assert db.bodies == {
        ("meetingbaas", "msg_1"): ("bot-1", "bot.failed", {"svix-id": "msg_1"}, b"sealed-1", 42)
    }
    assert publisher.markers == [None]  # an original delivery is no replay


async def test_a_duplicate_keeps_no_second_body_and_a_failed_publish_keeps_none() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["msg_1"], kept=body(b"first"))
    assert await deliver(db, publisher, ["msg_1"], kept=body(b"second")) is False
    assert [v[3] for v in db.bodies.values()] == [b"first"]

    refused = FakePublisher(error=ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await deliver(db, refused, ["msg_2"], kept=body(b"lost"))
    assert ("meetingbaas", "msg_2") not in db.bodies  # rolled back with its delivery
    assert await deliver(db, publisher, ["msg_2"], kept=body(b"retry")) is True
    assert db.bodies[("meetingbaas", "msg_2")][3] == b"retry"


async def test_a_reapply_is_published_with_its_replay_marker() -> None:
    db, publisher = FakeDeliveries(), FakePublisher()
    await deliver(db, publisher, ["reapply:msg_1:1"], replayed_from="webhook:meetingbaas:msg_1")
    assert publisher.published == [[COMPLETED]]
    assert publisher.markers == ["webhook:meetingbaas:msg_1"]
