"""Stack fixtures: the embedded stack (or testcontainers when Docker answers), started once.

Tests that need the stack ask for `stack`; the services and the provider simulator are started
by the e2e fixtures in tests/e2e/conftest.py.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage

from notetaker.common.db import migrate
from notetaker.common.logs import configure_logging
from notetaker.common.s3 import S3Client, s3_client
from notetaker.devstack.media import Recording
from notetaker.devstack.simulator import ProviderSimulator, SimulatorConfig
from notetaker.devstack.stack import Stack, docker_available, start_stack

pytest.register_assert_rewrite("tests.secret_scan")
from tests import secret_scan  # noqa: E402 - after its assertions are set to be rewritten

T = TypeVar("T")

pytest_plugins = ["tests.leaks", "tests.secret_scan"]


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[Stack]:
    """The run's stack; once every test is done with it, the secret scan (tests/secret_scan.py)
    looks through what the run's services left in it."""
    configure_logging("tests", "WARNING", "console")
    running = await start_stack(containers=docker_available())
    yield running
    try:
        created = existing_topics(running)
        await secret_scan.check_run(
            running,
            lambda topic: (
                records_up_to_marker(running.kafka_bootstrap_servers, topic, None)
                if topic in created
                else []  # no test created it
            ),
        )
    finally:
        running.stop()


def existing_topics(stack: Stack) -> set[str]:
    """The topics the stack's broker has."""
    admin = Consumer({"bootstrap.servers": stack.kafka_bootstrap_servers, "group.id": "scan"})
    try:
        return set(admin.list_topics(timeout=20).topics)
    finally:
        admin.close()


@pytest.fixture(scope="session")
async def db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def s3(stack: Stack) -> AsyncIterator[S3Client]:
    async with s3_client(stack.settings()) as client:
        yield client


@dataclass(frozen=True)
class OwnDatabase:
    dsn: str
    pool: asyncpg.Pool


@pytest.fixture
async def own_database(stack: Stack) -> AsyncIterator[OwnDatabase]:
    """A fresh, migrated database on the stack's server, dropped afterwards: for tests of work
    that covers every org of its database (the rollup, reconciliation with S3)."""
    name = f"own_{uuid.uuid4().hex[:12]}"
    admin: asyncpg.Connection = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(stack.database_url)._replace(path=f"/{name}"))
    await migrate(dsn)
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield OwnDatabase(dsn, pool)
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()


@asynccontextmanager
async def scratch_bucket(s3: S3Client, prefix: str) -> AsyncIterator[str]:
    """A new bucket named `prefix-...` on the stack's S3, emptied and removed afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        listed = await s3.list_objects_v2(Bucket=name)
        for item in listed.get("Contents", []):
            await s3.delete_object(Bucket=name, Key=item["Key"])
        await s3.delete_bucket(Bucket=name)


@pytest.fixture
async def own_bucket(s3: S3Client) -> AsyncIterator[str]:
    """A bucket of the test's own on the stack's S3, emptied and removed afterwards."""
    async with scratch_bucket(s3, "own") as name:
        yield name


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def promtool_path() -> str:
    """Debian's promtool (`make tools` installs it); its absence fails the test, never skips it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed. Install Debian's prometheus package:"
            " `sudo apt-get update && sudo apt-get install -y prometheus` (or run `make tools`)."
        )
    return path


def prometheus_path() -> str:
    """Debian's Prometheus server (the package that brings promtool); its absence fails the test,
    never skips it."""
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "the prometheus server is not installed. Install Debian's prometheus package:"
            " `sudo apt-get update && sudo apt-get install -y prometheus` (or run `make tools`)."
        )
    return path


# A record the reader writes itself, after everything it must see, to know where "everything" ends.
MARKER_KEY = b"notetaker-test-marker"
MARKER_HEADER = "notetaker-test-marker"


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes
    tombstone: bool = False  # the value is null (`value` is then empty)


def records_up_to_marker(
    bootstrap: str, topic: str, key: str | None, timeout: float = 20.0
) -> list[KafkaRecord]:
    """Every record keyed `key` (any key: None) on `topic` that was published before this call,
    in offset order.

    Read with librdkafka (not our code), so the result is complete, never merely what turned up
    in time: first an end marker goes to every partition of the topic, then each partition is read
    from its start up to that marker. Seeing a partition's marker proves everything written to it
    earlier was seen, so an empty result is a proven "nothing was published". A reader that cannot
    finish (no such topic, no partitions, broker silent, a marker not seen by `timeout`) raises
    AssertionError saying what it was waiting for; it never returns an empty list instead.
    """
    deadline = time.monotonic() + timeout
    wanted = f"records keyed {key!r} on topic {topic!r} at {bootstrap}"

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "allow.auto.create.topics": False,
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=left())
        except KafkaException as exc:
            raise AssertionError(
                f"cannot read {wanted}: no metadata from the broker ({exc})"
            ) from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            why = "not in the metadata" if described is None else described.error or "no partitions"
            raise AssertionError(f"cannot read {wanted}: the topic is unreadable ({why})")
        partitions = sorted(described.partitions)
        marker = _write_markers(bootstrap, topic, partitions, left(), wanted)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[KafkaRecord] = []
        unmarked = set(partitions)
        errors: list[str] = []
        while unmarked:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s reading {wanted}: the end marker never came"
                    f" back on partitions {sorted(unmarked)} (errors seen: {errors or 'none'})"
                )
            message = consumer.poll(min(0.5, left()))
            if message is None:
                continue
            if (error := message.error()) is not None:
                errors.append(str(error))
                continue
            record = _record(message)
            if record.partition not in unmarked:
                continue  # published after our marker: not part of what this call must see
            markers = [v for k, v in record.headers if k == MARKER_HEADER]
            if markers:
                if marker in markers:
                    unmarked.discard(record.partition)
                continue  # a marker (ours or another reader's) is never a result
            if key is None or record.key == key.encode():
                found.append(record)
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def _write_markers(
    bootstrap: str, topic: str, partitions: list[int], timeout: float, wanted: str
) -> bytes:
    marker = uuid.uuid4().hex.encode()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "message.timeout.ms": max(int(timeout * 1000), 1)}
    )
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for partition in partitions:
        producer.produce(
            topic,
            value=b"",
            key=MARKER_KEY,
            partition=partition,
            headers=[(MARKER_HEADER, marker)],
            on_delivery=delivered,
        )
    unsent = producer.flush(timeout)
    if unsent or failures:
        raise AssertionError(
            f"cannot read {wanted}: its end markers were not written"
            f" ({unsent} unsent, failures: {failures or 'none'})"
        )
    return marker


def _record(message: KafkaMessage) -> KafkaRecord:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise AssertionError(f"librdkafka returned a record without a position: {message!r}")
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs]
    value = message.value()
    return KafkaRecord(
        topic, partition, offset, message.key(), headers, value or b"", tombstone=value is None
    )


@asynccontextmanager
async def quiet_simulator() -> AsyncIterator[ProviderSimulator]:
    """The simulator's MeetingBaaS and Gladia APIs, with fresh keys; its bots stay in their
    meetings (no webhooks: nobody listens), and serve a few bytes, not a made-up video."""
    simulator = ProviderSimulator(
        SimulatorConfig(
            ingest_url="http://127.0.0.1:9",
            svix_secret="whsec_" + secrets.token_urlsafe(32),
            api_key=secrets.token_urlsafe(24),
            gladia_api_key=secrets.token_urlsafe(24),
            status_delay_seconds=3600,
        ),
        Recording(video=b"video", audio=b"audio"),
    )
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()
