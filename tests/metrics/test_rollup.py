"""Every day counted: the daily rollup and the usage events on a simulated clock, against
PostgreSQL, checked against a hand computation of what S3 bills.

The clock is the test's: each simulated day, the rollup runs for that day (as the metrics
service does after midnight UTC) and then that day's events are applied, with their own times.
The rollup works on every org of its database, so these tests have a database of their own
(`own_db`, tests/metrics/conftest.py).
"""

from __future__ import annotations

import asyncio
import calendar
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import asyncpg
import pytest

from notetaker.common.costs import cost_rows
from notetaker.common.events import StorageUsage
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.projections import projections
from notetaker.metrics.rollup import next_run, roll_up, roll_up_forever
from notetaker.metrics.usage import GIB, Prices, apply, month_to_date
from tests.conftest import eventually

PRICES = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)  # the defaults
DAY_1 = date(2027, 1, 1)  # 62 days: January (31), February (28), March 1 to 3
DAYS = [DAY_1 + timedelta(days=n) for n in range(62)]
DOWN = set(DAYS[19:24])  # the metrics service is down on days 20 to 24


# --- the three orgs' usage -----------------------------------------------------------------------

HOARDER, DAILY, RETAINED, WATCHER = (uuid.UUID(int=n) for n in (1, 2, 3, 4))
ORGS = (HOARDER, DAILY, RETAINED, WATCHER)


@dataclass(frozen=True)
class Usage:
    org: uuid.UUID
    at: datetime
    stored_gib: float = 0
    downloaded_gib: float = 0
    puts: int = 0
    gets: int = 0
    step: str = "upload"

    def event(self) -> StorageUsage:
        return StorageUsage(
            bot_id="bot",
            org_id=self.org,
            recording_id=uuid.uuid4(),
            step=self.step,
            bytes_stored=round(self.stored_gib * GIB),
            bytes_uploaded=round(max(self.stored_gib, 0) * GIB),
            bytes_downloaded=round(self.downloaded_gib * GIB),
            put_requests=self.puts,
            get_requests=self.gets,
            occurred_at=self.at,
        )


def at(day: date, hour: int) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)


def usage_of(day: date) -> list[Usage]:
    """What happens on `day`: the hoarder stores 100 GiB on day 1 at 06:00 and nothing after;
    the daily org stores 1 GiB each day at 12:00 and downloads 4 GiB through media links at
    18:00; the retained org stores 6 + 4 GiB on day 1 at 00:00, and retention deletes the 6 GiB
    recording on day 40 at 03:00 (the deletion path's negative `storage.usage`); the watcher
    stores nothing and downloads 1.5 GiB at 20:00 each day from day 10. Together they pass the
    platform's free 100 GiB of egress on January 21st (a day the service is down: priced when
    it catches up), shared 4 : 1.5, and on February 19th."""
    events = [
        Usage(DAILY, at(day, 12), stored_gib=1, puts=20),
        Usage(DAILY, at(day, 18), downloaded_gib=4, gets=300),
    ]
    if day >= DAYS[9]:
        events.append(Usage(WATCHER, at(day, 20), downloaded_gib=1.5, gets=30))
    if day == DAYS[0]:
        events += [
            Usage(HOARDER, at(day, 6), stored_gib=100, puts=2000),
            Usage(RETAINED, at(day, 0), stored_gib=6, puts=2),
            Usage(RETAINED, at(day, 0), stored_gib=4, puts=2),
        ]
    if day == DAYS[39]:
        events.append(Usage(RETAINED, at(day, 3), stored_gib=-6, step="delete"))
    return events


# --- the hand computation ------------------------------------------------------------------------


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def downloaded(org: uuid.UUID, day: date) -> float:
    return sum(u.downloaded_gib for u in (usage_of(day) if day in DAYS else []) if u.org == org)


def platform_bill_cents(month_gib: float) -> int:
    """The platform's egress bill for `month_gib` GiB in a month, in whole cents rounded half up:
    the first 100 GiB free, then 9 cents a GiB (the month never reaches the next tier, 10 TiB)."""
    return math.floor(Fraction(max(month_gib - 100, 0)) * 9 + Fraction(1, 2))


