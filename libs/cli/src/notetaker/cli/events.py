"""`notetaker events`: watch the events on Kafka by hand.

Topics are named after the catalog's event types (`notetaker.common.events.CATALOG`), each with a
dead-letter topic `<type>.dlq`. The tail reads without a consumer group: it assigns itself every
partition of the topic, commits nothing, and so never disturbs the services' consumers.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from notetaker.common.envelope import Envelope, EnvelopeError, from_message
from notetaker.common.events import DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER, TOPICS, dlq_topic
from notetaker.common.logs import configure_logging
from notetaker.common.settings import NotetakerSettings, load_settings

app = typer.Typer(
    help="Watch the events on Kafka: one topic per event type, plus its dead letters (.dlq).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

DLQ_TOPICS: tuple[str, ...] = tuple(dlq_topic(t) for t in TOPICS)
ALL_TOPICS: tuple[str, ...] = (*TOPICS, *DLQ_TOPICS)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")


class Stop(Exception):
    """A failure already explained to the user: exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(Text("Error: ", style="bold red") + Text(message))
    raise typer.Exit(code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine: Ctrl-C ends it cleanly, a known failure exits with its code."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except Stop as stop:
        fail(stop.message, stop.code)


def check_topic(topic: str) -> str:
    if topic in ALL_TOPICS:
        return topic
    close = difflib.get_close_matches(topic, ALL_TOPICS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    fail(
        f"unknown topic {topic!r}.{hint}\n"
        f"Event topics: {', '.join(TOPICS)}\n"
        f"Dead-letter topics: {', '.join(DLQ_TOPICS)}",
        code=2,
    )


def settings() -> NotetakerSettings:
    """The NOTETAKER_* settings; a bad value exits with a message naming it, no traceback."""
    return load_settings(NotetakerSettings)


def quiet_kafka_logs(settings: NotetakerSettings) -> None:
    """aiokafka logs each failed connection itself; the CLI says it once, plainly, instead.

    NOTETAKER_LOG_LEVEL=DEBUG shows the client's own log on stderr, to debug a connection.
    """
    if settings.log_level.upper() == "DEBUG":
        configure_logging("notetaker-cli", "DEBUG", "console")
        logging.getLogger("aiokafka").setLevel(logging.DEBUG)
    else:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)


async def start_consumer(settings: NotetakerSettings) -> AIOKafkaConsumer:
    """A consumer in no group that commits nothing, started (raises Stop if Kafka is away)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id="notetaker-cli",
        request_timeout_ms=10_000,
    )
    await start_kafka_client(consumer, settings)
    return consumer


async def start_kafka_client(
    client: AIOKafkaConsumer | AIOKafkaProducer, settings: NotetakerSettings
) -> None:
    """Start a Kafka consumer or producer, or stop it and raise Stop saying Kafka is away."""
    try:
        await client.start()
    except (TimeoutError, KafkaError, OSError) as exc:
        await client.stop()
        reason = "" if isinstance(exc, KafkaConnectionError) else f": {exc!r}"
        raise Stop(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
            f"(NOTETAKER_KAFKA_BOOTSTRAP_SERVERS){reason}"
        ) from exc


def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


# --- events tail -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One record as the tail shows it: the envelope, or the raw record when it is not one."""

    record: ConsumerRecord[bytes, bytes]
    envelope: Envelope | None
    parse_error: str | None

    @property
    def headers(self) -> dict[str, bytes]:
        return dict(self.record.headers)

    def dead_letter(self) -> dict[str, Any] | None:
        headers = self.headers
        if DLQ_ERROR_HEADER not in headers and DLQ_OFFSET_HEADER not in headers:
            return None
        offset = headers.get(DLQ_OFFSET_HEADER)
        return {
            "error": _text(headers.get(DLQ_ERROR_HEADER)),
            "original_offset": int(offset) if offset and offset.isdigit() else _text(offset),
        }


def read(record: ConsumerRecord[bytes, bytes]) -> Shown:
    try:
        envelope = from_message(list(record.headers), record.key, record.value or b"")
    except EnvelopeError as exc:
        return Shown(record, None, str(exc))
    return Shown(record, envelope, None)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _timestamp(record: ConsumerRecord[bytes, bytes]) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def as_json(shown: Shown) -> dict[str, Any]:
    """Envelope attributes + data + where the record is, for scripts (one object per line)."""
    record = shown.record
    base: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _timestamp(record).isoformat(),
        "key": _text(record.key),
    }
    envelope = shown.envelope
    if envelope is None:
        return base | {
            "parse_error": shown.parse_error,
            "headers": {name: _text(value) for name, value in record.headers},
            "value": _text(record.value),
            "dead_letter": shown.dead_letter(),
        }
    attributes = {
        name[3:]: _text(value) for name, value in record.headers if name.startswith("ce_")
    }
    if "content-type" in shown.headers:
        attributes["datacontenttype"] = _text(shown.headers["content-type"])
    return (
        base
        | attributes
        | {
            "id": envelope.id,
            "source": envelope.source,
            "type": envelope.type,
            "time": envelope.time.isoformat(),
            "bot_id": envelope.event.bot_id,
            "data": envelope.event.model_dump(mode="json"),
            "dead_letter": shown.dead_letter(),
            "parse_error": None,
        }
    )


