"""Media tokens: only a token signed with a configured key, for our audience, unexpired and
naming orgs, opens media links; rotation keeps old and new keys valid together."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from notetaker.common import media_tokens
from notetaker.common.media_tokens import MediaTokenRefused, mint, verify

KEY = "the-current-media-key-0123456789abcdef"
NEXT = "the-next-media-key-after-rotation-0123"
ORG, OTHER = uuid.uuid4(), uuid.uuid4()


def test_a_token_names_the_orgs_it_was_minted_for() -> None:
    token = mint(KEY, [ORG, str(OTHER)], timedelta(minutes=5))
    assert verify(token, [KEY]) == {ORG, OTHER}


def test_during_rotation_both_keys_are_accepted() -> None:
    assert verify(mint(KEY, [ORG], timedelta(minutes=5)), [NEXT, KEY]) == {ORG}
    assert verify(mint(NEXT, [ORG], timedelta(minutes=5)), [NEXT, KEY]) == {ORG}


def claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "aud": media_tokens.AUDIENCE,
        "exp": now + timedelta(minutes=5),
        "orgs": [str(ORG)],
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (lambda: mint("a-key-we-never-had-0123456789abcd", [ORG], timedelta(minutes=5)), "no key"),
        (lambda: mint(KEY, [ORG], timedelta(minutes=-5)), "expired"),
        (lambda: jwt.encode(claims(exp=None), KEY, algorithm="HS256"), "not valid"),
        (lambda: jwt.encode(claims(aud="someone-else"), KEY, algorithm="HS256"), "not valid"),
        (lambda: jwt.encode(claims(orgs=None), KEY, algorithm="HS256"), "not valid"),
        (lambda: jwt.encode(claims(orgs="all"), KEY, algorithm="HS256"), "orgs claim"),
        (lambda: jwt.encode(claims(orgs=[]), KEY, algorithm="HS256"), "orgs claim"),
        (lambda: jwt.encode(claims(orgs=["acme"]), KEY, algorithm="HS256"), "orgs claim"),
        (lambda: jwt.encode(claims(), KEY * 2, algorithm="HS512"), "not valid"),
        (lambda: jwt.encode(claims(), "", algorithm="none"), "not valid"),
        (lambda: "not-a-jwt", "not valid"),
    ],
    ids=[
        "foreign key",
        "expired",
        "no expiry",
        "other audience",
        "no orgs",
        "orgs not a list",
        "no org at all",
        "org not an id",
        "another algorithm",
        "alg none",
        "garbage",
    ],
)
def test_a_token_that_is_not_ours_or_not_valid_is_refused(token: object, why: str) -> None:
    with pytest.raises(MediaTokenRefused) as refused:
        verify(token(), [KEY])  # type: ignore[operator]
    assert why in str(refused.value)


def test_with_no_key_configured_media_links_are_off() -> None:
    with pytest.raises(MediaTokenRefused, match="no media token key"):
        verify(mint(KEY, [ORG], timedelta(minutes=5)), [])
