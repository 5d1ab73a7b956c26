"""Webhook authentication, in process: who may deliver, and what the log says when they may not.

Svix signatures (rotation with two secrets, the five-minute tolerance either way, tampering,
garbled headers), the per-bot `x-mb-secret`, the v1 API key, which header decides, the
constant-time loop over shared secrets, and Gladia callback tokens.
"""

from __future__ import annotations

import base64
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.ingest.auth import (
    AuthResult,
    authenticate_gladia,
    authenticate_meetingbaas,
    verify_shared_secret,
    verify_svix,
)

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
GARBLED_SECRET = "whsec_abcde"  # not base64: the library raises ValueError building it
BODY = b'{"event":"bot.completed","data":{"bot_id":"b"}}'


def svix(
    secret: str,
    *,
    when: datetime | None = None,
    msg_id: str = "msg_1",
    body: bytes = BODY,
) -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


def secrets(*values: str) -> list[SecretStr]:
    return [SecretStr(v) for v in values]


def meetingbaas(headers: dict[str, str], body: bytes = BODY) -> AuthResult:
    return authenticate_meetingbaas(
        body,
        headers,
        webhook_secrets=secrets(OLD, NEW),
        callback_secrets=secrets("cb-old", "cb-new"),
        api_keys=secrets("key-old", "key-new"),
    )


# --- Svix (MeetingBaaS v2 webhooks) ----------------------------------------------------------


def test_a_valid_signature_passes_with_nothing_to_report() -> None:
    assert verify_svix(BODY, svix(NEW), secrets(NEW)) == AuthResult(True, "svix", "")


def test_either_secret_of_a_rotation_is_accepted() -> None:
    assert verify_svix(BODY, svix(OLD), secrets(OLD, NEW)).ok
    assert verify_svix(BODY, svix(NEW), secrets(OLD, NEW)).ok
    assert verify_svix(BODY, svix(NEW), secrets(NEW, OLD)).ok
    # the retired secret no longer signs anything we accept
    refused = verify_svix(BODY, svix(OLD), secrets(NEW))
    assert (refused.ok, refused.method) == (False, "svix")
    assert refused.reason == "WebhookVerificationError: No matching signature found"


def test_a_header_carrying_both_signatures_of_a_provider_side_rotation_passes() -> None:
    headers = svix(OLD)
    headers["svix-signature"] += " " + svix(NEW)["svix-signature"]
    assert verify_svix(BODY, headers, secrets(NEW)).ok
    assert verify_svix(BODY, headers, secrets(OLD)).ok


def test_a_garbled_secret_does_not_stop_the_other_one() -> None:
    assert verify_svix(BODY, svix(NEW), secrets(GARBLED_SECRET, NEW)).ok
    alone = verify_svix(BODY, svix(NEW), secrets(GARBLED_SECRET))
    assert not alone.ok
    assert alone.reason.startswith("Error: ")  # binascii.Error, a ValueError


def test_without_a_configured_secret_everything_is_refused() -> None:
    assert verify_svix(BODY, svix(NEW), []) == AuthResult(
        False, "svix", "no Svix signing secret configured"
    )


def test_what_is_signed_is_the_body_the_id_and_the_timestamp() -> None:
    tampered = BODY.replace(b'"b"', b'"c"')
    assert not verify_svix(tampered, svix(NEW), secrets(NEW)).ok
    other_id = svix(NEW) | {"svix-id": "msg_2"}
    assert not verify_svix(BODY, other_id, secrets(NEW)).ok
    now = datetime.now(UTC)
    moved = svix(NEW, when=now) | {"svix-timestamp": str(int(now.timestamp()) - 1)}
    assert not verify_svix(BODY, moved, secrets(NEW)).ok


@pytest.mark.parametrize(
    ("offset", "accepted", "reason"),
    [
        (timedelta(minutes=-4, seconds=-50), True, ""),
        (timedelta(minutes=4, seconds=50), True, ""),
        (timedelta(minutes=-5, seconds=-10), False, "Message timestamp too old"),
        (timedelta(minutes=5, seconds=10), False, "Message timestamp too new"),
    ],
)
def test_the_timestamp_must_be_within_five_minutes_either_way(
    offset: timedelta, accepted: bool, reason: str
) -> None:
    result = verify_svix(BODY, svix(NEW, when=datetime.now(UTC) + offset), secrets(NEW))
    assert result.ok is accepted
    assert result.reason == (f"WebhookVerificationError: {reason}" if reason else "")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"svix-id": "msg_1"}, "WebhookVerificationError: Missing required headers"),
        (
            {"svix-id": "msg_1", "svix-timestamp": "soon", "svix-signature": "v1,AAAA"},
            "WebhookVerificationError: Invalid Signature Headers",
        ),
    ],
)
def test_missing_or_unreadable_svix_headers_are_refused_with_the_reason(
    headers: dict[str, str], reason: str
) -> None:
    assert verify_svix(BODY, headers, secrets(NEW)) == AuthResult(False, "svix", reason)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_each_svix_header_is_required(missing: str) -> None:
    headers = {k: v for k, v in svix(NEW).items() if k != missing}
    assert verify_svix(BODY, headers, secrets(NEW)) == AuthResult(
        False, "svix", "WebhookVerificationError: Missing required headers"
    )


def test_a_signed_body_that_is_not_json_still_authenticates() -> None:
    # a malformed body is the parser's 400 later, not an authentication failure
    for body in (b"not json", b'{"event":', b""):
        assert verify_svix(body, svix(NEW, body=body), secrets(NEW)).ok


