"""A provider's transcript URL is fetched only as the source URL policy allows, and read as a
stream that is refused past its size limit: an internal address is never connected to, and a
huge or endless body never sits whole in memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from notetaker.common.events import TranscriptReady
from notetaker.common.source_policy import SourcePolicy
from notetaker.transcript_sync.transcripts import (
    TranscriptRefused,
    TranscriptUnavailable,
    resolve,
    resolve_transcript,
)
from tests.common.test_source_policy import Counting
from tests.fixtures import PROVIDER_SAMPLES

MIB = 1024 * 1024
DOCUMENT = [{"speaker": "Ada", "words": [{"word": "Hello", "start": 0.0, "end": 0.4}]}]


@dataclass
class Served:
    """A loopback server answering one JSON document, or an endless body, and counting."""

    body: bytes | None  # None: send zeros forever
    requests: int = 0
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        await reader.readuntil(b"\r\n\r\n")
        try:
            if self.body is not None:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n\r\n"
                writer.write(head.encode() + self.body)
                await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
                while True:
                    writer.write(b"0," * 65536)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/transcript.json?X-Amz-Signature=secret"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, aiohttp.ClientSession]]:
    async with httpx.AsyncClient() as http, SourcePolicy(allow_loopback=True).session() as sources:
        yield http, sources


def pointer(url: str) -> TranscriptReady:
    return TranscriptReady(bot_id="bot-1", provider="meetingbaas", transcript_url=url)


async def test_a_transcript_url_is_fetched_and_understood(
    clients: tuple[httpx.AsyncClient, aiohttp.ClientSession],
) -> None:
    served = Served(json.dumps(DOCUMENT).encode())
    await served.start()
    try:
        utterances = await resolve(*clients, pointer(served.url()), "http://unused", None)
    finally:
        await served.stop()
    assert [(u.speaker, u.text) for u in utterances] == [("Ada", "Hello")]


async def test_a_fetched_gladia_result_gives_its_language_and_summary(
    clients: tuple[httpx.AsyncClient, aiohttp.ClientSession],
) -> None:
    result = json.loads(
        (PROVIDER_SAMPLES / "gladia/v2-callback.transcription.success.json").read_text()
    )
    document = {"status": "done", "result": result["payload"]}
    document["result"]["summarization"] = {"success": True, "results": "Ada and Alan met."}
    served = Served(json.dumps(document).encode())
    await served.start()
    try:
        transcript = await resolve_transcript(
            *clients, pointer(served.url()), "http://unused", None
        )
        # A MeetingBaaS transcript names neither.
        served.body = json.dumps(DOCUMENT).encode()
        plain = await resolve_transcript(*clients, pointer(served.url()), "http://unused", None)
    finally:
        await served.stop()
    assert [u.text for u in transcript.utterances] == ["Hello Alan.", "Hello Ada."]
    assert (transcript.language, transcript.summary) == ("en", "Ada and Alan met.")
    assert (plain.language, plain.summary) == (None, None)


async def test_a_transcript_url_inside_the_network_is_never_connected_to() -> None:
    target = Counting("127.0.0.1")
    await target.start()
    try:
        async with httpx.AsyncClient() as http, SourcePolicy().session() as strict:
            with pytest.raises(TranscriptUnavailable) as refused:
                await resolve(http, strict, pointer(target.url()), "http://unused", None)
    finally:
        await target.stop()
    assert "not a public address" in str(refused.value)
    assert "secret" not in str(refused.value)
    assert target.connections == 0


@pytest.mark.parametrize(
    "body", [b"[" + b"0," * 600_000 + b"0]", None], ids=["declared", "endless"]
)
async def test_a_transcript_past_the_limit_is_refused_while_streaming(
    clients: tuple[httpx.AsyncClient, aiohttp.ClientSession], body: bytes | None
) -> None:
    served = Served(body)
    await served.start()
    try:
        with pytest.raises(TranscriptUnavailable) as refused:
            await asyncio.wait_for(
                resolve(*clients, pointer(served.url()), "http://unused", None, max_bytes=MIB),
                30,
            )
    finally:
        await served.stop()
    assert f"larger than {MIB} bytes" in str(refused.value)


V1_SEGMENT = {
    "id": 1,
    "bot_id": 42,
    "speaker": "Ada Lovelace",
    "start_time": 1.5,
    "end_time": 2.4,
    "lang": "en",
    "user_id": None,
    "words": [
        {"id": 1, "bot_id": 42, "text": "Hello", "start_time": 1.5, "end_time": 1.9},
        {"id": 2, "bot_id": 42, "text": "again", "start_time": 2.0, "end_time": 2.4},
    ],
}


async def test_a_v1_retranscription_is_fetched_from_the_meeting_data_with_our_key() -> None:
    """`transcription_complete` names only the bot: the transcript is `bot_data.transcripts` of
    v1's `GET /bots/meeting_data?include_transcripts=true` (the sample, with one segment)."""
    answer = json.loads(
        (PROVIDER_SAMPLES / "meetingbaas/v1-meeting-data.response.json").read_text()
    )
    answer["bot_data"]["transcripts"] = [V1_SEGMENT, V1_SEGMENT | {"words": []}]
    asked: list[httpx.Request] = []

    def meetingbaas(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json=answer)

    event = TranscriptReady(
        bot_id="bot-v1", provider="meetingbaas", provider_api="v1", revision="r"
    )
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(meetingbaas)) as http,
        aiohttp.ClientSession() as sources,
    ):
        utterances = await resolve(
            http,
            sources,
            event,
            "http://unused",
            None,
            meetingbaas_url="https://mb.example/",
            meetingbaas_key=SecretStr("mb-key"),
        )
        (request,) = asked
        assert str(request.url) == (
            "https://mb.example/bots/meeting_data?bot_id=bot-v1&include_transcripts=true"
        )
        assert request.headers["x-meeting-baas-api-key"] == "mb-key"
        assert [(u.speaker, u.start, u.end, u.text) for u in utterances] == [
            ("Ada Lovelace", 1.5, 2.4, "Hello again")
        ]
        with pytest.raises(TranscriptRefused, match="NOTETAKER_MEETINGBAAS_API_KEY"):
            await resolve(http, sources, event, "http://unused", None)
