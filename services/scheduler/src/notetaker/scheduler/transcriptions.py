"""Polling transcription jobs whose callback is overdue: a finished job is announced exactly as
its callback would have been (a `transcript.ready` pointing at the job)."""

from __future__ import annotations

import asyncpg
import httpx
from pydantic import SecretStr

from notetaker.common import gladia
from notetaker.common.events import TranscriptReady
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger

log = get_logger(__name__)


async def poll_overdue_jobs(
    db: asyncpg.Pool | asyncpg.Connection,
    http: httpx.AsyncClient,
    publisher: EventPublisher,
    *,
    api_url: str,
    api_key: SecretStr,
    overdue_seconds: float,
    every_seconds: float,
) -> int:
    """Ask Gladia about overdue jobs; returns how many finished jobs were announced. A job whose
    id Gladia has not given yet (its request is still being submitted) waits for it; the job of a
    recording whose media was deleted is never asked about (the deletion deletes it at Gladia)."""
    jobs = await db.fetch(
        "SELECT request_id, bot_id, job_id FROM transcription_jobs"
        " WHERE completed_at IS NULL AND provider = 'gladia' AND job_id IS NOT NULL"
        " AND requested_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.bot_id = transcription_jobs.bot_id"
        " AND r.media_deleted_at IS NOT NULL)"
        " AND (polled_at IS NULL OR polled_at < now() - make_interval(secs => $2))"
        " ORDER BY requested_at LIMIT 100",
        overdue_seconds,
        every_seconds,
    )
    announced = 0
    for job in jobs:
        if not gladia.is_job_id(job["job_id"]):
            # Never sent with our key: close the job, the meeting keeps its video.
            await db.execute(
                "UPDATE transcription_jobs SET completed_at = now(), status = 'error'"
                " WHERE request_id = $1",
                job["request_id"],
            )
            log.error("transcription.bad_job_id", bot_id=job["bot_id"], provider="gladia")
            continue
        response = await http.get(
            gladia.job_url(api_url, job["job_id"]),
            headers={"x-gladia-key": api_key.get_secret_value()},
        )
        result = response.json() if response.status_code == 200 else {}
        status = result.get("status")
        await db.execute(
            "UPDATE transcription_jobs SET polled_at = now(), poll_count = poll_count + 1,"
            " status = coalesce($2, status) WHERE request_id = $1",
            job["request_id"],
            status,
        )
        if status == "done":
            await publisher.publish(
                TranscriptReady(bot_id=job["bot_id"], provider="gladia", job_id=job["job_id"])
            )
            announced += 1
            log.info("transcription.polled_done", bot_id=job["bot_id"], job_id=job["job_id"])
        elif status == "error":
            # Gladia's `error_code` (an HTTP-like status) is kept beside a reason its error
            # callback may have left; the code says which, never the result's body.
            code = result.get("error_code")
            await db.execute(
                "UPDATE transcription_jobs SET completed_at = now(),"
                " error_code = coalesce($2, error_code) WHERE request_id = $1",
                job["request_id"],
                None if code is None else str(code)[:200],
            )
            log.error(
                "transcription.failed",
                bot_id=job["bot_id"],
                job_id=job["job_id"],
                provider="gladia",
                error_code=code,
                hint="the meeting keeps its video without a transcript",
            )
        else:
            log.info(
                "transcription.overdue",
                bot_id=job["bot_id"],
                job_id=job["job_id"],
                status=status,
                http_status=response.status_code,
            )
    return announced