def _short(value: Any, width: int = 48) -> str:
    if isinstance(value, list):
        return f"[{len(value)} item{'' if len(value) == 1 else 's'}]"
    if isinstance(value, dict):
        return "{…}"
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(data: dict[str, Any], width: int = 200) -> str:
    """`key=value` for the payload's fields (bot id and empty ones left out), cut to `width`."""
    text = " ".join(
        f"{k}={_short(v)}" for k, v in data.items() if k != "bot_id" and v not in (None, "")
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def as_line(shown: Shown) -> Text:
    """time  type  bot  partition:offset  event id  data summary (+ dead-letter error)."""
    record = shown.record
    where = f"p{record.partition}:{record.offset}"
    envelope = shown.envelope
    line = Text()
    if envelope is None:
        line.append(f"{_timestamp(record):%Y-%m-%dT%H:%M:%SZ}", style="dim")
        line.append("  not an event", style="bold yellow")
        line.append(f"  bot={_text(record.key) or '-'}", style="cyan")
        line.append(f"  {where}", style="dim")
        line.append(f"  shown raw, it does not parse: {_short(shown.parse_error, 160)}")
        value = repr(record.value[:160]) if record.value is not None else "None"
        line.append(f"\n    value={value}", style="dim")
    else:
        line.append(f"{envelope.time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}", style="dim")
        line.append(f"  {envelope.type}", style="bold green")
        line.append(f"  bot={envelope.event.bot_id}", style="cyan")
        line.append(f"  {where}", style="dim")
        line.append(f"  {envelope.id}", style="dim")
        line.append(f"  {summary(envelope.event.model_dump(mode='json'))}")
    dead = shown.dead_letter()
    if dead is not None:
        line.append(
            f"\n    dead letter from offset {dead['original_offset']}: {dead['error']}",
            style="red",
        )
    return line


def emit(shown: Shown, json_lines: bool) -> None:
    if json_lines:
        sys.stdout.write(json.dumps(as_json(shown)) + "\n")
        sys.stdout.flush()
    else:
        out.print(as_line(shown))


async def tail(
    settings: NotetakerSettings,
    topic: str,
    *,
    from_beginning: bool,
    bot_id: str | None,
    max_events: int | None,
    timeout: float | None,
    json_lines: bool,
) -> int:
    """Print the topic's records until `max_events` were shown or `timeout` passed idle."""
    consumer = await start_consumer(settings)
    shown = 0
    # Ctrl-C ends the loop at its next turn (a second at most), rather than by cancelling the
    # task: a cancellation landing inside aiokafka's fetch can be lost, and the tail ran on.
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        partitions = topic_partitions(consumer, topic)
        if not partitions:
            raise Stop(
                f"topic {topic!r} does not exist on {settings.kafka_bootstrap_servers} "
                "(the services create their topics when they start)"
            )
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the start now, so "watching" below is true
            await consumer.position(tp)
        count = f"{len(partitions)} partition{'' if len(partitions) == 1 else 's'}"
        start = "beginning" if from_beginning else "end"
        only = f", bot {bot_id} only" if bot_id else ""
        err.print(
            f"Watching {topic} ({count}) on {settings.kafka_bootstrap_servers} "
            f"from the {start}{only}. Ctrl-C stops.",
            style="dim",
        )
        key = bot_id.encode() if bot_id is not None else None
        last_shown = time.monotonic()
        while (max_events is None or shown < max_events) and not interrupted.is_set():
            idle = time.monotonic() - last_shown
            if timeout is not None and idle >= timeout:
                break
            wait = 1.0 if timeout is None else min(1.0, timeout - idle)
            batch = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)))
            for tp in sorted(batch):
                for record in batch[tp]:
                    if key is not None and record.key != key:
                        continue
                    emit(read(record), json_lines)
                    shown += 1
                    last_shown = time.monotonic()
                    if max_events is not None and shown >= max_events:
                        return shown
    except KafkaError as exc:
        raise Stop(f"Kafka at {settings.kafka_bootstrap_servers} failed: {exc!r}") from exc
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await consumer.stop()
    return shown


