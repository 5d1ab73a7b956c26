"""Deploying meeting bots: find meetings about to start without one, ask MeetingBaaS for one.

One bot per meeting, whatever fails: a meeting is reserved (its `bot_deploys` row, committed)
before MeetingBaaS is asked for its bot, every create request carries the meeting id in `extra`,
and a meeting that was asked for before (a crash, a timeout, a lost connection, a failed link)
is first looked up at MeetingBaaS by that id, so the bot it may already have is linked instead of
deploying another. While a request may still be in flight, the reservation keeps every round
(this replica's or another's) away from the meeting. A meeting whose deploy fails is recorded on
its own row (attempts, last error, next try after a backoff) and the round goes on with the others.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client import Counter
from pydantic import SecretStr

from notetaker.common import callback_tokens
from notetaker.common.logs import get_logger

log = get_logger(__name__)

BOTS_DEPLOYED = Counter("notetaker_scheduler_bots_deployed_total", "Bots deployed.")
DEPLOY_FAILURES = Counter(
    "notetaker_scheduler_bot_deploy_failures_total", "Failed tries to deploy a meeting's bot."
)
BOTS_RECONCILED = Counter(
    "notetaker_scheduler_bots_reconciled_total",
    "Bots found at MeetingBaaS by their meeting id and linked instead of deploying another.",
)


class BotDeployError(Exception):
    """MeetingBaaS did not give the meeting its bot (refused, failed, unreachable, too slow)."""


@dataclass(frozen=True)
class DueMeeting:
    id: uuid.UUID
    org_id: uuid.UUID
    owner_user_id: uuid.UUID
    meeting_url: str
    start_time: datetime


@dataclass(frozen=True)
class MeetingBaaS:
    """How to reach MeetingBaaS, and what to ask it for."""

    http: httpx.AsyncClient
    api_url: str
    api_key: SecretStr
    timeout_seconds: float
    bot_name: str = "60 Notetaker"
    transcription: bool = True
    callback_url: str | None = None
    callback_key: SecretStr | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"x-meeting-baas-api-key": self.api_key.get_secret_value()}

    @property
    def hold_seconds(self) -> float:
        """How long a reserved meeting is left alone: by then a create request sent for it has
        surely ended (it is bounded by the timeout), so a lookup tells whether it made a bot."""
        return 2 * self.timeout_seconds


@dataclass
class DeployRound:
    deployed: int = 0  # bots created or found, and linked
    failed: int = 0  # meetings whose try failed (each backs off on its own)


async def due_meetings(
    db: asyncpg.Pool | asyncpg.Connection, lead_seconds: int, limit: int = 50
) -> list[DueMeeting]:
    """Meetings that need a bot now: starting within the lead (not over an hour ago), no bot yet,
    and not waiting out a failure's backoff or a reservation."""
    rows = await db.fetch(
        "SELECT m.id, m.org_id, m.owner_user_id, m.meeting_url, m.start_time FROM meetings m"
        " LEFT JOIN bot_deploys d ON d.meeting_id = m.id"
        " WHERE m.source = 'notetaker' AND m.bot_id IS NULL AND m.meeting_url IS NOT NULL"
        " AND m.start_time <= now() + make_interval(secs => $1)"
        " AND m.start_time > now() - interval '1 hour'"
        " AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())"
        " ORDER BY m.start_time LIMIT $2",
        lead_seconds,
        limit,
    )
    return [DueMeeting(**dict(r)) for r in rows]


async def deploy_due_bots(
    conn: asyncpg.Connection,
    provider: MeetingBaaS,
    *,
    lead_seconds: int,
    retry_delays_seconds: Sequence[float],
) -> DeployRound:
    """Give every due meeting its bot. A meeting whose try fails is recorded and the round goes
    on; a database error (the round's connection gone) ends the round."""
    outcome = DeployRound()
    for meeting in await due_meetings(conn, lead_seconds):
        try:
            linked = await deploy(conn, provider, meeting)
        except BotDeployError as exc:
            await record_failure(conn, meeting, str(exc), retry_delays_seconds)
            outcome.failed += 1
            continue
        if linked:
            outcome.deployed += 1
    return outcome


