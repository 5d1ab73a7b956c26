"""Secrets and tokens we derive for provider callbacks, and check when the callback arrives.

Each is the hex HMAC-SHA256 of a subject under a key both sides hold, so nothing is stored and
ingest can check a callback without asking anyone; a list of keys lets an operator rotate (the
first signs, every one verifies). Subjects are domain-separated (`meetingbaas-callback:`,
`gladia-job:`), so what is minted for one purpose never passes for another, even under one key.

- MeetingBaaS per-bot callbacks: the scheduler registers the secret of the bot's meeting when it
  deploys the bot (its id is not known yet); ingest derives it again from the meeting of the bot
  the body names.
- Gladia jobs: transcript-sync mints a token over its own request id and an expiry, both in the
  callback URL; ingest checks the token, the expiry, and that the request id is a job we asked for.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def mint(key: str, subject: str) -> str:
    message = subject.encode("utf-8", "surrogatepass")
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def is_valid(keys: Iterable[str], subject: str, token: str) -> bool:
    """Constant-time check of `token` against every current key (no early exit: the time taken
    does not tell which key matched)."""
    presented = token.encode("utf-8", "surrogatepass")  # bytes: any input compares safely
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(mint(key, subject).encode(), presented)
    return matched


def meetingbaas_callback_subject(meeting_id: str) -> str:
    """What a bot's `x-mb-secret` is derived from: the meeting the bot was deployed for."""
    return f"meetingbaas-callback:{meeting_id}"


def gladia_job_subject(request_id: str, expires: int) -> str:
    """What a Gladia callback token signs: our request id and its expiry (Unix seconds)."""
    return f"gladia-job:{request_id}:{expires}"
