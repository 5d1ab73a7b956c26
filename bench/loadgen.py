"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, pre-built requests).

Closed loop (`saturate`): C connections send back to back, measuring peak throughput. Open loop
(`at_rate`): requests start on a fixed schedule whatever the server does, and latency counts from
the scheduled start, so a stalled server cannot hide its queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0

    def line(self, name: str) -> str:
        return (
            f"{name:>14}: {self.rate:8.0f} req/s  p50 {self.percentile(50):6.2f} ms  "
            f"p99 {self.percentile(99):6.2f} ms  errors {self.errors}/{self.requests}"
        )


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def saturate(
    port: int, requests: Iterator[bytes], connections: int, seconds: float
) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = await Connection.open(port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = await conn.send(next(requests))
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status >= 300
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return Result(len(latencies), errors, time.perf_counter() - started, latencies)


async def at_rate(
    port: int, requests: Iterator[bytes], rate: float, seconds: float, connections: int = 64
) -> Result:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    begin = time.perf_counter() + 0.05

    async def one(scheduled: float, request: bytes) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await conn.send(request)
        finally:
            pool.put_nowait(conn)
        latencies.append((time.perf_counter() - scheduled) * 1000)
        errors += status >= 300

    tasks = []
    for i in range(total):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, next(requests))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    while not pool.empty():
        pool.get_nowait().close()
    return Result(len(latencies), errors, elapsed, latencies)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
