"""`notetaker costs` prints the table the metrics admin API serves: the same rows, read by the
same code (`notetaker.common.costs`), checked here against the admin API itself."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path

import asyncpg
import httpx
from pydantic import SecretStr
from starlette.applications import Starlette

from notetaker.devstack.stack import Stack
from notetaker.metrics import admin
from notetaker.metrics.settings import MetricsSettings
from tests.cli.test_events import cli_env, notetaker

MONTH = "2020-02"  # a month no other test writes usage for


async def usage(db: asyncpg.Pool, org: uuid.UUID, day: int, metric: str, value: float) -> None:
    await db.execute(
        "INSERT INTO s3_usage_metrics (org_id, date, metric_type, value, cost_usd)"
        " VALUES ($1, $2, $3::usage_metric_type, $4, $5)",
        org,
        date(2020, 2, day),
        metric,
        value,
        value / 100,
    )


async def test_costs_is_the_admin_apis_table_per_org_and_per_day(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    cheap, dear = uuid.uuid4(), uuid.uuid4()
    for day, level in ((1, 1.0), (29, 3.0)):
        await usage(db, dear, day, "storage_gb", level)
        await usage(db, dear, day, "upload_gb", 2.0)
    await usage(db, dear, 29, "api_requests", 40)
    await usage(db, cheap, 10, "storage_gb", 0.5)
    env = cli_env(stack.env())

    daily, totals, table, bad = await asyncio.gather(
        notetaker(
            env, "costs", "--month", MONTH, "--org", str(dear), "--daily", "--json", cwd=tmp_path
        ),
        notetaker(env, "costs", "--month", MONTH, "--json", cwd=tmp_path),
        notetaker(env, "costs", "--month", MONTH, cwd=tmp_path),
        notetaker(env, "costs", "--month", "2020-13", cwd=tmp_path),
    )
    assert daily.returncode == 0, daily.stderr
    token = "admin-token-of-the-costs-test"
    settings = MetricsSettings(admin_tokens=[SecretStr(token)])
    app = Starlette(routes=admin.routes(settings, db))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as http:
        served = await http.get(
            "/admin/usage",
            params={"from": "2020-02-01", "to": "2020-02-29", "org_id": str(dear)},
            headers={"authorization": f"Bearer {token}"},
        )
    assert served.status_code == 200, served.text
    assert daily.json_lines() == served.json()["rows"]
    assert len(served.json()["rows"]) == 5

    assert totals.returncode == 0, totals.stderr
    by_org = {line["org_id"]: line for line in totals.json_lines()}
    assert list(by_org) == [str(dear), str(cheap)]  # the most expensive first
    assert by_org[str(dear)]["stored_gb"] == 3.0  # the level at the end, not a sum
    assert by_org[str(dear)]["upload_gb"] == 4.0
    assert by_org[str(dear)]["api_requests"] == 40
    assert round(by_org[str(dear)]["cost_usd"], 6) == round((1 + 3 + 2 + 2 + 40) / 100, 6)

    assert table.returncode == 0, table.stderr
    assert str(dear) in table.stdout
    assert f"{(1 + 3 + 2 + 2 + 40 + 0.5) / 100:.6f}" in table.stdout  # the total

    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
