"""The pipeline with its dependencies behind fault proxies: PostgreSQL and Kafka behind TCP
proxies that can be taken down (every connection cut, new ones refused), S3 behind a proxy that
can answer 503 SlowDown to everything. Every service reaches them only through the proxies; the
Kafka broker here is an embedded Tansu of this package's own, which advertises the proxy's address
(so clients reconnect through the proxy, not around it): `notetaker.devstack.proxied`.

How long and how big: `NOTETAKER_OUTAGE_SECONDS` (default 6) and `NOTETAKER_OUTAGE_MEETINGS`
(default 4) in `make test`; `make outages` runs the long form (60 s, 20 meetings).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notetaker.devstack.proxied import Proxied, start_proxied
from notetaker.devstack.stack import Stack

OUTAGE_SECONDS = float(os.environ.get("NOTETAKER_OUTAGE_SECONDS", "6"))
MEETINGS = int(os.environ.get("NOTETAKER_OUTAGE_MEETINGS", "4"))

__all__ = ["MEETINGS", "OUTAGE_SECONDS", "Proxied"]


@pytest.fixture(scope="package")
async def proxied(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Proxied]:
    running = await start_proxied(
        stack,
        Path(tmp_path_factory.mktemp("outage")),
        # Svix retries a failed delivery for a day: enough tries to outlast the outage here.
        delivery_attempts=int(OUTAGE_SECONDS) + 30,
    )
    try:
        yield running
    finally:
        await running.stop()