def download_cents(org: uuid.UUID, day: date) -> int:
    """The org's share of what the platform's downloads on `day` cost: the bill for the month to
    the end of the day less the bill to the end of the day before, shared among the orgs in
    proportion to the GiB each downloaded that day: every org gets the whole cents of its exact
    share, and the cents left over go one each to the orgs with the largest fractions left
    (ties: the lower org id)."""
    before = sum(downloaded(o, d) for o in ORGS for d in DAYS if day.replace(day=1) <= d < day)
    that_day = {o: downloaded(o, day) for o in ORGS}
    gib = sum(that_day.values())
    if not gib:
        return 0
    cents = platform_bill_cents(before + gib) - platform_bill_cents(before)
    exact = {o: Fraction(cents) * Fraction(g) / Fraction(gib) for o, g in that_day.items()}
    whole = {o: math.floor(q) for o, q in exact.items()}
    left = cents - sum(whole.values())
    for o in sorted(ORGS, key=lambda o: (-(exact[o] - whole[o]), o.int))[:left]:
        whole[o] += 1
    return whole[org]


def expected_month_to_date(org: uuid.UUID, today: date) -> dict[str, float]:
    """Cost by type from the 1st of `today`'s month to `today`, as S3 bills it: storage in
    GiB-hours held (a GiB held a whole day is 1/days-in-month of a GB-month), uploads and
    requests as they happen, downloads as the org's share of each day's tiered cost."""
    everything = [u for d in DAYS if d <= today for u in usage_of(d) if u.org == org]
    cost = {"storage_gb": 0.0, "upload_gb": 0.0, "download_gb": 0.0, "api_requests": 0.0}
    day = today.replace(day=1)
    while day <= today:
        start = at(day, 0)
        gib_hours = 0.0
        for u in everything:
            if u.at < start:
                gib_hours += u.stored_gib * 24
            elif u.at.date() == day:
                gib_hours += u.stored_gib * (at(day, 24) - u.at).total_seconds() / 3600
                cost["upload_gb"] += max(u.stored_gib, 0) * PRICES.upload_per_gb
                cost["api_requests"] += u.puts * 0.005 / 1000 + u.gets * 0.0004 / 1000
        cost["storage_gb"] += gib_hours / 24 * PRICES.storage_per_gb_month / days_in_month(day)
        cost["download_gb"] += download_cents(org, day) / 100
        day += timedelta(days=1)
    return cost


def level_at_end_of(org: uuid.UUID, day: date) -> float:
    return sum(u.stored_gib for d in DAYS if d <= day for u in usage_of(d) if u.org == org)


def transfer_cost(org: uuid.UUID, day: date) -> float:
    """Uploads and requests (downloads are priced through the tiers)."""
    return sum(
        max(u.stored_gib, 0) * PRICES.upload_per_gb + u.puts * 0.005 / 1000 + u.gets * 0.0004 / 1000
        for u in (usage_of(day) if day >= DAY_1 else [])
        if u.org == org
    )


WINDOW = 7  # the trend windows: transfer rate and level growth over the last 7 days, today included


def tiers_usd(month_gib: float) -> float:
    return max(month_gib - 100, 0) * 0.09


def expected_projections(org: uuid.UUID, today: date) -> tuple[float, float]:
    """Month end: to date, plus the days left at today's level and at the last 7 days' mean
    upload and request cost a day, plus the org's share of the platform's downloads over the
    days left (at the platform's mean GiB a day of the last 7 days, priced through the tiers from
    the month's GiB so far; its share is its GiB over the platform's in those 7 days). Next
    month: today's level over all its days, plus the level's mean daily change over the last 7
    days continued from today through next month (the mean level of next month is at days left
    + (days of next month + 1) / 2), plus the same upload and request rate, plus the same share
    of the platform's downloads at the same rate over next month, from a free 100 GiB again."""
    month_days = days_in_month(today)
    left = month_days - today.day
    next_days = days_in_month(today.replace(day=1) + timedelta(days=month_days))
    level = level_at_end_of(org, today)
    growth = (level - level_at_end_of(org, today - timedelta(days=WINDOW))) / WINDOW
    rate = sum(transfer_cost(org, today - timedelta(days=n)) for n in range(WINDOW)) / WINDOW
    window = [today - timedelta(days=n) for n in range(WINDOW)]
    platform_week = sum(downloaded(o, d) for o in ORGS for d in window)
    share = sum(downloaded(org, d) for d in window) / platform_week if platform_week else 0.0
    month_gib = sum(
        downloaded(o, d) for o in ORGS for d in DAYS if today.replace(day=1) <= d <= today
    )
    per_day = platform_week / WINDOW
    month_end = (
        sum(expected_month_to_date(org, today).values())
        + level * PRICES.storage_per_gb_month * left / month_days
        + rate * left
        + share * (tiers_usd(month_gib + per_day * left) - tiers_usd(month_gib))
    )
    mean_next = max(level + growth * (left + (next_days + 1) / 2), 0)
    return month_end, (
        mean_next * PRICES.storage_per_gb_month
        + rate * next_days
        + share * tiers_usd(per_day * next_days)
    )


