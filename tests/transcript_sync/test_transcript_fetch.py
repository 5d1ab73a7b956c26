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

from notetaker.common.events import TranscriptReady
from notetaker.common.source_policy import SourcePolicy
from notetaker.transcript_sync.transcripts import TranscriptUnavailable, resolve
from tests.common.test_source_policy import Counting

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
