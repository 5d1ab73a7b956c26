"""Getting transcript text: fetching a provider's transcript, asking Gladia for one."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from notetaker.common import callback_tokens
from notetaker.common.events import TranscriptReady, Utterance


class TranscriptUnavailable(Exception):
    """The transcript could not be fetched or understood."""


def utterances_from_document(document: Any) -> list[Utterance]:
    """Understand the transcript formats we receive: word segments or Gladia utterances."""
    if isinstance(document, dict):
        if "result" in document and isinstance(document["result"], dict):
            document = document["result"]
        if "transcription" in document and isinstance(document["transcription"], dict):
            document = document["transcription"]
        for key in ("utterances", "transcript", "segments"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list):
        raise TranscriptUnavailable("transcript is not a list of utterances or segments")
    utterances = []
    for item in document:
        if not isinstance(item, dict):
            continue
        speaker = item.get("speaker", "")
        speaker = f"Speaker {speaker}" if isinstance(speaker, int) else str(speaker or "")
        words = item.get("words") or []
        if "text" in item:
            text = str(item["text"]).strip()
        else:
            text = " ".join(str(w.get("word", w.get("text", ""))).strip() for w in words)
        start = item.get("start", words[0].get("start", 0.0) if words else 0.0)
        end = item.get("end", words[-1].get("end", start) if words else start)
        if text:
            utterances.append(Utterance(speaker=speaker, start=start, end=end, text=text))
    return utterances


async def resolve(
    http: httpx.AsyncClient, event: TranscriptReady, gladia_url: str, gladia_key: SecretStr | None
) -> list[Utterance]:
    """The utterances of a transcript.ready event, fetching them when only a pointer came."""
    if event.utterances is not None:
        return list(event.utterances)
    if event.transcript_url:
        response = await http.get(event.transcript_url)
    elif event.job_id and gladia_key is not None:
        response = await http.get(
            f"{gladia_url}/v2/pre-recorded/{event.job_id}",
            headers={"x-gladia-key": gladia_key.get_secret_value()},
        )
    else:
        raise TranscriptUnavailable(f"transcript for bot {event.bot_id} has no content or source")
    if response.status_code != 200:
        raise TranscriptUnavailable(
            f"fetching the transcript of bot {event.bot_id} answered HTTP {response.status_code}"
        )
    return utterances_from_document(response.json())


async def request_gladia_job(
    http: httpx.AsyncClient,
    *,
    gladia_url: str,
    gladia_key: SecretStr,
    audio_url: str,
    callback_base: str,
    callback_key: SecretStr,
    bot_id: str,
) -> str:
    """Submit a pre-recorded job whose callback carries a token minted for this bot; its id."""
    token = callback_tokens.mint(callback_key.get_secret_value(), bot_id)
    callback = httpx.URL(
        f"{callback_base}/webhooks/gladia", params={"bot_id": bot_id, "token": token}
    )
    response = await http.post(
        f"{gladia_url}/v2/pre-recorded",
        headers={"x-gladia-key": gladia_key.get_secret_value()},
        json={
            "audio_url": audio_url,
            "diarization": True,
            "callback": True,
            "callback_config": {"url": str(callback), "method": "POST"},
        },
    )
    if response.status_code not in (200, 201):
        raise TranscriptUnavailable(
            f"Gladia refused the job for bot {bot_id}:"
            f" HTTP {response.status_code} {response.text[:200]}"
        )
    job_id: str = response.json()["id"]
    return job_id
