"""Webhook authentication: Svix signatures with rotation and replay window, shared secrets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.ingest.auth import authenticate_gladia, authenticate_meetingbaas

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
BODY = b'{"event":"bot.completed","data":{"bot_id":"b"}}'


def signed(secret: str, when: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, BODY.decode()),
    }


def check(headers: dict[str, str], secrets: list[str], body: bytes = BODY) -> bool:
    return authenticate_meetingbaas(
        body,
        headers,
        webhook_secrets=[SecretStr(s) for s in secrets],
        callback_secrets=[SecretStr("cb-secret")],
        api_keys=[SecretStr("api-key")],
    ).ok


def test_svix_signature_by_either_rotated_secret_is_accepted_and_a_retired_one_is_not() -> None:
    assert check(signed(NEW), [OLD, NEW])
    assert check(signed(OLD), [OLD, NEW])
    assert not check(signed(OLD), [NEW])


def test_svix_rejects_tampered_body_and_stale_timestamp() -> None:
    assert not check(signed(NEW), [NEW], body=BODY.replace(b'"b"', b'"c"'))
    stale = datetime.now(UTC) - timedelta(minutes=10)
    assert not check(signed(NEW, when=stale), [NEW])


def test_callback_secret_and_v1_api_key_must_match_and_no_auth_is_refused() -> None:
    assert check({"x-mb-secret": "cb-secret"}, [NEW])
    assert not check({"x-mb-secret": "cb-secreT"}, [NEW])
    assert check({"x-meeting-baas-api-key": "api-key"}, [NEW])
    assert not check({"x-meeting-baas-api-key": "api-keY"}, [NEW])
    assert not check({}, [NEW])


def test_gladia_token_by_any_key_is_bound_to_its_bot() -> None:
    keys = [SecretStr("k1"), SecretStr("k2")]
    token = callback_tokens.mint("k2", "bot-1")
    assert authenticate_gladia("bot-1", token, keys).ok
    assert not authenticate_gladia("bot-2", token, keys).ok
    assert not authenticate_gladia("bot-1", "", keys).ok


def test_malformed_tokens_and_bot_ids_are_refused_without_error() -> None:
    keys = [SecretStr("k1")]
    for token in ("ü", "\ud885", "x" * 500, ""):
        assert not authenticate_gladia("bot-1", token, keys).ok
    assert not authenticate_gladia("bøt-\ud885", callback_tokens.mint("k1", "bot-1"), keys).ok
