"""The run's secret scan, a pytest plugin: after every test has run (fault tests included),
nothing secret is anywhere it does not belong.

Every service process a test starts is noted (its log, and the secrets its environment holds);
before it stops, its /metrics is kept next to its log. When the session's stack is torn down,
`findings` looks through:
- every service log and last metrics scrape,
- every text column of every table (the recordings' provider URL columns must hold ciphertext),
- every record of every event topic but the one that hands the provider URL to the uploader, and
  the error headers of every dead letter,
for the secrets the services were given (webhook secrets, API keys, token and URL keys), for any
part of a provider's signed URL (`X-Amz-Signature`, `X-Amz-Credential`), for the signatures and
error bodies of the tests' recording sources (`SIG` + 24 hex digits), for callback tokens in a
query string and for media tokens (JWTs).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from notetaker.common.events import DLQ_ERROR_HEADER, TOPICS, RecordingCompleted, dlq_topic
from notetaker.devstack.services import ServiceProcess, ServiceSet
from notetaker.devstack.stack import Stack

# What may never leave: parts of a provider's signed URL, the tests' source signatures and error
# bodies, a callback token in a query string, a media token.
PATTERNS = [
    re.compile(rb"X-Amz-Signature", re.IGNORECASE),
    re.compile(rb"X-Amz-Credential", re.IGNORECASE),
    re.compile(rb"SIG[0-9a-f]{24}"),
    re.compile(rb"token=[0-9a-f]{64}"),
    re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
]
SECRET_SETTING = re.compile(r"SECRET|TOKEN|PASSWORD|_KEYS?$|API_KEYS?$")
NOT_SECRET = {"NOTETAKER_S3_ACCESS_KEY_ID"}  # an identifier, named in S3's own requests
SEALED_COLUMNS = {("recordings", "provider_video_url"), ("recordings", "provider_audio_url")}
FERNET_PREFIX = "gAAAAA"  # a Fernet token's version byte and timestamp, base64
# Binary columns holding a Fernet token (a raw webhook body, compressed then sealed).
SEALED_BYTES = {("webhook_bodies", "sealed")}


@dataclass
class Seen:
    """What the run's services were: their logs and the secrets they were given."""

    logs: set[Path] = field(default_factory=set)
    secrets: set[bytes] = field(default_factory=set)

    def service(self, process: ServiceProcess) -> None:
        self.logs.add(process.log_path)
        for name, value in process.env.items():
            if name in NOT_SECRET or not SECRET_SETTING.search(name.upper()):
                continue
            for part in value.split(","):
                if len(part.strip()) >= 8:
                    self.secrets.add(part.strip().encode())


SEEN = Seen()


@dataclass
class Scanned:
    """How much the scan looked through, for the run's summary."""

    files: int = 0
    values: int = 0
    records: int = 0
    found: list[str] = field(default_factory=list)
    done: bool = False


SCANNED = Scanned()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCANNED.done:
        terminalreporter.write_line(
            f"secret scan: {SCANNED.files} service logs and metrics scrapes, {SCANNED.values}"
            f" database values, {SCANNED.records} Kafka records:"
            + (f" {len(SCANNED.found)} FOUND" if SCANNED.found else " nothing secret found")
        )


def metrics_path(log: Path) -> Path:
    return log.with_name(log.name + ".metrics")


def keep_metrics(process: ServiceProcess) -> None:
    """The service's last /metrics, next to its log (nothing when it is not running)."""
    if process.process is None or process.process.poll() is not None:
        return
    try:
        answer = httpx.get(f"{process.url}/metrics", timeout=5.0)
    except httpx.HTTPError:
        return
    if answer.status_code == 200:
        metrics_path(process.log_path).write_bytes(answer.content)


