"""Fresh recording URLs from MeetingBaaS (v2 `GET /v2/bots/{bot_id}`).

The signed URLs a `bot.completed` webhook carries expire after about four hours, while
MeetingBaaS keeps the recording for days and signs new URLs whenever the bot is asked for. The
answer is the bot's details in MeetingBaaS's envelope, `{"success": true, "data": {...}}`, with
`video` and `audio` as in `bot.completed` (sample: `tests/fixtures/providers/meetingbaas/
v2-get-bot.response.json`). A bot MeetingBaaS no longer knows (404) or whose recording it no
longer holds (no `video`) is gone for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import aiohttp


class RecordingGone(Exception):
    """MeetingBaaS no longer has this bot's recording: asking again cannot help."""


@dataclass(frozen=True)
class RecordingUrls:
    video: str
    audio: str | None


async def fresh_recording_urls(
    api_url: str, api_key: str, bot_id: str, timeout_seconds: float
) -> RecordingUrls:
    """Newly signed URLs of `bot_id`'s recording; `RecordingGone` when there is none any more.
    Any other refusal or failure raises aiohttp's error (a provider failure, never our outage)."""
    url = f"{api_url.rstrip('/')}/v2/bots/{quote(bot_id, safe='')}"
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, headers={"x-meeting-baas-api-key": api_key}) as response,
    ):
        if response.status in (404, 410):
            raise RecordingGone(f"MeetingBaaS no longer has bot {bot_id} (HTTP {response.status})")
        response.raise_for_status()
        body = await response.json()
    data = body.get("data") if isinstance(body, dict) else None
    video = data.get("video") if isinstance(data, dict) else None
    if not isinstance(video, str) or not video:
        raise RecordingGone(f"MeetingBaaS has no recording for bot {bot_id} any more")
    audio = data.get("audio") if isinstance(data, dict) else None
    return RecordingUrls(video, audio if isinstance(audio, str) and audio else None)
