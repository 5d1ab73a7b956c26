"""`notetaker dead-letters`: list the events a consumer gave up on, and replay them.

A dead letter is a record on `<type>.dlq` written by `EventPublisher.dead_letter`: the original
key, value and headers plus `notetaker_error` and `notetaker_original_offset`. A replay publishes
it again to `<type>` with the original key, value and headers (those two removed, and
`notetaker_replayed_from: <dlq topic>:<partition>:<offset>` added), so the consumers see the
event as it first came and apply it idempotently.

A replay happens once. Each one is a row of `dead_letter_replays`, inserted in the transaction
that publishes the record and committed only after Kafka acknowledged it: a publish that is not
acknowledged deletes the row again, and a crash rolls it back, so a row never claims a replay
that did not happen, and a later run (or one running at the same time, which waits on the row)
skips every dead letter that was. What is left is at least once: a crash after Kafka's
acknowledgement but before the commit replays that batch again next time, and the consumers
apply the same event id idempotently.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from rich.text import Text

from notetaker.cli.events import (
    Stop,
    check_topic,
    err,
    fail,
    out,
    quiet_kafka_logs,
    read,
    run,
    settings,
    start_consumer,
    start_kafka_client,
    topic_partitions,
)
from notetaker.common.events import (
    DLQ_ERROR_HEADER,
    DLQ_HEADERS,
    DLQ_OFFSET_HEADER,
    REPLAYED_FROM_HEADER,
    dlq_topic,
    is_dlq_topic,
    original_topic,
)
from notetaker.common.kafka import create_producer
from notetaker.common.settings import NotetakerSettings

app = typer.Typer(
    help=(
        "Inspect and replay dead letters: events a consumer gave up on, parked on `<type>.dlq` "
        "with their error. A replay publishes each one once to its original topic."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

BATCH = 100  # dead letters published (and recorded) per transaction
PROGRESS_EVERY_SECONDS = 2.0
READ_STALL_SECONDS = 30.0
IDLE_POLL_MS = 500  # a poll this long that brings nothing ends a reading at its end


# --- reading a .dlq topic ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One record of a .dlq topic written by `EventPublisher.dead_letter`."""

    record: ConsumerRecord[bytes, bytes]

    @property
    def position(self) -> tuple[int, int]:
        return (self.record.partition, self.record.offset)

    @property
    def where(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def replayed_from(self) -> str:
        return f"{self.record.topic}:{self.where}"

    def header(self, name: str) -> str | None:
        values: list[bytes] = [v for k, v in self.record.headers if k == name]
        if not values:
            return None
        text: str = values[-1].decode("utf-8", errors="replace")
        return text

    @property
    def event_id(self) -> str | None:
        return self.header("ce_id")

    @property
    def event_type(self) -> str | None:
        return self.header("ce_type")

    @property
    def bot_id(self) -> str | None:
        # Every event is keyed by its bot id (and carries it as the CloudEvent subject).
        key: bytes | None = self.record.key
        if key is not None:
            return key.decode("utf-8", errors="replace")
        return self.header("ce_subject")

    @property
    def error(self) -> str | None:
        return self.header(DLQ_ERROR_HEADER)

    @property
    def original_offset(self) -> int | None:
        value = self.header(DLQ_OFFSET_HEADER)
        return int(value) if value is not None and value.isdigit() else None

    @property
    def timestamp_ms(self) -> int:
        return int(self.record.timestamp)

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original headers, in their order, and where this replay comes from."""
        kept = [
            (name, value)
            for name, value in self.record.headers
            if name not in DLQ_HEADERS and name != REPLAYED_FROM_HEADER
        ]
        return [*kept, (REPLAYED_FROM_HEADER, self.replayed_from.encode())]


def is_dead_letter(record: ConsumerRecord[bytes, bytes]) -> bool:
    return any(name in DLQ_HEADERS for name, _ in record.headers)


@dataclass
class Topic:
    """A .dlq topic read from its start to the end it had when reading began."""

    name: str
    original: str
    letters: list[DeadLetter] = field(default_factory=list)
    others: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)


def topics_of(topic: str) -> tuple[str, str]:
    """(the .dlq topic, its original topic) for an event type or its .dlq name."""
    check_topic(topic)
    if is_dlq_topic(topic):
        return topic, original_topic(topic)
    return dlq_topic(topic), topic


async def read_topic(
    settings: NotetakerSettings, topic: str, *, need_original: bool = False
) -> Topic:
    """Every record of the .dlq topic of `topic`, up to its end offsets when reading began."""
    dlq, original = topics_of(topic)
    consumer = await start_consumer(settings)
    where = settings.kafka_bootstrap_servers
    try:
        partitions = topic_partitions(consumer, dlq)
        if not partitions:
            raise Stop(
                f"topic {dlq!r} does not exist on {where} "
                "(the services create their topics when they start)"
            )
        if need_original and not topic_partitions(consumer, original):
            raise Stop(f"topic {original!r}, where {dlq} replays to, does not exist on {where}")
        found = Topic(dlq, original)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        await _read_to(consumer, {tp: ends[tp] for tp in partitions}, total, found)
    except KafkaError as exc:
        raise Stop(f"Kafka at {where} failed: {exc!r}") from exc
    finally:
        await consumer.stop()
    return found


async def _read_to(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], total: int, found: Topic
) -> None:
    """Read each partition to its end offset, then on until a poll brings nothing more.

    The second part is for Tansu 0.6, whose end offsets fall short of the last records after
    a produce request carried several of them (a real Kafka never returns records past its
    end offset, so there it costs one empty poll). Past the end offset, a record written after
    reading began ends its partition: a reading never chases new dead letters.
    """
    began_ms = time.time() * 1000
    progress = Progress(f"Reading {found.name}", total)
    active = set(ends)
    last_move = time.monotonic()
    while active:
        at_end = [await consumer.position(tp) >= ends[tp] for tp in active]
        batch = await consumer.getmany(*active, timeout_ms=IDLE_POLL_MS)
        got = 0
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp] and record.timestamp > began_ms:
                    active.discard(tp)  # written after reading began
                    break
                if is_dead_letter(record):
                    found.letters.append(DeadLetter(record))
                else:
                    found.others.append(record)
                got += 1
        progress.advance(got)
        if all(at_end) and not got:
            break
        if got:
            last_move = time.monotonic()
        elif time.monotonic() - last_move > READ_STALL_SECONDS:
            stuck = ", ".join(str(tp.partition) for tp in sorted(active))
            raise Stop(
                f"reading {found.name} stalled: no record for {READ_STALL_SECONDS:.0f}s "
                f"on partitions {stuck} before their end offsets"
            )
    progress.done()
    found.letters.sort(key=lambda letter: letter.position)


class Progress:
    """A status line on stderr every few seconds while a long step runs."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.count = 0
        self.started = time.monotonic()
        self.shown = self.started

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.shown >= PROGRESS_EVERY_SECONDS:
            self.shown = now
            share = f" ({100 * self.count // self.total}%)" if self.total else ""
            err.print(f"{self.what}: {self.count}/{self.total}{share}", style="dim")

    def done(self) -> None:
        if self.shown != self.started:  # said something: say it finished
            err.print(f"{self.what}: {self.count}/{self.total} (done)", style="dim")


# --- the replay record in PostgreSQL -----------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """A row of dead_letter_replays: a dead letter published to its topic and acknowledged."""

    target_topic: str
    target_partition: int | None
    target_offset: int | None
    replayed_by: str
    replayed_at: datetime

    @property
    def target(self) -> str:
        if self.target_partition is None:
            return self.target_topic
        return f"{self.target_topic}:{self.target_partition}:{self.target_offset}"

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.target_topic,
            "partition": self.target_partition,
            "offset": self.target_offset,
            "by": self.replayed_by,
            "at": self.replayed_at.astimezone(UTC).isoformat(),
        }


