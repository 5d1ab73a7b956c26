"""The daily storage rollup for 10,000 orgs, with 1 and with 100 recordings each.

The rollup's cost must grow with the orgs, never with the recordings they hold (docs/architecture.md
§8). Each case is a fresh database on one embedded PostgreSQL, seeded in SQL as the pipeline would
have left it: `--orgs` orgs with their recordings (`recordings` rows, complete, and each one's
usage event in `usage_events_applied`) and `--history` days already rolled up (a `storage_gb` row
per org per day, at the level of its recordings). Measured: the time to roll up each of the next
`--days` days (`rollup.roll_up_day`, one transaction each; the days alternate between the cases),
the median per case, and the ratio of the 100-recording case to the 1-recording baseline, both
measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from notetaker.common.db import migrate
from notetaker.devstack.stack import start_stack
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.rollup import roll_up_day
from notetaker.metrics.usage import GIB, Prices

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)
FIRST_DAY = date(2027, 1, 1)
RECORDING_BYTES = 50 * 2**20


@dataclass(frozen=True)
class Result:
    recordings_per_org: int
    recordings: int
    usage_rows: int
    seconds_per_day: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds_per_day) * 1000


async def seed(pool: asyncpg.Pool, orgs: int, per_org: int, history: int) -> None:
    await pool.execute(
        "INSERT INTO recordings (org_id, user_id, bot_id, s3_upload_status, s3_file_size_bytes)"
        " SELECT md5('org-' || o)::uuid, md5('user-' || o)::uuid, 'bot-' || o || '-' || r,"
        " 'complete', $3"
        " FROM generate_series(1, $1) o, generate_series(1, $2) r",
        orgs,
        per_org,
        RECORDING_BYTES,
    )
    await pool.execute(
        "INSERT INTO usage_events_applied (event_id)"
        " SELECT 'upload-' || o || '-' || r"
        " FROM generate_series(1, $1) o, generate_series(1, $2) r",
        orgs,
        per_org,
    )
    level = per_org * RECORDING_BYTES / GIB
    await pool.execute(
        "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
        " SELECT md5('org-' || o)::uuid, $3::date + d, 'storage_gb', $2::float8,"
        " $2::float8 * 0.023 / 31"
        " FROM generate_series(1, $1) o, generate_series(0, $4 - 1) d",
        orgs,
        level,
        FIRST_DAY,
        history,
    )
    await pool.execute(
        "INSERT INTO usage_rollup_days (day, orgs_carried)"
        " SELECT $1::date + d, $2 FROM generate_series(0, $3 - 1) d",
        FIRST_DAY,
        orgs,
        history,
    )
    await pool.execute("VACUUM ANALYZE")


class Case:
    """One fresh database, seeded with `per_org` recordings for each org."""

    def __init__(self, server_url: str, per_org: int) -> None:
        self.server_url = server_url
        self.per_org = per_org
        self.name = f"bench_rollup_{per_org}_{uuid.uuid4().hex[:8]}"
        self.pool: asyncpg.Pool | None = None
        self.seconds: list[float] = []

    async def open(self, orgs: int, history: int) -> None:
        admin: asyncpg.Connection = await asyncpg.connect(self.server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        dsn = urlunsplit(urlsplit(self.server_url)._replace(path=f"/{self.name}"))
        await migrate(dsn)
        self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        started = time.perf_counter()
        await seed(self.pool, orgs, self.per_org, history)
        print(
            f"  seeded {orgs:,} orgs x {self.per_org} recordings, {history} days of history"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

    async def roll_up(self, day: date, orgs: int) -> None:
        assert self.pool is not None
        started = time.perf_counter()
        carried = await roll_up_day(self.pool, day, PRICES)
        self.seconds.append(time.perf_counter() - started)
        assert carried == orgs, (day, carried)

    async def result(self) -> Result:
        assert self.pool is not None
        recordings = await self.pool.fetchval("SELECT count(*) FROM recordings")
        rows = await self.pool.fetchval("SELECT count(*) FROM s3_usage_metrics")
        return Result(self.per_org, recordings, rows, self.seconds)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        admin: asyncpg.Connection = await asyncpg.connect(self.server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        finally:
            await admin.close()


async def main(args: argparse.Namespace) -> int:
    stack = await start_stack()
    cases = [Case(stack.database_url, 1), Case(stack.database_url, args.recordings)]
    try:
        for case in cases:
            await case.open(args.orgs, args.history)
        # The days alternate between the cases, each first in turn, so a machine that gets
        # busier or quieter during the run weighs on both alike.
        for n in range(args.days):
            day = FIRST_DAY + timedelta(days=args.history + n)
            for case in cases if n % 2 == 0 else cases[::-1]:
                await case.roll_up(day, args.orgs)
        results = [await case.result() for case in cases]
    finally:
        for case in cases:
            await case.close()
        stack.stop()
    print(f"\n{'recordings/org':>15} {'recordings':>11} {'usage rows':>11} {'ms/day':>9}")
    for r in results:
        print(
            f"{r.recordings_per_org:>15} {r.recordings:>11,} {r.usage_rows:>11,}"
            f" {r.median_ms:>9.1f}"
        )
    baseline, many = results
    ratio = many.median_ms / baseline.median_ms
    print(
        f"\nrollup of one day, {args.orgs:,} orgs: {args.recordings} recordings per org take"
        f" {ratio:.2f}x the time of 1 (median of {args.days} days each; target: near 1)"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=10_000, help="orgs (10,000)")
    parser.add_argument("--recordings", type=int, default=100, help="recordings per org (100)")
    parser.add_argument("--history", type=int, default=30, help="days already rolled up (30)")
    parser.add_argument("--days", type=int, default=9, help="days rolled up and timed (9)")
    sys.exit(asyncio.run(main(parser.parse_args())))
