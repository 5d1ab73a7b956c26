"""Deploying meeting bots: find meetings about to start without one, ask MeetingBaaS for one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import httpx
from pydantic import SecretStr

from notetaker.common import callback_tokens
from notetaker.common.logs import get_logger

log = get_logger(__name__)


class BotDeployError(Exception):
    """MeetingBaaS did not accept the bot."""


@dataclass(frozen=True)
class DueMeeting:
    id: uuid.UUID
    org_id: uuid.UUID
    owner_user_id: uuid.UUID
    meeting_url: str
    start_time: datetime


async def due_meetings(pool: asyncpg.Pool, lead_seconds: int, limit: int = 50) -> list[DueMeeting]:
    rows = await pool.fetch(
        "SELECT id, org_id, owner_user_id, meeting_url, start_time FROM meetings"
        " WHERE source = 'notetaker' AND bot_id IS NULL AND meeting_url IS NOT NULL"
        " AND start_time <= now() + make_interval(secs => $1)"
        " AND start_time > now() - interval '1 hour'"
        " ORDER BY start_time LIMIT $2",
        lead_seconds,
        limit,
    )
    return [DueMeeting(**dict(r)) for r in rows]


async def create_bot(
    http: httpx.AsyncClient,
    *,
    api_url: str,
    api_key: SecretStr,
    meeting: DueMeeting,
    bot_name: str,
    transcription: bool,
    callback_url: str | None = None,
    callback_key: SecretStr | None = None,
) -> str:
    """Ask MeetingBaaS for a bot; with `callback_url` and `callback_key`, the bot also calls
    `callback_url` itself when it completes or fails, with the secret derived for this meeting in
    `x-mb-secret` (the bot id is not known yet: ingest finds the meeting from the bot later)."""
    request: dict[str, object] = {
        "meeting_url": meeting.meeting_url,
        "bot_name": bot_name,
        "recording_mode": "speaker_view",
        "transcription_enabled": transcription,
        # Lets an operator match a bot to its meeting from the provider's side.
        "extra": {"meeting_id": str(meeting.id), "org_id": str(meeting.org_id)},
    }
    if callback_url is not None and callback_key is not None:
        subject = callback_tokens.meetingbaas_callback_subject(str(meeting.id))
        request["callback_config"] = {
            "url": callback_url,
            "method": "POST",
            "secret": callback_tokens.mint(callback_key.get_secret_value(), subject),
        }
    response = await http.post(
        f"{api_url}/v2/bots",
        headers={"x-meeting-baas-api-key": api_key.get_secret_value()},
        json=request,
    )
    if response.status_code not in (200, 201):
        raise BotDeployError(
            f"MeetingBaaS refused a bot for meeting {meeting.id}:"
            f" HTTP {response.status_code} {response.text[:200]}"
        )
    bot_id: str = response.json()["data"]["bot_id"]
    return bot_id


async def link_bot(pool: asyncpg.Pool, meeting: DueMeeting, bot_id: str) -> bool:
    """Attach the bot to its meeting and create its recording; False if another won the race."""
    async with pool.acquire() as conn, conn.transaction():
        linked = await conn.fetchval(
            "UPDATE meetings SET bot_id = $2, updated_at = now()"
            " WHERE id = $1 AND bot_id IS NULL RETURNING true",
            meeting.id,
            bot_id,
        )
        if not linked:
            return False
        await conn.execute(
            "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (bot_id) DO NOTHING",
            meeting.org_id,
            meeting.owner_user_id,
            meeting.id,
            bot_id,
        )
    return True
