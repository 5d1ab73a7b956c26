"""`notetaker events`: the console script against the embedded Kafka, as an operator runs it.

Events are published with the services' own helpers, then read back by the installed
`notetaker` executable in a subprocess. Every run is bounded by --max or --timeout and by a
deadline here, so a broken tail fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notetaker.common.envelope import event_id, to_message
from notetaker.common.events import BotStatusChanged, RecordingFailed
from notetaker.common.kafka import EventPublisher, create_producer
from notetaker.devstack.stack import Stack, free_port

NOTETAKER = Path(sys.executable).with_name("notetaker")
DEADLINE = 20.0  # seconds any one run of the command may take here


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


def cli_env(stack_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTETAKER_")}
    return env | stack_env


async def notetaker(env: dict[str, str], *args: str, cwd: Path) -> Result:
    process = await asyncio.create_subprocess_exec(
        str(NOTETAKER),
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"notetaker {' '.join(args)} still running after {DEADLINE}s"
        ) from None
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def retained(env: dict[str, str], topic: str, cwd: Path) -> int:
    result = await notetaker(env, "events", "topics", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    (info,) = [t for t in result.json_lines() if t["topic"] == topic]
    count: int = info["retained"]
    return count


@dataclass
class Published:
    bots: list[str]
    events: list[BotStatusChanged]
    before: int  # records bot.status held before these were published
    env: dict[str, str]


STATUSES = ("joining_call", "in_call_recording", "call_ended")


@pytest.fixture(scope="module")
async def published(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """Three statuses for each of three new bots on bot.status, interleaved, one at a time."""
    env = cli_env(stack.env())
    before = await retained(env, "bot.status", tmp_path_factory.mktemp("cli"))
    run = uuid.uuid4().hex[:8]
    bots = [f"cli-{run}-{i}" for i in range(3)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        BotStatusChanged(bot_id=bot, status=status, changed_at=start + timedelta(minutes=n))
        for n, status in enumerate(STATUSES)
        for bot in bots
    ]
    publisher = EventPublisher(stack.settings(service_name="cli-test"))
    await publisher.start()
    try:
        for event in events:
            await publisher.publish(event)
    finally:
        await publisher.stop()
    return Published(bots, events, before, env)


async def test_tail_from_beginning_prints_every_event_in_partition_order(
    published: Published, tmp_path: Path
) -> None:
    total = published.before + len(published.events)
    result = await notetaker(
        published.env,
        *("events", "tail", "bot.status", "--from-beginning", "--json"),
        *("--max", str(total), "--timeout", "10"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.json_lines()
    assert len(lines) == total
    assert "Traceback" not in result.stderr

    by_partition: dict[int, list[int]] = {}
    for line in lines:
        by_partition.setdefault(line["partition"], []).append(line["offset"])
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == len(offsets)

    for bot in published.bots:
        ours = [line for line in lines if line.get("bot_id") == bot]
        expected = [e for e in published.events if e.bot_id == bot]
        assert [line["id"] for line in ours] == [event_id(e) for e in expected]
        assert [line["data"]["status"] for line in ours] == list(STATUSES)
        assert {line["type"] for line in ours} == {"bot.status"}
        assert {line["key"] for line in ours} == {bot}
        assert {line["source"] for line in ours} == {"/notetaker/cli-test"}
        assert {line["dataschema"] for line in ours} == {"urn:notetaker:event:bot.status:v1"}
        assert {line["dead_letter"] for line in ours} == {None}
        assert len({line["partition"] for line in ours}) == 1  # keyed by bot: one partition


async def test_bot_id_keeps_only_that_bots_events(published: Published, tmp_path: Path) -> None:
    bot = published.bots[1]
    result = await notetaker(
        published.env,
        *("events", "tail", "bot.status", "--from-beginning", "--json"),
        *("--bot-id", bot, "--max", "3", "--timeout", "10"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.json_lines()
    assert [(line["bot_id"], line["data"]["status"]) for line in lines] == [
        (bot, status) for status in STATUSES
    ]


async def test_timeout_ends_a_tail_that_sees_nothing(published: Published, tmp_path: Path) -> None:
    result = await notetaker(
        published.env,
        *("events", "tail", "bot.status", "--bot-id", "nobody-has-this-bot"),
        *("--from-beginning", "--timeout", "1"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Watching bot.status" in result.stderr


async def start_tail(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    """Start `events tail` and return once it says it is watching (its start is resolved)."""
    process = await asyncio.create_subprocess_exec(
        str(NOTETAKER),
        *("events", "tail", *args),
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        first = await asyncio.wait_for(process.stderr.readline(), DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert first.startswith(b"Watching "), first
    return process


async def test_default_starts_at_the_end_and_reads_like_a_log(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    bot = f"cli-live-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(stack.settings(service_name="cli-test"))
    await publisher.start()
    try:
        await publisher.publish(BotStatusChanged(bot_id=bot, status="old_news"))
        process = await start_tail(
            published.env, tmp_path, "bot.status", "--bot-id", bot, "--max", "1", "--timeout", "10"
        )
        await publisher.publish(BotStatusChanged(bot_id=bot, status="in_call_recording"))
        new = BotStatusChanged(bot_id=bot, status="in_call_recording")
        stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    finally:
        await publisher.stop()
    assert process.returncode == 0, stderr
    (line,) = stdout.decode().splitlines()
    assert "old_news" not in line
    assert f"bot={bot}" in line
    assert " bot.status " in line
    assert event_id(new) in line
    assert "status=in_call_recording" in line


async def test_dead_letters_show_their_error_and_garbage_is_shown_raw(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    bot = f"cli-dlq-{uuid.uuid4().hex[:8]}"
    failed = RecordingFailed(bot_id=bot, error_code="not_admitted", error_message="left alone")
    message = to_message(failed, "/notetaker/ingest")
    publisher = EventPublisher(stack.settings(service_name="cli-test"))
    producer = create_producer(stack.settings(service_name="cli-test"))
    await publisher.start()
    await producer.start()
    try:
        await publisher.dead_letter(
            topic="recording.failed",
            key=bot.encode(),
            value=message.value,
            headers=list(message.headers.items()),
            offset=41,
            error="handler failed: RuntimeError('boom')",
        )
        await producer.send_and_wait("recording.failed.dlq", key=bot.encode(), value=b"not {json")
    finally:
        await producer.stop()
        await publisher.stop()

    args = ("events", "tail", "recording.failed.dlq", "--from-beginning", "--bot-id", bot)
    as_json = await notetaker(published.env, *args, "--max", "2", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    parked, garbage = as_json.json_lines()
    assert parked["id"] == event_id(failed)
    assert parked["type"] == "recording.failed"
    assert parked["data"]["error_code"] == "not_admitted"
    assert parked["dead_letter"] == {
        "error": "handler failed: RuntimeError('boom')",
        "original_offset": 41,
    }
    assert garbage["key"] == bot
    assert garbage["value"] == "not {json"
    assert garbage["parse_error"]
    assert garbage["dead_letter"] is None

    readable = await notetaker(published.env, *args, "--max", "2", cwd=tmp_path)
    assert readable.returncode == 0, readable.stderr
    text = readable.stdout
    assert "recording.failed" in text
    assert "dead letter from offset 41: handler failed: RuntimeError('boom')" in text
    assert "not an event" in text
    assert "b'not {json'" in text


async def test_ctrl_c_stops_the_tail_cleanly(published: Published, tmp_path: Path) -> None:
    process = await start_tail(published.env, tmp_path, "bot.status")
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr
    assert stdout == b""


async def test_topics_lists_partitions_and_end_offsets(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    result = await notetaker(published.env, "events", "topics", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    infos = {info["topic"]: info for info in result.json_lines()}
    assert {"bot.status", "bot.status.dlq", "meeting.synced.dlq"} <= set(infos)
    status = infos["bot.status"]
    assert status["exists"]
    assert status["partitions"] == stack.settings().kafka_topic_partitions
    assert status["retained"] >= published.before + len(published.events)
    assert sum(status["end_offsets"].values()) >= status["retained"]

    table = await notetaker(published.env, "events", "topics", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Partitions" in table.stdout
    assert "recording.uploaded.dlq" in table.stdout


async def test_unknown_topic_exits_2_and_lists_the_topics(tmp_path: Path) -> None:
    env = cli_env({"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    result = await notetaker(env, "events", "tail", "bot.stats", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown topic 'bot.stats'" in result.stderr
    assert "Did you mean 'bot.status'?" in result.stderr
    assert "recording.uploaded" in result.stderr
    assert "meeting.synced.dlq" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [("tail", "bot.status"), ("topics",)])
async def test_unreachable_kafka_exits_1_naming_it(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = cli_env({"NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    result = await notetaker(env, "events", *command, cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.stderr
    assert "Traceback" not in result.stderr
