"""The webhook endpoints: authenticate, parse, map to catalog events, publish once, answer."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from notetaker.common.events import Event
from notetaker.common.logs import get_logger
from notetaker.ingest import auth, providers
from notetaker.ingest.deliveries import publish_once
from notetaker.ingest.problems import Problem
from notetaker.ingest.settings import IngestSettings

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)
router = APIRouter()

ACCEPTED = Counter(
    "notetaker_ingest_webhooks_accepted_total",
    "Webhook deliveries accepted, by provider and outcome (published, duplicate, ignored).",
    ["provider", "outcome"],
)


class Accepted(BaseModel):
    status: str
    events: list[str]


async def _read_json(request: Request, provider: str, limit: int) -> tuple[bytes, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "Body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body_too_large", "Body too large", f"limit is {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "body_too_large", "Body too large", f"limit is {limit} bytes")
    try:
        return body, json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, "malformed_json", "Body is not valid JSON", str(exc)) from exc


def _validated(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(
            422,
            "invalid_payload",
            "Payload does not match the provider's format",
            exc.errors(include_url=False, include_input=False).__repr__(),
        ) from exc


async def _publish(
    request: Request,
    *,
    provider: str,
    delivery_ids: list[str],
    event_type: str,
    bot_id: str | None,
    events: list[Event],
) -> Accepted:
    state = request.app.state
    new = await publish_once(
        state.pool,
        state.publisher,
        provider=provider,
        delivery_ids=delivery_ids,
        event_type=event_type,
        bot_id=bot_id,
        events=events,
    )
    outcome = "duplicate" if not new else ("published" if events else "ignored")
    ACCEPTED.labels(provider, outcome).inc()
    log.info(
        "webhook.accepted",
        provider=provider,
        delivery_id=delivery_ids[0],
        provider_event=event_type,
        bot_id=bot_id,
        outcome=outcome,
        events=[e.type for e in events] if new else [],
    )
    return Accepted(status=outcome, events=[e.type for e in events] if new else [])


@router.post("/webhooks/meetingbaas", response_model=Accepted)
async def meetingbaas_webhook(request: Request) -> Accepted:
    settings: IngestSettings = request.app.state.settings
    body, data = await _read_json(request, "meetingbaas", settings.max_body_bytes)
    verdict = auth.authenticate_meetingbaas(
        body,
        request.headers,
        webhook_secrets=settings.meetingbaas_webhook_secrets,
        callback_secrets=settings.meetingbaas_callback_secrets,
        api_keys=settings.meetingbaas_api_keys,
    )
    if not verdict.ok:
        log.warning(
            "webhook.unauthenticated",
            provider="meetingbaas",
            method=verdict.method,
            reason=verdict.reason,
        )
        raise Problem(401, "unauthenticated", "Webhook authentication failed")
    delivery = _validated(providers.MeetingBaasDelivery, data)
    try:
        events = providers.meetingbaas_events(delivery, datetime.now(UTC))
    except ValidationError as exc:
        raise Problem(
            422,
            "invalid_payload",
            "Payload does not match the provider's format",
            str(exc.errors(include_url=False, include_input=False)),
        ) from exc
    bot_id = delivery.data.get("bot_id") if isinstance(delivery.data.get("bot_id"), str) else None
    delivery_ids = [request.headers.get("svix-id") or hashlib.sha256(body).hexdigest()]
    if delivery.event in providers.MEETINGBAAS_TERMINAL and bot_id:
        delivery_ids.append(f"fact:{delivery.event}:{bot_id}")
    return await _publish(
        request,
        provider="meetingbaas",
        delivery_ids=delivery_ids,
        event_type=delivery.event,
        bot_id=bot_id,
        events=events,
    )


@router.post("/webhooks/gladia", response_model=Accepted)
async def gladia_callback(
    request: Request,
    bot_id: str = Query("", max_length=200, description="Bot whose audio the job transcribes."),
    token: str = Query("", max_length=200, description="Token minted for this job."),
) -> Accepted:
    settings: IngestSettings = request.app.state.settings
    _, data = await _read_json(request, "gladia", settings.max_body_bytes)
    verdict = auth.authenticate_gladia(bot_id, token, settings.gladia_callback_keys)
    if not verdict.ok:
        log.warning("webhook.unauthenticated", provider="gladia", reason=verdict.reason)
        raise Problem(401, "unauthenticated", "Callback authentication failed")
    callback = _validated(providers.GladiaCallback, data)
    try:
        events = providers.gladia_events(callback, bot_id)
    except ValidationError as exc:
        raise Problem(
            422,
            "invalid_payload",
            "Payload does not match Gladia's format",
            str(exc.errors(include_url=False, include_input=False)),
        ) from exc
    job_id = callback.id or str((callback.payload or {}).get("id", ""))
    return await _publish(
        request,
        provider="gladia",
        delivery_ids=[f"{job_id}:{callback.event}"],
        event_type=callback.event,
        bot_id=bot_id,
        events=events,
    )
