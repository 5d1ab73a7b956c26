"""Egress as AWS bills it: tiered prices on the platform's (the AWS account's) month-to-date data
transfer out, shared among the orgs in proportion to what each downloaded.

A tier is priced per GB (2^30 bytes) for the part of the month's total up to its limit (a
cumulative total in GB; the last tier has none). The defaults are AWS S3's data transfer out to
the internet, US East (N. Virginia), as published on 2026-12-03: the first 100 GB a month free
(aggregated over the account), then $0.09 per GB up to 10 TB, $0.085 up to 50 TB, $0.07 up to
150 TB and $0.05 beyond (TB = 1,024 GB).

The rounding rule, which never loses or creates a cent: the platform's bill for the month up to
the end of a day is its tiered cost in whole cents (rounded half up), and the day's cost is that
bill less the bill up to the day before; the day's cents are shared among the orgs that
downloaded that day by largest remainder: each gets the whole cents of its exact share (the
day's cents times its GB over the platform's GB that day), and the cents left over go one each
to the orgs with the largest fractions left (ties: the lower org id first). So the orgs'
download costs of a month add up to the platform's tiered bill to the cent, every day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

TB = 1024  # GB


class EgressTier(BaseModel):
    """One tier: `usd_per_gb` for the month's platform total up to `up_to_gb` (GB, cumulative;
    None: no limit, the last tier)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    up_to_gb: float | None = Field(None, gt=0)
    usd_per_gb: float = Field(ge=0)


AWS_US_EAST: tuple[EgressTier, ...] = (
    EgressTier(up_to_gb=100, usd_per_gb=0.0),
    EgressTier(up_to_gb=10 * TB, usd_per_gb=0.09),
    EgressTier(up_to_gb=50 * TB, usd_per_gb=0.085),
    EgressTier(up_to_gb=150 * TB, usd_per_gb=0.07),
    EgressTier(up_to_gb=None, usd_per_gb=0.05),
)


def check_tiers(tiers: Sequence[EgressTier]) -> Sequence[EgressTier]:
    """`tiers` if they price every GB once: at least one, limits ascending, only the last
    without one; ValueError saying what is wrong otherwise."""
    if not tiers:
        raise ValueError("at least one egress tier is needed (the last, without up_to_gb)")
    for n, tier in enumerate(tiers[:-1]):
        if tier.up_to_gb is None:
            raise ValueError(f"egress tier {n + 1} has no up_to_gb: only the last tier may be open")
        following = tiers[n + 1].up_to_gb
        if following is not None and following <= tier.up_to_gb:
            raise ValueError(
                f"egress tier limits must ascend: tier {n + 2}'s up_to_gb {following:g}"
                f" is not above tier {n + 1}'s {tier.up_to_gb:g}"
            )
    if tiers[-1].up_to_gb is not None:
        raise ValueError(
            "the last egress tier must have no up_to_gb (null), so every GB has a price"
        )
    return tiers


def tiered_usd(gb: float, tiers: Sequence[EgressTier]) -> float:
    """What `gb` GB in a month cost through the tiers, in USD (unrounded)."""
    return float(_tiered(Fraction(max(gb, 0.0)), tiers))


def _tiered(gb: Fraction, tiers: Sequence[EgressTier]) -> Fraction:
    cost = Fraction(0)
    floor = Fraction(0)
    for tier in tiers:
        # Past the previous limit (`floor`, below `gb`, or 0) up to this one's, or to `gb`.
        top = gb if tier.up_to_gb is None else min(gb, Fraction(tier.up_to_gb))
        cost += (top - floor) * Fraction(Decimal(str(tier.usd_per_gb)))
        if tier.up_to_gb is None or gb <= tier.up_to_gb:
            break
        floor = Fraction(tier.up_to_gb)
    return cost


def bill_cents(gb: float, tiers: Sequence[EgressTier]) -> int:
    """The platform's tiered bill for `gb` GB in a month, in whole cents, rounded half up."""
    return math.floor(_tiered(Fraction(max(gb, 0.0)), tiers) * 100 + Fraction(1, 2))


def split_day(
    before_gb: float, by_org: Mapping[str, float], tiers: Sequence[EgressTier]
) -> dict[str, int]:
    """Each org's cents of one day's egress: the platform's month-to-date bill after the day
    (`before_gb`, the month's total before it, plus every org's GB that day) less the bill
    before it, shared in proportion to the orgs' GB by largest remainder (ties: lower org id
    first). The cents add up to the day's, exactly."""
    day_gb = sum(max(gb, 0.0) for gb in by_org.values())
    cents = bill_cents(before_gb + day_gb, tiers) - bill_cents(before_gb, tiers)
    shares = dict.fromkeys(by_org, 0)
    if day_gb == 0:  # nobody downloaded: nothing to share (and it cost nothing)
        return shares
    total = Fraction(day_gb)
    exact = {org: cents * Fraction(max(gb, 0.0)) / total for org, gb in by_org.items()}
    for org, quota in exact.items():
        shares[org] = int(quota)  # floor: quotas are never negative
    left = cents - sum(shares.values())
    ranked = sorted(exact, key=lambda org: (-(exact[org] - int(exact[org])), org))
    for org in ranked[:left]:
        shares[org] += 1
    return shares


def split_month(
    before_gb: float, days: Iterable[Mapping[str, float]], tiers: Sequence[EgressTier]
) -> list[dict[str, int]]:
    """`split_day` for consecutive days of one month, from the month's total before the first."""
    split = []
    for by_org in days:
        split.append(split_day(before_gb, by_org, tiers))
        before_gb += sum(max(gb, 0.0) for gb in by_org.values())
    return split
