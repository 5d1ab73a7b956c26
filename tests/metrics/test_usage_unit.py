"""The cost model, in process: prices from settings, what each usage event costs per metric type,
how a day's rows in `s3_usage_metrics` add up, month-to-date per org, and the capped label set.

`apply` and `month_to_date` talk SQL; here they talk to `FakeUsageDb`, a dictionary model of the
two tables that knows exactly the statements PostgreSQL is sent (keywords and unquoted names
read case-insensitively, as PostgreSQL reads them) and refuses anything else, as PostgreSQL's
parser would. tests/metrics/test_apply.py runs the same statements against PostgreSQL.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY

from notetaker.common.events import StorageUsage
from notetaker.metrics import usage
from notetaker.metrics.egress import AWS_US_EAST, EgressTier
from notetaker.metrics.exporter import OTHER, capped, export, export_projections, export_uploads
from notetaker.metrics.projections import Projection
from notetaker.metrics.settings import MetricsSettings
from notetaker.metrics.uploads import UploadStates
from notetaker.metrics.usage import GIB, OrgCost, Prices, UsageDelta, apply, delta_of, month_to_date

# Distinct prices, so a price applied to the wrong metric shows.
PRICES = Prices(
    storage_per_gb_month=3.0,
    upload_per_gb=0.5,
    egress=(EgressTier(usd_per_gb=0.25),),  # one tier: every GB the same
    put_per_1000=7.0,
    get_per_1000=2.0,
)
ORG = uuid.UUID("00000000-0000-0000-0000-00000000000a")
OTHER_ORG = uuid.UUID("00000000-0000-0000-0000-00000000000b")


def event(
    *,
    org: uuid.UUID = ORG,
    when: datetime = datetime(2026, 11, 10, 12, tzinfo=UTC),
    stored: int = 0,
    uploaded: int = 0,
    downloaded: int = 0,
    puts: int = 0,
    gets: int = 0,
) -> StorageUsage:
    return StorageUsage(
        bot_id="bot-1",
        org_id=org,
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=stored,
        bytes_uploaded=uploaded,
        bytes_downloaded=downloaded,
        put_requests=puts,
        get_requests=gets,
        occurred_at=when,
    )


# --- prices ------------------------------------------------------------------------------------

PRICE_VARIABLES = [
    "NOTETAKER_STORAGE_PRICE_USD_PER_GB_MONTH",
    "NOTETAKER_UPLOAD_PRICE_USD_PER_GB",
    "NOTETAKER_PRICE_EGRESS_TIERS",
    "NOTETAKER_PUT_PRICE_USD_PER_1000",
    "NOTETAKER_GET_PRICE_USD_PER_1000",
]


def test_prices_come_from_their_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    tiers = '[{"up_to_gb": 3, "usd_per_gb": 3.5}, {"up_to_gb": null, "usd_per_gb": 0.5}]'
    for name, value in zip(PRICE_VARIABLES, ["1.5", "2.5", tiers, "4.5", "5.5"], strict=True):
        monkeypatch.setenv(name, value)
    assert Prices.from_settings(MetricsSettings(_env_file=None)) == Prices(
        storage_per_gb_month=1.5,
        upload_per_gb=2.5,
        egress=(EgressTier(up_to_gb=3, usd_per_gb=3.5), EgressTier(usd_per_gb=0.5)),
        put_per_1000=4.5,
        get_per_1000=5.5,
    )


def test_default_prices_are_the_documented_s3_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PRICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert Prices.from_settings(MetricsSettings(_env_file=None)) == Prices(
        0.023, 0.0, AWS_US_EAST, 0.005, 0.0004
    )


@pytest.mark.parametrize(
    ("day", "days_in_month"),
    [
        (date(2026, 11, 5), 30),
        (date(2026, 12, 31), 31),
        (date(2026, 2, 1), 28),
        (date(2028, 2, 29), 29),
    ],
)
def test_a_day_of_storage_is_its_share_of_the_month(day: date, days_in_month: int) -> None:
    assert PRICES.storage_day(2.0, day) == pytest.approx(2.0 * 3.0 / days_in_month)
    assert PRICES.storage_day(0.0, day) == 0.0


# --- what one event adds ------------------------------------------------------------------------


def test_an_event_counts_each_quantity_in_its_own_unit() -> None:
    delta = delta_of(
        event(stored=3 * GIB, uploaded=GIB // 2, downloaded=GIB // 4, puts=2000, gets=500), PRICES
    )
    assert delta == UsageDelta(
        stored_gb=3.0,
        upload_gb=0.5,
        download_gb=0.25,
        requests=2500,
        request_cost=pytest.approx(2000 * 7.0 / 1000 + 500 * 2.0 / 1000),  # type: ignore[arg-type]
    )


def test_gets_and_puts_are_priced_separately() -> None:
    assert delta_of(event(puts=1000), PRICES).request_cost == pytest.approx(7.0)
    assert delta_of(event(gets=1000), PRICES).request_cost == pytest.approx(2.0)
    assert delta_of(event(gets=1), PRICES).requests == 1
    assert delta_of(event(), PRICES) == UsageDelta(0.0, 0.0, 0.0, 0, 0.0)


# --- a dictionary model of the two tables -------------------------------------------------------

_LITERAL = re.compile(r"('(?:[^']|'')*')")


def normalized(sql: str) -> str:
    """SQL as PostgreSQL reads it: keywords and unquoted names in any case, any whitespace;
    quoted literals exactly."""
    parts = _LITERAL.split(sql)
    return "".join(p if i % 2 else " ".join(p.lower().split()) for i, p in enumerate(parts))


APPLIED = normalized(
    "INSERT INTO usage_events_applied (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true"
)
SHARED_LOCK = normalized("SELECT pg_advisory_xact_lock_shared($1)")
EXCLUSIVE_LOCK = normalized("SELECT pg_advisory_xact_lock($1)")
MONTH_TO_DATE = normalized(
    """
    SELECT org_id::text AS org_id,
      coalesce((SELECT value FROM s3_usage_metrics s
                WHERE s.org_id = m.org_id AND s.metric_type = 'storage_gb'
                ORDER BY date DESC LIMIT 1), 0) AS stored_gb,
      sum(cost_usd) FILTER (WHERE date >= date_trunc('month', $1::date)) AS mtd
    FROM s3_usage_metrics m
    GROUP BY org_id
    ORDER BY mtd DESC NULLS LAST, org_id
    """
)
METRIC_TYPES = {"storage_gb", "upload_gb", "download_gb", "api_requests"}

Row = tuple[uuid.UUID, date, str]  # org, day, metric type


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


class Unknown(Exception):
    """A statement the model does not know: PostgreSQL would not run it either."""


@dataclass
class FakeUsageDb:
    rows: dict[Row, list[float]] = field(default_factory=dict)  # [value, cost]
    applied: set[str] = field(default_factory=set)
    fail_on: str | None = None  # a metric type whose row write fails (a database error)
    statements: int = 0
    rolled_up: set[date] = field(default_factory=set)  # usage_rollup_days
    locks: list[int] = field(default_factory=list)  # advisory locks taken, shared
    exclusive: list[int] = field(default_factory=list)  # advisory locks taken, exclusively

    # asyncpg.Pool and its connection, as far as usage.py uses them

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeUsageDb]:
        yield self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        saved = ({k: list(v) for k, v in self.rows.items()}, set(self.applied))
        try:
            yield
        except BaseException:
            self.rows, self.applied = saved
            raise

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.statements += 1
        query = normalized(sql)
        if query == APPLIED:
            (event_id,) = args
            if event_id in self.applied:
                return None
            self.applied.add(event_id)
            return True
        if query == normalized(usage._EGRESS_BEFORE):
            (day,) = args
            return sum(
                v[0]
                for (_, d, m), v in self.rows.items()
                if m == "download_gb" and day.replace(day=1) <= d < day
            )
        raise Unknown(sql)

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        self.statements += 1
        if normalized(sql) != normalized(usage._EGRESS_SET):
            raise Unknown(sql)
        for org, day, cost in args:
            if (org, day, "download_gb") in self.rows:
                self.rows[(org, day, "download_gb")][1] = float(cost)

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements += 1
        query = normalized(sql)
        if query == SHARED_LOCK:
            self.locks.extend(args)
            return "SELECT 1"
        if query == EXCLUSIVE_LOCK:
            self.exclusive.extend(args)
            return "SELECT 1"
        if query == normalized(usage._CARRY):
            org, day, price = args
            self.carry(org, day, max([day, *self.rolled_up]), price)
            return "INSERT"
        if query == normalized(usage._CHANGE):
            org, day, amount, rest, price = args
            for (o, d, m), row in self.rows.items():
                if o == org and m == "storage_gb" and d >= day:
                    row[0] += amount
                    row[1] += amount * (rest if d == day else 1) * price / days_in_month(d)
            return "UPDATE"
        if query == normalized(usage._ADD):
            org, day, metric, value, cost = args
            if metric not in METRIC_TYPES:
                raise Unknown(f"invalid input value for enum usage_metric_type: {metric!r}")
            if metric == self.fail_on:
                raise ConnectionError("the database went away")
            row = self.rows.setdefault((org, day, metric), [0.0, 0.0])
            row[0] += value
            row[1] += cost
            return "INSERT"
        raise Unknown(sql)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if normalized(sql) == normalized(usage._EGRESS_FROM):
            (day,) = args
            month_end = day.replace(day=days_in_month(day))
            found = [
                {"org_id": o, "date": d, "value": v[0], "cost_usd": Decimal(str(v[1]))}
                for (o, d, m), v in self.rows.items()
                if m == "download_gb" and day <= d <= month_end
            ]
            return sorted(found, key=lambda r: (r["date"], str(r["org_id"])))
        if normalized(sql) != MONTH_TO_DATE:
            raise Unknown(sql)
        (today,) = args
        orgs = sorted({o for o, _, _ in self.rows}, key=str)
        result = []
        for org in orgs:
            levels = sorted(
                (d, v[0]) for (o, d, m), v in self.rows.items() if o == org and m == "storage_gb"
            )
            month = [
                v[1] for (o, d, _), v in self.rows.items() if o == org and d >= today.replace(day=1)
            ]
            result.append(
                {
                    "org_id": str(org),
                    "stored_gb": levels[-1][1] if levels else 0,
                    "mtd": sum(month) if month else None,
                }
            )
        return sorted(result, key=lambda r: (r["mtd"] is None, -(r["mtd"] or 0), r["org_id"]))

    def carry(self, org: uuid.UUID, first: date, last: date, price: float) -> None:
        """A row for each day from `first` to `last` the org has none for, at its latest earlier
        level as the table stood before (one statement sees none of its own rows)."""
        before = {k: list(v) for k, v in self.rows.items()}
        day = first
        while day <= last:
            if (org, day, "storage_gb") not in before:
                earlier = sorted(
                    (d, v[0])
                    for (o, d, m), v in before.items()
                    if o == org and m == "storage_gb" and d < day
                )
                level = earlier[-1][1] if earlier else 0.0
                self.rows[(org, day, "storage_gb")] = [level, level * price / days_in_month(day)]
            day += timedelta(days=1)

    def value(self, day: date, metric: str, org: uuid.UUID = ORG) -> float:
        return self.rows[(org, day, metric)][0]

    def cost(self, day: date, metric: str, org: uuid.UUID = ORG) -> float:
        return self.rows[(org, day, metric)][1]


@pytest.fixture
def usage_db() -> FakeUsageDb:
    return FakeUsageDb()


def pool(db: FakeUsageDb) -> asyncpg.Pool:
    return cast(asyncpg.Pool, db)


NOV_10 = datetime(2026, 11, 10, 12, tzinfo=UTC)
NOV_11 = datetime(2026, 11, 11, 0, 30, tzinfo=UTC)


# --- applying events ----------------------------------------------------------------------------


async def test_an_upload_lands_in_each_metric_row_with_its_cost(usage_db: FakeUsageDb) -> None:
    upload = event(stored=2 * GIB, uploaded=2 * GIB, puts=1000, gets=500)
    assert await apply(pool(usage_db), "e1", upload, PRICES) is True
    day = NOV_10.date()
    assert usage_db.value(day, "storage_gb") == pytest.approx(2.0)
    assert usage_db.cost(day, "storage_gb") == pytest.approx(2.0 * 0.5 * 3.0 / 30)  # from noon
    assert (usage_db.value(day, "upload_gb"), usage_db.cost(day, "upload_gb")) == pytest.approx(
        (2.0, 1.0)
    )
    assert (usage_db.value(day, "download_gb"), usage_db.cost(day, "download_gb")) == (0.0, 0.0)
    assert usage_db.value(day, "api_requests") == 1500
    assert usage_db.cost(day, "api_requests") == pytest.approx(7.0 + 1.0)


async def test_a_download_is_charged_through_the_egress_tiers(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(downloaded=4 * GIB, gets=1), PRICES)
    day = NOV_10.date()
    assert (usage_db.value(day, "download_gb"), usage_db.cost(day, "download_gb")) == pytest.approx(
        (4, 1)
    )
    assert (usage_db.value(day, "upload_gb"), usage_db.cost(day, "upload_gb")) == (0.0, 0.0)
    assert usage_db.value(day, "storage_gb") == 0.0


FREE_GIB = (EgressTier(up_to_gb=1, usd_per_gb=0.0), EgressTier(usd_per_gb=0.25))
TIERED = Prices(3.0, 0.5, FREE_GIB, 7.0, 2.0)  # the first GiB of the month free, then $0.25


async def test_two_orgs_share_the_cost_of_a_day_crossing_the_free_tier(
    usage_db: FakeUsageDb,
) -> None:
    """The tiers apply to the platform's month: each org pays its share of the day's cost."""
    await apply(pool(usage_db), "e1", event(downloaded=GIB), TIERED)
    day = NOV_10.date()
    assert usage_db.cost(day, "download_gb") == 0.0  # the platform's free GiB
    await apply(pool(usage_db), "e2", event(org=OTHER_ORG, downloaded=3 * GIB), TIERED)
    # 4 GiB that day, 3 past the free one: 75 cents, shared 1 : 3 (18.75 and 56.25 cents; the
    # cent left over to the larger remainder).
    assert usage_db.cost(day, "download_gb") == pytest.approx(0.19)
    assert usage_db.cost(day, "download_gb", OTHER_ORG) == pytest.approx(0.56)
    assert usage_db.exclusive == [usage.EGRESS_LOCK, usage.EGRESS_LOCK]


async def test_a_late_download_reprices_the_later_days_of_its_month(usage_db: FakeUsageDb) -> None:
    nov_11, dec_1 = datetime(2026, 11, 11, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    await apply(pool(usage_db), "e1", event(downloaded=2 * GIB, when=nov_11), TIERED)
    await apply(pool(usage_db), "e2", event(downloaded=2 * GIB, when=dec_1), TIERED)
    assert usage_db.cost(nov_11.date(), "download_gb") == pytest.approx(0.25)  # 1 GiB free
    assert usage_db.cost(dec_1.date(), "download_gb") == pytest.approx(0.25)  # free again
    late = event(org=OTHER_ORG, downloaded=GIB, when=datetime(2026, 11, 10, 9, tzinfo=UTC))
    await apply(pool(usage_db), "e3", late, TIERED)
    assert usage_db.cost(NOV_10.date(), "download_gb", OTHER_ORG) == 0.0  # took the free GiB
    assert usage_db.cost(nov_11.date(), "download_gb") == pytest.approx(0.5)  # none left
    assert usage_db.cost(dec_1.date(), "download_gb") == pytest.approx(0.25)  # December's own


async def test_only_a_download_takes_the_egress_lock(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(stored=GIB, uploaded=GIB, puts=2), TIERED)
    assert usage_db.exclusive == []


async def test_an_event_counts_once_however_often_it_is_delivered(usage_db: FakeUsageDb) -> None:
    upload = event(stored=GIB, uploaded=GIB, puts=3)
    assert await apply(pool(usage_db), "e1", upload, PRICES) is True
    before = {k: list(v) for k, v in usage_db.rows.items()}
    statements = usage_db.statements
    assert await apply(pool(usage_db), "e1", upload, PRICES) is False
    assert usage_db.rows == before
    assert usage_db.statements == statements + 1  # only the check that it was applied


async def test_flows_add_up_over_a_day(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(uploaded=GIB, downloaded=GIB, puts=1000), PRICES)
    await apply(pool(usage_db), "e2", event(uploaded=GIB, downloaded=GIB, gets=1000), PRICES)
    day = NOV_10.date()
    assert (usage_db.value(day, "upload_gb"), usage_db.cost(day, "upload_gb")) == pytest.approx(
        (2, 1)
    )
    assert (usage_db.value(day, "download_gb"), usage_db.cost(day, "download_gb")) == pytest.approx(
        (2, 0.5)
    )
    assert (
        usage_db.value(day, "api_requests"),
        usage_db.cost(day, "api_requests"),
    ) == pytest.approx((2000, 9))


async def test_storage_is_a_level_carried_into_the_next_day(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(stored=2 * GIB, when=NOV_10), PRICES)
    await apply(pool(usage_db), "e2", event(stored=GIB, when=NOV_10), PRICES)
    await apply(pool(usage_db), "e3", event(stored=3 * GIB, when=NOV_11), PRICES)
    assert usage_db.value(NOV_10.date(), "storage_gb") == pytest.approx(3.0)
    assert usage_db.cost(NOV_10.date(), "storage_gb") == pytest.approx(3.0 * 0.5 * 3.0 / 30)
    assert usage_db.value(NOV_11.date(), "storage_gb") == pytest.approx(6.0)  # 3 carried + 3
    assert usage_db.cost(NOV_11.date(), "storage_gb") == pytest.approx(
        (3.0 + 3.0 * 23.5 / 24) * 3.0 / 30  # 3 GiB all day, 3 more from 00:30
    )


async def test_each_org_has_its_own_rows(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(stored=GIB), PRICES)
    await apply(pool(usage_db), "e2", event(org=OTHER_ORG, stored=5 * GIB), PRICES)
    assert usage_db.value(NOV_10.date(), "storage_gb") == pytest.approx(1.0)
    assert usage_db.value(NOV_10.date(), "storage_gb", OTHER_ORG) == pytest.approx(5.0)


async def test_the_day_is_the_day_the_usage_happened(usage_db: FakeUsageDb) -> None:
    await apply(pool(usage_db), "e1", event(uploaded=GIB, when=NOV_11), PRICES)
    assert {d for _, d, _ in usage_db.rows} == {date(2026, 11, 11)}


async def test_a_failed_write_applies_nothing_and_a_retry_applies_it(usage_db: FakeUsageDb) -> None:
    upload = event(stored=GIB, uploaded=GIB, downloaded=GIB, puts=10)
    usage_db.fail_on = "download_gb"
    with pytest.raises(ConnectionError):
        await apply(pool(usage_db), "e1", upload, PRICES)
    assert (usage_db.rows, usage_db.applied) == ({}, set())
    usage_db.fail_on = None
    assert await apply(pool(usage_db), "e1", upload, PRICES) is True
    assert usage_db.value(NOV_10.date(), "download_gb") == pytest.approx(1.0)


# --- storage as S3 bills it: byte-hours, every day rolled up ------------------------------------


@pytest.mark.parametrize(
    ("when", "rest"),
    [
        (datetime(2026, 11, 10, 0, 0, tzinfo=UTC), 1.0),
        (datetime(2026, 11, 10, 6, 0, tzinfo=UTC), 0.75),
        (datetime(2026, 11, 10, 23, 59, 24, tzinfo=UTC), 36 / 86_400),
    ],
)
def test_a_change_is_charged_for_the_rest_of_its_day(when: datetime, rest: float) -> None:
    assert usage.rest_of_day(when) == pytest.approx(rest, abs=1e-12)


async def test_a_change_is_charged_from_its_hour_and_under_the_shared_lock(
    usage_db: FakeUsageDb,
) -> None:
    at_18 = datetime(2026, 11, 10, 18, tzinfo=UTC)
    await apply(pool(usage_db), "e1", event(stored=4 * GIB, when=at_18), PRICES)
    assert usage_db.value(NOV_10.date(), "storage_gb") == 4.0
    assert usage_db.cost(NOV_10.date(), "storage_gb") == pytest.approx(4.0 * 0.25 * 3.0 / 30)
    assert usage_db.locks == [0x726F6C6C]  # the one the rollup takes exclusively


async def test_a_deletion_lowers_the_level_from_its_hour_and_on_every_later_day(
    usage_db: FakeUsageDb,
) -> None:
    await apply(
        pool(usage_db), "e1", event(stored=10 * GIB, when=datetime(2026, 11, 9, tzinfo=UTC)), PRICES
    )
    usage_db.rolled_up = {date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)}
    deleted = datetime(2026, 11, 11, 6, tzinfo=UTC)
    await apply(pool(usage_db), "e2", event(stored=-6 * GIB, when=deleted), PRICES)
    levels = {
        d: usage_db.value(d, "storage_gb") for (_, d, m) in usage_db.rows if m == "storage_gb"
    }
    assert levels == {
        date(2026, 11, 9): 10.0,  # the 10th is the rollup's (rollup.py)
        date(2026, 11, 11): 4.0,
        date(2026, 11, 12): 4.0,
    }
    assert usage_db.cost(date(2026, 11, 11), "storage_gb") == pytest.approx(
        (10 - 6 * 0.75) * 3.0 / 30
    )
    assert usage_db.cost(date(2026, 11, 12), "storage_gb") == pytest.approx(4 * 3.0 / 30)


async def test_a_late_event_fills_and_corrects_the_days_rolled_up_since(
    usage_db: FakeUsageDb,
) -> None:
    nov = [date(2026, 11, n) for n in range(1, 31)]
    await apply(
        pool(usage_db), "e1", event(stored=5 * GIB, when=datetime(2026, 11, 8, tzinfo=UTC)), PRICES
    )
    await apply(
        pool(usage_db), "e2", event(stored=GIB, when=datetime(2026, 11, 12, tzinfo=UTC)), PRICES
    )
    usage_db.rolled_up = set(nov[:13])  # up to the 13th, the 9th to the 11th without a row
    await apply(
        pool(usage_db), "e3", event(stored=2 * GIB, when=datetime(2026, 11, 10, tzinfo=UTC)), PRICES
    )
    levels = {
        d.day: usage_db.value(d, "storage_gb") for (_, d, m) in usage_db.rows if m == "storage_gb"
    }
    assert levels == {8: 5.0, 10: 7.0, 11: 7.0, 12: 8.0, 13: 8.0}  # the 9th had no change
    for day, level in levels.items():
        assert usage_db.cost(nov[day - 1], "storage_gb") == pytest.approx(level * 3.0 / 30)


async def test_without_a_rollup_an_event_writes_its_own_day_only(usage_db: FakeUsageDb) -> None:
    usage_db.rolled_up = {date(2026, 11, 1)}  # days before the event's do not matter
    await apply(pool(usage_db), "e1", event(stored=GIB), PRICES)
    assert [d for (_, d, _) in usage_db.rows] == [NOV_10.date()] * 4


# --- month to date ------------------------------------------------------------------------------


async def test_month_to_date_per_org_most_expensive_first(usage_db: FakeUsageDb) -> None:
    october = datetime(2026, 10, 31, 12, tzinfo=UTC)
    await apply(
        pool(usage_db), "e0", event(stored=10 * GIB, downloaded=100 * GIB, when=october), PRICES
    )
    await apply(pool(usage_db), "e1", event(stored=GIB, when=NOV_10), PRICES)
    await apply(pool(usage_db), "e2", event(org=OTHER_ORG, downloaded=8 * GIB, when=NOV_10), PRICES)
    costs = await month_to_date(pool(usage_db), NOV_11.date())
    assert costs == [
        OrgCost(str(OTHER_ORG), 0.0, pytest.approx(2.0)),  # type: ignore[arg-type]
        OrgCost(str(ORG), 11.0 * GIB, pytest.approx(10.5 * 3.0 / 30)),  # type: ignore[arg-type]
    ]  # October's download is not this month's; its stored level still is


async def test_an_org_with_nothing_this_month_costs_zero(usage_db: FakeUsageDb) -> None:
    october = datetime(2026, 10, 31, 12, tzinfo=UTC)
    await apply(pool(usage_db), "e0", event(stored=GIB, when=october), PRICES)
    assert await month_to_date(pool(usage_db), NOV_11.date()) == [
        OrgCost(str(ORG), float(GIB), 0.0)
    ]
    assert await month_to_date(pool(FakeUsageDb()), NOV_11.date()) == []


# --- the exported label set ---------------------------------------------------------------------


def org_costs(n: int) -> list[OrgCost]:
    return [OrgCost(f"org-{i}", i * 10.0, float(i)) for i in range(n, 0, -1)]


def test_the_top_orgs_keep_their_series_and_the_rest_sum_as_other() -> None:
    rows = capped(org_costs(5), 2)
    assert rows == [
        OrgCost("org-5", 50.0, 5.0),
        OrgCost("org-4", 40.0, 4.0),
        OrgCost(OTHER, 60.0, 6.0),
    ]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_no_other_series_while_every_org_fits(n: int) -> None:
    assert capped(org_costs(n), 2) == org_costs(n)


def test_a_cap_of_zero_sums_everything_as_other() -> None:
    assert capped(org_costs(3), 0) == [OrgCost(OTHER, 60.0, 6.0)]


def gauge(name: str, org: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"org_id": org})


def test_export_sets_one_series_per_kept_org_and_forgets_the_old_ones() -> None:
    export(org_costs(3), 1)
    assert gauge("notetaker_storage_stored_bytes", "org-3") == 30.0
    assert gauge("notetaker_storage_cost_usd_month_to_date", "org-3") == 3.0
    assert gauge("notetaker_storage_stored_bytes", OTHER) == 30.0
    assert gauge("notetaker_storage_cost_usd_month_to_date", OTHER) == 3.0
    assert REGISTRY.get_sample_value("notetaker_storage_orgs") == 3
    export([OrgCost("org-9", 1.0, 0.1234567)], 1)
    assert gauge("notetaker_storage_stored_bytes", "org-3") is None  # gone, not stale
    assert gauge("notetaker_storage_cost_usd_month_to_date", OTHER) is None
    assert gauge("notetaker_storage_cost_usd_month_to_date", "org-9") == 0.123457  # 6 places
    assert REGISTRY.get_sample_value("notetaker_storage_orgs") == 1


def test_export_projections_keeps_the_top_orgs_and_sums_the_rest_as_other() -> None:
    ahead = [  # highest month end first, as `projections()` orders them
        Projection("org-3", 0.0, 0.0, 3.1234567, 30.7654321),
        Projection("org-2", 0.0, 0.0, 2.1234561, 20.1111114),
        Projection("org-1", 0.0, 0.0, 1.0000002, 10.2222222),
    ]
    export_projections(ahead, 1, 1000.0)
    month_end = "notetaker_storage_cost_usd_projected_month_end"
    next_month = "notetaker_storage_cost_usd_projected_next_month"
    assert gauge(month_end, "org-3") == 3.123457  # 6 places
    assert gauge(next_month, "org-3") == 30.765432
    assert gauge(month_end, OTHER) == 3.123456  # 3.1234563
    assert gauge(next_month, OTHER) == 30.333334  # 30.3333336
    assert gauge(month_end, "org-2") is None
    export_projections(ahead[2:], 1, 1000.0)
    assert gauge(month_end, "org-3") is None  # gone, not stale
    assert gauge(next_month, OTHER) is None
    assert (gauge(month_end, "org-1"), gauge(next_month, "org-1")) == (1.0, 10.222222)
    export_projections(ahead, 3, 1000.0)
    assert gauge(month_end, OTHER) is None
    assert [gauge(next_month, f"org-{n}") for n in (1, 2, 3)] == [10.222222, 20.111111, 30.765432]


def test_every_org_over_the_threshold_keeps_its_series_whatever_its_rank() -> None:
    ahead = [
        Projection("org-3", 0.0, 0.0, 90.0, 1.0),
        Projection("org-2", 0.0, 0.0, 50.0000001, 1.0),
        Projection("org-1", 0.0, 0.0, 50.0, 2.0),  # at the threshold, not over it
        Projection("org-0", 0.0, 0.0, 0.5, 3.0),
    ]
    export_projections(ahead, 1, 50.0)
    month_end = "notetaker_storage_cost_usd_projected_month_end"
    assert gauge(month_end, "org-3") == 90.0
    assert gauge(month_end, "org-2") == 50.0
    assert gauge(month_end, "org-1") is None
    assert gauge(month_end, OTHER) == 50.5
    assert gauge("notetaker_storage_cost_usd_projected_next_month", OTHER) == 5.0
    export_projections(ahead, 0, 100.0)
    assert gauge(month_end, "org-3") is None
    assert gauge(month_end, OTHER) == 190.5


def test_export_uploads_sets_every_status_and_the_oldest_age() -> None:
    counts = {"pending": 2, "uploading": 1, "complete": 40, "failed": 3, "failed_final": 4}
    export_uploads(UploadStates(counts, 3725.46))
    assert {
        status: REGISTRY.get_sample_value("notetaker_uploads", {"status": status})
        for status in counts
    } == {"pending": 2, "uploading": 1, "complete": 40, "failed": 3, "failed_final": 4}
    assert REGISTRY.get_sample_value("notetaker_upload_oldest_unfinished_age_seconds") == 3725.5
    export_uploads(UploadStates(dict.fromkeys(counts, 0), 0.0))
    assert REGISTRY.get_sample_value("notetaker_uploads", {"status": "complete"}) == 0
    assert REGISTRY.get_sample_value("notetaker_upload_oldest_unfinished_age_seconds") == 0
