"""Media retention per org: how long an org's recordings are kept, and which are past it.

An org keeps its media `NOTETAKER_MEDIA_RETENTION_DAYS` (90 by default) unless it has a row of
`org_retention`. A recording's age counts from its row's creation (when its bot was deployed,
minutes before the meeting), so it is never younger than its objects: the bucket's lifecycle
rule (`NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS`, 400 days by default) is a safety net that a
retention must stay under, never the way media goes. The scheduler deletes expired media
through `notetaker.common.deletion`, the same path as `notetaker meetings delete`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


class RetentionRefused(ValueError):
    """A retention the safety net would cut short (or not a number of days at all)."""


@dataclass(frozen=True)
class OrgRetention:
    org_id: uuid.UUID
    days: int
    set_by: str
    set_at: datetime


def check_days(days: int, safety_net_days: int) -> int:
    """`days` if an org may keep its media that long: at least a day, and shorter than the
    bucket's lifecycle rule, which would otherwise delete it first (objects only, behind the
    rows' and the stored level's back)."""
    if days < 1:
        raise RetentionRefused(f"a retention is at least 1 day, not {days}")
    if days >= safety_net_days:
        raise RetentionRefused(
            f"{days} days is not shorter than the bucket's lifecycle rule ({safety_net_days}"
            " days, NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS), which would delete the objects"
            " first; raise the rule (and run the provisioning) before a longer retention"
        )
    return days


async def set_retention(
    conn: asyncpg.Connection | asyncpg.Pool,
    org_id: uuid.UUID,
    days: int,
    *,
    by: str,
    safety_net_days: int,
) -> OrgRetention:
    check_days(days, safety_net_days)
    row = await conn.fetchrow(
        "INSERT INTO org_retention (org_id, days, set_by) VALUES ($1, $2, $3)"
        " ON CONFLICT (org_id) DO UPDATE SET days = EXCLUDED.days, set_by = EXCLUDED.set_by,"
        " set_at = now() RETURNING org_id, days, set_by, set_at",
        org_id,
        days,
        by[:200],
    )
    return OrgRetention(**dict(row))


async def unset_retention(conn: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID) -> bool:
    """Back to the default; False when the org had no retention of its own."""
    removed = await conn.fetchval(
        "DELETE FROM org_retention WHERE org_id = $1 RETURNING true", org_id
    )
    return bool(removed)


async def org_retentions(conn: asyncpg.Connection | asyncpg.Pool) -> list[OrgRetention]:
    rows = await conn.fetch(
        "SELECT org_id, days, set_by, set_at FROM org_retention ORDER BY org_id"
    )
    return [OrgRetention(**dict(r)) for r in rows]


@dataclass(frozen=True)
class Expired:
    recording_id: uuid.UUID
    org_id: uuid.UUID
    bot_id: str
    created_at: datetime
    days: int  # the retention it is past


async def expired_recordings(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    default_days: int,
    now: datetime,
    limit: int,
    org_id: uuid.UUID | None = None,
) -> list[Expired]:
    """Recordings not deleted yet and older than their org's retention at `now`, oldest first."""
    rows = await conn.fetch(
        "SELECT r.id AS recording_id, r.org_id, r.bot_id, r.created_at,"
        " coalesce(o.days, $2) AS days"
        " FROM recordings r LEFT JOIN org_retention o ON o.org_id = r.org_id"
        " WHERE r.media_deleted_at IS NULL"
        " AND r.created_at < $1::timestamptz - make_interval(days => least($2,"
        "   (SELECT coalesce(min(days), $2) FROM org_retention)))"
        " AND r.created_at < $1::timestamptz - make_interval(days => coalesce(o.days, $2))"
        " AND ($4::uuid IS NULL OR r.org_id = $4)"
        " ORDER BY r.created_at LIMIT $3",
        now,
        default_days,
        limit,
        org_id,
    )
    return [Expired(**dict(r)) for r in rows]


async def unfinished_deletions(
    conn: asyncpg.Connection | asyncpg.Pool, *, now: datetime, limit: int
) -> list[uuid.UUID]:
    """Recordings whose deletion was started and is not complete, due to be tried again."""
    rows = await conn.fetch(
        "SELECT recording_id FROM media_deletions WHERE completed_at IS NULL"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= $1)"
        " ORDER BY next_attempt_at NULLS FIRST LIMIT $2",
        now,
        limit,
    )
    return [r["recording_id"] for r in rows]
