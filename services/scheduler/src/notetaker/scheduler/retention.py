"""Retention: each round finishes the deletions left unfinished (a command stopped half-way, a
provider that could not be reached) and deletes the media of recordings past their org's
retention, through the one deletion path (`notetaker.common.deletion`), the same as an
operator's `notetaker meetings delete`. It also forgets webhook receipts older than 30 days, and
deletes the kept webhook bodies older than NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS (30), in batches
of 1,000 within the same time budget (a backlog goes round by round; deleting a row already
deleted by another run is a no-op, so two schedulers, or a run cut short, are harmless).

A recording another run is deleting (its advisory lock held) is left to that run this round.
A deletion that fails on our own S3, Kafka or database ends the job for the round: the next one
tries again (the deletion's row says where it stopped). The job starts no new deletion once it
has run `budget_seconds` (10 s): a backlog (retention turned on over years of media) is worked
off round by round, never holding up the bot deploys of the next round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from notetaker.common.deletion import MediaDeleter
from notetaker.common.logs import get_logger
from notetaker.common.retention import expired_recordings, unfinished_deletions

log = get_logger(__name__)

RECEIPTS_KEPT = timedelta(days=30)
BODY_BATCH = 1000
WHO = "scheduler (retention)"


@dataclass(frozen=True)
class RetentionRound:
    resumed: int  # unfinished deletions taken up again
    expired: int  # recordings past their retention whose deletion started
    completed: int  # of both, those now complete
    bodies_pruned: int = 0  # kept webhook bodies past their retention, deleted


async def apply_retention(
    conn: asyncpg.Connection,
    deleter: MediaDeleter,
    *,
    default_days: int,
    now: datetime,
    limit: int = 50,
    budget_seconds: float = 10.0,
    body_retention_days: int = 30,
) -> RetentionRound:
    resumed = expired = completed = 0
    deadline = time.monotonic() + budget_seconds
    for recording_id in await unfinished_deletions(conn, now=now, limit=limit):
        if time.monotonic() > deadline:
            break
        outcome = await deleter.delete(recording_id, by=WHO, reason="retention", wait=False)
        if outcome is not None:
            resumed += 1
            completed += outcome.deletion.done
    for recording in await expired_recordings(
        conn, default_days=default_days, now=now, limit=limit
    ):
        if time.monotonic() > deadline:
            break
        outcome = await deleter.delete(
            recording.recording_id, by=WHO, reason="retention", wait=False
        )
        if outcome is not None:
            expired += 1
            completed += outcome.deletion.done
            log.info(
                "retention.deleted",
                recording_id=str(recording.recording_id),
                org_id=str(recording.org_id),
                bot_id=recording.bot_id,
                retention_days=recording.days,
                done=outcome.deletion.done,
            )
    await conn.execute("DELETE FROM webhook_receipts WHERE received_at < $1", now - RECEIPTS_KEPT)
    pruned = await prune_webhook_bodies(
        conn, before=now - timedelta(days=body_retention_days), deadline=deadline
    )
    return RetentionRound(resumed, expired, completed, pruned)


async def prune_webhook_bodies(
    conn: asyncpg.Connection, *, before: datetime, deadline: float, batch: int = BODY_BATCH
) -> int:
    """Delete the webhook bodies received before `before`, `batch` at a time (each its own
    short statement) until none is left or the round's time is up; how many went."""
    pruned = 0
    while True:
        gone: int = await conn.fetchval(
            "WITH gone AS (DELETE FROM webhook_bodies WHERE (provider, delivery_id) IN"
            " (SELECT provider, delivery_id FROM webhook_bodies WHERE received_at < $1"
            " LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
            before,
            batch,
        )
        pruned += gone
        if gone < batch or time.monotonic() > deadline:
            break
    if pruned:
        log.info("retention.webhook_bodies_pruned", count=pruned, before=before.isoformat())
    return pruned
