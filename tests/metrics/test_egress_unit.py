"""Egress as AWS bills it, in process: the tiers on the platform's month-to-date total (the free
100 GB, then $0.09 to 10 TB, ...), each day's cost shared among the orgs in proportion to what
they downloaded, in whole cents that add up to the platform's bill, and the tiers' setting."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from notetaker.metrics.egress import (
    AWS_US_EAST,
    EgressTier,
    bill_cents,
    split_day,
    split_month,
    tiered_usd,
)
from notetaker.metrics.settings import MetricsSettings

TB = 1024


# --- the platform's bill ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gb", "cents"),
    [
        (0, 0),
        (100, 0),  # the free tier, exactly
        (101, 9),
        (10 * TB, 91_260),  # 10,140 GB at 9 cents
        (10 * TB + 1, 91_269),  # and one at 8.5 cents: 91,268.5, rounded half up
        (50 * TB, 91_260 + 348_160),  # 40,960 GB at 8.5 cents
        (150 * TB, 439_420 + 716_800),  # 102,400 GB at 7 cents
        (200 * TB, 1_156_220 + 256_000),  # 51,200 GB at 5 cents
    ],
)
def test_the_month_total_is_priced_through_the_aws_tiers(gb: float, cents: int) -> None:
    assert bill_cents(gb, AWS_US_EAST) == cents
    assert tiered_usd(gb, AWS_US_EAST) == pytest.approx(cents / 100, abs=0.0051)


def test_the_bill_is_in_whole_cents_rounded_half_up() -> None:
    assert bill_cents(100.5, AWS_US_EAST) == 5  # $0.045
    assert bill_cents(100.05, AWS_US_EAST) == 0  # $0.0045
    assert bill_cents(100.06, AWS_US_EAST) == 1  # $0.0054


# --- one day shared among the orgs --------------------------------------------------------------


def test_a_day_within_the_free_100_gb_costs_nobody_anything() -> None:
    assert split_day(60, {"a": 30, "b": 10}, AWS_US_EAST) == {"a": 0, "b": 0}  # 100 GB exactly


def test_a_day_crossing_the_free_tier_pays_only_past_it() -> None:
    # 90 GB before, 30 today: 20 GB past the free 100 at $0.09 = $1.80.
    assert split_day(90, {"a": 30}, AWS_US_EAST) == {"a": 180}


def test_a_day_crossing_a_paid_tier_pays_each_part_at_its_price() -> None:
    before = 10 * TB - 10
    # 10 GB at $0.09 to the 10 TB limit, 30 GB past it at $0.085.
    assert split_day(before, {"a": 40}, AWS_US_EAST) == {"a": round(10 * 9 + 30 * 8.5)}


def test_two_orgs_share_a_boundary_crossing_day_in_proportion() -> None:
    # 80 GB before; a downloads 30, b 10: 20 GB past the free tier, $1.80, shared 3 to 1
    # (though a's 30 GB alone would have crossed it).
    assert split_day(80, {"a": 30, "b": 10}, AWS_US_EAST) == {"a": 135, "b": 45}


def test_the_cents_left_over_go_to_the_largest_remainders() -> None:
    # 1 GB past the free tier is 9 cents, over three equal orgs: 3 each, nothing left over.
    assert split_day(100, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, AWS_US_EAST) == dict.fromkeys(
        "abc", 3
    )
    # 10 cents (1 GB at $0.10) over three equal orgs: 3.33 each, the cent left to the lowest id.
    ten = [EgressTier(usd_per_gb=0.10)]
    assert split_day(0, {"c": 1 / 3, "b": 1 / 3, "a": 1 / 3}, ten) == {"a": 4, "b": 3, "c": 3}
    # 10 cents over 0.625 : 0.25 : 0.125 GB: 6.25, 2.5, 1.25; the cent left to the largest
    # remainder.
    assert split_day(0, {"a": 0.625, "b": 0.25, "c": 0.125}, ten) == {"a": 6, "b": 3, "c": 1}
    # 10 cents over 0.75 : 0.25 GB: 7.5 and 2.5, a tie, the cent to the lower id.
    assert split_day(0, {"b": 0.75, "a": 0.25}, ten) == {"a": 3, "b": 7}


def test_a_day_of_one_cent_is_charged() -> None:
    # 100.06 GB after the day: 0.54 cents, rounded to 1; the day before had none to pay.
    assert split_day(100, {"a": 0.06}, AWS_US_EAST) == {"a": 1}
    assert tiered_usd(0.5, [EgressTier(usd_per_gb=0.10)]) == pytest.approx(0.05)


def test_an_org_that_downloaded_nothing_pays_nothing() -> None:
    assert split_day(200, {"a": 5, "idle": 0}, AWS_US_EAST) == {"a": 45, "idle": 0}
    # A day of rows without downloads (an upload's event writes one at 0) costs nobody anything.
    assert split_day(200, {"a": 0, "b": 0}, AWS_US_EAST) == {"a": 0, "b": 0}


def test_a_month_of_days_adds_up_to_the_platform_bill_to_the_cent() -> None:
    """Uneven days of several orgs, crossing the free tier and the 10 TB tier: every day's
    shares add up to the day's cents, and the month's to the tiered bill of its total."""
    days = [
        {"a": 33.3, "b": 0.7, "c": 12.25},
        {"a": 40.01, "b": 0.0, "c": 1 / 3},
        {"a": 5000.5, "b": 4000.25, "c": 1234.567},
        {"a": 0.001, "b": 0.002},
        {"a": 77.7, "b": 88.8, "c": 99.9},
    ]
    before = 10.0
    split = split_month(before, days, AWS_US_EAST)
    total = before + sum(sum(d.values()) for d in days)
    running = before
    for day, shares in zip(days, split, strict=True):
        after = running + sum(day.values())
        assert sum(shares.values()) == bill_cents(after, AWS_US_EAST) - bill_cents(
            running, AWS_US_EAST
        )
        running = after
    assert sum(sum(s.values()) for s in split) == bill_cents(total, AWS_US_EAST) - bill_cents(
        before, AWS_US_EAST
    )
    # Each org within a cent of its exact share of each day.
    for day, shares in zip(days, split, strict=True):
        cents = sum(shares.values())
        for org, gb in day.items():
            assert shares[org] == pytest.approx(cents * gb / sum(day.values()), abs=1)


# --- the setting ---------------------------------------------------------------------------------


def test_the_default_tiers_are_aws_us_east(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTETAKER_PRICE_EGRESS_TIERS", raising=False)
    assert MetricsSettings(_env_file=None).price_egress_tiers == [
        EgressTier(up_to_gb=100, usd_per_gb=0),
        EgressTier(up_to_gb=10240, usd_per_gb=0.09),
        EgressTier(up_to_gb=51200, usd_per_gb=0.085),
        EgressTier(up_to_gb=153600, usd_per_gb=0.07),
        EgressTier(up_to_gb=None, usd_per_gb=0.05),
    ]


def test_tiers_come_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    tiers = [{"up_to_gb": 1, "usd_per_gb": 0.5}, {"up_to_gb": None, "usd_per_gb": 0.25}]
    monkeypatch.setenv("NOTETAKER_PRICE_EGRESS_TIERS", json.dumps(tiers))
    assert MetricsSettings(_env_file=None).price_egress_tiers == [
        EgressTier(up_to_gb=1, usd_per_gb=0.5),
        EgressTier(usd_per_gb=0.25),
    ]


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([], "at least one egress tier is needed (the last, without up_to_gb)"),
        (
            [
                {"up_to_gb": 100, "usd_per_gb": 0},
                {"up_to_gb": 100, "usd_per_gb": 1},
                {"usd_per_gb": 1},
            ],
            "egress tier limits must ascend: tier 2's up_to_gb 100 is not above tier 1's 100",
        ),
        (
            [{"up_to_gb": 100, "usd_per_gb": 0}],
            "the last egress tier must have no up_to_gb (null), so every GB has a price",
        ),
        (
            [{"usd_per_gb": 0}, {"usd_per_gb": 1}],
            "egress tier 1 has no up_to_gb: only the last tier may be open",
        ),
        ([{"usd_per_gb": -0.01}], "Input should be greater than or equal to 0"),
        ([{"up_to_gb": 0, "usd_per_gb": 1}, {"usd_per_gb": 1}], "Input should be greater than 0"),
        ([{"usd_per_gb": 1, "price": 2}], "Extra inputs are not permitted"),
    ],
)
def test_tiers_that_do_not_price_every_gb_once_are_refused(
    monkeypatch: pytest.MonkeyPatch, tiers: list[dict[str, float]], message: str
) -> None:
    monkeypatch.setenv("NOTETAKER_PRICE_EGRESS_TIERS", json.dumps(tiers))
    with pytest.raises(ValidationError) as refused:
        MetricsSettings(_env_file=None)
    (error,) = refused.value.errors()
    assert error["msg"].removeprefix("Value error, ") == message
