"""Media tokens: only a token signed with a configured key, for our audience, unexpired and
naming orgs, opens media links; rotation keeps old and new keys valid together. A refusal's
reason is the body of the 401 the caller gets, so each is pinned word for word."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
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


NOT_ORGS = "the token's orgs claim is not a list of org ids"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (
            lambda: mint("a-key-we-never-had-0123456789abcd", [ORG], timedelta(minutes=5)),
            "the token's signature matches no key",
        ),
        (lambda: mint(KEY, [ORG], timedelta(minutes=-5)), "the token has expired"),
        (
            lambda: jwt.encode(claims(exp=None), KEY, algorithm="HS256"),
            "the token is not valid: MissingRequiredClaimError",
        ),
        (
            lambda: jwt.encode(claims(aud="someone-else"), KEY, algorithm="HS256"),
            "the token is not valid: InvalidAudienceError",
        ),
        (
            lambda: jwt.encode(claims(orgs=None), KEY, algorithm="HS256"),
            "the token is not valid: MissingRequiredClaimError",
        ),
        (lambda: jwt.encode(claims(orgs="all"), KEY, algorithm="HS256"), NOT_ORGS),
        (lambda: jwt.encode(claims(orgs=[]), KEY, algorithm="HS256"), NOT_ORGS),
        (lambda: jwt.encode(claims(orgs=["acme"]), KEY, algorithm="HS256"), NOT_ORGS),
        (
            lambda: jwt.encode(claims(), KEY * 2, algorithm="HS512"),
            "the token is not valid: InvalidAlgorithmError",
        ),
        (
            lambda: jwt.encode(claims(), "", algorithm="none"),
            "the token is not valid: InvalidAlgorithmError",
        ),
        (lambda: "not-a-jwt", "the token is not valid: DecodeError"),
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
    assert str(refused.value) == why


def test_with_no_key_configured_media_links_are_off() -> None:
    with pytest.raises(MediaTokenRefused) as refused:
        verify(mint(KEY, [ORG], timedelta(minutes=5)), [])
    assert str(refused.value) == "media links are off: no media token key is configured"


def test_a_token_that_expired_within_the_clock_skew_leeway_is_accepted() -> None:
    # The product's clock may run a little ahead of ours: 30 s of leeway, and no more.
    assert media_tokens.LEEWAY_SECONDS == 30
    assert verify(mint(KEY, [ORG], timedelta(seconds=-10)), [KEY]) == {ORG}
    with pytest.raises(MediaTokenRefused) as refused:
        verify(mint(KEY, [ORG], timedelta(seconds=-60)), [KEY])
    assert str(refused.value) == "the token has expired"


@pytest.fixture(params=["JST-9", "EST+5"], ids=["east of UTC", "west of UTC"])
def local_time_zone(request: pytest.FixtureRequest) -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.usefixtures("local_time_zone")
def test_a_token_lasts_its_lifetime_whatever_the_minting_hosts_time_zone() -> None:
    token = mint(KEY, [ORG], timedelta(minutes=5))
    issued = jwt.decode(token, options={"verify_signature": False})
    assert abs(issued["iat"] - time.time()) < 60
    assert issued["exp"] - issued["iat"] == 300
    assert verify(token, [KEY]) == {ORG}
