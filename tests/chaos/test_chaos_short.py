"""The short chaos run inside `make test`: 10 meetings, every fault at least once (each service
killed once; PostgreSQL, Kafka and S3 each gone for a few seconds; duplicate, late and
out-of-order webhooks; a 403 source refreshed; a source lying about its length; a refused bot;
two meetings deleted mid-run), and a clean report. `make chaos` is the long form.

Seed: `NOTETAKER_CHAOS_SEED` (a fixed one by default, so a failure here can be replayed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notetaker.devstack.chaos import MEETING_FAULTS, MIB, Options, chaos, make_plan
from notetaker.devstack.services import SERVICES
from notetaker.devstack.stack import Stack

SHORT = Options(
    meetings=10,
    seed=int(os.environ.get("NOTETAKER_CHAOS_SEED", "7")),
    max_mib=8,
    span_seconds=40,
    outage_seconds=6,
    kills_per_service=1,
    timeout_seconds=240,
)


def test_the_plan_is_the_seeds_and_holds_every_fault() -> None:
    plan = make_plan(SHORT)
    assert make_plan(SHORT) == plan
    assert make_plan(Options(**{**SHORT.__dict__, "seed": SHORT.seed + 1})) != plan
    struck = {(f.kind, f.target) for f in plan.faults}
    assert {("kill", s) for s in SERVICES} <= struck
    assert {("outage", d) for d in ("postgres", "kafka", "s3")} <= struck
    assert {f.kind for f in plan.faults} >= {*MEETING_FAULTS, "delete"}
    assert sum(m.refused for m in plan.meetings) == 1
    assert {m.webhook_version for m in plan.meetings} == {1, 2}
    assert {m.transcript for m in plan.meetings} == {"meetingbaas", "gladia"}
    # Mixed sizes, up to the largest allowed, which one recording has exactly.
    sizes = [m.video_bytes for m in plan.meetings if not m.scheduled]
    assert max(sizes) == SHORT.max_mib * MIB
    assert min(sizes) < 2 * MIB


async def test_ten_meetings_through_every_fault_lose_nothing_and_do_nothing_twice(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    report = await chaos(stack, SHORT, tmp_path, lines.append)
    with capsys.disabled():
        print("\n" + "\n".join(lines) + "\n" + report.render())
    assert report.clean, report.render()