async def month_to_date_by_type(
    pool: asyncpg.Pool, org: uuid.UUID, today: date
) -> dict[str, float]:
    by_type = dict.fromkeys(("storage_gb", "upload_gb", "download_gb", "api_requests"), 0.0)
    for row in await cost_rows(pool, today.replace(day=1), today, org):
        by_type[row.metric_type] += row.cost_usd
    return by_type


CENT = 0.005  # equal to the cent: within half of one


def test_the_hand_computation_itself() -> None:
    """A few figures worked out on paper, so the computation the test trusts is checked too."""
    # 100 GiB from Jan 1 06:00: 30.75 days of January at 0.023 / 31 a GiB-day.
    assert expected_month_to_date(HOARDER, date(2027, 1, 31))["storage_gb"] == pytest.approx(
        100 * 30.75 * 0.023 / 31
    )
    # All of February: a whole GB-month.
    assert expected_month_to_date(HOARDER, date(2027, 2, 28))["storage_gb"] == pytest.approx(2.3)
    # 10 GiB until Feb 9 03:00 (8 days 3 hours), 4 GiB for the 19 days 21 hours after.
    assert expected_month_to_date(RETAINED, date(2027, 2, 28))["storage_gb"] == pytest.approx(
        (10 * (8 + 3 / 24) + 4 * (19 + 21 / 24)) * 0.023 / 28
    )
    # From January 2nd the hoarder's month end is January's whole bill (its storage and its
    # 2,000 PUTs), and at its end February is 100 GiB for a GB-month.
    assert expected_projections(HOARDER, date(2027, 1, 10))[0] == pytest.approx(
        100 * 30.75 * 0.023 / 31 + 0.01
    )
    assert expected_projections(HOARDER, date(2027, 1, 31))[1] == pytest.approx(2.3)
    # In the week after its deletion the retained org shrinks 6 GiB a week: on Feb 12th, 16 days
    # left, March's mean level would be 4 - 6/7 x (16 + 16) GiB, below nothing, so nothing. By
    # Feb 28th the deletion is out of the window: 4 GiB for a GB-month.
    assert expected_projections(RETAINED, date(2027, 2, 12))[1] == 0.0
    assert expected_projections(RETAINED, date(2027, 2, 28))[1] == pytest.approx(4 * 0.023)
    # The daily org at the end of January: 31 x 20 PUTs and 300 GETs.
    january = expected_month_to_date(DAILY, date(2027, 1, 31))
    assert january["api_requests"] == pytest.approx(31 * (20 * 0.005 + 300 * 0.0004) / 1000)
    # Egress: by January 20th the platform downloaded 20 x 4 + 11 x 1.5 = 96.5 GiB, all free.
    jan_20, jan_21 = date(2027, 1, 20), date(2027, 1, 21)
    assert [download_cents(o, jan_20) for o in (DAILY, WATCHER)] == [0, 0]
    # On the 21st, 5.5 GiB more: 2 past the free 100, 18 cents, shared 4 : 1.5 (13.09 and 4.91
    # cents): 13 and 4 whole, the cent left over to the watcher's larger fraction.
    assert [download_cents(o, jan_21) for o in (DAILY, WATCHER)] == [13, 5]
    # January's 157 GiB: 57 past the free 100 at $0.09, $5.13 in all, to the cent; February's
    # 154 GiB, $4.86, from a free 100 GiB again. Only the two downloaders pay.
    for last, usd in ((date(2027, 1, 31), 5.13), (date(2027, 2, 28), 4.86)):
        paid = [expected_month_to_date(o, last)["download_gb"] for o in ORGS]
        assert sum(paid) == pytest.approx(usd)
        assert paid[0] == paid[2] == 0
    # 1 GiB more at noon of each day n: held n - 1 days and a half by the end of day n.
    assert january["storage_gb"] == pytest.approx(sum(n - 0.5 for n in range(1, 32)) * 0.023 / 31)