async def deploy(conn: asyncpg.Connection, provider: MeetingBaaS, meeting: DueMeeting) -> bool:
    """Reserve the meeting, find or create its bot, link it; False if another round has it."""
    asked_before = await reserve(conn, meeting.id, provider.hold_seconds)
    if asked_before is None:
        return False  # another round reserved it in the meantime
    bot_id = None
    if asked_before:
        bot_id = await find_bot(provider, meeting.id)
        if bot_id is not None:
            BOTS_RECONCILED.inc()
            log.info("bot.found", bot_id=bot_id, meeting_id=str(meeting.id))
    if bot_id is None:
        await conn.execute(
            "UPDATE bot_deploys SET create_calls = create_calls + 1, updated_at = now()"
            " WHERE meeting_id = $1",
            meeting.id,
        )
        bot_id = await create_bot(provider, meeting)
    if not await link_bot(conn, meeting, bot_id):
        # Not ours to link: the meeting has another bot (the product set one?). Say so loudly:
        # this bot records a meeting nobody will read.
        log.error(
            "bot.not_linked",
            bot_id=bot_id,
            meeting_id=str(meeting.id),
            hint="the meeting already has another bot; remove this one at MeetingBaaS",
        )
        return False
    BOTS_DEPLOYED.inc()
    log.info(
        "bot.deployed",
        bot_id=bot_id,
        meeting_id=str(meeting.id),
        org_id=str(meeting.org_id),
        start_time=meeting.start_time.isoformat(),
    )
    return True


async def reserve(
    conn: asyncpg.Connection, meeting_id: uuid.UUID, hold_seconds: float
) -> int | None:
    """Reserve the meeting for this try (committed before any request), keeping every other round
    away for `hold_seconds`; how many create requests were sent for it before (0: none), or None
    when it is not due (reserved or backing off)."""
    asked: int | None = await conn.fetchval(
        "INSERT INTO bot_deploys AS d (meeting_id, reserved_at, next_attempt_at)"
        " VALUES ($1, now(), now() + make_interval(secs => $2))"
        " ON CONFLICT (meeting_id) DO UPDATE SET reserved_at = now(),"
        " next_attempt_at = now() + make_interval(secs => $2), updated_at = now()"
        " WHERE d.bot_id IS NULL AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())"
        " RETURNING create_calls",
        meeting_id,
        hold_seconds,
    )
    return asked


async def record_failure(
    conn: asyncpg.Connection, meeting: DueMeeting, error: str, delays_seconds: Sequence[float]
) -> None:
    """One more failed try: its error, and the next try after the next delay (the last repeats),
    or once the reservation's hold is over if that is later (a request that timed out may still
    be making a bot: the next try looks it up then)."""
    row = await conn.fetchrow(
        "UPDATE bot_deploys SET attempts = attempts + 1, last_error = $2, last_attempt_at = now(),"
        " next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs =>"
        " ($3::float8[])[least(attempts + 1, cardinality($3::float8[]))])),"
        " updated_at = now() WHERE meeting_id = $1 RETURNING attempts, next_attempt_at",
        meeting.id,
        error[:2000],
        list(delays_seconds),
    )
    DEPLOY_FAILURES.inc()
    log.warning(
        "bot.deploy_failed",
        meeting_id=str(meeting.id),
        org_id=str(meeting.org_id),
        error=error[:500],
        attempts=row["attempts"] if row else None,
        next_attempt_at=row["next_attempt_at"].isoformat() if row else None,
    )


def create_request(provider: MeetingBaaS, meeting: DueMeeting) -> dict[str, object]:
    """The `POST /v2/bots` body; with a callback URL and key, the bot also calls the URL itself
    when it completes or fails, with the secret derived for this meeting in `x-mb-secret` (the
    bot id is not known yet: ingest finds the meeting from the bot later)."""
    request: dict[str, object] = {
        "meeting_url": meeting.meeting_url,
        "bot_name": provider.bot_name,
        "recording_mode": "speaker_view",
        "transcription_enabled": provider.transcription,
        # The meeting's bot is found by this after a crash (find_bot), and an operator can match
        # a bot to its meeting from the provider's side.
        "extra": {"meeting_id": str(meeting.id), "org_id": str(meeting.org_id)},
    }
    if provider.callback_url is not None and provider.callback_key is not None:
        subject = callback_tokens.meetingbaas_callback_subject(str(meeting.id))
        request["callback_config"] = {
            "url": provider.callback_url,
            "method": "POST",
            "secret": callback_tokens.mint(provider.callback_key.get_secret_value(), subject),
        }
    return request


