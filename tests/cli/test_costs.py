"""`notetaker costs` prints the table the metrics admin API serves: the same rows, read by the
same code (`notetaker.common.costs`), checked here against the admin API itself."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path

import asyncpg

from notetaker.common.s3 import S3Client
from notetaker.devstack.stack import Stack
from tests.cli.test_events import cli_env, notetaker
from tests.conftest import OwnDatabase
from tests.metrics.conftest import admin_api
from tests.metrics.test_reconcile import levels, store

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
    async with admin_api(db, token) as http:
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


async def test_costs_reconcile_prints_what_it_found_and_corrected(
    stack: Stack, own_database: OwnDatabase, own_bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    """Objects gone from S3 behind the pipeline's back (as the lifecycle rule deletes them): the
    first run reports the drift and the expired recording, the second corrects the level."""
    db = own_database.pool
    org = uuid.uuid4()
    gone = await store(db, s3, own_bucket, org, 3_000, 1_000)
    await store(db, s3, own_bucket, org, 500, 0)
    listed = await s3.list_objects_v2(Bucket=own_bucket, Prefix=f"meeting-recordings/{org}/")
    for item in listed.get("Contents", []):
        if str(gone.recording_id) in item["Key"]:
            await s3.delete_object(Bucket=own_bucket, Key=item["Key"])
    env = cli_env(stack.env()) | {
        "NOTETAKER_DATABASE_URL": own_database.dsn,
        "NOTETAKER_S3_BUCKET": own_bucket,
    }

    found = await notetaker(env, "costs", "reconcile", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    (line, total) = found.json_lines()
    assert (line["org_id"], line["drift_bytes"], line["corrected_bytes"]) == (str(org), -4_000, 0)
    assert line["expired_recordings"] == [str(gone.recording_id)]
    assert (total["total"]["objects_listed"], total["total"]["recordings_expired"]) == (2, 1)

    corrected = await notetaker(env, "costs", "reconcile", cwd=tmp_path)
    assert corrected.returncode == 0, corrected.stderr
    assert str(org) in corrected.stdout
    assert "-4000" in corrected.stdout  # drift and correction
    assert await levels(db) == {org: 500}

    agreed = await notetaker(env, "costs", "reconcile", cwd=tmp_path)
    assert agreed.returncode == 0, agreed.stderr
    assert "S3 and every stored level agree." in agreed.stderr
