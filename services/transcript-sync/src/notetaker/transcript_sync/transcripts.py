"""Getting transcript text: fetching a provider's transcript, asking Gladia for one.

Errors say what the failure policy (`notetaker.common.failures`) needs: `TranscriptRefused` is
permanent (the transcript or the job can never be had as asked: not JSON, too large, at an address
we may not reach, an id that is not plain), `ProviderAnswered` carries the provider's HTTP status
(and Retry-After) for the policy to read, and any other `TranscriptUnavailable` (the host could
not be reached) is transient.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import httpx
from pydantic import SecretStr, ValidationError

from notetaker.common import callback_tokens, gladia, sealing, source_policy
from notetaker.common.events import TranscriptReady, Utterance
from notetaker.common.failures import Permanent
from notetaker.common.source_policy import SourceForbidden, host_of, is_forbidden_failure
from notetaker.ingest import providers

# Our request id in a Gladia job's custom_metadata: how a retry finds a job it already submitted.
REQUEST_ID_METADATA = gladia.REQUEST_ID_METADATA


class TranscriptUnavailable(Exception):
    """The transcript could not be fetched or understood."""


class TranscriptRefused(TranscriptUnavailable, Permanent):
    """The transcript (or the job) can never be had as asked: retrying changes nothing."""


@dataclass(frozen=True)
class _Answer:
    status_code: int
    headers: Mapping[str, str]


class ProviderAnswered(TranscriptUnavailable):
    """A provider answered with an HTTP error; `response` holds its status and headers, where
    the failure policy reads them (a 4xx refusal is permanent, a 5xx or 429 transient)."""

    def __init__(self, message: str, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.response = _Answer(status, headers)


def utterances_from_document(document: Any) -> list[Utterance]:
    """Understand the transcript formats we receive: word segments or Gladia utterances."""
    if isinstance(document, dict):
        document = _gladia_result_of(document)
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


def _gladia_result_of(document: dict[str, Any]) -> dict[str, Any]:
    """Gladia's result in a document that holds one: under `result` (`GET /v2/pre-recorded/{id}`)
    or `payload` (a callback's body, as archived), else the document itself."""
    for key in ("result", "payload"):
        if isinstance(document.get(key), dict) and "transcription" in document[key]:
            found: dict[str, Any] = document[key]
            return found
    if isinstance(document.get("result"), dict):
        result: dict[str, Any] = document["result"]
        return result
    return document


MAX_TRANSCRIPT_BYTES = 64 * 1024 * 1024  # hours of words with timings fit in a few MiB


def utterances_from_meeting_data(document: Any) -> list[Utterance]:
    """The transcript in a MeetingBaaS v1 `GET /bots/meeting_data?include_transcripts=true`
    answer (`Metadata` in its OpenAPI file): `bot_data.transcripts`, each a speaker's segment
    with `start_time`, `end_time` and its `words` (`text`)."""
    bot_data = document.get("bot_data") if isinstance(document, dict) else None
    segments = bot_data.get("transcripts") if isinstance(bot_data, dict) else None
    if not isinstance(segments, list):
        raise TranscriptUnavailable("meeting data without bot_data.transcripts")
    utterances = []
    for segment in segments:
        if not isinstance(segment, dict):
            continue
        words = [w for w in segment.get("words") or [] if isinstance(w, dict)]
        text = " ".join(str(w.get("text", "")).strip() for w in words).strip()
        if not text:
            continue
        start = float(segment.get("start_time") or 0.0)
        end = segment.get("end_time")
        utterances.append(
            Utterance(
                speaker=str(segment.get("speaker") or ""),
                start=start,
                end=float(end) if end is not None else start,
                text=text,
            )
        )
    return utterances


@dataclass(frozen=True)
class Transcript:
    """A transcript as written to the meeting: its utterances, and what its provider said about
    it beside them (the language, a summary), when it said."""

    utterances: list[Utterance]
    language: str | None = None
    summary: str | None = None
    # Gladia's document exactly as delivered (the callback's body, or the API's answer), which
    # transcript-sync archives beside the video (`archive.py`); None for other providers.
    delivered: bytes | None = None


def details_from_document(document: Any) -> tuple[str | None, str | None]:
    """The language and summary a transcript document gives, when it gives them: Gladia's
    result (`transcription.languages`, the summarization add-on's `results`), at the top level
    or under `result` as `GET /v2/pre-recorded/{id}` answers."""
    if not isinstance(document, dict):
        return None, None
    document = _gladia_result_of(document)
    language = summary = None
    transcription = document.get("transcription")
    if isinstance(transcription, dict):
        languages = transcription.get("languages")
        if isinstance(languages, list) and languages and isinstance(languages[0], str):
            language = languages[0][:20]
    summarization = document.get("summarization")
    if isinstance(summarization, dict) and isinstance(summarization.get("results"), str):
        summary = summarization["results"].strip() or None
    return language, summary


KEPT_BODY = (
    "SELECT sealed, received_at FROM webhook_bodies WHERE provider = $1 AND delivery_id = $2"
)


async def kept_transcript(
    pool: asyncpg.Pool, keys: Sequence[SecretStr], event: TranscriptReady
) -> Transcript:
    """The transcript of a transcript.ready event that points at a kept webhook body
    (`body_ref`: ingest's pointer instead of a transcript too large for the event): the body
    read from `webhook_bodies`, opened with the key ring (`keys`) and mapped again by ingest's
    own parsers. A body no longer kept (pruned after its retention, deleted with the bot's
    media), or none of the keys opening it, is permanent: `TranscriptRefused`."""
    ref = event.body_ref
    assert ref is not None
    where = f"webhook body {ref.provider}/{ref.delivery_id}"
    if not keys:
        raise TranscriptRefused(
            f"bot {event.bot_id}'s transcript is in {where}, and no key opens kept bodies"
            f" ({sealing.KEYS_SETTING})"
        )
    row = await pool.fetchrow(KEPT_BODY, ref.provider, ref.delivery_id)
    if row is None:
        raise TranscriptRefused(
            f"bot {event.bot_id}'s transcript is in {where}, which is no longer kept (pruned"
            " after NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS, or deleted with the bot's media)"
        )
    try:
        body = sealing.SourceUrlCipher(list(keys)).open_body(row["sealed"])
    except ValueError as exc:
        raise TranscriptRefused(f"bot {event.bot_id}'s transcript in {where}: {exc}") from exc
    if ref.provider == "gladia":
        return _from_gladia_callback(event, body, where, delivered=body)
    try:
        delivery = providers.MeetingBaasDelivery.model_validate_json(body)
        events = providers.meetingbaas_events(delivery, row["received_at"])
    except ValidationError as exc:
        raise TranscriptRefused(
            f"bot {event.bot_id}'s transcript in {where}: the body no longer maps"
            f" ({exc.error_count()} errors)"
        ) from exc
    return _carried(event, events, where)


def _from_gladia_callback(
    event: TranscriptReady, body: bytes, where: str, *, delivered: bytes | None
) -> Transcript:
    """The transcript a Gladia callback's body carries, mapped by ingest's own parsers."""
    try:
        callback = providers.GladiaCallback.model_validate_json(body)
        events = providers.gladia_events(callback, event.bot_id)
    except ValidationError as exc:
        raise TranscriptRefused(
            f"bot {event.bot_id}'s transcript in {where}: the body no longer maps"
            f" ({exc.error_count()} errors)"
        ) from exc
    return dataclasses.replace(_carried(event, events, where), delivered=delivered)


def _carried(event: TranscriptReady, events: Sequence[Any], where: str) -> Transcript:
    found = [e for e in events if isinstance(e, TranscriptReady) and e.utterances is not None]
    if not found:
        raise TranscriptRefused(f"{where} carries no transcript for bot {event.bot_id}")
    kept = found[0]
    assert kept.utterances is not None
    return Transcript(
        list(kept.utterances), event.language or kept.language, event.summary or kept.summary
    )


def archived_transcript(event: TranscriptReady, body: bytes) -> Transcript:
    """The transcript in our archived copy of Gladia's document (`gladia-result.json`): a
    callback's body, read as ingest reads callbacks, or the API's answer, read as it was when
    fetched. Nothing left to archive (`delivered` None)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise TranscriptRefused(f"bot {event.bot_id}'s archived Gladia result is not JSON") from exc
    if isinstance(document, dict) and "event" in document and "payload" in document:
        return _from_gladia_callback(
            event, body, f"bot {event.bot_id}'s archived Gladia result", delivered=None
        )
    return transcript_of_document(event, body)


DELIVERED_GLADIA_BODY = (
    "SELECT b.sealed FROM webhook_bodies b JOIN transcription_jobs j"
    " ON b.delivery_id = j.request_id::text || ':' || $2 || ':transcription.success'"
    " WHERE j.bot_id = $1 AND b.provider = 'gladia'"
)


async def delivered_gladia_body(
    pool: asyncpg.Pool, keys: Sequence[SecretStr], event: TranscriptReady
) -> bytes | None:
    """The body of the callback that carried a Gladia transcript inline (`utterances` in the
    event), as ingest kept it: the delivery of our request's job (`<request id>:<job id>:
    transcription.success`, ingest's delivery id). None when no body is kept (ingest has no key
    ring, or the body was pruned) or none of `keys` opens it."""
    if event.job_id is None or not keys:
        return None
    sealed = await pool.fetchval(DELIVERED_GLADIA_BODY, event.bot_id, event.job_id)
    if sealed is None:
        return None
    try:
        return sealing.SourceUrlCipher(list(keys)).open_body(sealed)
    except ValueError:
        return None


async def resolve(
    http: httpx.AsyncClient,
    sources: aiohttp.ClientSession,
    event: TranscriptReady,
    gladia_url: str,
    gladia_key: SecretStr | None,
    max_bytes: int = MAX_TRANSCRIPT_BYTES,
    *,
    meetingbaas_url: str = "",
    meetingbaas_key: SecretStr | None = None,
) -> list[Utterance]:
    """The utterances of a transcript.ready event (`resolve_transcript`)."""
    transcript = await resolve_transcript(
        http,
        sources,
        event,
        gladia_url,
        gladia_key,
        max_bytes,
        meetingbaas_url=meetingbaas_url,
        meetingbaas_key=meetingbaas_key,
    )
    return transcript.utterances


async def resolve_transcript(
    http: httpx.AsyncClient,
    sources: aiohttp.ClientSession,
    event: TranscriptReady,
    gladia_url: str,
    gladia_key: SecretStr | None,
    max_bytes: int = MAX_TRANSCRIPT_BYTES,
    *,
    meetingbaas_url: str = "",
    meetingbaas_key: SecretStr | None = None,
) -> Transcript:
    """The transcript of a transcript.ready event, fetching it when only a pointer came.

    A provider's `transcript_url` is fetched only as the source URL policy allows (`sources` is
    a policy session: public addresses, few redirects); both it and Gladia's result are read as a
    stream and refused past `max_bytes`, never held whole before that check. The language and
    summary are the event's, else the fetched document's."""
    if event.utterances is not None:
        return Transcript(list(event.utterances), event.language, event.summary)
    if event.provider_api == "v1" and not (event.transcript_url or event.job_id):
        if meetingbaas_key is None:
            raise TranscriptRefused(
                f"bot {event.bot_id}'s new transcript is to be fetched from MeetingBaaS, and no"
                " key is set (NOTETAKER_MEETINGBAAS_API_KEY)"
            )
        url = f"{meetingbaas_url.rstrip('/')}/bots/meeting_data"
        params = {"bot_id": event.bot_id, "include_transcripts": "true"}
        headers = {"x-meeting-baas-api-key": meetingbaas_key.get_secret_value()}
        body = await _fetch_api(http, event.bot_id, url, params, headers, max_bytes)
        try:
            return Transcript(
                utterances_from_meeting_data(json.loads(body)), event.language, event.summary
            )
        except (ValueError, RecursionError) as exc:
            raise TranscriptRefused(f"the meeting data of bot {event.bot_id} is not JSON") from exc
        except TranscriptUnavailable as exc:
            raise TranscriptRefused(f"the transcript of bot {event.bot_id}: {exc}") from exc
    if event.transcript_url:
        body = await _fetch_transcript(sources, event.bot_id, event.transcript_url, max_bytes)
    elif event.job_id and gladia_key is not None:
        if not gladia.is_job_id(event.job_id):
            raise TranscriptRefused(
                f"the Gladia job of bot {event.bot_id} has an id that is not a plain id"
            )
        url = gladia.job_url(gladia_url, event.job_id)
        headers = {"x-gladia-key": gladia_key.get_secret_value()}
        body = await _fetch_api(http, event.bot_id, url, {}, headers, max_bytes)
    else:
        raise TranscriptRefused(f"transcript for bot {event.bot_id} has no content or source")
    return transcript_of_document(
        event, body, delivered=bytes(body) if event.provider == "gladia" else None
    )


def transcript_of_document(
    event: TranscriptReady, body: bytes | bytearray, *, delivered: bytes | None = None
) -> Transcript:
    """The transcript a fetched (or stored) document holds; refused for good when it is not
    JSON or holds none."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise TranscriptRefused(f"the transcript of bot {event.bot_id} is not JSON") from exc
    language, summary = details_from_document(document)
    try:
        return Transcript(
            utterances_from_document(document),
            event.language or language,
            event.summary or summary,
            delivered=delivered,
        )
    except TranscriptUnavailable as exc:
        raise TranscriptRefused(f"the transcript of bot {event.bot_id}: {exc}") from exc


async def _fetch_api(
    http: httpx.AsyncClient,
    bot_id: str,
    url: str,
    params: dict[str, str],
    headers: dict[str, str],
    max_bytes: int,
) -> bytearray:
    """A provider API's answer (our key in `headers`), read as a stream, refused past
    `max_bytes`."""
    async with http.stream("GET", url, params=params, headers=headers) as response:
        _check_status(bot_id, response.status_code, response.headers)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            _check_size(bot_id, len(body), max_bytes)
    return body


async def _fetch_transcript(
    sources: aiohttp.ClientSession, bot_id: str, url: str, max_bytes: int
) -> bytearray:
    try:
        async with source_policy.get(sources, url) as response:
            _check_status(bot_id, response.status, response.headers)
            if (response.content_length or 0) > max_bytes:
                _check_size(bot_id, response.content_length or 0, max_bytes)
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                _check_size(bot_id, len(body), max_bytes)
            return body
    except (SourceForbidden, aiohttp.ClientError, TimeoutError) as exc:
        if is_forbidden_failure(exc):
            raise TranscriptRefused(
                f"the transcript of bot {bot_id} is at {host_of(url)}, not a public address"
            ) from exc
        raise TranscriptUnavailable(
            f"fetching the transcript of bot {bot_id} from {host_of(url)} failed:"
            f" {type(exc).__name__}"
        ) from exc


def _check_status(bot_id: str, status: int, headers: Mapping[str, str]) -> None:
    if status != 200:
        raise ProviderAnswered(
            f"fetching the transcript of bot {bot_id} answered HTTP {status}", status, headers
        )


def _check_size(bot_id: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise TranscriptRefused(f"the transcript of bot {bot_id} is larger than {max_bytes} bytes")


async def request_gladia_job(
    http: httpx.AsyncClient,
    *,
    gladia_url: str,
    gladia_key: SecretStr,
    audio_url: str,
    callback_base: str,
    callback_key: SecretStr,
    request_id: uuid.UUID,
    expires: int,
    bot_id: str,
) -> str:
    """Submit a pre-recorded job whose callback URL names our request and carries a token minted
    for it and its expiry (`expires`, Unix seconds), and whose custom_metadata names our request
    (`find_gladia_job` looks for it); the job's id, refused unless a plain id."""
    subject = callback_tokens.gladia_job_subject(str(request_id), expires)
    token = callback_tokens.mint(callback_key.get_secret_value(), subject)
    callback = httpx.URL(
        f"{callback_base}/webhooks/gladia",
        params={"request_id": str(request_id), "expires": str(expires), "token": token},
    )
    response = await http.post(
        f"{gladia_url}/v2/pre-recorded",
        headers={"x-gladia-key": gladia_key.get_secret_value()},
        json={
            "audio_url": audio_url,
            "diarization": True,
            "callback": True,
            "callback_config": {"url": str(callback), "method": "POST"},
            "custom_metadata": {REQUEST_ID_METADATA: str(request_id), "bot_id": bot_id},
        },
    )
    if response.status_code not in (200, 201):
        raise ProviderAnswered(
            f"Gladia refused the job for bot {bot_id}:"
            f" HTTP {response.status_code} {response.text[:200]}",
            response.status_code,
            response.headers,
        )
    job_id = _json(response).get("id")
    if not gladia.is_job_id(job_id):
        raise TranscriptRefused(f"Gladia answered the job for bot {bot_id} without a plain id")
    return str(job_id)


async def find_gladia_job(
    http: httpx.AsyncClient,
    *,
    gladia_url: str,
    gladia_key: SecretStr,
    request_id: uuid.UUID,
    bot_id: str,
) -> str | None:
    """The id of the job submitted under `request_id`, if Gladia has one: its list of
    pre-recorded jobs filtered by our custom_metadata (`GET /v2/pre-recorded?custom_metadata=`).
    Only items whose metadata names this very request, with a plain id, count; the oldest wins
    (there is at most one unless a submit was repeated before this look-up existed)."""
    response = await http.get(
        f"{gladia_url}/v2/pre-recorded",
        headers={"x-gladia-key": gladia_key.get_secret_value()},
        params={
            "custom_metadata": json.dumps({REQUEST_ID_METADATA: str(request_id)}),
            "limit": 20,
        },
    )
    if response.status_code != 200:
        raise ProviderAnswered(
            f"Gladia did not list the jobs of bot {bot_id}: HTTP {response.status_code}",
            response.status_code,
            response.headers,
        )
    items = _json(response).get("items")
    found = [
        item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("custom_metadata"), dict)
        and item["custom_metadata"].get(REQUEST_ID_METADATA) == str(request_id)
        and gladia.is_job_id(item.get("id"))
    ]
    if not found:
        return None
    found.sort(key=lambda item: str(item.get("created_at") or ""))
    return str(found[0]["id"])


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TranscriptUnavailable(f"Gladia answered HTTP {response.status_code} without JSON")
    return body
