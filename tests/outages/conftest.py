"""The pipeline with its dependencies behind fault proxies: PostgreSQL and Kafka behind TCP
proxies that can be taken down (every connection cut, new ones refused), S3 behind a proxy that
can answer 503 SlowDown to everything. Every service reaches them only through the proxies; the
Kafka broker here is an embedded Tansu of this package's own, which advertises the proxy's address
(so clients reconnect through the proxy, not around it).

How long and how big: `NOTETAKER_OUTAGE_SECONDS` (default 6) and `NOTETAKER_OUTAGE_MEETINGS`
(default 4) in `make test`; `make outages` runs the long form (60 s, 20 meetings).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from notetaker.common.kafka import ensure_topics
from notetaker.devstack.outage import OutageProxy
from notetaker.devstack.pipeline import Pipeline, start_pipeline
from notetaker.devstack.s3_proxy import S3FaultProxy
from notetaker.devstack.services import SERVICES
from notetaker.devstack.stack import Stack, start_tansu

OUTAGE_SECONDS = float(os.environ.get("NOTETAKER_OUTAGE_SECONDS", "6"))
MEETINGS = int(os.environ.get("NOTETAKER_OUTAGE_MEETINGS", "4"))


@dataclass
class Proxied:
    pipeline: Pipeline
    postgres: OutageProxy
    kafka: OutageProxy
    s3: S3FaultProxy


@pytest.fixture(scope="package")
async def proxied(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Proxied]:
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
    broker = start_tansu(Path(tmp_path_factory.mktemp("outage-kafka")), advertised_port=kafka.port)
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
    }
    pipeline = await start_pipeline(
        behind,
        Path(tmp_path_factory.mktemp("outage-services")),
        per_service_env={name: env for name in SERVICES},
        # Svix retries a failed delivery for a day: enough tries to outlast the outage here.
        delivery_attempts=int(OUTAGE_SECONDS) + 30,
    )
    try:
        yield Proxied(pipeline, postgres, kafka, s3)
    finally:
        postgres.restore()
        kafka.restore()
        s3.heal()
        await pipeline.stop()
        await s3.stop()
        await postgres.stop()
        await kafka.stop()
        broker.stop()
