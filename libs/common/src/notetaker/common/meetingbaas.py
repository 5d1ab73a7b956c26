"""Fresh recording URLs from MeetingBaaS, asked of the API that delivered the recording.

The signed URLs a webhook carries expire (v2's after 4 hours, v1's sooner), while MeetingBaaS
keeps the recording for days and signs new URLs whenever it is asked. The two APIs ask and answer
differently (formats from MeetingBaaS's OpenAPI descriptions, `openapi-v2.json` and `openapi.json`
in its public docs repository; samples in `tests/fixtures/providers/meetingbaas/`):

- v2, `GET /v2/bots/{bot_id}` ("Get bot details"): `{"success": true, "data": {...}}` with
  `video` and `audio` as in `bot.completed`, each `null` once the bot's data is deleted, which
  `artifacts_deleted` then says; the other artifacts (`transcription`, `raw_transcription`,
  `diarization`, `chat_messages`) signed again beside them.
- v1, `GET /bots/meeting_data?bot_id=...` ("Get Meeting Data"): the recording's `mp4` at the top
  level beside `bot_data`, an empty string once the file is gone. Only the mp4 is taken: the v1
  `complete` webhook hands over nothing else, and v1's `audio` is an uncompressed WAV.

Both authenticate with the `x-meeting-baas-api-key` header. A bot MeetingBaaS does not know (404,
410) or whose video it no longer holds is `RecordingGone`; any other refusal or an answer in
another shape is a `ProviderError` (the attempt fails, a later one may succeed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from notetaker.common.events import ARTIFACT_KINDS, ArtifactKind

Api = Literal["v1", "v2"]


class RecordingGone(Exception):
    """MeetingBaaS no longer has this bot's recording: asking again cannot help."""


class ProviderError(Exception):
    """MeetingBaaS refused the request or answered something we cannot read."""


@dataclass(frozen=True)
class RecordingUrls:
    video: str | None  # None: an audio-only recording
    audio: str | None
    # The other artifacts v2 signs again, by kind (`ARTIFACT_KINDS`); v1 hands over none.
    artifacts: dict[ArtifactKind, str] = field(default_factory=dict)


async def fresh_recording_urls(
    api_url: str, api_key: str, bot_id: str, timeout_seconds: float, *, api: Api
) -> RecordingUrls:
    """Newly signed URLs of `bot_id`'s recording, asked of MeetingBaaS's API `api` (the one
    that delivered the recording); `RecordingGone` when there is none any more. Network failures
    raise aiohttp's errors (a provider failure, never our outage)."""
    base = api_url.rstrip("/")
    if api == "v1":
        url, params = (
            f"{base}/bots/meeting_data",
            {"bot_id": bot_id, "include_transcripts": "false"},
        )
    else:
        url, params = f"{base}/v2/bots/{quote(bot_id, safe='')}", {}
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, params=params, headers={"x-meeting-baas-api-key": api_key}) as response,
    ):
        if response.status in (404, 410):
            raise RecordingGone(
                f"MeetingBaaS no longer has bot {bot_id} (API {api}: HTTP {response.status})"
            )
        if response.status != 200:
            # The status only: an error body may say anything.
            raise ProviderError(
                f"MeetingBaaS refused fresh URLs of bot {bot_id} (API {api}: HTTP"
                f" {response.status})"
            )
        try:
            body = await response.json(content_type=None)
        except ValueError as exc:
            raise ProviderError(
                f"MeetingBaaS answered fresh URLs of bot {bot_id} with what is not JSON (API {api})"
            ) from exc
    return meeting_data_urls(bot_id, body) if api == "v1" else bot_details_urls(bot_id, body)


def bot_details_urls(bot_id: str, body: Any) -> RecordingUrls:
    """The recording's URLs in a v2 `GET /v2/bots/{bot_id}` answer."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or body.get("success") is not True:
        raise ProviderError(f"MeetingBaaS answered bot {bot_id}'s details in an unknown shape")
    if data.get("artifacts_deleted") is True:
        raise RecordingGone(f"MeetingBaaS has deleted the recording of bot {bot_id}")
    video, audio = _url(data.get("video")), _url(data.get("audio"))
    if video is None and audio is None:
        raise RecordingGone(
            f"MeetingBaaS has no video or audio for bot {bot_id}"
            f" (status {_status(data.get('status'))})"
        )
    artifacts = {kind: _url(data.get(kind)) for kind in ARTIFACT_KINDS}
    return RecordingUrls(
        video, audio, {kind: url for kind, url in artifacts.items() if url is not None}
    )


def meeting_data_urls(bot_id: str, body: Any) -> RecordingUrls:
    """The recording's URLs in a v1 `GET /bots/meeting_data` answer: the `mp4`, and the `audio`
    (a WAV) when there is one, as the v1 `complete` webhook hands both over."""
    if not isinstance(body, dict) or "mp4" not in body or not isinstance(body["mp4"], str):
        raise ProviderError(f"MeetingBaaS answered bot {bot_id}'s meeting data in an unknown shape")
    video = _url(body["mp4"])
    if video is None:
        raise RecordingGone(f"MeetingBaaS has no mp4 for bot {bot_id} any more")
    return RecordingUrls(video, _url(body.get("audio")))


def _url(value: object) -> str | None:
    """A URL field: a non-empty string, else absent (`null`, v1's `""`)."""
    return value if isinstance(value, str) and value else None


def _status(value: object) -> str:
    """A bot status for a message: one of MeetingBaaS's short codes, or `?`."""
    if isinstance(value, str) and 0 < len(value) <= 40 and value.replace("_", "").isalnum():
        return value
    return "?"
