"""A source cannot make the uploader hold more than its part buffers: a declared length over the
recording limit fails at once as `source_too_large` before any buffer or multipart upload
exists, and a body that runs past the limit without saying its length fails the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil
import pytest

from notetaker.common.s3 import S3Client
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from tests.conftest import eventually
from tests.uploader.conftest import recording_ready_at

MIB = 1024 * 1024
LIMIT = 8 * MIB


@dataclass
class Liar:
    """An HTTP source on loopback: declares `declared` bytes (or none: chunked) and sends
    `sends` bytes of zeros, then holds the connection open."""

    declared: int | None
    sends: int
    server: asyncio.Server | None = None
    port: int = 0
    requests: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        await reader.readuntil(b"\r\n\r\n")
        chunked = self.declared is None
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {self.declared}"
        writer.write(f"HTTP/1.1 200 OK\r\n{length}\r\nContent-Type: video/mp4\r\n\r\n".encode())
        block = bytes(256 * 1024)
        sent = 0
        try:
            while sent < self.sends:
                piece = block[: self.sends - sent]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                sent += len(piece)
            await reader.read()  # hold the body open until the client goes away
        except ConnectionError:
            pass
        finally:
            writer.close()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mp4"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
async def uploader(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_HTTP_PORT": str(port),
        "NOTETAKER_UPLOAD_MAX_RECORDING_BYTES": str(LIMIT),
    }
    process = ServiceProcess("uploader", env, port, tmp_path_factory.mktemp("bounds") / "up.log")
    process.start()
    await asyncio.to_thread(process.wait_ready)
    yield process
    process.stop()


async def failed(db: asyncpg.Pool, bot_id: str) -> Any:
    async def probe() -> Any:
        row = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
        return row if row["s3_upload_status"] == "failed" else None

    return await eventually(probe, 60, f"recording of {bot_id} to fail")


def rss(process: ServiceProcess) -> int:
    assert process.process is not None
    return int(psutil.Process(process.process.pid).memory_info().rss)


async def open_uploads(s3: S3Client, stack: Stack) -> list[str]:
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket)
    return [u["Key"] for u in listing.get("Uploads", [])]


async def test_a_declared_length_of_10_to_the_14_fails_at_once_and_the_rss_does_not_move(
    uploader: ServiceProcess, stack: Stack, db: asyncpg.Pool, s3: S3Client
) -> None:
    source = Liar(declared=10**14, sends=MIB)
    await source.start()
    try:
        before = rss(uploader)
        bot_id = await recording_ready_at(stack, db, source.url())
        row = await failed(db, bot_id)
        after = rss(uploader)
    finally:
        await source.stop()
    assert "over the" in row["s3_upload_error_message"]
    assert row["s3_upload_next_retry_at"] is None  # final: a retry would meet the same length
    assert source.requests == 1
    # Before the limit existed, 10^14 bytes made 10 GB part buffers: an OOM kill in a pod.
    assert after - before < 16 * MIB, f"RSS grew by {(after - before) / MIB:.1f} MiB"
    assert bot_id not in " ".join(await open_uploads(s3, stack))


async def test_a_body_past_the_limit_without_a_length_fails_and_leaves_no_upload_open(
    uploader: ServiceProcess, stack: Stack, db: asyncpg.Pool, s3: S3Client
) -> None:
    source = Liar(declared=None, sends=LIMIT + 2 * MIB)
    await source.start()
    try:
        bot_id = await recording_ready_at(stack, db, source.url())
        row = await failed(db, bot_id)
    finally:
        await source.stop()
    assert "NOTETAKER_UPLOAD_MAX_RECORDING_BYTES" in row["s3_upload_error_message"]
    assert row["s3_upload_next_retry_at"] is None
    recording_id = str(row["id"])
    assert not [key for key in await open_uploads(s3, stack) if recording_id in key]
