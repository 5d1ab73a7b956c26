"""A recording source for tests: serves bytes over HTTP, honestly or with injected faults.

Faults a provider URL shows in the wild: an error status (expired: 403, gone: 404), a body that
stops short of its Content-Length (connection cut), a slow trickle, ignoring Range requests.
Every request is logged with the range it asked for.

A test that must act while a body is in flight (kill the worker, look at the other recordings)
holds it at a `Gate`: the body stops before a chosen byte, the gate says when a body got there,
and the test opens it when it is done. No sleep stands in for "the copy is under way".
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.stack import free_port

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(eq=False)
class Gate:
    """Holds every body that gets to byte `at` of the file until the test opens the gate.

    `reached` is set when a body first gets there (everything before byte `at` was handed to the
    connection); a body that starts past `at` (a Range request) waits at its first byte.
    """

    at: int
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.opened.set()

    async def wait_reached(self, timeout: float) -> None:
        """Return once a body is held here; fail the test after `timeout` seconds."""
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no body reached byte {self.at} within {timeout:.0f}s") from None

    async def passing(self) -> None:
        self.reached.set()
        await self.opened.wait()


@dataclass
class Fault:
    status: int = 200
    truncate_at: int | None = None  # stop sending after this many bytes of the file
    delay_per_chunk: float = 0.0
    ignore_ranges: bool = False
    times: int | None = None  # the fault applies to this many requests, then it heals
    hold: Gate | None = None  # bodies wait before byte `hold.at` until the gate opens


@dataclass
class RecordingSource:
    """Serves `files[name]` at /files/{name}; `faults[name]` changes how."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (name, range)
    # URLs signed with these answer 403, as a provider's do once expired or revoked.
    revoked: set[str] = field(default_factory=set)
    chunk_size: int = 256 * 1024
    port: int = field(default_factory=free_port)
    _server: InLoopServer | None = None
    _gates: list[Gate] = field(default_factory=list)  # opened on stop, so no body hangs on

    # Like a provider's presigned URL, each URL carries a signature, and each error answer a body
    # of the source's own: neither may reach a stored error, a log line, an event or a metric.
    signature: str = field(default_factory=lambda: f"SIG{secrets.token_hex(12)}")

    @property
    def error_body(self) -> bytes:
        request_id = f"BODY{self.signature}"
        return (
            f"<Error><Code>AccessDenied</Code><RequestId>{request_id}</RequestId></Error>".encode()
        )

    def url(self, name: str, signature: str | None = None) -> str:
        """The file's URL, signed with the source's signature (or `signature`, one of its own
        the provider signed later: it should begin with the source's, for the secret scan)."""
        return (
            f"http://127.0.0.1:{self.port}/files/{name}"
            f"?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature={signature or self.signature}"
        )

    def _fault(self, name: str) -> Fault:
        fault = self.faults.get(name)
        if fault is None:
            return Fault()
        if fault.times is not None:
            if fault.times <= 0:
                return Fault(delay_per_chunk=fault.delay_per_chunk)
            fault.times -= 1
        return fault

    async def _serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        wanted = request.headers.get("range")
        self.requests.append((name, wanted))
        if name not in self.files:
            return Response(status_code=404)
        if request.query_params.get("X-Amz-Signature") in self.revoked:
            return Response(self.error_body, status_code=403)
        fault = self._fault(name)
        if fault.status != 200:
            return Response(self.error_body, status_code=fault.status)
        data = self.files[name]
        start, status = 0, 200
        headers = {"content-type": "video/mp4", "accept-ranges": "bytes"}
        match = _RANGE.fullmatch(wanted or "")
        if match and not fault.ignore_ranges:
            start = int(match.group(1))
            if start >= len(data):
                return Response(status_code=416, headers={"content-range": f"bytes */{len(data)}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["content-length"] = str(len(data) - start)
        limit = len(data) if fault.truncate_at is None else max(start, fault.truncate_at)
        hold = fault.hold
        if hold is not None and all(g is not hold for g in self._gates):
            self._gates.append(hold)

        async def body() -> AsyncIterator[bytes]:
            offset = start
            while offset < limit:
                if hold is not None and offset >= hold.at:
                    await hold.passing()
                end = min(limit, offset + self.chunk_size)
                if hold is not None and offset < hold.at < end:
                    end = hold.at  # the chunk stops where the gate stands
                if fault.delay_per_chunk:
                    await asyncio.sleep(fault.delay_per_chunk)
                yield data[offset:end]
                offset = end
            if hold is not None and offset == hold.at:  # the gate stands at the body's end
                await hold.passing()

        return StreamingResponse(body(), status_code=status, headers=headers)

    async def start(self) -> None:
        self._server = InLoopServer(
            Starlette(routes=[Route("/files/{name}", self._serve)]), self.port
        )
        await self._server.start()

    async def stop(self) -> None:
        for gate in self._gates:
            gate.open()
        if self._server is not None:
            await self._server.stop()
