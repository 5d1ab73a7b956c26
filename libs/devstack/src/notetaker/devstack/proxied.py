"""The pipeline with its dependencies behind fault proxies: PostgreSQL and Kafka behind TCP proxies
that can be taken down (every connection cut, new ones refused), S3 behind a proxy that can answer
503 to everything. Every service reaches them only through the proxies; the Kafka broker is an
embedded Tansu of its own, which advertises the proxy's address (so clients reconnect through the
proxy, not around it). The outage tests and the chaos run start it this way."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from notetaker.common.kafka import ensure_topics
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.pipeline import Pipeline, start_pipeline
from notetaker.devstack.s3_proxy import S3FaultProxy
from notetaker.devstack.services import SERVICES
from notetaker.devstack.stack import LocalProcess, Stack, start_tansu


@dataclass
class Proxied:
    """The pipeline whose PostgreSQL, Kafka and S3 are reached only through fault proxies; the
    Kafka broker is one of its own that advertises the proxy's address."""

    pipeline: Pipeline
    postgres: OutageProxy
    kafka: OutageProxy
    s3: S3FaultProxy
    broker: LocalProcess

    async def stop(self) -> None:
        self.postgres.restore()
        self.kafka.restore()
        self.s3.heal()
        try:
            await self.pipeline.stop()
        finally:
            await self.s3.stop()
            await self.postgres.stop()
            await self.kafka.stop()
            self.broker.stop()


async def start_proxied(
    stack: Stack,
    workdir: Path,
    *,
    per_service_env: dict[str, dict[str, str]] | None = None,
    **simulator_options: Any,
) -> Proxied:
    database = urlsplit(stack.database_url)
    assert database.hostname is not None
    assert database.port is not None
    postgres = OutageProxy(database.hostname, database.port)
    await postgres.start()
    assert stack.s3_endpoint_url is not None
    s3 = S3FaultProxy(stack.s3_endpoint_url)
    await s3.start()
    kafka = OutageProxy("127.0.0.1", 0)
    await kafka.start()
    (workdir / "kafka").mkdir(parents=True, exist_ok=True)
    broker = start_tansu(workdir / "kafka", advertised_port=kafka.port)
    kafka.upstream = ("127.0.0.1", broker.port)
    behind = replace(
        stack,
        kafka_bootstrap_servers=f"127.0.0.1:{kafka.port}",
        processes={},
        containers=[],
        owns_workdir=False,
    )
    await ensure_topics(behind.settings())
    env = {
        "NOTETAKER_DATABASE_URL": postgres.url_for(stack.database_url),
        "NOTETAKER_S3_ENDPOINT_URL": s3.url,
        # The broker is Tansu (see `Stack.env`): the join's changelog goes a record a batch.
        "NOTETAKER_FAUST_PRODUCER_MAX_BATCH_BYTES": "1",
    }
    extra = per_service_env or {}
    pipeline = await start_pipeline(
        behind,
        workdir / "services",
        per_service_env={name: env | extra.get(name, {}) for name in SERVICES},
        **simulator_options,
    )
    return Proxied(pipeline, postgres, kafka, s3, broker)
