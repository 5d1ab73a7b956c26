"""Asking the providers to delete their copies of a recording (the last steps of a deletion).

- MeetingBaaS: `POST /bots/{bot_id}/delete_data` (API v1, key in `x-meeting-baas-api-key`)
  deletes the bot's recording, transcription and logs; it answers
  `{"ok": true, "status": "deleted" | "partiallyDeleted" | "alreadyDeleted" | "noDataFound"}`
  (rate-limited to a few requests a minute per key: a 429 is tried again later).
- Gladia: `DELETE /v2/pre-recorded/{id}` (key in `x-gladia-key`) deletes a job's audio and
  transcript; it answers 202 without a body, 404 for a job it does not have, 403 while the job is
  not in a deletable state (still running).

Each call returns the outcome to record, or raises `NotYet` with a reason that time can fix (the
deletion then stays unfinished and is tried again). Errors name the host and the status, never a
response body or the key.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from notetaker.common.gladia import REQUEST_ID_METADATA, is_job_id, job_url


class NotYet(Exception):
    """The provider could not delete its copy now (unreachable, 429, 5xx, a job still running);
    asking again later can succeed."""


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


async def delete_bot_data(
    http: aiohttp.ClientSession, api_url: str, api_key: str, bot_id: str, timeout: float
) -> str:
    """MeetingBaaS's outcome (`deleted`, `alreadyDeleted`, ...; `unknown bot` for a 404)."""
    url = f"{api_url.rstrip('/')}/bots/{quote(bot_id, safe='')}/delete_data"
    try:
        async with http.post(
            url,
            headers={"x-meeting-baas-api-key": api_key},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status == 404:
                return "unknown bot"
            if response.status != 200:
                raise NotYet(f"MeetingBaaS ({_host(url)}) answered HTTP {response.status}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NotYet(f"MeetingBaaS ({_host(url)}) failed: {type(exc).__name__}") from exc
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str) or not status:
        raise NotYet(f"MeetingBaaS ({_host(url)}) answered without a deletion status")
    return status[:100]


async def delete_gladia_job(
    http: aiohttp.ClientSession, api_url: str, api_key: str, job_id: str, timeout: float
) -> str:
    """`deleted`, or `unknown job` for a 404. A job id that is not a plain id is never sent."""
    url = job_url(api_url.rstrip("/"), job_id)
    try:
        async with http.delete(
            url, headers={"x-gladia-key": api_key}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status in (200, 202, 204):
                return "deleted"
            if response.status == 404:
                return "unknown job"
            if response.status == 403:
                raise NotYet(f"Gladia ({_host(url)}): the job is not deletable yet (HTTP 403)")
            raise NotYet(f"Gladia ({_host(url)}) answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NotYet(f"Gladia ({_host(url)}) failed: {type(exc).__name__}") from exc


async def find_gladia_job(
    http: aiohttp.ClientSession, api_url: str, api_key: str, request_id: str, timeout: float
) -> str | None:
    """The id of the job Gladia holds under our `request_id` (its custom_metadata), None when it
    has none: a job submitted whose id never reached our row. The oldest plain id wins."""
    url = f"{api_url.rstrip('/')}/v2/pre-recorded"
    params = {"custom_metadata": json.dumps({REQUEST_ID_METADATA: request_id}), "limit": "20"}
    try:
        async with http.get(
            url,
            params=params,
            headers={"x-gladia-key": api_key},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status != 200:
                raise NotYet(f"Gladia ({_host(url)}) did not list jobs: HTTP {response.status}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NotYet(f"Gladia ({_host(url)}) failed: {type(exc).__name__}") from exc
    items: Any = body.get("items") if isinstance(body, dict) else None
    found = [
        item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("custom_metadata"), dict)
        and item["custom_metadata"].get(REQUEST_ID_METADATA) == request_id
        and is_job_id(item.get("id"))
    ]
    if not found:
        return None
    found.sort(key=lambda item: str(item.get("created_at") or ""))
    return str(found[0]["id"])