Key = tuple[int, int, int]  # partition, offset, timestamp (ms) on the .dlq topic


def key_of(letter: DeadLetter) -> Key:
    return (letter.record.partition, letter.record.offset, letter.timestamp_ms)


def database_name(dsn: str) -> str:
    """host:port/database of a DSN, never its password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path or ''}"
    except ValueError:
        return "NOTETAKER_DATABASE_URL"


async def connect(settings: NotetakerSettings) -> asyncpg.Connection:
    """A connection to the database holding dead_letter_replays (raises Stop if it cannot)."""
    where = database_name(settings.database_url)
    try:
        conn: asyncpg.Connection = await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Stop(
            f"cannot reach PostgreSQL at {where} (NOTETAKER_DATABASE_URL): {reason}"
        ) from exc
    except ValueError as exc:  # a DSN that does not parse
        raise Stop(f"NOTETAKER_DATABASE_URL is not a PostgreSQL URL: {exc}") from exc
    try:
        table = await conn.fetchval("SELECT to_regclass('dead_letter_replays')")
    except (OSError, asyncpg.PostgresError) as exc:
        await conn.close()
        raise Stop(f"PostgreSQL at {where} failed: {exc}") from exc
    if table is None:
        await conn.close()
        raise Stop(
            f"PostgreSQL at {where} has no dead_letter_replays table: apply the migrations "
            "(python -m notetaker.common.migrate)"
        )
    return conn


async def replays_of(conn: asyncpg.Connection, dlq: str) -> dict[Key, Replay]:
    rows = await conn.fetch(
        "SELECT dlq_partition, dlq_offset, dlq_timestamp_ms, target_topic, target_partition,"
        " target_offset, replayed_by, replayed_at FROM dead_letter_replays WHERE dlq_topic = $1",
        dlq,
    )
    return {
        (r["dlq_partition"], r["dlq_offset"], r["dlq_timestamp_ms"]): Replay(
            r["target_topic"],
            r["target_partition"],
            r["target_offset"],
            r["replayed_by"],
            r["replayed_at"],
        )
        for r in rows
    }


def operator() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


# --- dead-letters list -------------------------------------------------------------------------


def letter_json(letter: DeadLetter, original: str, replay: Replay | bool | None) -> dict[str, Any]:
    shown = read(letter.record)
    return {
        "topic": letter.record.topic,
        "partition": letter.record.partition,
        "offset": letter.record.offset,
        "position": letter.where,
        "timestamp": datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(),
        "event_id": letter.event_id,
        "type": letter.event_type,
        "bot_id": letter.bot_id,
        "original_topic": original,
        "original_offset": letter.original_offset,
        "error": letter.error,
        "parse_error": shown.parse_error,
        # false: not replayed; null: unknown (PostgreSQL unreachable); else where it went.
        "replayed": replay.as_json() if isinstance(replay, Replay) else replay,
    }


async def list_letters(settings: NotetakerSettings, topic: str, json_lines: bool) -> int:
    found = await read_topic(settings, topic)
    replays: dict[Key, Replay] | None
    try:
        conn = await connect(settings)
    except Stop as stop:
        # Listing must work while the database is down (that is often why events were parked).
        err.print(Text("Warning: ", style="bold yellow") + Text(f"{stop.message}; "), end="")
        err.print("whether each dead letter was replayed is unknown.")
        replays = None
    else:
        try:
            replays = await replays_of(conn, found.name)
        finally:
            await conn.close()

    def replay_of(letter: DeadLetter) -> Replay | bool | None:
        if replays is None:
            return None
        return replays.get(key_of(letter), False)

    if json_lines:
        for letter in found.letters:
            line = letter_json(letter, found.original, replay_of(letter))
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    else:
        show_lines(found, replay_of)
    if found.others:
        err.print(
            f"{len(found.others)} other record(s) on {found.name} carry no {DLQ_ERROR_HEADER} "
            f"header: not dead letters, not listed (`notetaker events tail {found.name} "
            "--from-beginning` shows them).",
            style="dim",
        )
    return len(found.letters)


def show_lines(found: Topic, replay_of: Any) -> None:
    """A heading, then per dead letter: where, event, bot, original offset, replayed; its error
    on the next line (whole: it is what the operator needs)."""
    count = len(found.letters)
    out.print(
        Text(
            f"{count} dead letter{'' if count == 1 else 's'} on {found.name} "
            f"(replay to {found.original})",
            style="bold",
        )
    )
    for letter in found.letters:
        replay = replay_of(letter)
        line = Text(f"{letter.where:<10}", style="bold")
        line.append(f" {letter.event_id or '-'}", style="dim")
        line.append(f"  {letter.event_type or 'not an event'}", style="green")
        line.append(f"  bot={letter.bot_id or '-'}", style="cyan")
        original = "-" if letter.original_offset is None else str(letter.original_offset)
        line.append(f"  original offset {original}")
        if replay is None:
            line.append("  replayed: ?", style="yellow")
        elif replay is False:
            line.append("  not replayed", style="bold red")
        else:
            when = f"{replay.replayed_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            line.append(f"  replayed {when} by {replay.replayed_by} → {replay.target}")
        line.append(f"\n    error: {letter.error or '-'}", style="red")
        out.print(line)


TopicArg = Annotated[
    str,
    typer.Argument(
        help="An event type (recording.completed, ...) or its dead-letter topic "
        "(recording.completed.dlq): either names the same dead letters.",
        metavar="TOPIC",
        show_default=False,
    ),
]

LIST_EXAMPLES = """\
**Examples**