def pytest_configure(config: pytest.Config) -> None:
    patch = pytest.MonkeyPatch()
    config.add_cleanup(patch.undo)
    start, stop, stop_all = ServiceProcess.start, ServiceProcess.stop, ServiceSet.stop

    def noted_start(self: ServiceProcess) -> None:
        SEEN.service(self)
        start(self)

    def scraped_stop(self: ServiceProcess, *args: Any, **kwargs: Any) -> None:
        keep_metrics(self)
        stop(self, *args, **kwargs)

    def scraped_stop_all(self: ServiceSet) -> None:
        for process in self.processes.values():
            keep_metrics(process)
        stop_all(self)

    patch.setattr(ServiceProcess, "start", noted_start)
    patch.setattr(ServiceProcess, "stop", scraped_stop)
    patch.setattr(ServiceSet, "stop", scraped_stop_all)


def _leaks(text: bytes, secrets: Iterable[bytes], patterns: bool = True) -> list[str]:
    found = [
        f"a configured secret ({s[:4].decode(errors='replace')}...)" for s in secrets if s in text
    ]
    if patterns:
        found += [f"/{p.pattern.decode()}/" for p in PATTERNS if p.search(text)]
    return found


async def findings(
    *,
    logs: Iterable[Path],
    secrets: set[bytes],
    connection: asyncpg.Connection,
    topics: Iterable[str],
    read_topic: Callable[[str], list[Any]],
    scanned: Scanned | None = None,
) -> list[str]:
    """Where something secret was found: a line per place and what was found there."""
    scanned = scanned or Scanned()
    found: list[str] = []
    for log in sorted(logs):
        for path in (log, metrics_path(log)):
            if path.exists():
                scanned.files += 1
                found += [f"{path}: {what}" for what in _leaks(path.read_bytes(), secrets)]
    columns = await connection.fetch(
        "SELECT table_name, column_name, quote_ident(table_name) AS t,"
        " quote_ident(column_name) AS c FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'character varying')"
        " ORDER BY table_name, column_name"
    )
    for table, column, quoted_table, quoted_column in columns:
        values = await connection.fetch(
            f"SELECT {quoted_column}::text FROM {quoted_table}"  # noqa: S608 - quote_ident'ed names
            f" WHERE {quoted_column} IS NOT NULL"
        )
        for (value,) in values:
            scanned.values += 1
            if (table, column) in SEALED_COLUMNS and not value.startswith(FERNET_PREFIX):
                found.append(f"{table}.{column}: not sealed ({value[:12]}...)")
                continue
            found += [f"{table}.{column}: {what}" for what in _leaks(value.encode(), secrets)]
    for table, column in sorted(SEALED_BYTES):
        values = await connection.fetch(
            f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608 - constants
        )
        for (value,) in values:
            scanned.values += 1
            if not bytes(value).startswith(FERNET_PREFIX.encode()):
                found.append(f"{table}.{column}: not sealed ({bytes(value)[:12]!r}...)")
    for topic in topics:
        # The provider's URL travels on recording.completed (and stays in its dead letters' values,
        # for replay): there, only a configured secret would be a leak.
        hands_over_url = topic in (RecordingCompleted.type, dlq_topic(RecordingCompleted.type))
        for record in await asyncio.to_thread(read_topic, topic):
            scanned.records += 1
            where = f"{topic} {record.partition}:{record.offset}"
            found += [
                f"{where} value: {what}"
                for what in _leaks(record.value, secrets, patterns=not hands_over_url)
            ]
            for name, value in record.headers:
                is_error = name == DLQ_ERROR_HEADER
                found += [
                    f"{where} header {name}: {what}"
                    for what in _leaks(value, secrets, patterns=is_error or not hands_over_url)
                ]
    return found


def event_topics() -> list[str]:
    return [*TOPICS, *(dlq_topic(t) for t in TOPICS)]


async def check_run(stack: Stack, read_topic: Callable[[str], list[Any]]) -> None:
    """Fail the run, naming each place, when anything secret is where it does not belong."""
    connection = await asyncpg.connect(stack.database_url)
    try:
        found = await findings(
            logs=SEEN.logs,
            secrets=SEEN.secrets,
            connection=connection,
            topics=event_topics(),
            read_topic=read_topic,
            scanned=SCANNED,
        )
    finally:
        await connection.close()
    SCANNED.found, SCANNED.done = found, True
    assert found == [], "secrets found where they do not belong:\n" + "\n".join(found)