async def create_bot(provider: MeetingBaaS, meeting: DueMeeting) -> str:
    """Ask MeetingBaaS for a bot for the meeting; its id."""
    response = await _call(
        provider,
        f"ask for a bot for meeting {meeting.id}",
        "POST",
        f"{provider.api_url}/v2/bots",
        json=create_request(provider, meeting),
    )
    if response.status_code not in (200, 201):
        raise BotDeployError(
            f"MeetingBaaS refused a bot for meeting {meeting.id}:"
            f" HTTP {response.status_code} {response.text[:200]}"
        )
    try:
        bot_id = response.json()["data"]["bot_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BotDeployError(
            f"MeetingBaaS answered a bot for meeting {meeting.id} without its id: {exc!r}"
        ) from exc
    return str(bot_id)


async def find_bot(provider: MeetingBaaS, meeting_id: uuid.UUID) -> str | None:
    """The bot MeetingBaaS holds for the meeting (`GET /v2/bots?extra=meeting_id:<id>`), the
    first one created if there are several; None if it has none."""
    response = await _call(
        provider,
        f"look up the bot of meeting {meeting_id}",
        "GET",
        f"{provider.api_url}/v2/bots",
        params={"extra": f"meeting_id:{meeting_id}", "limit": 250},
    )
    if response.status_code != 200:
        raise BotDeployError(
            f"MeetingBaaS did not list the bots of meeting {meeting_id}:"
            f" HTTP {response.status_code} {response.text[:200]}"
        )
    try:
        listed: list[dict[str, Any]] = list(response.json()["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BotDeployError(f"MeetingBaaS listed bots in an unknown shape: {exc!r}") from exc
    # The filter is the provider's; the meeting id is checked here too.
    bots = sorted(
        (b for b in listed if (b.get("extra") or {}).get("meeting_id") == str(meeting_id)),
        key=lambda b: (str(b.get("created_at") or ""), str(b["bot_id"])),
    )
    if len(bots) > 1:
        log.error(
            "bot.duplicates_at_provider",
            meeting_id=str(meeting_id),
            bot_ids=[str(b["bot_id"]) for b in bots],
            hint="keeping the first; remove the others at MeetingBaaS",
        )
    return str(bots[0]["bot_id"]) if bots else None


async def _call(
    provider: MeetingBaaS, what: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One MeetingBaaS request, bounded by the timeout in all; failures become BotDeployError."""
    try:
        async with asyncio.timeout(provider.timeout_seconds):
            return await provider.http.request(method, url, headers=provider.headers, **kwargs)
    except TimeoutError:
        raise BotDeployError(
            f"could not {what}: MeetingBaaS did not answer within {provider.timeout_seconds:g}s"
        ) from None
    except httpx.HTTPError as exc:
        raise BotDeployError(f"could not {what}: {type(exc).__name__}: {exc}") from exc


async def link_bot(conn: asyncpg.Connection, meeting: DueMeeting, bot_id: str) -> bool:
    """Attach the bot to its meeting and create its recording, in one transaction; True also
    when this bot was linked before, False if the meeting has another bot."""
    async with conn.transaction():
        linked = await conn.fetchval(
            "UPDATE meetings SET bot_id = $2, updated_at = now()"
            " WHERE id = $1 AND bot_id IS NULL RETURNING true",
            meeting.id,
            bot_id,
        )
        if not linked:
            current = await conn.fetchval("SELECT bot_id FROM meetings WHERE id = $1", meeting.id)
            if current != bot_id:
                return False
        await conn.execute(
            "INSERT INTO recordings (org_id, user_id, meeting_id, bot_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (bot_id) DO NOTHING",
            meeting.org_id,
            meeting.owner_user_id,
            meeting.id,
            bot_id,
        )
        await conn.execute(
            "INSERT INTO bot_deploys AS d (meeting_id, bot_id, linked_at) VALUES ($1, $2, now())"
            " ON CONFLICT (meeting_id) DO UPDATE SET bot_id = $2, linked_at = now(),"
            " next_attempt_at = NULL, updated_at = now()",
            meeting.id,
            bot_id,
        )
    return True
