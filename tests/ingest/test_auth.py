"""Webhook authentication: Svix signatures with rotation and replay window, per-bot callback
secrets bound to the bot's meeting, the v1 API key, Gladia tokens bound to our request."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.ingest.auth import authenticate_gladia, authenticate_meetingbaas

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
BODY = b'{"event":"bot.completed","data":{"bot_id":"b"}}'
MEETINGS = {"b": "meeting-of-b", "c": "meeting-of-c"}


def signed(secret: str, when: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, BODY.decode()),
    }


async def meeting_of(bot_id: str) -> str | None:
    return MEETINGS.get(bot_id)


def check(headers: dict[str, str], secrets: list[str], body: bytes = BODY) -> bool:
    return asyncio.run(
        authenticate_meetingbaas(
            body,
            headers,
            webhook_secrets=[SecretStr(s) for s in secrets],
            callback_keys=[SecretStr("cb-key")],
            api_keys=[SecretStr("api-key")],
            meeting_of=meeting_of,
        )
    ).ok


def bot_secret(meeting_id: str) -> str:
    subject = callback_tokens.meetingbaas_callback_subject(meeting_id)
    return callback_tokens.mint("cb-key", subject)


def test_svix_signature_by_either_rotated_secret_is_accepted_and_a_retired_one_is_not() -> None:
    assert check(signed(NEW), [OLD, NEW])
    assert check(signed(OLD), [OLD, NEW])
    assert not check(signed(OLD), [NEW])


def test_svix_rejects_tampered_body_and_stale_timestamp() -> None:
    assert not check(signed(NEW), [NEW], body=BODY.replace(b'"b"', b'"c"'))
    stale = datetime.now(UTC) - timedelta(minutes=10)
    assert not check(signed(NEW, when=stale), [NEW])


def test_callback_secret_is_the_bots_own_and_v1_api_key_must_match() -> None:
    assert check({"x-mb-secret": bot_secret("meeting-of-b")}, [NEW])
    assert not check({"x-mb-secret": bot_secret("meeting-of-c")}, [NEW])  # bot c's secret
    assert not check({"x-mb-secret": "cb-key"}, [NEW])
    unknown = json.dumps({"event": "bot.completed", "data": {"bot_id": "z"}}).encode()
    assert not check({"x-mb-secret": bot_secret("meeting-of-b")}, [NEW], body=unknown)
    assert check({"x-meeting-baas-api-key": "api-key"}, [NEW])
    assert not check({"x-meeting-baas-api-key": "api-keY"}, [NEW])
    assert not check({}, [NEW])


def test_gladia_token_by_any_key_is_bound_to_its_request_and_expires() -> None:
    keys = [SecretStr("k1"), SecretStr("k2")]
    now, expires = 1_800_000_000, 1_800_000_060
    token = callback_tokens.mint("k2", callback_tokens.gladia_job_subject("req-1", expires))
    assert authenticate_gladia("req-1", expires, token, keys, now).ok
    assert not authenticate_gladia("req-2", expires, token, keys, now).ok
    assert not authenticate_gladia("req-1", expires, token, keys, expires).ok
    assert not authenticate_gladia("req-1", expires, "", keys, now).ok
