"""`notetaker retention set|unset|list`: an org's own retention, never as long as the bucket's
lifecycle rule (the safety net). The deletions themselves: tests/scheduler/test_retention.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from notetaker.devstack.stack import Stack
from tests.cli.test_events import cli_env, notetaker


async def test_set_list_unset_and_a_retention_the_safety_net_would_cut_short(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    env = cli_env(stack.env())
    org = uuid.uuid4()
    result = await notetaker(env, "retention", "set", str(org), "30", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.json_lines()
    assert (line["org_id"], line["days"]) == (str(org), 30)
    assert "@" in line["set_by"]  # user@host, for the audit

    refused, listed, table = await asyncio.gather(
        notetaker(env, "retention", "set", str(org), "400", cwd=tmp_path),
        notetaker(env, "retention", "list", "--json", cwd=tmp_path),
        notetaker(env, "retention", "list", cwd=tmp_path),
    )
    assert refused.returncode == 2
    assert "not shorter than the bucket's lifecycle rule (400 days" in " ".join(
        refused.stderr.split()
    )
    assert await db.fetchval("SELECT days FROM org_retention WHERE org_id = $1", org) == 30
    assert listed.returncode == 0, listed.stderr
    assert {x["org_id"]: x["days"] for x in listed.json_lines()}[str(org)] == 30
    assert "90 days by default" in table.stdout
    assert "safety net 400 days" in table.stdout

    unset, hostile = await asyncio.gather(
        notetaker(env, "retention", "unset", str(org), cwd=tmp_path),
        notetaker(env, "retention", "set", "'; DELETE FROM org_retention", "1", cwd=tmp_path),
    )
    assert unset.returncode == 0, unset.stderr
    assert "back to the default retention (90 days)" in unset.stdout
    assert await db.fetchval("SELECT count(*) FROM org_retention WHERE org_id = $1", org) == 0
    assert hostile.returncode == 2
    assert "is not an org id" in hostile.stderr
