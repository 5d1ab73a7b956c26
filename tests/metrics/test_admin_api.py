"""The admin API answers the full per-org usage and cost, as JSON and CSV, only to the admin."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from starlette.responses import StreamingResponse

from notetaker.common.costs import DAILY_COLUMNS, stream_daily_costs
from notetaker.common.events import StorageUsage
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from notetaker.metrics import admin
from notetaker.metrics.egress import AWS_US_EAST
from notetaker.metrics.usage import GIB, Prices, apply
from tests.metrics.conftest import admin_api

TOKEN = "admin-secret-token"
NEXT_TOKEN = "admin-token-after-rotation"


@pytest.fixture(scope="module")
async def metrics_url(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_ADMIN_TOKENS": f"{TOKEN},{NEXT_TOKEN}",
    }
    process = ServiceProcess("metrics", env, port, tmp_path_factory.mktemp("m") / "metrics.log")
    process.start()
    await asyncio.to_thread(process.wait_ready)
    yield process.url
    process.stop()


async def test_usage_as_json_and_csv_for_the_admin_only(metrics_url: str, db: asyncpg.Pool) -> None:
    org = uuid.uuid4()
    event = StorageUsage(
        bot_id="b",
        org_id=org,
        recording_id=uuid.uuid4(),
        step="upload",
        bytes_stored=3 * GIB,
        bytes_uploaded=3 * GIB,
        put_requests=2000,
        occurred_at=datetime.now(UTC),
    )
    await apply(db, f"admin-{org}", event, Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004))
    admin = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=metrics_url) as http:
        as_json = await http.get("/admin/usage", params={"org_id": str(org)}, headers=admin)
        as_csv = await http.get("/admin/usage.csv", params={"org_id": str(org)}, headers=admin)
        rotated = await http.get(
            "/admin/usage",
            params={"org_id": str(org)},
            headers={"authorization": f"Bearer {NEXT_TOKEN}"},
        )
        anonymous = await http.get("/admin/usage")
        empty = await http.get("/admin/usage", headers={"authorization": ""})
        wrong = await http.get("/admin/usage", headers={"authorization": "Bearer nope"})
        bad = await http.get("/admin/usage", params={"from": "yesterday"}, headers=admin)

    assert as_json.status_code == 200
    assert rotated.json() == as_json.json()  # both tokens work while rotating
    rows = {r["metric_type"]: r for r in as_json.json()["rows"]}
    assert rows["storage_gb"]["value"] == pytest.approx(3)
    assert rows["api_requests"]["cost_usd"] == pytest.approx(0.01)
    assert as_json.json()["total_cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in rows.values())
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["metric_type"] for r in parsed} == set(rows)
    assert all(r["org_id"] == str(org) for r in parsed)
    assert (anonymous.status_code, empty.status_code, wrong.status_code) == (401, 401, 401)
    assert bad.status_code == 400


@pytest.mark.parametrize("token", ["", " ", f"{TOKEN},", "short"])
async def test_the_metrics_service_with_an_empty_or_malformed_admin_token_does_not_start(
    stack: Stack, tmp_path: Path, token: str
) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", **stack.env(), "NOTETAKER_HTTP_PORT": str(port)}
    process = ServiceProcess(
        "metrics", {**env, "NOTETAKER_ADMIN_TOKENS": token}, port, tmp_path / "metrics.log"
    )
    process.start()
    assert process.process is not None
    code = await asyncio.to_thread(process.process.wait, 60)
    assert code != 0
    assert "NOTETAKER_ADMIN_TOKENS" in process.tail()
    assert "Traceback" not in process.tail()


async def test_the_summary_projects_each_org_and_names_those_over_the_threshold(
    db: asyncpg.Pool,
) -> None:
    """A June of 2021, which no other test writes: one org holds 10 GiB all month, another
    downloaded 1,000 GiB ($90) on the 15th. Seen on the 15th."""
    steady, dear = uuid.uuid4(), uuid.uuid4()
    for day in range(1, 16):
        await db.execute(
            "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
            " VALUES ($1, $2, 'storage_gb', 10, $3)",
            steady,
            date(2021, 6, day),
            10 * 0.023 / 30,
        )
    await db.execute(
        "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
        " VALUES ($1, '2021-06-15', 'download_gb', 1000, 90)",
        dear,
    )
    async with admin_api(db, TOKEN) as http:
        answer = await http.get(
            "/admin/summary",
            params={"date": "2021-06-15"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        anonymous = await http.get("/admin/summary", params={"date": "2021-06-15"})
        bad = await http.get(
            "/admin/summary", params={"date": "soon"}, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert (anonymous.status_code, bad.status_code) == (401, 400)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert (summary["date"], summary["threshold_usd"], summary["orgs"]) == ("2021-06-15", 50.0, 2)
    # 1,000 GiB today is 1,000/7 GiB a day: for the 15 days left all past the free 100 GiB at
    # $0.09 ($90/7 a day), and for July's 31 from a free 100 GiB again ($9 less).
    dear_figures = {
        "org_id": str(dear),
        "stored_gb": 0.0,
        "month_to_date_usd": 90.0,
        "month_end_usd": pytest.approx(90 + 90 / 7 * 15, abs=1e-6),
        "next_month_usd": pytest.approx(90 / 7 * 31 - 9, abs=1e-6),
    }
    assert summary["orgs_over_threshold"] == [dear_figures]
    # 10 GiB: half a GB-month to date, the other half to come, a whole one in July (its rows'
    # cost kept to 6 places, $0.007667 a day).
    assert summary["platform"] == {
        "org_id": "platform",
        "stored_gb": 10.0,
        "month_to_date_usd": pytest.approx(90 + 0.115, abs=1e-4),
        "month_end_usd": pytest.approx(90 + 90 / 7 * 15 + 0.23, abs=1e-4),
        "next_month_usd": pytest.approx(90 / 7 * 31 - 9 + 0.23, abs=1e-4),
        "over_threshold": True,
    }
    assert set(summary["explained"]) == {
        "stored_gb",
        "month_to_date_usd",
        "month_end_usd",
        "next_month_usd",
    }


async def test_cost_by_type_per_org_per_day_as_json_and_a_streamed_csv(db: asyncpg.Pool) -> None:
    """August 2021, which no other test writes: 30 orgs, each with every day's stored level, a
    download on the 10th and requests on the 20th. The CSV (over 64 KiB) comes in pieces."""
    orgs = sorted(uuid.uuid4() for _ in range(30))
    await db.execute(
        "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
        " SELECT o, d::date, 'storage_gb', 3, 0.0023"
        " FROM unnest($1::uuid[]) o, generate_series('2021-08-01'::date, '2021-08-31', '1 day') d",
        orgs,
    )
    for org in orgs:
        await db.execute(
            "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd) VALUES"
            " ($1, '2021-08-10', 'download_gb', 2, 0.18), ($1, '2021-08-20', 'api_requests', 100,"
            " 0.0005)",
            org,
        )
    period = {"from": "2021-08-01", "to": "2021-08-31"}
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with admin_api(db, TOKEN) as http:
        one = await http.get(
            "/admin/daily", params={**period, "org_id": str(orgs[0])}, headers=auth
        )
        everyone = await http.get("/admin/daily", params=period, headers=auth)
        pieces = []
        async with http.stream("GET", "/admin/daily.csv", params=period, headers=auth) as streamed:
            assert streamed.headers["content-type"].startswith("text/csv")
            async for piece in streamed.aiter_text():
                pieces.append(piece)
        usage_csv = await http.get(
            "/admin/usage.csv", params={**period, "org_id": str(orgs[0])}, headers=auth
        )
        not_an_org = await http.get("/admin/daily.csv", params={"org_id": "nope"}, headers=auth)
        anonymous = await http.get("/admin/daily.csv", params=period)
    assert (not_an_org.status_code, anonymous.status_code) == (400, 401)

    assert one.status_code == 200, one.text
    rows = one.json()["rows"]
    assert [r["date"] for r in rows] == [f"2021-08-{n:02}" for n in range(1, 32)]
    assert rows[9] == {
        "org_id": str(orgs[0]),
        "date": "2021-08-10",
        "stored_gb": 3.0,
        "upload_gb": 0.0,
        "download_gb": 2.0,
        "api_requests": 0.0,
        "storage_usd": 0.0023,
        "upload_usd": 0.0,
        "download_usd": 0.18,
        "requests_usd": 0.0,
        "total_usd": 0.1823,
    }
    assert rows[19]["api_requests"] == 100.0
    assert rows[19]["requests_usd"] == 0.0005
    assert one.json()["totals"] == {
        "storage_usd": pytest.approx(31 * 0.0023),
        "upload_usd": 0.0,
        "download_usd": 0.18,
        "requests_usd": 0.0005,
        "total_usd": pytest.approx(31 * 0.0023 + 0.18 + 0.0005),
    }

    text = "".join(pieces)
    assert len(text) > 64 * 1024
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 30 * 31 == len(everyone.json()["rows"])
    assert [(r["org_id"], r["date"]) for r in parsed] == [
        (r["org_id"], r["date"]) for r in everyone.json()["rows"]
    ]
    assert float(parsed[9]["total_usd"]) == pytest.approx(0.1823)
    usage_rows = list(csv.DictReader(io.StringIO(usage_csv.text)))
    assert len(usage_rows) == 31 + 2  # a storage row a day, the download, the requests

    # The body is written as the cursor goes, about 64 KiB at a time (httpx's ASGI transport
    # gathers it whole, so the pieces are counted on the response's own iterator).
    response = admin._streamed_csv(
        db,
        "daily.csv",
        DAILY_COLUMNS,
        lambda conn: stream_daily_costs(conn, date(2021, 8, 1), date(2021, 8, 31)),
    )
    assert isinstance(response, StreamingResponse)
    chunks = [c async for c in response.body_iterator]
    assert len(chunks) == 2
    assert "".join(str(c) for c in chunks) == text


async def test_downloads_are_billed_through_the_platform_tiers(own_db: asyncpg.Pool) -> None:
    """October 2021 on a database of its own (the tiers apply to every org of it): two orgs
    download 80 and 40 GiB on the 5th, 20 GiB past the platform's free 100, $1.80 shared 2 : 1;
    on the 6th the first downloads 10 GiB more, all its own at $0.09. Cost by type and the
    summary say so, and the orgs' download cost is the platform's bill."""
    first, second = uuid.UUID(int=1), uuid.UUID(int=2)
    prices = Prices(0.023, 0.0, AWS_US_EAST, 0.005, 0.0004)
    for n, (org, gib, day) in enumerate([(first, 80, 5), (second, 40, 5), (first, 10, 6)]):
        event = StorageUsage(
            bot_id="b",
            org_id=org,
            recording_id=uuid.uuid4(),
            step="upload",
            bytes_downloaded=gib * GIB,
            occurred_at=datetime(2021, 10, day, 12, tzinfo=UTC),
        )
        assert await apply(own_db, f"tiered-{n}", event, prices)
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with admin_api(own_db, TOKEN) as http:
        daily = await http.get(
            "/admin/daily", params={"from": "2021-10-01", "to": "2021-10-06"}, headers=auth
        )
        as_csv = await http.get(
            "/admin/daily.csv", params={"from": "2021-10-01", "to": "2021-10-06"}, headers=auth
        )
        summary = await http.get("/admin/summary", params={"date": "2021-10-06"}, headers=auth)
    assert daily.status_code == 200, daily.text
    assert {(r["org_id"], r["date"]): r["download_usd"] for r in daily.json()["rows"]} == {
        (str(first), "2021-10-05"): 1.2,
        (str(second), "2021-10-05"): 0.6,
        (str(first), "2021-10-06"): 0.9,
    }
    assert daily.json()["totals"]["download_usd"] == 2.7
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [float(r["download_usd"]) for r in parsed] == [1.2, 0.9, 0.6]
    assert summary.json()["platform"]["month_to_date_usd"] == 2.7
