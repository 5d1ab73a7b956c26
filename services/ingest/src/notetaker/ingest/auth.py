"""Who may deliver a webhook: Svix signatures, per-bot callback secrets, the v1 API key, and our
Gladia callback tokens.

Every check is constant-time, and each accepts several secrets or keys at once so they can be
rotated. A failure says why in the log (the caller gets only 401, whatever the reason).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notetaker.common import callback_tokens


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    method: str
    reason: str = ""


def _svix_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # Svix is the Standard Webhooks scheme under its original header names.
    return {
        "webhook-id": headers.get("svix-id", ""),
        "webhook-timestamp": headers.get("svix-timestamp", ""),
        "webhook-signature": headers.get("svix-signature", ""),
    }


def verify_svix(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[SecretStr]
) -> AuthResult:
    if not secrets:
        return AuthResult(False, "svix", "no Svix signing secret configured")
    reason = ""
    for secret in secrets:
        try:
            # json_parse=False: a signed but malformed body is a 400 later, not an auth failure.
            Webhook(secret.get_secret_value()).verify(
                body, _svix_headers(headers), json_parse=False
            )
            return AuthResult(True, "svix")
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: garbled header
            reason = f"{type(exc).__name__}: {exc}"
    return AuthResult(False, "svix", reason or "signature mismatch")


def verify_shared_secret(presented: str, secrets: Sequence[SecretStr], method: str) -> AuthResult:
    matched = False
    for secret in secrets:  # no early exit: the time taken does not depend on which matched
        matched |= hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())
    return AuthResult(matched, method, "" if matched else "secret does not match")


_BOT_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")  # the payload models' bot ids

# The meeting a bot was deployed for (`recordings.meeting_id`), None for an unknown bot or one
# without a meeting.
MeetingOf = Callable[[str], Awaitable[str | None]]


def callback_bot_id(body: bytes) -> str | None:
    """The bot a per-bot callback names (`data.bot_id`), read before anything trusts the body;
    None for a body that is not JSON or names no plausible bot."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, bad UTF-8, huge integers, deep nesting
        return None
    data = document.get("data") if isinstance(document, dict) else None
    bot_id = data.get("bot_id") if isinstance(data, dict) else None
    if isinstance(bot_id, str) and _BOT_ID.fullmatch(bot_id):
        return bot_id
    return None


async def verify_bot_callback(
    body: bytes, presented: str, keys: Sequence[SecretStr], meeting_of: MeetingOf
) -> AuthResult:
    """`x-mb-secret` must be the secret derived, under one of `keys`, for the meeting of the bot
    the body names: a secret registered for one bot's meeting opens no other bot's callbacks."""
    if not keys:
        return AuthResult(False, "x-mb-secret", "no callback key configured")
    bot_id = callback_bot_id(body)
    if bot_id is None:
        return AuthResult(False, "x-mb-secret", "the body names no bot")
    meeting_id = await meeting_of(bot_id)
    if meeting_id is None:
        return AuthResult(False, "x-mb-secret", "unknown bot, or a bot without a meeting")
    subject = callback_tokens.meetingbaas_callback_subject(meeting_id)
    ok = callback_tokens.is_valid((k.get_secret_value() for k in keys), subject, presented)
    return AuthResult(ok, "x-mb-secret", "" if ok else "secret does not match the bot's meeting")


async def authenticate_meetingbaas(
    body: bytes,
    headers: Mapping[str, str],
    *,
    webhook_secrets: Sequence[SecretStr],
    callback_keys: Sequence[SecretStr],
    api_keys: Sequence[SecretStr],
    meeting_of: MeetingOf,
) -> AuthResult:
    if "svix-signature" in headers or "svix-id" in headers:
        return verify_svix(body, headers, webhook_secrets)
    if "x-mb-secret" in headers:
        return await verify_bot_callback(body, headers["x-mb-secret"], callback_keys, meeting_of)
    if "x-meeting-baas-api-key" in headers:
        return verify_shared_secret(headers["x-meeting-baas-api-key"], api_keys, "api-key")
    return AuthResult(False, "none", "no authentication header")


def authenticate_gladia(
    request_id: str, expires: int, token: str, keys: Sequence[SecretStr], now: float
) -> AuthResult:
    """A Gladia callback's token: minted by transcript-sync for this request id and expiry under
    one of `keys`, and not expired (`now` and `expires` in Unix seconds). Whether the request id
    is a job we asked for is the caller's lookup, after this."""
    if not keys:
        return AuthResult(False, "token", "no callback key configured")
    if now >= expires:  # the expiry is no secret: it is in the URL
        return AuthResult(False, "token", "token expired")
    subject = callback_tokens.gladia_job_subject(request_id, expires)
    ok = callback_tokens.is_valid((k.get_secret_value() for k in keys), subject, token)
    return AuthResult(ok, "token", "" if ok else "token does not match")
