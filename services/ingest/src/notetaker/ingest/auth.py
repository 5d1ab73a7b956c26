"""Who may deliver a webhook: Svix signatures, shared secrets, and our Gladia callback tokens.

Every check is constant-time, and each accepts several secrets at once so they can be rotated.
A failure says why in the log (the caller gets only 401).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
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


def authenticate_meetingbaas(
    body: bytes,
    headers: Mapping[str, str],
    *,
    webhook_secrets: Sequence[SecretStr],
    callback_secrets: Sequence[SecretStr],
    api_keys: Sequence[SecretStr],
) -> AuthResult:
    if "svix-signature" in headers or "svix-id" in headers:
        return verify_svix(body, headers, webhook_secrets)
    if "x-mb-secret" in headers:
        return verify_shared_secret(headers["x-mb-secret"], callback_secrets, "x-mb-secret")
    if "x-meeting-baas-api-key" in headers:
        return verify_shared_secret(headers["x-meeting-baas-api-key"], api_keys, "api-key")
    return AuthResult(False, "none", "no authentication header")


def authenticate_gladia(bot_id: str, token: str, keys: Sequence[SecretStr]) -> AuthResult:
    if not bot_id or not token:
        return AuthResult(False, "token", "callback without bot_id or token")
    ok = callback_tokens.is_valid((k.get_secret_value() for k in keys), bot_id, token)
    return AuthResult(ok, "token", "" if ok else "token does not match")
