"""The consumer loop against the in-memory broker (no Kafka, no database): order per bot,
backpressure, permanent vs transient errors and outages, parking, dead letters that cannot be
written, and drain on revoke. Each runs in milliseconds."""

from __future__ import annotations

import asyncio
import errno
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from notetaker.common import consumer as consumer_module
from notetaker.common import runtime as runtime_module
from notetaker.common.consumer import EventConsumer
from notetaker.common.envelope import Envelope
from notetaker.common.events import DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER, BotStatusChanged, dlq_topic
from notetaker.common.failures import OutagePolicy, Permanent, RetryPolicy
from notetaker.common.local_broker import LocalBroker, LocalConsumer
from notetaker.common.parking import MemoryParking
from notetaker.common.settings import NotetakerSettings

TOPIC = BotStatusChanged.type
GROUP = "test-group"


def status(bot: str, n: int = 0) -> BotStatusChanged:
    return BotStatusChanged(bot_id=bot, status=f"status-{n}")


@dataclass
class Handler:
    """A handler whose behaviour each test sets: it records what it saw, and can block on a
    gate per bot or fail by a rule."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    done: list[tuple[str, str]] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    fail: Callable[[BotStatusChanged, int], Exception | None] = lambda e, n: None
    tries: dict[str, int] = field(default_factory=dict)
    running: int = 0
    most_running: int = 0

    async def __call__(self, envelope: Envelope) -> None:
        event = envelope.event
        assert isinstance(event, BotStatusChanged)
        key = (event.bot_id, event.status)
        self.seen.append(key)
        self.tries[event.status] = self.tries.get(event.status, 0) + 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(event.bot_id)
            if gate is not None:
                await gate.wait()
            error = self.fail(event, self.tries[event.status])
            if error is not None:
                raise error
            self.done.append(key)
        finally:
            self.running -= 1


@dataclass
class Logged:
    """What the consumer logged: (event, fields), in order (stands in for its structlog logger,
    to read what an operator would)."""

    lines: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _log(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning = error = exception = _log

    def of(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.lines if name == event]


@dataclass
class Harness:
    broker: LocalBroker
    source: LocalConsumer
    parking: MemoryParking
    handler: Handler
    consumer: EventConsumer
    logged: Logged

    def committed(self) -> int | None:
        return self.broker.committed_offset(GROUP, TOPIC)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        for _ in range(4000):
            if condition():
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    logged = Logged()
    monkeypatch.setattr(consumer_module, "log", logged)
    broker = LocalBroker()
    source = broker.consumer(GROUP)
    parking = MemoryParking()
    handler = Handler()
    consumer = EventConsumer(
        NotetakerSettings(),
        GROUP,
        [TOPIC],
        handler,
        broker,
        parking=parking,
        max_in_flight=4,
        retry=RetryPolicy(attempts=3, timeout=5, wait_initial=0.001, wait_max=0.002, wait_jitter=0),
        outage=OutagePolicy(wait_initial=0.001, wait_max=0.002, wait_jitter=0),
        source=source,
        parked_interval_seconds=0.005,
        drain_seconds=5,
    )
    task = asyncio.create_task(consumer.run())
    yield Harness(broker, source, parking, handler, consumer, logged)
    for gate in handler.gates.values():
        gate.set()
    consumer.stop()
    await asyncio.wait_for(task, 10)
    assert {"group": GROUP} in logged.of("consumer.stopped")


async def test_one_bots_events_run_in_order_and_other_bots_run_beside_them(
    harness: Harness,
) -> None:
    harness.handler.gates["a"] = asyncio.Event()
    harness.broker.publish(status("a", 1))  # offset 0, held
    harness.broker.publish(status("a", 2))  # offset 1, must wait for a's first
    harness.broker.publish(status("b", 1))  # offset 2, another bot: runs now
    await harness.until(lambda: ("b", "status-1") in harness.handler.done, "b handled")
    assert ("a", "status-2") not in harness.handler.seen
    assert harness.committed() is None  # offset 0 still running holds back every commit
    harness.handler.gates["a"].set()
    await harness.until(lambda: harness.committed() == 3, "all three committed")
    assert [k for k in harness.handler.done if k[0] == "a"] == [
        ("a", "status-1"),
        ("a", "status-2"),
    ]


async def test_at_most_max_in_flight_run_and_the_partitions_pause_meanwhile(
    harness: Harness,
) -> None:
    for bot in "abcdefgh":
        harness.handler.gates[bot] = asyncio.Event()
        harness.broker.publish(status(bot))
    await harness.until(lambda: harness.handler.running == 4, "four running")
    await asyncio.sleep(0.02)  # room for a fifth to start, if the loop let it
    assert harness.handler.running == 4
    assert harness.source.pauses > 0
    for bot in "ab":  # two slots come free: two more may start, no more
        harness.handler.gates[bot].set()
    await harness.until(lambda: len(harness.handler.done) == 2, "two done")
    await harness.until(lambda: harness.handler.running == 4, "four running again")
    await asyncio.sleep(0.02)
    assert harness.handler.running == 4
    for gate in harness.handler.gates.values():
        gate.set()
    await harness.until(lambda: harness.committed() == 8, "all eight committed")
    assert harness.handler.most_running == 4
    assert len(harness.handler.done) == 8


async def test_a_permanent_error_is_dead_lettered_at_once_with_its_error_and_headers(
    harness: Harness,
) -> None:
    harness.handler.fail = lambda e, n: Permanent("no such meeting") if e.bot_id == "a" else None
    original = harness.broker.publish(status("a"))
    harness.broker.publish(status("b"))
    await harness.until(lambda: harness.committed() == 2, "both committed")
    assert harness.handler.tries["status-0"] == 2  # a once, b once: no retry of a
    [dead] = harness.broker.records(dlq_topic(TOPIC))
    headers = dict(dead.headers)
    assert b"no such meeting" in headers[DLQ_ERROR_HEADER]
    assert headers[DLQ_OFFSET_HEADER] == b"0"
    assert dead.value == original.value
    assert dead.key == original.key
    assert set(original.headers) <= set(dead.headers)
    assert harness.broker.dead_letter_groups == [GROUP]
    assert harness.parking.slots == {}
    [refused] = harness.logged.of("consumer.event_refused")
    assert "no such meeting" in refused["error"]
    assert (refused["topic"], refused["partition"], refused["offset"]) == (TOPIC, 0, 0)
    assert refused["bot_id"] == "a"
    assert refused["event_id"]


async def test_an_unparseable_record_is_dead_lettered(harness: Harness) -> None:
    harness.broker.produce(TOPIC, b"{not json", b"a", [("ce_type", b"bot.status")])
    await harness.until(lambda: harness.committed() == 1, "committed")
    [dead] = harness.broker.records(dlq_topic(TOPIC))
    assert dict(dead.headers)[DLQ_ERROR_HEADER].startswith(b"unparseable")
    assert dead.key == b"a"
    assert harness.handler.seen == []
    [unparseable] = harness.logged.of("consumer.unparseable_event")
    assert dict(dead.headers)[DLQ_ERROR_HEADER].decode() == f"unparseable: {unparseable['error']}"
    assert (unparseable["topic"], unparseable["partition"], unparseable["offset"]) == (TOPIC, 0, 0)


async def test_a_transient_error_is_retried_in_place_and_then_handled(harness: Harness) -> None:
    harness.handler.fail = lambda e, n: RuntimeError("provider 502") if n < 3 else None
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.committed() == 1, "committed")
    assert harness.handler.tries["status-0"] == 3
    assert harness.handler.done == [("a", "status-0")]
    assert harness.broker.records(dlq_topic(TOPIC)) == []
    assert harness.parking.slots == {}


async def test_an_event_still_failing_is_parked_the_partition_moves_on_and_it_is_retried(
    harness: Harness,
) -> None:
    handled = sample("notetaker_consumer_events_handled_total") or 0
    broken = True
    harness.handler.fail = lambda e, n: RuntimeError("boom") if e.bot_id == "a" and broken else None
    harness.broker.publish(status("a", 1))
    harness.broker.publish(status("b", 1))
    await harness.until(lambda: harness.committed() == 2, "both committed")
    assert harness.handler.done == [("b", "status-1")]
    [slot] = harness.parking.slots.values()
    first = harness.broker.records(TOPIC)[0]
    assert (slot.event.topic, slot.event.partition, slot.event.offset) == (TOPIC, 0, 0)
    assert (slot.event.key, slot.event.value) == (first.key, first.value)
    assert slot.event.headers == list(first.headers)
    assert "boom" in slot.event.error
    [parked_line] = harness.logged.of("consumer.event_parked")
    assert "boom" in parked_line["error"]
    assert parked_line["bot_id"] == "a"
    assert harness.broker.records(dlq_topic(TOPIC)) == []
    parked = "notetaker_consumer_parked_events"
    await harness.until(lambda: sample(parked) == 1, "the parked gauge at 1")

    broken = False
    harness.parking.advance(3600)  # its next attempt is due
    await harness.until(lambda: harness.parking.slots == {}, "the parked event handled")
    assert ("a", "status-1") in harness.handler.done
    assert sample("notetaker_consumer_events_handled_total") == handled + 2
    assert harness.logged.of("consumer.parked_event_handled") == [
        {"attempts": 1, "topic": TOPIC, "offset": 0}
    ]
    await harness.until(lambda: sample(parked) == 0, "the parked gauge back at 0")


async def test_a_parked_event_that_turns_out_permanent_is_dead_lettered(harness: Harness) -> None:
    harness.handler.fail = lambda e, n: RuntimeError("boom") if n <= 3 else Permanent("gone")
    harness.broker.publish(status("a"))
    await harness.until(lambda: len(harness.parking.slots) == 1, "parked")
    harness.parking.advance(3600)
    await harness.until(lambda: harness.parking.slots == {}, "the parked event settled")
    [dead] = harness.broker.records(dlq_topic(TOPIC))
    original = harness.broker.records(TOPIC)[0]
    assert b"gone" in dict(dead.headers)[DLQ_ERROR_HEADER]
    assert (dead.key, dead.value) == (original.key, original.value)
    assert dict(dead.headers)[DLQ_OFFSET_HEADER] == b"0"
    assert harness.broker.dead_letter_groups == [GROUP]


async def test_an_outage_pauses_everything_reports_not_ready_and_loses_nothing(
    harness: Harness,
) -> None:
    handled = sample("notetaker_consumer_events_handled_total") or 0
    database_down = True
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "PostgreSQL refused the connection")
    harness.handler.fail = lambda e, n: refused if database_down else None
    await harness.until(harness.consumer.is_ready, "ready")
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.consumer.in_outage, "in outage")
    assert not harness.consumer.is_ready()
    harness.broker.publish(status("b"))  # arrives during the outage: not fetched
    await harness.until(lambda: harness.handler.tries.get("status-0", 0) > 20, "many probes")
    assert ("b", "status-0") not in harness.handler.seen
    assert harness.committed() is None

    database_down = False
    await harness.until(lambda: harness.committed() == 2, "both committed")
    assert harness.consumer.is_ready()
    assert sorted(harness.handler.done) == [("a", "status-0"), ("b", "status-0")]
    assert sample("notetaker_consumer_events_handled_total") == handled + 2
    [outage] = harness.logged.of("consumer.outage")
    assert outage["group"] == GROUP
    assert "PostgreSQL refused" in outage["error"]
    assert (outage["topic"], outage["offset"], outage["bot_id"]) == (TOPIC, 0, "a")
    [over] = harness.logged.of("consumer.outage_over")
    assert (over["group"], over["topic"], over["offset"]) == (GROUP, TOPIC, 0)
    assert harness.broker.records(dlq_topic(TOPIC)) == []
    assert harness.parking.slots == {}


async def test_an_event_is_not_committed_until_its_dead_letter_is_acknowledged(
    harness: Harness,
) -> None:
    harness.broker.dead_letters_down = True
    harness.handler.fail = lambda e, n: Permanent("refused")
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.handler.tries.get("status-0") == 1, "tried")
    await asyncio.sleep(0.02)  # dead-letter attempts fail meanwhile
    assert harness.committed() is None
    harness.broker.dead_letters_down = False
    await harness.until(lambda: harness.committed() == 1, "committed")
    assert len(harness.broker.records(dlq_topic(TOPIC))) == 1


async def test_a_revoked_partition_finishes_its_events_and_commits_before_it_goes(
    harness: Harness,
) -> None:
    harness.handler.gates["a"] = asyncio.Event()
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.handler.running == 1, "running")
    revoking = asyncio.create_task(harness.source.revoke([TopicPartition(TOPIC, 0)]))
    await asyncio.sleep(0.01)
    assert not revoking.done()  # the drain waits for the running event
    harness.handler.gates["a"].set()
    await asyncio.wait_for(revoking, 5)
    assert harness.committed() == 1  # committed before the partition left


def sample(name: str, topic: str = TOPIC) -> float | None:
    return REGISTRY.get_sample_value(name, {"group": GROUP, "topic": topic})


async def test_the_groups_series_exist_from_the_start_and_count_what_happens(
    harness: Harness,
) -> None:
    """A group's dead letters and parked events are series at 0 from its start (so the first
    one is an increase an alert sees); handled events are counted."""
    group = f"fresh-{uuid.uuid4()}"
    broker = LocalBroker()
    fresh = EventConsumer(
        NotetakerSettings(),
        group,
        [TOPIC, "thumbnail.requested"],
        harness.handler,
        broker,
        parking=MemoryParking(),
        source=broker.consumer(group),
    )
    running = asyncio.create_task(fresh.run())
    await harness.until(fresh.is_ready, "the fresh group ready")
    for topic in (TOPIC, "thumbnail.requested"):
        labels = {"group": group, "topic": topic}
        assert REGISTRY.get_sample_value(DEAD, labels) == 0
        assert REGISTRY.get_sample_value("notetaker_consumer_parked_events", labels) == 0
        assert REGISTRY.get_sample_value("notetaker_consumer_events_parked_total", labels) == 0
    fresh.stop()
    await asyncio.wait_for(running, 10)
    handled = sample("notetaker_consumer_events_handled_total") or 0
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.committed() == 1, "committed")
    assert sample("notetaker_consumer_events_handled_total") == handled + 1


async def test_the_consumer_says_when_it_starts_and_what_it_was_given(harness: Harness) -> None:
    await harness.until(harness.consumer.is_ready, "ready")
    assert harness.logged.of("consumer.started") == [{"group": GROUP, "topics": [TOPIC]}]
    assert harness.logged.of("consumer.assigned") == [{"group": GROUP, "partitions": 1}]


async def test_an_outage_that_ends_in_a_permanent_error_is_dead_lettered(harness: Harness) -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    harness.handler.fail = lambda e, n: refused if n < 5 else Permanent("no such meeting")
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.committed() == 1, "committed")
    [dead] = harness.broker.records(dlq_topic(TOPIC))
    assert b"no such meeting" in dict(dead.headers)[DLQ_ERROR_HEADER]
    assert not harness.consumer.in_outage


async def test_the_consumer_stays_paused_until_every_outage_it_met_is_over(
    harness: Harness,
) -> None:
    down = {"a", "b"}  # each bot's handler meets the outage until its entry goes
    harness.handler.fail = lambda e, n: ConnectionRefusedError() if e.bot_id in down else None
    harness.broker.publish(status("a"))
    harness.broker.publish(status("b"))
    await harness.until(lambda: len(harness.logged.of("consumer.outage")) == 2, "both waiting")
    down.discard("a")
    await harness.until(lambda: ("a", "status-0") in harness.handler.done, "a handled")
    assert harness.consumer.in_outage  # b still waits: still paused
    down.discard("b")
    await harness.until(lambda: harness.committed() == 2, "both committed")
    assert not harness.consumer.in_outage


async def test_a_parked_retry_that_fails_again_backs_off_and_the_next_due_one_still_runs(
    harness: Harness,
) -> None:
    """Retried from the lot: a transient failure counts an attempt, an outage does not, and a
    failing event does not stop the round for the events due after it."""
    state = {"a": "transient", "b": "transient"}

    def fail(event: BotStatusChanged, n: int) -> Exception | None:
        kind = state[event.bot_id]
        if kind == "transient":
            return RuntimeError("provider 502")
        return ConnectionRefusedError() if kind == "outage" else None

    harness.handler.fail = fail
    harness.broker.publish(status("a"))
    harness.broker.publish(status("b"))
    await harness.until(lambda: len(harness.parking.slots) == 2, "both parked")
    state["b"] = "fixed"
    harness.parking.advance(3600)
    await harness.until(lambda: ("b", "status-0") in harness.handler.done, "b handled")
    [a] = harness.parking.slots.values()
    assert a.event.attempts == 2
    assert "provider 502" in a.event.error
    [retry_failed] = harness.logged.of("consumer.parked_retry_failed")
    assert "provider 502" in retry_failed["error"]
    assert (retry_failed["attempts"], retry_failed["topic"], retry_failed["offset"]) == (
        1,
        TOPIC,
        0,
    )

    state["a"] = "outage"
    harness.parking.advance(3600 * 24)
    await harness.until(lambda: "outage" in a_error(harness), "a retried in an outage")
    [a] = harness.parking.slots.values()
    assert a.event.attempts == 2  # an outage is not the event's fault


def a_error(harness: Harness) -> str:
    return "".join(slot.event.error for slot in harness.parking.slots.values())


DEAD = "notetaker_consumer_events_dead_lettered_total"


async def test_a_commit_kafka_refuses_is_logged_and_made_later(harness: Harness) -> None:
    harness.source.failing_commits = 1
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.committed() == 1, "committed at last")
    [failed] = harness.logged.of("consumer.commit_failed")
    assert failed["group"] == GROUP
    assert "rebalanced" in failed["error"]


async def test_the_parked_events_wait_while_their_database_is_gone(harness: Harness) -> None:
    harness.handler.fail = lambda e, n: RuntimeError("boom") if n <= 3 else None
    harness.broker.publish(status("a"))
    await harness.until(lambda: len(harness.parking.slots) == 1, "parked")
    harness.parking.unreachable = 3
    harness.parking.advance(3600)
    await harness.until(lambda: harness.parking.slots == {}, "retried once it is back")
    lines = harness.logged.of("consumer.parked_unavailable")
    assert len(lines) == 3
    assert all(line["group"] == GROUP and "gone" in line["error"] for line in lines)


async def test_revoking_an_idle_partition_commits_what_finished(harness: Harness) -> None:
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.committed() == 1, "committed")
    await asyncio.wait_for(harness.source.revoke([TopicPartition(TOPIC, 0)]), 5)
    assert harness.committed() == 1


async def test_an_event_that_outlives_the_drain_is_stopped_and_left_for_the_next_owner(
    harness: Harness,
) -> None:
    harness.handler.gates["a"] = asyncio.Event()  # never opened: the handler hangs
    harness.broker.publish(status("a"))
    await harness.until(lambda: harness.handler.running == 1, "running")
    harness.consumer.drain_seconds = 0.05
    await asyncio.wait_for(harness.source.revoke([TopicPartition(TOPIC, 0)]), 5)
    await harness.until(lambda: harness.handler.running == 0, "the hung handler stopped")
    assert harness.committed() is None  # its offset is the next owner's to redo


async def test_revoking_a_partition_that_never_had_an_event_is_a_clean_handover(
    harness: Harness,
) -> None:
    await harness.until(harness.consumer.is_ready, "ready")
    await asyncio.wait_for(harness.source.revoke([TopicPartition(TOPIC, 0)]), 5)
    assert harness.committed() is None


def consumer_of(broker: LocalBroker, source: LocalConsumer, handler: Handler) -> EventConsumer:
    return EventConsumer(
        NotetakerSettings(),
        GROUP,
        [TOPIC],
        handler,
        broker,
        parking=MemoryParking(),
        outage=OutagePolicy(wait_initial=0.001, wait_max=0.002, wait_jitter=0),
        source=source,
    )


async def test_a_consumer_started_while_kafka_is_unreachable_waits_for_it_then_consumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited = Logged()  # what the wait logs, where an operator reads it
    monkeypatch.setattr(runtime_module, "log", waited)
    broker = LocalBroker()
    source = broker.consumer(GROUP)
    # Six tries fail: the consumer's own OutagePolicy paces them (milliseconds here; the
    # default backoff would take seconds).
    source.failing_starts = 6
    handler = Handler()
    consumer = consumer_of(broker, source, handler)
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(4000):
            if consumer.is_ready():
                break
            await asyncio.sleep(0.001)
        assert consumer.is_ready()
        # Each failed start was stopped, and each try subscribed again to the same topics.
        assert (source.stops, source.subscribes, source.topics) == (6, 7, [TOPIC])
        unreachable = waited.of("dependency.unreachable")
        assert [(w["dependency"], w["attempt"]) for w in unreachable] == [
            ("kafka", n) for n in range(1, 7)
        ]
        assert "Unable to bootstrap" in unreachable[0]["error"]
        assert waited.of("dependency.reachable") == [{"dependency": "kafka", "attempts": 7}]
        broker.publish(status("bot-1"))
        for _ in range(4000):
            if handler.done:
                break
            await asyncio.sleep(0.001)
        assert [bot for bot, _ in handler.done] == ["bot-1"]
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def test_stopping_a_consumer_that_waits_for_kafka_ends_it_without_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged = Logged()
    monkeypatch.setattr(consumer_module, "log", logged)
    broker = LocalBroker()
    source = broker.consumer(GROUP)
    source.failing_starts = 10**9
    consumer = consumer_of(broker, source, Handler())
    task = asyncio.create_task(consumer.run())
    while source.stops < 2:
        await asyncio.sleep(0.001)
    consumer.stop()
    await asyncio.wait_for(task, 1)
    assert not consumer.is_ready()
    assert logged.of("consumer.started") == []
