"""Webhook ingest, acknowledged by Kafka, against a bare uvicorn endpoint that does nothing.

Both get the same signed MeetingBaaS deliveries over loopback: first closed-loop for peak
throughput, then open-loop at half of ingest's peak for latency. Prints both, and their ratio.
Target (docs/architecture.md §12): ratio >= 0.7 and ingest p99 < 25 ms at half the peak rate.

A third endpoint, an empty FastAPI route that reads the body and answers, is measured in the same
run: it is the ceiling any FastAPI service can reach against the bare baseline, before it verifies,
stores or publishes anything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import secrets
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from standardwebhooks.webhooks import Webhook

from bench.loadgen import Result, at_rate, request_bytes, saturate
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import LocalProcess, Stack, free_port, start_stack


def deliveries(secret: str, bot_id: str, count: int) -> list[bytes]:
    """Signed, distinct `bot.status_change` deliveries (each one is new to ingest)."""
    webhook = Webhook(secret)
    now = datetime.now(UTC)
    out = []
    for _ in range(count):
        body = json.dumps(
            {
                "event": "bot.status_change",
                "data": {
                    "bot_id": bot_id,
                    "status": {"code": "in_call_recording", "created_at": now.isoformat()},
                },
                "sent_at": now.isoformat(),
            }
        )
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            "content-type": "application/json",
            "svix-id": msg_id,
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": webhook.sign(msg_id, now, body),
        }
        out.append(request_bytes("/webhooks/meetingbaas", body.encode(), headers))
    return out


class Feed:
    """Hands out each pre-built request once."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.position = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.position >= len(self.requests):
            raise RuntimeError("benchmark ran out of pre-built requests; raise --requests")
        self.position += 1
        return self.requests[self.position - 1]


async def measure(port: int, feed: Iterator[bytes], seconds: float, connections: int) -> Result:
    await saturate(port, feed, connections, 1.0)  # warm up
    return await saturate(port, feed, connections, seconds)


async def run(stack: Stack, seconds: float, connections: int, count: int, workdir: Path) -> int:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    bot_id = str(uuid.uuid4())
    conn = await asyncpg.connect(stack.database_url)
    await conn.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3)",
        uuid.uuid4(),
        uuid.uuid4(),
        bot_id,
    )
    await conn.close()

    ingest_port, bare_port, empty_port = free_port(), free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "NOTETAKER_LOG_FORMAT": "json",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(ingest_port),
        "NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS": secret,
    }
    ingest = ServiceProcess("ingest", env, ingest_port, workdir / "ingest.log")
    bare = LocalProcess(
        "bare uvicorn",
        [sys.executable, "-m", "bench.bare_endpoint", str(bare_port)],
        workdir / "bare.log",
        bare_port,
    )
    empty = LocalProcess(
        "empty FastAPI route",
        [sys.executable, "-m", "bench.bare_endpoint", str(empty_port), "--fastapi"],
        workdir / "empty.log",
        empty_port,
    )
    ingest.start()
    bare.start()
    empty.start()
    try:
        await asyncio.to_thread(ingest.wait_ready)
        print(f"building {count} signed deliveries ...", flush=True)
        requests = deliveries(secret, bot_id, count)
        print(f"closed loop: {connections} connections, {seconds:.0f} s each", flush=True)
        # The baseline deduplicates nothing, so it may see the same bytes again.
        base = await measure(bare_port, itertools.cycle(requests), seconds, connections)
        print(base.line("bare uvicorn"), flush=True)
        framework = await measure(empty_port, itertools.cycle(requests), seconds, connections)
        print(framework.line("empty FastAPI"), flush=True)
        peak = await measure(ingest_port, Feed(requests), seconds, connections)
        print(peak.line("ingest"), flush=True)
        half = peak.rate / 2
        print(
            f"open loop at half of ingest's peak: {half:.0f} req/s for {seconds:.0f} s", flush=True
        )
        relaxed = await at_rate(
            ingest_port, Feed(deliveries(secret, bot_id, int(half * seconds) + 10)), half, seconds
        )
        print(relaxed.line("ingest"), flush=True)
        bare_relaxed = await at_rate(bare_port, itertools.cycle(requests), half, seconds)
        print(bare_relaxed.line("bare uvicorn"), flush=True)
    finally:
        ingest.stop()
        bare.stop()
        empty.stop()
    ratio = peak.rate / base.rate
    p99 = relaxed.percentile(99)
    print(f"\nthroughput ratio ingest / bare uvicorn: {ratio:.2f} (target >= 0.70)")
    ceiling = framework.rate / base.rate
    print(f"ceiling of any FastAPI route, empty FastAPI / bare uvicorn: {ceiling:.2f}")
    print(f"ingest / empty FastAPI route: {peak.rate / framework.rate:.2f}")
    print(f"ingest p99 at half its peak rate: {p99:.1f} ms (target < 25 ms)")
    errors = peak.errors + relaxed.errors
    if errors:
        print(f"ingest answered {errors} requests with an error status: see {workdir}/ingest.log")
    return 1 if errors else 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=60_000)
    args = parser.parse_args(
        sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "ingest" else sys.argv[1:]
    )
    workdir = Path(tempfile.mkdtemp(prefix="notetaker-bench-"))
    stack = await start_stack()
    try:
        return await run(stack, args.seconds, args.connections, args.requests, workdir)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
