"""Polling transcription jobs whose callback is overdue: a finished job is announced exactly as
its callback would have been (a `transcript.ready` pointing at the job)."""

from __future__ import annotations

import asyncpg
import httpx
from pydantic import SecretStr

from notetaker.common.events import TranscriptReady
from notetaker.common.kafka import EventPublisher
from notetaker.common.logs import get_logger

log = get_logger(__name__)


async def poll_overdue_jobs(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    publisher: EventPublisher,
    *,
    api_url: str,
    api_key: SecretStr,
    overdue_seconds: float,
    every_seconds: float,
) -> int:
    """Ask Gladia about overdue jobs; returns how many finished jobs were announced."""
    jobs = await pool.fetch(
        "SELECT bot_id, job_id FROM transcription_jobs"
        " WHERE completed_at IS NULL AND provider = 'gladia'"
        " AND requested_at < now() - make_interval(secs => $1)"
        " AND (polled_at IS NULL OR polled_at < now() - make_interval(secs => $2))"
        " ORDER BY requested_at LIMIT 100",
        overdue_seconds,
        every_seconds,
    )
    announced = 0
    for job in jobs:
        response = await http.get(
            f"{api_url}/v2/pre-recorded/{job['job_id']}",
            headers={"x-gladia-key": api_key.get_secret_value()},
        )
        status = response.json().get("status") if response.status_code == 200 else None
        await pool.execute(
            "UPDATE transcription_jobs SET polled_at = now(), poll_count = poll_count + 1,"
            " status = coalesce($2, status) WHERE bot_id = $1",
            job["bot_id"],
            status,
        )
        if status == "done":
            await publisher.publish(
                TranscriptReady(bot_id=job["bot_id"], provider="gladia", job_id=job["job_id"])
            )
            announced += 1
            log.info("transcription.polled_done", bot_id=job["bot_id"], job_id=job["job_id"])
        elif status == "error":
            await pool.execute(
                "UPDATE transcription_jobs SET completed_at = now() WHERE bot_id = $1",
                job["bot_id"],
            )
            log.error(
                "transcription.failed",
                bot_id=job["bot_id"],
                job_id=job["job_id"],
                provider="gladia",
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