async def test_sixty_two_days_every_day_counted_to_the_cent(own_db: asyncpg.Pool) -> None:
    applied = 0
    backlog: list[Usage] = []  # what happened while the service was down, applied when it is back
    for today in DAYS:
        if today in DOWN:
            backlog += usage_of(today)
            continue
        if today == DAYS[0]:  # two replicas roll the first day up at once
            await asyncio.gather(*(roll_up(own_db, today, PRICES) for _ in range(2)))
        else:
            done = await roll_up(own_db, today, PRICES)
            assert done == ([d for d in DAYS if d in DOWN] if backlog else []) + [today]
        for usage in [*backlog, *usage_of(today)]:
            applied += 1
            assert await apply(own_db, f"event-{applied}", usage.event(), PRICES)
        backlog = []
        assert await roll_up(own_db, today, PRICES) == []  # a second run does nothing

        costs = {c.org_id: c for c in await month_to_date(own_db, today)}
        ahead = {p.org_id: p for p in await projections(own_db, today, PRICES)}
        for org in ORGS:
            if today < DAYS[9] and org == WATCHER:
                continue  # nothing yet
            expected = expected_month_to_date(org, today)
            assert await month_to_date_by_type(own_db, org, today) == pytest.approx(
                expected, abs=CENT
            ), (org, today)
            assert costs[str(org)].month_to_date_usd == pytest.approx(
                sum(expected.values()), abs=CENT
            ), (org, today)
            month_end, next_month = expected_projections(org, today)
            projected = [ahead[str(org)].month_end_usd, ahead[str(org)].next_month_usd]
            assert projected == pytest.approx([month_end, next_month], abs=CENT), (org, today)

    # The days the service was down are counted as well, once it caught up.
    for day in DOWN:
        for org in ORGS:
            assert await month_to_date_by_type(own_db, org, day) == pytest.approx(
                expected_month_to_date(org, day), abs=CENT
            ), (org, day)
    # The platform's downloads of each month cost its tiered bill, to the cent.
    for last in (date(2027, 1, 31), date(2027, 2, 28), DAYS[-1]):
        rows = await cost_rows(own_db, last.replace(day=1), last)
        paid = sum(r.cost_usd for r in rows if r.metric_type == "download_gb")
        month_gib = sum(
            downloaded(o, d) for o in ORGS for d in DAYS if last.replace(day=1) <= d <= last
        )
        assert paid == pytest.approx(platform_bill_cents(month_gib) / 100, abs=1e-9), last
    # Every org has a storage row for every day from its first (the watcher's from its first
    # download, at nothing stored).
    per_org = await own_db.fetch(
        "SELECT org_id, count(*) AS days FROM s3_usage_metrics"
        " WHERE metric_type = 'storage_gb' GROUP BY org_id"
    )
    assert {r["org_id"]: r["days"] for r in per_org} == dict.fromkeys(
        (HOARDER, DAILY, RETAINED), 62
    ) | {WATCHER: 62 - 9}
    levels = {c.org_id: c.stored_bytes / GIB for c in await month_to_date(own_db, DAYS[-1])}
    assert levels == pytest.approx(
        {str(HOARDER): 100, str(DAILY): 62, str(RETAINED): 4, str(WATCHER): 0}
    )


async def test_a_late_event_corrects_every_day_rolled_up_since(own_db: asyncpg.Pool) -> None:
    """An org's first usage arrives three days late: its day and every day after get its level."""
    org = uuid.uuid4()
    first = date(2027, 3, 1)
    for n in range(4):
        await roll_up(own_db, first + timedelta(days=n), PRICES)
    late = Usage(org, at(first, 0), stored_gib=2).event()
    assert await apply(own_db, "late", late, PRICES)
    rows = await cost_rows(own_db, first, first + timedelta(days=3), org)
    storage = [r for r in rows if r.metric_type == "storage_gb"]
    assert [(r.date, r.value) for r in storage] == [
        (first + timedelta(days=n), 2.0) for n in range(4)
    ]
    assert [r.cost_usd for r in storage] == pytest.approx([2 * 0.023 / 31] * 4, abs=1e-6)


def test_the_rollup_runs_after_midnight_utc() -> None:
    five = timedelta(minutes=5)
    assert next_run(datetime(2027, 1, 1, 0, 1, tzinfo=UTC), five) == at(DAY_1, 0) + five
    assert next_run(datetime(2027, 1, 1, 0, 5, tzinfo=UTC), five) == at(DAY_1, 24) + five
    assert next_run(datetime(2027, 1, 1, 23, 0, tzinfo=UTC), five) == at(DAY_1, 24) + five


async def test_the_service_catches_up_when_it_starts(own_db: asyncpg.Pool) -> None:
    """On a new database the first run rolls up the month so far, then waits for midnight."""
    today = datetime(2027, 3, 5, 12, tzinfo=UTC)
    task = asyncio.create_task(
        roll_up_forever(own_db, PRICES, timedelta(minutes=5), clock=lambda: today)
    )
    try:

        async def days() -> list[date]:
            rows = await own_db.fetch("SELECT day FROM usage_rollup_days ORDER BY day")
            return [r["day"] for r in rows] if len(rows) == 5 else []

        assert await eventually(days, timeout=10, what="the days of March rolled up") == [
            date(2027, 3, n) for n in range(1, 6)
        ]
        assert not task.done()  # asleep until 00:05 tomorrow
    finally:
        task.cancel()
