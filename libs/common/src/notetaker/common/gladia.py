"""Gladia job ids: what one may look like before it goes into a URL sent with our API key."""

from __future__ import annotations

import re
from urllib.parse import quote

# Gladia's job ids are UUIDs; anything else with a dot, a slash, a `?` or a `%` could turn
# `/v2/pre-recorded/{id}` into another path or query, and is refused instead.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
# The key of our request id in a job's custom_metadata: how a job is found whose id we lost.
REQUEST_ID_METADATA = "notetaker_request_id"


def is_job_id(value: object) -> bool:
    """A plain job id: 1 to 100 ASCII letters, digits, `_` or `-`."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def job_url(api_url: str, job_id: str) -> str:
    """`GET` URL of a pre-recorded job; ValueError for an id that is not a plain one."""
    if not is_job_id(job_id):
        raise ValueError(f"not a plain Gladia job id: {job_id[:100]!r}")
    return f"{api_url}/v2/pre-recorded/{quote(job_id, safe='')}"
