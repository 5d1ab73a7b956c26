"""The daily storage rollup: every org's stored level carried into a row of its own for each day,
so a day without usage events is charged too.

Run by the metrics service shortly after midnight UTC and at its start. A day is rolled up once
(`usage_rollup_days`), in one statement over the orgs, under the storage-level lock taken
exclusively (usage events take it shared), so several replicas and a restart mid-run are safe; a
run catches up every day since the last one done. What it costs grows with the orgs, never with
the recordings they hold: each day reads one row per org, the day before's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from notetaker.common.logs import get_logger
from notetaker.metrics.usage import STORAGE_LEVEL_LOCK, Prices

log = get_logger(__name__)

# The first day rolled up reads every org's latest level; each later one the day before's rows,
# which the day before gave every org that had a level by then.
_CARRY_DAY = """
INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)
SELECT DISTINCT ON (org_id) org_id, $1::date, 'storage_gb', value, value * $2::float8
FROM s3_usage_metrics
WHERE metric_type = 'storage_gb' AND date < $1::date
  AND date >= coalesce((SELECT day FROM usage_rollup_days WHERE day = $1::date - 1),
                       '-infinity'::date)
ORDER BY org_id, date DESC
ON CONFLICT (org_id, date, metric_type) DO NOTHING
"""

# The day after the latest one rolled up. The very first run starts at the first day of the
# month (or the first day with a level, if later): this month's cost becomes true, earlier months
# are left as they were billed.
_FIRST_DAY = """
SELECT coalesce((SELECT max(day) + 1 FROM usage_rollup_days),
                greatest((SELECT min(date) FROM s3_usage_metrics WHERE metric_type = 'storage_gb'),
                         date_trunc('month', $1::date)::date))
"""


async def roll_up_day(pool: asyncpg.Pool, day: date, prices: Prices) -> int | None:
    """Carry every org's level into `day`; the orgs given a row, None if it was done before."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", STORAGE_LEVEL_LOCK)
        if await conn.fetchval("SELECT true FROM usage_rollup_days WHERE day = $1", day):
            return None
        status = await conn.execute(_CARRY_DAY, day, prices.storage_day(1.0, day))
        carried = int(status.rsplit(" ", 1)[1])
        await conn.execute(
            "INSERT INTO usage_rollup_days (day, orgs_carried) VALUES ($1, $2)", day, carried
        )
    return carried


async def roll_up(pool: asyncpg.Pool, today: date, prices: Prices) -> list[date]:
    """Roll up every day from the first not yet done to `today`, in order; the days done now."""
    day: date = await pool.fetchval(_FIRST_DAY, today)
    done = []
    while day <= today:
        carried = await roll_up_day(pool, day, prices)
        if carried is not None:
            log.info("usage.rolled_up", day=day.isoformat(), orgs_carried=carried)
            done.append(day)
        day += timedelta(days=1)
    return done


def next_run(now: datetime, after_midnight: timedelta) -> datetime:
    """When the next rollup is due: `after_midnight` past the next midnight UTC (today's, while
    it is still ahead)."""
    today = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC) + after_midnight
    return today if today > now else today + timedelta(days=1)


async def roll_up_forever(
    pool: asyncpg.Pool,
    prices: Prices,
    after_midnight: timedelta,
    retry_seconds: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Catch up now, then once a day after midnight UTC; a failed run is retried."""
    while True:
        try:
            await roll_up(pool, clock().date(), prices)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("usage.rollup_failed", error=repr(exc), retry_in_seconds=retry_seconds)
            await asyncio.sleep(retry_seconds)
            continue
        now = clock()
        await asyncio.sleep((next_run(now, after_midnight) - now).total_seconds())