`notetaker dead-letters list recording.completed`

`notetaker dead-letters list transcript.ready --json | jq 'select(.replayed == false).position'`
"""


@app.command("list", epilog=LIST_EXAMPLES)
def list_command(
    topic: TopicArg,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per dead letter and line (position, event id, type, bot id, "
            "original offset, error, replayed).",
        ),
    ] = False,
) -> None:
    """List the dead letters of TOPIC with their position (partition:offset), event id, type,
    bot id, original offset, error, and whether and where each was replayed.

    Reads the whole .dlq topic without a consumer group (nothing is committed). The replay
    column comes from PostgreSQL; when it cannot be reached the list is still shown, with a
    warning, and the column says `?`.
    """
    topics_of(topic)
    config = settings()
    quiet_kafka_logs(config)
    run(list_letters(config, topic, json_lines))


# --- dead-letters replay -----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    positions: tuple[tuple[int, int], ...] = ()
    event_ids: tuple[str, ...] = ()
    everything: bool = False

    def pick(self, found: Topic) -> list[DeadLetter]:
        """The selected dead letters in topic order; Stop if any selected one is not there."""
        if self.everything:
            return list(found.letters)
        by_position = {letter.position: letter for letter in found.letters}
        others = {(r.partition, r.offset) for r in found.others}
        problems: list[str] = []
        chosen: dict[tuple[int, int], DeadLetter] = {}
        for position in self.positions:
            where = f"{position[0]}:{position[1]}"
            if position in by_position:
                chosen[position] = by_position[position]
            elif position in others:
                problems.append(f"{where} is not a dead letter (no {DLQ_ERROR_HEADER} header)")
            else:
                problems.append(f"no record at {where}")
        for event_id in self.event_ids:
            matching = [letter for letter in found.letters if letter.event_id == event_id]
            if not matching:
                problems.append(f"no dead letter with event id {event_id}")
            chosen |= {letter.position: letter for letter in matching}
        if problems:
            raise Stop(f"on {found.name}: " + "; ".join(problems) + ". Nothing was replayed.")
        return sorted(chosen.values(), key=lambda letter: letter.position)


@dataclass(frozen=True)
class Outcome:
    letter: DeadLetter
    outcome: str  # replayed, already_replayed, would_replay, failed
    replay: Replay | None = None
    error: str | None = None

    def as_json(self, original: str) -> dict[str, Any]:
        letter = self.letter
        return {
            "outcome": self.outcome,
            "topic": letter.record.topic,
            "partition": letter.record.partition,
            "offset": letter.record.offset,
            "position": letter.where,
            "event_id": letter.event_id,
            "type": letter.event_type,
            "bot_id": letter.bot_id,
            "original_topic": original,
            "replayed": None if self.replay is None else self.replay.as_json(),
            "error": self.error,
        }

    def as_line(self) -> Text:
        letter = self.letter
        styles = {
            "replayed": "bold green",
            "already_replayed": "dim",
            "would_replay": "bold cyan",
            "failed": "bold red",
        }
        line = Text(f"{self.outcome.replace('_', ' '):<16}", style=styles[self.outcome])
        line.append(f" {letter.where:<10}", style="dim")
        line.append(f" {letter.event_id or '-'}", style="dim")
        line.append(f"  {letter.event_type or '-'}  bot={letter.bot_id or '-'}")
        if self.replay is not None:
            when = f"{self.replay.replayed_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            by = "" if self.outcome == "replayed" else f" by {self.replay.replayed_by} at {when}"
            line.append(f"  → {self.replay.target}{by}")
        if self.error is not None:
            line.append(f"  {self.error}", style="red")
        return line


def emit(outcome: Outcome, original: str, json_lines: bool) -> None:
    if json_lines:
        sys.stdout.write(json.dumps(outcome.as_json(original)) + "\n")
        sys.stdout.flush()
    else:
        out.print(outcome.as_line())


async def replay(
    settings: NotetakerSettings,
    topic: str,
    selection: Selection,
    *,
    dry_run: bool,
    json_lines: bool,
) -> list[Outcome]:
    found = await read_topic(settings, topic, need_original=True)
    chosen = selection.pick(found)
    conn = await connect(settings)
    try:
        done = await replays_of(conn, found.name)
        outcomes: list[Outcome] = []
        todo: list[DeadLetter] = []
        for letter in chosen:
            previous = done.get(key_of(letter))
            if previous is not None:
                outcomes.append(Outcome(letter, "already_replayed", previous))
                emit(outcomes[-1], found.original, json_lines)
            elif dry_run:
                outcomes.append(Outcome(letter, "would_replay"))
                emit(outcomes[-1], found.original, json_lines)
            else:
                todo.append(letter)
        if todo:
            outcomes += await publish(settings, conn, found, todo, json_lines)
    finally:
        await conn.close()
    summarize(found, outcomes, dry_run)
    return outcomes


async def publish(
    settings: NotetakerSettings,
    conn: asyncpg.Connection,
    found: Topic,
    todo: Sequence[DeadLetter],
    json_lines: bool,
) -> list[Outcome]:
    producer = create_producer(settings.model_copy(update={"service_name": "notetaker-cli"}))
    await start_kafka_client(producer, settings)
    outcomes: list[Outcome] = []
    progress = Progress(f"Replaying to {found.original}", len(todo))
    by = operator()
    try:
        for start in range(0, len(todo), BATCH):
            batch = await publish_batch(
                conn, producer, found, todo[start : start + BATCH], by, settings
            )
            for outcome in batch:
                emit(outcome, found.original, json_lines)
            outcomes += batch
            progress.advance(len(batch))
            if any(o.outcome == "failed" for o in batch):
                break  # Kafka is refusing: stop here, what is left stays for the next run
    finally:
        await producer.stop()
    progress.done()
    return outcomes


async def publish_batch(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    found: Topic,
    batch: Iterable[DeadLetter],
    by: str,
    settings: NotetakerSettings,
) -> list[Outcome]:
    """Record, publish and confirm one batch in one transaction (see the module's docstring)."""
    where = database_name(settings.database_url)
    outcomes: list[Outcome] = []
    try:
        async with conn.transaction():
            mine: list[DeadLetter] = []
            for letter in batch:
                # Waits while another run holds this dead letter's row; skips it once committed.
                row = await conn.fetchrow(
                    "INSERT INTO dead_letter_replays (dlq_topic, dlq_partition, dlq_offset,"
                    " dlq_timestamp_ms, event_id, bot_id, target_topic, replayed_by)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT DO NOTHING RETURNING replayed_at",
                    found.name,
                    *key_of(letter),
                    letter.event_id,
                    letter.bot_id,
                    found.original,
                    by,
                )
                if row is None:
                    previous = (await replays_of_one(conn, found.name, letter)) or None
                    outcomes.append(Outcome(letter, "already_replayed", previous))
                else:
                    mine.append(letter)
            sent = [await send(producer, found.original, letter) for letter in mine]
            for letter, pending in zip(mine, sent, strict=True):
                result = await acknowledged(pending)
                if isinstance(result, RecordMetadata):
                    replay = await conn.fetchrow(
                        "UPDATE dead_letter_replays SET target_partition = $5, target_offset = $6"
                        " WHERE dlq_topic = $1 AND dlq_partition = $2 AND dlq_offset = $3"
                        " AND dlq_timestamp_ms = $4"
                        " RETURNING target_topic, target_partition, target_offset, replayed_by,"
                        " replayed_at",
                        found.name,
                        *key_of(letter),
                        result.partition,
                        result.offset,
                    )
                    outcomes.append(Outcome(letter, "replayed", Replay(**dict(replay))))
                else:
                    # Not acknowledged: not replayed, so not recorded as replayed either.
                    await conn.execute(
                        "DELETE FROM dead_letter_replays WHERE dlq_topic = $1"
                        " AND dlq_partition = $2 AND dlq_offset = $3 AND dlq_timestamp_ms = $4",
                        found.name,
                        *key_of(letter),
                    )
                    outcomes.append(Outcome(letter, "failed", error=result))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        published = sum(o.outcome == "replayed" for o in outcomes)
        raise Stop(
            f"PostgreSQL at {where} failed while recording a replay ({exc}): the last batch "
            f"({published} published to {found.original}) is not recorded and will be "
            "published again by the next run (the consumers apply it idempotently)"
        ) from exc
    return sorted(outcomes, key=lambda o: o.letter.position)


async def replays_of_one(conn: asyncpg.Connection, dlq: str, letter: DeadLetter) -> Replay | None:
    row = await conn.fetchrow(
        "SELECT target_topic, target_partition, target_offset, replayed_by, replayed_at"
        " FROM dead_letter_replays WHERE dlq_topic = $1 AND dlq_partition = $2"
        " AND dlq_offset = $3 AND dlq_timestamp_ms = $4",
        dlq,
        *key_of(letter),
    )
    return None if row is None else Replay(**dict(row))


async def send(
    producer: AIOKafkaProducer, topic: str, letter: DeadLetter
) -> asyncio.Future[RecordMetadata] | str:
    """Queue one record (in order: the same key keeps its partition and order); an error text
    if the producer refuses it at once."""
    try:
        future: asyncio.Future[RecordMetadata] = await producer.send(
            topic,
            value=letter.record.value,
            key=letter.record.key,
            headers=letter.replay_headers(),
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"not published: {exc!r}"
    return future


async def acknowledged(pending: asyncio.Future[RecordMetadata] | str) -> RecordMetadata | str:
    if isinstance(pending, str):
        return pending
    try:
        return await pending
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"not acknowledged by Kafka: {exc!r}"


def summarize(found: Topic, outcomes: list[Outcome], dry_run: bool) -> None:
    counts = {name: 0 for name in ("replayed", "already_replayed", "would_replay", "failed")}
    for outcome in outcomes:
        counts[outcome.outcome] += 1
    parts = []
    if dry_run:
        parts.append(f"dry run: {counts['would_replay']} would be replayed to {found.original}")
    else:
        parts.append(f"{counts['replayed']} replayed from {found.name} to {found.original}")
    if counts["already_replayed"]:
        parts.append(f"{counts['already_replayed']} already replayed before, skipped")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed (not recorded as replayed: run again)")
    err.print("; ".join(parts) + ".", style="bold")


def parse_position(value: str) -> tuple[int, int]:
    text = value.strip().removeprefix("p")
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise typer.BadParameter(f"{value!r} is not PARTITION:OFFSET, e.g. 0:17")
    return int(partition), int(offset)


REPLAY_EXAMPLES = """\
**Examples**

`notetaker dead-letters replay recording.completed --offset 0:17 --offset 2:4`

`notetaker dead-letters replay transcript.ready --event-id 3f0c…`

`notetaker dead-letters replay recording.uploaded --all --dry-run`
"""


@app.command("replay", epilog=REPLAY_EXAMPLES)
def replay_command(
    topic: TopicArg,
    offsets: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            metavar="P:O",
            help="The dead letter at partition P, offset O of the .dlq topic (as `list` "
            "shows it). Repeat for several.",
        ),
    ] = None,
    event_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--event-id",
            metavar="ID",
            help="Every dead letter of this event id. Repeat for several.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead letter on the topic.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Say what would be replayed; publish and record nothing."),
    ] = False,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per selected dead letter and line, with its outcome "
            "(replayed, already_replayed, would_replay, failed).",
        ),
    ] = False,
) -> None:
    """Publish the selected dead letters of TOPIC again to their original topic, once.

    Each goes out with its original key, value and headers (the dead-letter headers removed,
    `notetaker_replayed_from: <dlq topic>:<partition>:<offset>` added). Every replay is recorded
    in PostgreSQL (`dead_letter_replays`) in the transaction that publishes it, committed only
    once Kafka acknowledged it: running the command again, or twice at once, publishes each dead
    letter once. One that Kafka did not acknowledge is not recorded and is replayed by the next
    run. Exits 1 if any failed.
    """
    topics_of(topic)
    positions = tuple(parse_position(value) for value in offsets or [])
    ids = tuple(event_ids or [])
    if everything and (positions or ids):
        fail("--all replays every dead letter: give it alone, or --offset / --event-id", 2)
    if not (everything or positions or ids):
        fail("nothing selected: give --offset P:O, --event-id ID or --all", 2)
    config = settings()
    quiet_kafka_logs(config)
    outcomes = run(
        replay(
            config,
            topic,
            Selection(positions, ids, everything),
            dry_run=dry_run,
            json_lines=json_lines,
        )
    )
    if any(o.outcome == "failed" for o in outcomes):
        raise typer.Exit(1)
