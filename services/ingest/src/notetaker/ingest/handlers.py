"""The webhook endpoints: check, authenticate, parse, map to catalog events, publish once."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from notetaker.common.events import Event
from notetaker.common.logs import get_logger
from notetaker.common.sealing import SourceUrlCipher
from notetaker.ingest import auth, providers, receipts
from notetaker.ingest.deliveries import KeptBody, media_deleted_of, pointed, publish_once
from notetaker.ingest.problems import Problem, documented
from notetaker.ingest.settings import IngestSettings

log = get_logger(__name__)
router = APIRouter(tags=["webhooks"])
M = TypeVar("M", bound=BaseModel)

ACCEPTED = Counter(
    "notetaker_ingest_webhooks_accepted_total",
    "Webhook deliveries accepted, by provider and outcome (published, duplicate, ignored).",
    ["provider", "outcome"],
)


class Accepted(BaseModel):
    """The delivery is durable: `published` (events on Kafka), `duplicate`, `ignored`, or
    `deleted` (the bot's media was deleted: acknowledged, nothing published)."""

    status: str
    events: list[str]


MAX_JSON_DEPTH = 64  # the providers' payloads nest a handful of levels
MAX_JSON_INTEGER = 2**63  # anything larger is no count, offset or time a provider sends

# What any body may hold, wherever in it (JSON Schema cannot say all of it): stated in the
# OpenAPI document as `x-accepted-ranges` and enforced by `_check_json` (422 beyond them).
ACCEPTED_RANGES: dict[str, Any] = {
    "maxNestingDepth": MAX_JSON_DEPTH,
    "integerMinimum": -MAX_JSON_INTEGER,
    "integerMaximum": MAX_JSON_INTEGER - 1,
    "strings": "no NUL character (U+0000) and no unpaired surrogate",
    "timestamps": f"years {providers.EARLIEST_YEAR} to {providers.LATEST_YEAR}",
}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["x-accepted-ranges"] = ACCEPTED_RANGES
    limits = (
        f"Anywhere in the body: nesting at most {MAX_JSON_DEPTH} levels, integers from "
        f"-2^63 to 2^63-1, no NUL character or unpaired surrogate in any string, timestamps in "
        f"the years {providers.EARLIEST_YEAR} to {providers.LATEST_YEAR}; beyond these, 422."
    )
    return {
        "requestBody": {
            "required": True,
            "description": limits,
            "content": {"application/json": {"schema": schema}},
        }
    }


async def _read_body(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "Body must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body_too_large", "Body too large", f"the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "body_too_large", "Body too large", f"the limit is {limit} bytes")
    return bytes(body)


def _parse(body: bytes, model: type[M]) -> M:
    try:
        data = json.loads(body)
    except RecursionError as exc:  # a body nested deeper than the parser's stack
        raise Problem(400, "malformed_json", "Body is not valid JSON", "nested too deep") from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of over 4300 digits
        raise Problem(400, "malformed_json", "Body is not valid JSON", str(exc)[:200]) from exc
    _check_json(data)
    return _validated(model, data)


def _check_json(data: Any) -> None:
    """What JSON allows but nothing downstream can hold: deep nesting, NUL characters and lone
    surrogates (PostgreSQL text refuses both), integers beyond 64 bits. A 422, never a 5xx."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value or (not value.isascii() and _has_surrogate(value)):
                raise Problem(
                    422, "invalid_payload", "Payload has a NUL or an unpaired surrogate character"
                )
        elif isinstance(value, bool | float) or value is None:
            continue
        elif isinstance(value, int):
            if not -MAX_JSON_INTEGER <= value < MAX_JSON_INTEGER:
                raise Problem(422, "invalid_payload", "Payload has a number out of range")
        else:
            if depth > MAX_JSON_DEPTH:
                raise Problem(
                    422, "invalid_payload", "Payload nested too deep", f"at most {MAX_JSON_DEPTH}"
                )
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for key, item in items:
                if key is not None:
                    stack.append((key, depth))
                stack.append((item, depth + 1))


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _validated(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: ValidationError) -> Problem:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:10])
    return Problem(422, "invalid_payload", "Payload does not match the provider's format", detail)


def parse_meetingbaas(
    body: bytes, received_at: datetime
) -> tuple[providers.MeetingBaasDelivery, str | None, list[Event]]:
    """A MeetingBaaS body's delivery, bot id and catalog events (a Problem when it is not one):
    what the endpoint does past authentication, and what re-applying a kept body does again."""
    delivery = _parse(body, providers.MeetingBaasDelivery)
    try:
        bot_id = providers.meetingbaas_bot_id(delivery)
        events = providers.meetingbaas_events(delivery, received_at)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    return delivery, bot_id, events


def parse_gladia(body: bytes) -> providers.GladiaCallback:
    return _parse(body, providers.GladiaCallback)


def gladia_mapped(
    callback: providers.GladiaCallback, bot_id: str
) -> tuple[list[Event], tuple[str, str] | None]:
    """A Gladia callback's catalog events and its failure (code, message), if any."""
    try:
        events = providers.gladia_events(callback, bot_id)
        failure = providers.gladia_failure(callback)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    return events, failure


def _keep(
    request: Request, body: bytes, received_at: datetime, headers: dict[str, str]
) -> KeptBody | None:
    """The body sealed to be kept with its delivery (None: no key ring, bodies are not kept)."""
    cipher: SourceUrlCipher | None = request.app.state.cipher
    if cipher is None:
        return None
    return KeptBody(cipher.seal_body(body), len(body), received_at, headers)


async def _publish(
    request: Request,
    *,
    provider: str,
    delivery_ids: list[str],
    event_type: str,
    bot_id: str | None,
    events: list[Event],
    media_deleted: bool = False,
    kept: KeptBody | None = None,
) -> Accepted:
    state = request.app.state
    if media_deleted:
        events = []  # deleted stays deleted: acknowledged, so the provider stops retrying
        kept = None  # and its body is not kept either
    if kept is not None:  # a transcript too large to travel inline is read from its body
        events = pointed(
            events, provider, delivery_ids[0], state.settings.inline_transcript_max_bytes
        )
    outcome = "deleted" if media_deleted else ("published" if events else "ignored")
    new = await publish_once(
        state.pool,
        state.publisher.current(),
        provider=provider,
        delivery_ids=delivery_ids,
        event_type=event_type,
        bot_id=bot_id,
        events=events,
        outcome=outcome,
        timeout=state.settings.publish_timeout_seconds,
        kept=kept,
    )
    if not new:
        outcome = "duplicate"
        await receipts.record(
            state.pool,
            provider=provider,
            delivery_id=delivery_ids[0],
            bot_id=bot_id,
            event_type=event_type,
            status=200,
            outcome=outcome,
        )
    ACCEPTED.labels(provider, outcome).inc()
    request.state.outcome = outcome
    return Accepted(status=outcome, events=[e.type for e in events] if new else [])


@router.post(
    "/webhooks/meetingbaas",
    summary="MeetingBaaS webhook (v2 Svix-signed, per-bot callback, or v1)",
    response_model=Accepted,
    responses=documented(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=_body_schema(providers.MeetingBaasDelivery),
)
async def meetingbaas_webhook(
    request: Request,
    svix_id: str | None = Header(None, description="Svix delivery id (v2)."),
    svix_timestamp: str | None = Header(None, description="Svix timestamp (v2)."),
    svix_signature: str | None = Header(None, description="Svix signatures (v2)."),
    x_mb_secret: str | None = Header(None, description="Per-bot callback secret."),
    x_meeting_baas_api_key: str | None = Header(None, description="API key (v1)."),
) -> Accepted:
    settings: IngestSettings = request.app.state.settings
    request.state.delivery_id = svix_id
    body = await _read_body(request, settings.max_body_bytes)
    request.state.body = body  # what a refusal's receipt reads its bot from
    pool = request.app.state.pool

    async def meeting_of(bot_id: str) -> str | None:
        return await _meeting_of_bot(pool, bot_id)

    verdict = await auth.authenticate_meetingbaas(
        body,
        request.headers,
        webhook_secrets=settings.meetingbaas_webhook_secrets,
        callback_keys=settings.meetingbaas_callback_keys,
        api_keys=settings.meetingbaas_api_keys,
        meeting_of=meeting_of,
    )
    if not verdict.ok:
        log.warning(
            "webhook.unauthenticated",
            provider="meetingbaas",
            method=verdict.method,
            reason=verdict.reason,
            delivery_id=svix_id,
        )
        raise Problem(401, "unauthenticated", "Webhook authentication failed")
    received_at = datetime.now(UTC)
    delivery, bot_id, events = parse_meetingbaas(body, received_at)
    request.state.bot_id = bot_id
    request.state.event_type = delivery.event
    deleted = await media_deleted_of(pool, bot_id) if events and bot_id else None
    if deleted is None and events and bot_id and settings.reject_unknown_bots:
        raise Problem(404, "unknown_bot", "Unknown bot", f"no recording for bot {bot_id}")
    delivery_ids = [svix_id or hashlib.sha256(body).hexdigest()]
    if svix_id is None and delivery.event in providers.MEETINGBAAS_REPEATABLE:
        delivery_ids = [f"{delivery_ids[0]}:{received_at.isoformat()}"]
    if delivery.event in providers.MEETINGBAAS_TERMINAL and bot_id:
        delivery_ids.append(f"fact:{delivery.event}:{bot_id}")
    return await _publish(
        request,
        provider="meetingbaas",
        delivery_ids=delivery_ids,
        event_type=delivery.event,
        bot_id=bot_id,
        events=events,
        media_deleted=bool(deleted),
        kept=_keep(request, body, received_at, {"svix-id": svix_id} if svix_id else {}),
    )


async def _meeting_of_bot(pool: asyncpg.Pool, bot_id: str) -> str | None:
    meeting_id = await pool.fetchval("SELECT meeting_id FROM recordings WHERE bot_id = $1", bot_id)
    return str(meeting_id) if meeting_id is not None else None


@dataclass(frozen=True)
class TranscriptionJob:
    bot_id: str
    job_id: str | None  # None until Gladia's answer to the request is stored
    media_deleted: bool  # the recording's media was deleted: its callback changes nothing


async def transcription_job(pool: asyncpg.Pool, request_id: uuid.UUID) -> TranscriptionJob | None:
    row = await pool.fetchrow(
        "SELECT j.bot_id, j.job_id, coalesce(r.media_deleted_at IS NOT NULL, false) AS deleted"
        " FROM transcription_jobs j LEFT JOIN recordings r ON r.bot_id = j.bot_id"
        " WHERE j.request_id = $1",
        request_id,
    )
    if row is None:
        return None
    return TranscriptionJob(row["bot_id"], row["job_id"], row["deleted"])


async def keep_job_failure(
    pool: asyncpg.Pool, request_id: uuid.UUID, code: str, message: str
) -> None:
    """Why Gladia failed the job, on its row (the same values again for a redelivery)."""
    await pool.execute(
        "UPDATE transcription_jobs SET error_code = $2, error_message = $3 WHERE request_id = $1",
        request_id,
        code,
        message,
    )
    log.warning("transcription.failed", provider="gladia", request_id=str(request_id), code=code)


def _refuse_gladia(reason: str, **context: object) -> Problem:
    log.warning("webhook.unauthenticated", provider="gladia", reason=reason, **context)
    return Problem(401, "unauthenticated", "Callback authentication failed")


@router.post(
    "/webhooks/gladia",
    summary="Gladia pre-recorded transcription callback",
    response_model=Accepted,
    responses=documented(400, 401, 413, 415, 422, 503),
    openapi_extra=_body_schema(providers.GladiaCallback),
)
async def gladia_callback(
    request: Request,
    request_id: uuid.UUID = Query(description="Our id of the transcription request."),
    expires: int = Query(ge=0, lt=2**63, description="When the token expires (Unix seconds)."),
    token: str = Query(
        min_length=64,
        max_length=64,
        pattern=r"^[0-9a-f]{64}$",
        description="Token transcript-sync minted for this request and expiry.",
    ),
) -> Accepted:
    settings: IngestSettings = request.app.state.settings
    body = await _read_body(request, settings.max_body_bytes)
    request.state.event_type = receipts.claimed_event(body)
    verdict = auth.authenticate_gladia(
        str(request_id), expires, token, settings.gladia_callback_keys, time.time()
    )
    if not verdict.ok:
        raise _refuse_gladia(verdict.reason, request_id=str(request_id))
    job = await transcription_job(request.app.state.pool, request_id)
    if job is None:
        raise _refuse_gladia("no transcription job has this request id", request_id=str(request_id))
    request.state.bot_id = job.bot_id
    callback = parse_gladia(body)
    if job.job_id is not None and callback.job_id != job.job_id:
        raise _refuse_gladia(
            "the job id differs from the one Gladia gave for this request",
            request_id=str(request_id),
            bot_id=job.bot_id,
        )
    events, failure = gladia_mapped(callback, job.bot_id)
    if failure is not None:
        await keep_job_failure(request.app.state.pool, request_id, *failure)
    job_id = job.job_id or callback.job_id or ""
    request.state.delivery_id = job_id
    return await _publish(
        request,
        provider="gladia",
        delivery_ids=[f"{request_id}:{job_id}:{callback.event}"],
        event_type=callback.event,
        bot_id=job.bot_id,
        events=events,
        media_deleted=job.media_deleted,
        kept=_keep(request, body, datetime.now(UTC), {"request_id": str(request_id)}),
    )
