"""Tokens we mint for provider callbacks (Gladia) and check when the callback arrives.

A token is an HMAC of the job's subject under a key both sides hold, so ingest can trust a callback
without a lookup, and a list of keys lets an operator rotate without dropping in-flight jobs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def mint(key: str, subject: str) -> str:
    message = subject.encode("utf-8", "surrogatepass")
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def is_valid(keys: Iterable[str], subject: str, token: str) -> bool:
    """Constant-time check of `token` against every current key."""
    presented = token.encode("utf-8", "surrogatepass")  # bytes: any input compares safely
    return any(hmac.compare_digest(mint(key, subject).encode(), presented) for key in keys)