TopicArg = Annotated[
    str,
    typer.Argument(
        help="An event type (bot.status, recording.completed, ...) or its dead letters "
        "(bot.status.dlq); `notetaker events topics` lists them.",
        metavar="TOPIC",
        show_default=False,
    ),
]


TAIL_EXAMPLES = """\
**Examples**

`notetaker events tail bot.status` (new events, until Ctrl-C)

`notetaker events tail recording.completed --from-beginning --bot-id BOT_ID`

`notetaker events tail recording.uploaded.dlq --from-beginning --timeout 2 --json | jq .dead_letter`
"""


@app.command("tail", epilog=TAIL_EXAMPLES)
def tail_command(
    topic: TopicArg,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning", help="Start at the oldest retained event instead of the end."
        ),
    ] = False,
    bot_id: Annotated[
        str | None,
        typer.Option("--bot-id", metavar="BOT_ID", help="Only this bot's events (the key)."),
    ] = None,
    max_events: Annotated[
        int | None,
        typer.Option("--max", metavar="N", min=1, help="Stop after N events."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0.1,
            help="Stop after SECONDS without a new event. Default: run until Ctrl-C.",
        ),
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line (envelope attributes, data, partition, offset).",
        ),
    ] = False,
) -> None:
    """Print the events on TOPIC as they arrive.

    Reads every partition without a consumer group (nothing is committed, the services'
    consumers are not disturbed). Dead letters show the error they were parked with; a record
    that is not a valid event is shown raw with the reason. Status lines go to stderr, events to
    stdout.
    """
    check_topic(topic)
    config = settings()
    quiet_kafka_logs(config)
    run(
        tail(
            config,
            topic,
            from_beginning=from_beginning,
            bot_id=bot_id,
            max_events=max_events,
            timeout=timeout,
            json_lines=json_lines,
        )
    )


# --- events topics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    exists: bool
    beginning_offsets: dict[int, int]
    end_offsets: dict[int, int]

    @property
    def retained(self) -> int:
        return sum(self.end_offsets[p] - self.beginning_offsets.get(p, 0) for p in self.end_offsets)

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "exists": self.exists,
            "partitions": len(self.end_offsets),
            "beginning_offsets": {str(p): o for p, o in self.beginning_offsets.items()},
            "end_offsets": {str(p): o for p, o in self.end_offsets.items()},
            "retained": self.retained,
        }


async def topic_infos(settings: NotetakerSettings, topics: Iterable[str]) -> list[TopicInfo]:
    consumer = await start_consumer(settings)
    try:
        wanted = {topic: topic_partitions(consumer, topic) for topic in topics}
        partitions = [tp for tps in wanted.values() for tp in tps]
        beginning = await consumer.beginning_offsets(partitions) if partitions else {}
        end = await consumer.end_offsets(partitions) if partitions else {}
    except KafkaError as exc:
        raise Stop(f"Kafka at {settings.kafka_bootstrap_servers} failed: {exc!r}") from exc
    finally:
        await consumer.stop()
    return [
        TopicInfo(
            topic,
            exists=bool(tps),
            beginning_offsets={tp.partition: beginning[tp] for tp in tps},
            end_offsets={tp.partition: end[tp] for tp in tps},
        )
        for topic, tps in wanted.items()
    ]


@app.command("topics")
def topics_command(
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per topic and line.")
    ] = False,
) -> None:
    """List the event topics and their dead-letter topics: partitions and end offsets."""
    config = settings()
    quiet_kafka_logs(config)
    infos = run(topic_infos(config, ALL_TOPICS))
    if json_lines:
        for info in infos:
            sys.stdout.write(json.dumps(info.as_json()) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=f"Topics on {config.kafka_bootstrap_servers}", title_justify="left")
    table.add_column("Topic", no_wrap=True)
    table.add_column("Partitions", justify="right")
    table.add_column("End offsets (partition:offset)")
    table.add_column("Retained", justify="right")
    for info in infos:
        if not info.exists:
            table.add_row(info.topic, "-", Text("not created", style="yellow"), "-")
            continue
        ends = " ".join(f"{p}:{o}" for p, o in info.end_offsets.items())
        dlq_with_records = info.topic in DLQ_TOPICS and info.retained > 0
        table.add_row(
            Text(info.topic, style="bold red" if dlq_with_records else ""),
            str(len(info.end_offsets)),
            ends,
            str(info.retained),
        )
    out.print(table)