@pytest.mark.parametrize("signature", ["garbage", "v1,A", "v1,a,b"])
def test_a_garbled_signature_is_refused_not_raised(signature: str) -> None:
    headers = svix(NEW) | {"svix-signature": signature}
    result = verify_svix(BODY, headers, secrets(NEW))
    assert (result.ok, result.method) == (False, "svix")
    assert result.reason.startswith(("ValueError: ", "Error: "))


def test_only_the_svix_header_names_are_read() -> None:
    signed = svix(NEW)
    renamed = {k.replace("svix-", "webhook-"): v for k, v in signed.items()}
    assert not verify_svix(BODY, renamed, secrets(NEW)).ok
    assert verify_svix(BODY, renamed | signed, secrets(NEW)).ok


# --- shared secrets: x-mb-secret (v2 callbacks) and the v1 API key ----------------------------


def test_a_shared_secret_matches_any_configured_one() -> None:
    assert verify_shared_secret("cb-old", secrets("cb-old", "cb-new"), "x-mb-secret") == (
        AuthResult(True, "x-mb-secret", "")
    )
    assert verify_shared_secret("cb-new", secrets("cb-old", "cb-new"), "x-mb-secret").ok
    assert verify_shared_secret("cb-new", secrets("cb-new", "cb-old"), "api-key") == AuthResult(
        True, "api-key", ""
    )


@pytest.mark.parametrize("presented", ["cb-ol", "cb-old ", "CB-OLD", "", "cb-öld"])
def test_anything_but_an_exact_match_is_refused(presented: str) -> None:
    assert verify_shared_secret(presented, secrets("cb-old", "cb-new"), "x-mb-secret") == (
        AuthResult(False, "x-mb-secret", "secret does not match")
    )


def test_no_configured_secret_refuses_even_an_empty_one() -> None:
    assert not verify_shared_secret("", [], "api-key").ok


def test_every_secret_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # the module auth.py calls
    configured = secrets("s1", "s2", "s3")
    for presented in ("s1", "s3", "nope"):
        compared.clear()
        verify_shared_secret(presented, configured, "x-mb-secret")
        # no early exit: the time taken does not tell which secret matched
        assert compared == [(presented.encode(), s.encode()) for s in ("s1", "s2", "s3")]


# --- which header decides ----------------------------------------------------------------------


def test_each_meetingbaas_scheme_authenticates_by_its_own_header() -> None:
    assert meetingbaas(svix(OLD)) == AuthResult(True, "svix", "")
    assert meetingbaas({"x-mb-secret": "cb-new"}) == AuthResult(True, "x-mb-secret", "")
    assert meetingbaas({"x-meeting-baas-api-key": "key-old"}) == AuthResult(True, "api-key", "")


def test_secrets_of_one_scheme_do_not_open_another() -> None:
    assert not meetingbaas({"x-mb-secret": "key-old"}).ok
    assert not meetingbaas({"x-meeting-baas-api-key": "cb-old"}).ok
    assert meetingbaas({"x-mb-secret": "key-old"}).method == "x-mb-secret"
    assert meetingbaas({"x-meeting-baas-api-key": "cb-old"}).method == "api-key"


def test_a_svix_header_means_the_signature_decides_whatever_else_is_sent() -> None:
    bad_signature = svix(NEW) | {"svix-signature": svix(NEW, body=b"{}")["svix-signature"]}
    with_valid_secrets = bad_signature | {
        "x-mb-secret": "cb-old",
        "x-meeting-baas-api-key": "key-old",
    }
    assert meetingbaas(with_valid_secrets).method == "svix"
    assert not meetingbaas(with_valid_secrets).ok
    # svix-id alone (signature stripped) still goes the Svix way, and fails
    only_id = {"svix-id": "msg_1", "x-mb-secret": "cb-old"}
    assert meetingbaas(only_id) == AuthResult(
        False, "svix", "WebhookVerificationError: Missing required headers"
    )
    only_signature = {"svix-signature": "v1,AAAA", "x-mb-secret": "cb-old"}
    assert meetingbaas(only_signature).method == "svix"
    assert not meetingbaas(only_signature).ok


def test_the_callback_secret_is_checked_before_the_api_key() -> None:
    both = {"x-mb-secret": "wrong", "x-meeting-baas-api-key": "key-old"}
    assert meetingbaas(both) == AuthResult(False, "x-mb-secret", "secret does not match")


def test_no_authentication_header_is_refused() -> None:
    assert meetingbaas({}) == AuthResult(False, "none", "no authentication header")
    assert meetingbaas({"authorization": "Bearer cb-old"}).method == "none"


# --- Gladia callback tokens --------------------------------------------------------------------


def test_a_gladia_token_minted_under_either_key_is_accepted_for_its_bot() -> None:
    keys = secrets("k1", "k2")
    assert authenticate_gladia("bot-1", callback_tokens.mint("k1", "bot-1"), keys) == (
        AuthResult(True, "token", "")
    )
    assert authenticate_gladia("bot-1", callback_tokens.mint("k2", "bot-1"), keys).ok
    assert authenticate_gladia("bot-2", callback_tokens.mint("k1", "bot-1"), keys) == (
        AuthResult(False, "token", "token does not match")
    )
    assert not authenticate_gladia("bot-1", callback_tokens.mint("k0", "bot-1"), keys).ok


@pytest.mark.parametrize(("bot_id", "token"), [("", "abc"), ("bot-1", ""), ("", "")])
def test_a_gladia_callback_without_bot_or_token_is_refused(bot_id: str, token: str) -> None:
    assert authenticate_gladia(bot_id, token, secrets("k1")) == AuthResult(
        False, "token", "callback without bot_id or token"
    )


def test_an_empty_bot_id_is_refused_even_with_its_own_valid_token() -> None:
    assert not authenticate_gladia("", callback_tokens.mint("k1", ""), secrets("k1")).ok
