"""Retention: each round finishes the deletions left unfinished (a command stopped half-way, a
provider that could not be reached) and deletes the media of recordings past their org's
retention, through the one deletion path (`notetaker.common.deletion`), the same as an
operator's `notetaker meetings delete`. It also forgets webhook receipts older than 30 days.

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
WHO = "scheduler (retention)"


@dataclass(frozen=True)
class RetentionRound:
    resumed: int  # unfinished deletions taken up again
    expired: int  # recordings past their retention whose deletion started
    completed: int  # of both, those now complete


async def apply_retention(
    conn: asyncpg.Connection,
    deleter: MediaDeleter,
    *,
    default_days: int,
    now: datetime,
    limit: int = 50,
    budget_seconds: float = 10.0,
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
    return RetentionRound(resumed, expired, completed)
