"""Credentials for media links: short-lived JWTs (HS256) that name the orgs whose meetings the
bearer may play. The product mints them with a key it shares with transcript-sync; several keys
are accepted at once, so a key rotates without a gap. Verified with PyJWT: signature, expiry
(required), audience, and an `orgs` claim of org ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import jwt

AUDIENCE = "notetaker-media"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30  # clock skew between the product and us


class MediaTokenRefused(Exception):
    """Why a media token is not accepted (no token value in the message)."""


def mint(key: str, orgs: Iterable[uuid.UUID | str], lifetime: timedelta) -> str:
    """What the product does for a signed-in user: a token for these orgs, for `lifetime`."""
    now = datetime.now(UTC)
    claims = {
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "orgs": [str(uuid.UUID(str(org))) for org in orgs],
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(token: str, keys: Sequence[str]) -> frozenset[uuid.UUID]:
    """The orgs a valid token names; MediaTokenRefused when no key verifies it."""
    if not keys:
        raise MediaTokenRefused("media links are off: no media token key is configured")
    reason = "the token is not a JWT"
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never "none", never what the token's header asks for
                audience=AUDIENCE,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "aud", "orgs"]},
            )
        except jwt.InvalidSignatureError:
            reason = "the token's signature matches no key"
            continue
        except jwt.ExpiredSignatureError as exc:
            raise MediaTokenRefused("the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise MediaTokenRefused(f"the token is not valid: {type(exc).__name__}") from exc
        return _orgs(claims.get("orgs"))
    raise MediaTokenRefused(reason)


def _orgs(value: object) -> frozenset[uuid.UUID]:
    if not isinstance(value, list) or not value:
        raise MediaTokenRefused("the token's orgs claim is not a list of org ids")
    try:
        return frozenset(uuid.UUID(str(org)) for org in value)
    except ValueError as exc:
        raise MediaTokenRefused("the token's orgs claim is not a list of org ids") from exc
