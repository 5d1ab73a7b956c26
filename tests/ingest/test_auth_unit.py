"""Webhook authentication, in process: who may deliver, and what the log says when they may not.

Svix signatures (rotation with two secrets, the five-minute tolerance either way, tampering,
garbled headers), the per-bot `x-mb-secret` (derived from the meeting of the bot the body names,
under either rotated key; another bot's secret, an unknown bot and a body naming none refused),
the v1 API key, which header decides, the constant-time loop over shared secrets, and Gladia
callback tokens (bound to our request id and expiry, refused once expired).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notetaker.common import callback_tokens
from notetaker.ingest.auth import (
    AuthResult,
    authenticate_gladia,
    authenticate_meetingbaas,
    callback_bot_id,
    verify_bot_callback,
    verify_shared_secret,
    verify_svix,
)

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
GARBLED_SECRET = "whsec_abcde"  # not base64: the library raises ValueError building it
BODY = b'{"event":"bot.completed","data":{"bot_id":"b"}}'

# The bots the database knows: their meetings (`recordings.meeting_id`); "lonely" has none.
MEETING_A = "0b7e8a52-6f0e-4f3c-9d1a-3c2b1a0f9e8d"
MEETING_B = "5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
MEETINGS: dict[str, str | None] = {"a": MEETING_A, "b": MEETING_B, "lonely": None}


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


def derived(meeting_id: str, key: str = "cb-new") -> str:
    """The x-mb-secret the scheduler registers for a bot of `meeting_id`."""
    return callback_tokens.mint(key, callback_tokens.meetingbaas_callback_subject(meeting_id))


def naming(bot_id: object) -> bytes:
    return json.dumps({"event": "bot.completed", "data": {"bot_id": bot_id}}).encode()


class Meetings:
    """`recordings.meeting_id` by bot, recording every lookup."""

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    async def __call__(self, bot_id: str) -> str | None:
        self.looked_up.append(bot_id)
        return MEETINGS.get(bot_id)


def meetingbaas(
    headers: dict[str, str], body: bytes = BODY, meetings: Meetings | None = None
) -> AuthResult:
    return asyncio.run(
        authenticate_meetingbaas(
            body,
            headers,
            webhook_secrets=secrets(OLD, NEW),
            callback_keys=secrets("cb-old", "cb-new"),
            api_keys=secrets("key-old", "key-new"),
            meeting_of=meetings or Meetings(),
        )
    )


def bot_callback(
    presented: str,
    body: bytes = BODY,
    keys: tuple[str, ...] = ("cb-old", "cb-new"),
    meetings: Meetings | None = None,
) -> AuthResult:
    return asyncio.run(verify_bot_callback(body, presented, secrets(*keys), meetings or Meetings()))


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


# --- per-bot callbacks: x-mb-secret ---------------------------------------------------------------


def test_the_secret_derived_for_the_bots_meeting_passes_under_either_key() -> None:
    assert bot_callback(derived(MEETING_B, "cb-new")) == AuthResult(True, "x-mb-secret", "")
    assert bot_callback(derived(MEETING_B, "cb-old")).ok
    assert bot_callback(derived(MEETING_A), body=naming("a")).ok


def test_the_meeting_looked_up_is_that_of_the_bot_the_body_names() -> None:
    meetings = Meetings()
    assert bot_callback(derived(MEETING_A), body=naming("a"), meetings=meetings).ok
    assert meetings.looked_up == ["a"]


def test_one_bots_secret_opens_no_other_bots_callbacks() -> None:
    # a valid secret, registered for bot a's meeting, in a body naming bot b
    assert bot_callback(derived(MEETING_A)) == AuthResult(
        False, "x-mb-secret", "secret does not match the bot's meeting"
    )
    assert not bot_callback(derived(MEETING_B), body=naming("a")).ok


def test_a_retired_or_unknown_key_opens_nothing() -> None:
    assert not bot_callback(derived(MEETING_B, "cb-old"), keys=("cb-new",)).ok
    assert not bot_callback(derived(MEETING_B, "cb-other")).ok


@pytest.mark.parametrize("bot_id", ["lonely", "unknown"])
def test_an_unknown_bot_or_one_without_a_meeting_is_refused_the_same_way(bot_id: str) -> None:
    # a valid secret of some meeting does not help: there is no meeting to derive one from
    assert bot_callback(derived(MEETING_B), body=naming(bot_id)) == AuthResult(
        False, "x-mb-secret", "unknown bot, or a bot without a meeting"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"event": "bot.completed", "data": {',
        b"[]",
        b'"b"',
        b'{"event": "bot.completed"}',
        b'{"event": "bot.completed", "data": ["b"]}',
        b'{"event": "bot.completed", "data": {"id": "b"}}',
        b'{"data": {"bot_id": ' + b"9" * 5000 + b"}}",  # an integer past the parser's limit
        b'{"data": {"bot_id": "b"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe",
        naming(7),
        naming(None),
        naming(["b"]),
        naming(""),
        naming("bot with spaces"),
        naming("b\x00"),
        naming("x" * 101),
    ],
)
def test_a_body_that_names_no_plausible_bot_is_refused_before_any_lookup(body: bytes) -> None:
    meetings = Meetings()
    assert bot_callback(derived(MEETING_B), body=body, meetings=meetings) == AuthResult(
        False, "x-mb-secret", "the body names no bot"
    )
    assert meetings.looked_up == []


@pytest.mark.parametrize(
    "bot_id", ["b", "x" * 100, "A.b_c:d-9", "7f3c2a4e-0000-4000-8000-000000000000"]
)
def test_a_plausible_bot_id_is_read_from_the_body(bot_id: str) -> None:
    assert callback_bot_id(naming(bot_id)) == bot_id
    assert callback_bot_id(json.dumps({"data": {"bot_id": bot_id}, "event": 1}).encode()) == bot_id


def test_without_a_configured_key_every_callback_is_refused_before_any_lookup() -> None:
    meetings = Meetings()
    assert bot_callback(derived(MEETING_B), keys=(), meetings=meetings) == AuthResult(
        False, "x-mb-secret", "no callback key configured"
    )
    assert meetings.looked_up == []


@pytest.mark.parametrize("presented", ["", "ü", "\ud885", "x" * 500, derived(MEETING_B).upper()])
def test_a_presented_secret_of_any_shape_is_refused_quietly(presented: str) -> None:
    assert bot_callback(presented) == AuthResult(
        False, "x-mb-secret", "secret does not match the bot's meeting"
    )


# --- shared secrets: the v1 API key -----------------------------------------------------------


def test_a_shared_secret_matches_any_configured_one() -> None:
    assert verify_shared_secret("key-old", secrets("key-old", "key-new"), "api-key") == (
        AuthResult(True, "api-key", "")
    )
    assert verify_shared_secret("key-new", secrets("key-old", "key-new"), "api-key").ok
    assert verify_shared_secret("key-new", secrets("key-new", "key-old"), "other") == AuthResult(
        True, "other", ""
    )


@pytest.mark.parametrize("presented", ["key-ol", "key-old ", "KEY-OLD", "", "key-öld"])
def test_anything_but_an_exact_match_is_refused(presented: str) -> None:
    assert verify_shared_secret(presented, secrets("key-old", "key-new"), "api-key") == (
        AuthResult(False, "api-key", "secret does not match")
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
        verify_shared_secret(presented, configured, "api-key")
        # no early exit: the time taken does not tell which secret matched
        assert compared == [(presented.encode(), s.encode()) for s in ("s1", "s2", "s3")]


# --- which header decides ----------------------------------------------------------------------


def test_each_meetingbaas_scheme_authenticates_by_its_own_header() -> None:
    assert meetingbaas(svix(OLD)) == AuthResult(True, "svix", "")
    assert meetingbaas({"x-mb-secret": derived(MEETING_B)}) == AuthResult(True, "x-mb-secret", "")
    assert meetingbaas({"x-meeting-baas-api-key": "key-old"}) == AuthResult(True, "api-key", "")


def test_secrets_of_one_scheme_do_not_open_another() -> None:
    assert not meetingbaas({"x-mb-secret": "key-old"}).ok
    assert not meetingbaas({"x-mb-secret": "cb-new"}).ok  # a key is not a secret
    assert not meetingbaas({"x-meeting-baas-api-key": derived(MEETING_B)}).ok
    assert meetingbaas({"x-mb-secret": "key-old"}).method == "x-mb-secret"
    assert meetingbaas({"x-meeting-baas-api-key": derived(MEETING_B)}).method == "api-key"


def test_only_the_callback_scheme_looks_the_bot_up() -> None:
    for headers in (svix(NEW), {"x-meeting-baas-api-key": "key-old"}, {}):
        meetings = Meetings()
        meetingbaas(headers, meetings=meetings)
        assert meetings.looked_up == []
    meetings = Meetings()
    meetingbaas({"x-mb-secret": derived(MEETING_A)}, body=naming("a"), meetings=meetings)
    assert meetings.looked_up == ["a"]


def test_a_svix_header_means_the_signature_decides_whatever_else_is_sent() -> None:
    bad_signature = svix(NEW) | {"svix-signature": svix(NEW, body=b"{}")["svix-signature"]}
    with_valid_secrets = bad_signature | {
        "x-mb-secret": derived(MEETING_B),
        "x-meeting-baas-api-key": "key-old",
    }
    assert meetingbaas(with_valid_secrets).method == "svix"
    assert not meetingbaas(with_valid_secrets).ok
    # svix-id alone (signature stripped) still goes the Svix way, and fails
    only_id = {"svix-id": "msg_1", "x-mb-secret": derived(MEETING_B)}
    assert meetingbaas(only_id) == AuthResult(
        False, "svix", "WebhookVerificationError: Missing required headers"
    )
    only_signature = {"svix-signature": "v1,AAAA", "x-mb-secret": derived(MEETING_B)}
    assert meetingbaas(only_signature).method == "svix"
    assert not meetingbaas(only_signature).ok


def test_the_callback_secret_is_checked_before_the_api_key() -> None:
    both = {"x-mb-secret": "wrong", "x-meeting-baas-api-key": "key-old"}
    assert meetingbaas(both) == AuthResult(
        False, "x-mb-secret", "secret does not match the bot's meeting"
    )


def test_no_authentication_header_is_refused() -> None:
    assert meetingbaas({}) == AuthResult(False, "none", "no authentication header")
    assert meetingbaas({"authorization": "Bearer cb-old"}).method == "none"


# --- Gladia callback tokens --------------------------------------------------------------------

REQUEST = "3b0c5e1a-8d2f-4c7b-a914-6e2f0d9b7c31"
NOW = 1_800_000_000
EXPIRES = NOW + 60


def token(request_id: str = REQUEST, expires: int = EXPIRES, key: str = "k1") -> str:
    """What transcript-sync mints for a request."""
    return callback_tokens.mint(key, callback_tokens.gladia_job_subject(request_id, expires))


def gladia(
    request_id: str = REQUEST,
    expires: int = EXPIRES,
    presented: str | None = None,
    keys: tuple[str, ...] = ("k1", "k2"),
    now: float = NOW,
) -> AuthResult:
    presented = token() if presented is None else presented
    return authenticate_gladia(request_id, expires, presented, secrets(*keys), now)


def test_a_gladia_token_minted_under_either_key_is_accepted_for_its_request() -> None:
    assert gladia() == AuthResult(True, "token", "")
    assert gladia(presented=token(key="k2")).ok
    assert gladia(presented=token(key="k0")) == AuthResult(False, "token", "token does not match")
    assert not gladia(keys=("k2",)).ok  # k1 retired


def test_a_token_is_bound_to_its_request_id_and_its_expiry() -> None:
    other = REQUEST.replace("3b0c", "3b0d")
    assert gladia(request_id=other) == AuthResult(False, "token", "token does not match")
    assert gladia(request_id=other, presented=token(request_id=other)).ok
    # a later expiry in the URL does not keep an old token alive
    assert gladia(expires=EXPIRES + 3600) == AuthResult(False, "token", "token does not match")


@pytest.mark.parametrize(
    ("now", "accepted"),
    [(EXPIRES - 60, True), (EXPIRES - 0.5, True), (EXPIRES, False), (EXPIRES + 0.5, False)],
)
def test_a_token_is_valid_until_it_expires(now: float, accepted: bool) -> None:
    result = gladia(now=now)
    assert result.ok is accepted
    assert result.reason == ("" if accepted else "token expired")


def test_an_expired_token_is_refused_even_under_a_current_key() -> None:
    past = NOW - 1
    assert gladia(expires=past, presented=token(expires=past)) == AuthResult(
        False, "token", "token expired"
    )


def test_without_a_configured_key_every_token_is_refused() -> None:
    assert gladia(keys=()) == AuthResult(False, "token", "no callback key configured")


@pytest.mark.parametrize("presented", ["", "ü", "\ud885", "x" * 500, token().upper(), token()[:-1]])
def test_a_gladia_token_of_any_shape_is_refused_quietly(presented: str) -> None:
    assert gladia(presented=presented) == AuthResult(False, "token", "token does not match")


def test_the_bare_bot_id_tokens_of_old_are_refused() -> None:
    assert not gladia(presented=callback_tokens.mint("k1", REQUEST)).ok
    assert not gladia(presented=callback_tokens.mint("k1", "bot-1")).ok
