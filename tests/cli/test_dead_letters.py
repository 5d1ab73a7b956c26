"""`notetaker dead-letters`: list dead letters and replay them, as an operator runs it.

Dead letters are parked with the services' own `EventPublisher.dead_letter`, then listed and
replayed by the installed `notetaker` executable in a subprocess, against the stack's Kafka and
PostgreSQL. What a replay published is read back with librdkafka up to an end marker
(`records_up_to_marker`), so "nothing more was published" is a proven read, not a timeout.

Each test parks dead letters of its own (new bots), so the tests do not depend on each other.
They use topics no service of the stack consumes (bot.status, meeting.synced), so a replay
disturbs no other test.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Producer

from notetaker.common.envelope import event_id, to_message
from notetaker.common.events import (
    DLQ_ERROR_HEADER,
    DLQ_OFFSET_HEADER,
    REPLAYED_FROM_HEADER,
    BotStatusChanged,
    Event,
    MeetingSynced,
)
from notetaker.common.kafka import EventPublisher
from notetaker.devstack.stack import Stack, free_port
from tests.cli.test_events import Result, cli_env, notetaker
from tests.conftest import KafkaRecord, records_up_to_marker

TRACEPARENT = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


@dataclass(frozen=True)
class Parked:
    """A dead letter this test parked, and where `dead-letters list` says it is."""

    event: Event
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]  # as the event was first published
    error: str
    original_offset: int
    partition: int
    offset: int

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def bot_id(self) -> str:
        return self.event.bot_id


def bot_status(bot: str, i: int) -> Event:
    return BotStatusChanged(bot_id=bot, status=f"status_{i}", changed_at=datetime.now(UTC))


def meeting_synced(bot: str, i: int) -> Event:
    return MeetingSynced(
        bot_id=bot,
        meeting_id=uuid.uuid4(),
        org_id=uuid.uuid4(),
        has_video=True,
        has_transcript=bool(i % 2),
        has_thumbnail=False,
    )


async def park(
    stack: Stack, env: dict[str, str], topic: str, count: int, cwd: Path
) -> list[Parked]:
    """Park `count` events of `topic` for new bots, as a consumer that gave up would."""
    run = uuid.uuid4().hex[:8]
    make = bot_status if topic == "bot.status" else meeting_synced
    events = [make(f"dlq-{run}-{i}", i) for i in range(count)]
    publisher = EventPublisher(stack.settings(service_name="uploader"))
    await publisher.start()
    sent = []
    try:
        for i, event in enumerate(events):
            message = to_message(event, "/notetaker/ingest")
            headers = [*message.headers.items(), TRACEPARENT]
            error = f"handler failed: RuntimeError('boom {i}')"
            await publisher.dead_letter(
                topic=topic,
                key=event.bot_id.encode(),
                value=message.value,
                headers=headers,
                offset=1000 + i,
                error=error,
            )
            sent.append((event, message.value, headers, error, 1000 + i))
    finally:
        await publisher.stop()
    listed = await list_json(env, topic, cwd)
    parked = []
    for event, value, headers, error, original_offset in sent:
        (line,) = [x for x in listed if x["bot_id"] == event.bot_id]
        parked.append(
            Parked(
                event,
                event.bot_id.encode(),
                value,
                headers,
                error,
                original_offset,
                line["partition"],
                line["offset"],
            )
        )
    return parked


async def list_json(env: dict[str, str], topic: str, cwd: Path) -> list[dict[str, Any]]:
    result = await notetaker(env, "dead-letters", "list", topic, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.json_lines()


async def replay(env: dict[str, str], topic: str, cwd: Path, *args: str) -> Result:
    return await notetaker(env, "dead-letters", "replay", topic, *args, cwd=cwd)


async def landed(stack: Stack, topic: str, parked: list[Parked]) -> dict[str, list[KafkaRecord]]:
    """Every record on `topic` (to an end marker) keyed by one of these bots, by bot."""
    records = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, topic, None
    )
    bots = {p.key: p.bot_id for p in parked}
    found: dict[str, list[KafkaRecord]] = {p.bot_id: [] for p in parked}
    for record in records:
        if record.key in bots:
            found[bots[record.key]].append(record)
    return found


def assert_is_the_replay_of(record: KafkaRecord, parked: Parked, dlq: str) -> None:
    assert record.key == parked.key
    assert record.value == parked.value
    # The original headers in their order, no dead-letter header, and where it came from.
    assert record.headers == [
        *parked.headers,
        (REPLAYED_FROM_HEADER, f"{dlq}:{parked.position}".encode()),
    ]
    names = {name for name, _ in record.headers}
    assert not names & {DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER}


def outcomes(result: Result, parked: list[Parked]) -> dict[str, str]:
    """Outcome per bot of ours in a `replay --json` run."""
    ours = {p.bot_id for p in parked}
    return {x["bot_id"]: x["outcome"] for x in result.json_lines() if x["bot_id"] in ours}


async def replay_rows(db: asyncpg.Pool, dlq: str, parked: list[Parked]) -> dict[str, Any]:
    rows = await db.fetch(
        "SELECT * FROM dead_letter_replays WHERE dlq_topic = $1 AND bot_id = ANY($2::text[])",
        dlq,
        [p.bot_id for p in parked],
    )
    return {r["bot_id"]: dict(r) for r in rows}


@pytest.fixture
def env(stack: Stack) -> dict[str, str]:
    return cli_env(stack.env())


# --- list ------------------------------------------------------------------------------------


async def test_list_shows_each_dead_letter_with_its_error(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 2, tmp_path)
    for topic in ("bot.status", "bot.status.dlq"):  # either name lists the same dead letters
        listed = {x["bot_id"]: x for x in await list_json(env, topic, tmp_path)}
        for p in parked:
            line = listed[p.bot_id]
            assert line["topic"] == "bot.status.dlq"
            assert line["position"] == p.position
            assert line["event_id"] == event_id(p.event)
            assert line["type"] == "bot.status"
            assert line["original_topic"] == "bot.status"
            assert line["original_offset"] == p.original_offset
            assert line["error"] == p.error
            assert line["parse_error"] is None
            assert line["replayed"] is False

    table = await notetaker(env, "dead-letters", "list", "bot.status", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    for p in parked:
        assert p.bot_id in table.stdout
        assert p.error in table.stdout
        assert event_id(p.event) in table.stdout


async def test_list_without_the_database_still_lists_and_says_so(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 1, tmp_path)
    away = env | {"NOTETAKER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    result = await notetaker(away, "dead-letters", "list", "bot.status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.json_lines() if x["bot_id"] == parked[0].bot_id]
    assert line["error"] == parked[0].error
    assert line["replayed"] is None  # unknown, not "no"
    assert "cannot reach PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


# --- replay ----------------------------------------------------------------------------------


async def test_replay_of_selected_offsets_publishes_exactly_those_once(
    stack: Stack, env: dict[str, str], db: asyncpg.Pool, tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 3, tmp_path)
    chosen, left = parked[:2], parked[2]
    args = [a for p in chosen for a in ("--offset", p.position)]

    first = await replay(env, "bot.status", tmp_path, *args, "--json")
    assert first.returncode == 0, first.stderr
    assert outcomes(first, parked) == {p.bot_id: "replayed" for p in chosen}
    assert "2 replayed from bot.status.dlq to bot.status" in first.stderr

    found = await landed(stack, "bot.status", parked)
    assert found[left.bot_id] == []
    for p in chosen:
        (record,) = found[p.bot_id]
        assert_is_the_replay_of(record, p, "bot.status.dlq")
    # Recorded, with where each one landed.
    rows = await replay_rows(db, "bot.status.dlq", parked)
    assert set(rows) == {p.bot_id for p in chosen}
    for p in chosen:
        row = rows[p.bot_id]
        (record,) = found[p.bot_id]
        assert (row["dlq_partition"], row["dlq_offset"]) == (p.partition, p.offset)
        assert (row["target_partition"], row["target_offset"]) == (
            record.partition,
            record.offset,
        )
        assert row["event_id"] == event_id(p.event)
    replayed = {x["bot_id"]: x for x in first.json_lines()}
    for p in chosen:
        (record,) = found[p.bot_id]
        assert replayed[p.bot_id]["replayed"]["offset"] == record.offset

    # The same selection again (by offset and by event id): nothing new is published.
    again = await replay(
        env, "bot.status.dlq", tmp_path, *args, "--event-id", event_id(chosen[0].event), "--json"
    )
    assert again.returncode == 0, again.stderr
    assert outcomes(again, parked) == {p.bot_id: "already_replayed" for p in chosen}
    assert "0 replayed" in again.stderr
    assert await landed(stack, "bot.status", parked) == found

    listed = {x["bot_id"]: x for x in await list_json(env, "bot.status", tmp_path)}
    assert listed[left.bot_id]["replayed"] is False
    for p in chosen:
        (record,) = found[p.bot_id]
        assert listed[p.bot_id]["replayed"]["offset"] == record.offset


async def test_replay_by_event_id_and_its_human_output(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 2, tmp_path)
    target = parked[1]
    result = await replay(env, "bot.status", tmp_path, "--event-id", event_id(target.event))
    assert result.returncode == 0, result.stderr
    assert "replayed" in result.stdout
    assert target.position in result.stdout
    assert event_id(target.event) in result.stdout
    assert "→ bot.status:" in result.stdout
    found = await landed(stack, "bot.status", parked)
    assert found[parked[0].bot_id] == []
    (record,) = found[target.bot_id]
    assert_is_the_replay_of(record, target, "bot.status.dlq")


async def test_dry_run_publishes_and_records_nothing_then_all_replays_each_once_even_twice_at_once(
    stack: Stack, env: dict[str, str], db: asyncpg.Pool, tmp_path: Path
) -> None:
    parked = await park(stack, env, "meeting.synced", 3, tmp_path)
    # A record on the .dlq topic that no consumer parked (no error header) is never replayed.
    stray = f"dlq-stray-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap_servers})
    producer.produce("meeting.synced.dlq", key=stray.encode(), value=b"not {json")
    assert producer.flush(20) == 0

    dry = await replay(env, "meeting.synced", tmp_path, "--all", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert outcomes(dry, parked) == {p.bot_id: "would_replay" for p in parked}
    assert "dry run" in dry.stderr
    assert await landed(stack, "meeting.synced", parked) == {p.bot_id: [] for p in parked}
    assert await replay_rows(db, "meeting.synced.dlq", parked) == {}

    # Two operators replay everything at the same time: each dead letter goes out once.
    both = await asyncio.gather(
        replay(env, "meeting.synced", tmp_path, "--all", "--json"),
        replay(env, "meeting.synced.dlq", tmp_path, "--all", "--json"),
    )
    for result in both:
        assert result.returncode == 0, result.stderr
    for p in parked:
        seen = sorted(outcomes(result, parked)[p.bot_id] for result in both)
        assert seen == ["already_replayed", "replayed"], p.bot_id
    found = await landed(stack, "meeting.synced", parked)
    for p in parked:
        (record,) = found[p.bot_id]
        assert_is_the_replay_of(record, p, "meeting.synced.dlq")
    assert stray not in {x["bot_id"] for x in both[0].json_lines()}
    stray_records = await asyncio.to_thread(
        records_up_to_marker, stack.kafka_bootstrap_servers, "meeting.synced", stray
    )
    assert stray_records == []

    third = await replay(env, "meeting.synced", tmp_path, "--all", "--json")
    assert third.returncode == 0, third.stderr
    assert outcomes(third, parked) == {p.bot_id: "already_replayed" for p in parked}
    assert await landed(stack, "meeting.synced", parked) == found


async def test_a_publish_kafka_refuses_is_not_recorded_and_the_rest_still_goes_out(
    stack: Stack, env: dict[str, str], db: asyncpg.Pool, tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 1, tmp_path)
    # A dead letter bigger than a producer request may be (1 MiB): parked by a client allowed
    # larger ones, it cannot be published again by the replay's producer.
    big_bot = f"dlq-big-{uuid.uuid4().hex[:8]}"
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap_servers, "message.max.bytes": 4_000_000}
    )
    producer.produce(
        "bot.status.dlq",
        key=big_bot.encode(),
        value=b"x" * 1_500_000,
        headers=[(DLQ_ERROR_HEADER, b"too big"), (DLQ_OFFSET_HEADER, b"7")],
    )
    assert producer.flush(20) == 0
    listed = {x["bot_id"]: x for x in await list_json(env, "bot.status", tmp_path)}
    big = listed[big_bot]["position"]

    result = await replay(
        env, "bot.status", tmp_path, "--offset", parked[0].position, "--offset", big, "--json"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = {x["bot_id"]: x for x in result.json_lines()}
    assert lines[big_bot]["outcome"] == "failed"
    assert "MessageSizeTooLarge" in lines[big_bot]["error"]
    assert lines[parked[0].bot_id]["outcome"] == "replayed"
    assert "1 failed (not recorded as replayed: run again)" in result.stderr
    rows = await db.fetch(
        "SELECT bot_id FROM dead_letter_replays WHERE dlq_topic = 'bot.status.dlq'"
        " AND bot_id = ANY($1::text[])",
        [big_bot, parked[0].bot_id],
    )
    assert {r["bot_id"] for r in rows} == {parked[0].bot_id}
    (record,) = (await landed(stack, "bot.status", parked))[parked[0].bot_id]
    assert_is_the_replay_of(record, parked[0], "bot.status.dlq")


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_topic_exits_2_naming_the_topics(tmp_path: Path) -> None:
    env = cli_env({"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    for command in (("list",), ("replay", "--all")):
        name, *rest = command
        result = await notetaker(env, "dead-letters", name, "bot.stats", *rest, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "unknown topic 'bot.stats'" in result.stderr
        assert "Did you mean 'bot.status'?" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing selected: give --offset P:O, --event-id ID or --all"),
        (("--all", "--offset", "0:1"), "--all replays every dead letter"),
        (("--offset", "zero:1"), "is not PARTITION:OFFSET"),
    ],
)
async def test_a_replay_without_a_clear_selection_exits_2(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    env = cli_env({"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    result = await replay(env, "bot.status", tmp_path, *args)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


async def test_a_selection_not_on_the_topic_replays_nothing(
    stack: Stack, env: dict[str, str], db: asyncpg.Pool, tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 1, tmp_path)
    result = await replay(
        env,
        "bot.status",
        tmp_path,
        *("--offset", parked[0].position, "--offset", "0:999999999"),
        *("--event-id", "no-such-event"),
    )
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "no record at 0:999999999" in text
    assert "no dead letter with event id no-such-event" in text
    assert "Nothing was replayed" in text
    assert await landed(stack, "bot.status", parked) == {parked[0].bot_id: []}
    assert await replay_rows(db, "bot.status.dlq", parked) == {}


@pytest.mark.parametrize("command", [("list",), ("replay", "--all")])
async def test_unreachable_kafka_exits_1_naming_it(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    env = cli_env({"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    name, *rest = command
    result = await notetaker(env, "dead-letters", name, "bot.status", *rest, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach Kafka at {bootstrap}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_unreachable_database_stops_a_replay_before_it_publishes(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    parked = await park(stack, env, "bot.status", 1, tmp_path)
    port = free_port()
    away = env | {"NOTETAKER_DATABASE_URL": f"postgresql://postgres:secret@127.0.0.1:{port}/x"}
    result = await replay(away, "bot.status", tmp_path, "--offset", parked[0].position)
    assert result.returncode == 1
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/x (NOTETAKER_DATABASE_URL)" in (
        " ".join(result.stderr.split())
    )
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert await landed(stack, "bot.status", parked) == {parked[0].bot_id: []}
