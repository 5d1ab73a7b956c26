"""An S3 endpoint that misbehaves on purpose: a proxy in front of the real one that answers
chosen requests with 500, 503 or SlowDown, as S3 does under load, or drops the connection in the
middle of a request body (`RESET`). It can also hold a chosen request (`Hold`), before S3 sees
it or after S3 has done it but before its answer, so a test can kill the worker at that step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.stack import free_port

Matcher = Callable[[Request], bool]

RESET = 0  # a status for fail_next: read part of the body, then drop the connection
RESET_AFTER_BYTES = 1024 * 1024

SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def is_upload_part(request: Request) -> bool:
    return request.method == "PUT" and "partNumber" in request.query_params


def is_complete(request: Request) -> bool:
    """CompleteMultipartUpload."""
    return request.method == "POST" and "uploadId" in request.query_params


def is_part(number: int) -> Matcher:
    return lambda request: (
        is_upload_part(request) and request.query_params["partNumber"] == str(number)
    )


@dataclass(eq=False)
class Hold:
    """Holds the first request `which` matches until the test opens it: before S3 sees it, or
    (`answered`) after S3 has done it, with its answer held back from the client."""

    which: Matcher
    answered: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_reached(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no request reached the hold within {timeout:.0f}s") from None

    def open(self) -> None:
        self.opened.set()

    async def passing(self) -> None:
        self.reached.set()
        await self.opened.wait()


@dataclass
class S3FaultProxy:
    upstream: str
    port: int = field(default_factory=free_port)
    failures: list[tuple[Matcher, int]] = field(default_factory=list)  # (which, status)
    injected: list[str] = field(default_factory=list)
    # Every request that came through, "METHOD /path?query": what a worker did to the bucket.
    seen: list[str] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)  # each taken by the first request it matches
    failing_with: int | None = None  # while set, every request is answered with this status
    _server: InLoopServer | None = None
    _http: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, count: int, status: int = 503, which: Matcher = is_upload_part) -> None:
        self.failures += [(which, status)] * count

    def fail_all(self, status: int = 503) -> None:
        """Answer every request with `status` (503: SlowDown) until `heal`: S3 unavailable."""
        self.failing_with = status

    def heal(self) -> None:
        self.failing_with = None

    async def _forward(self, request: Request) -> Response:
        self.seen.append(f"{request.method} {request.url.path}?{request.url.query}")
        if self.failing_with is not None:
            self.injected.append(f"{request.method} {request.url.path} -> {self.failing_with}")
            return _error(self.failing_with)
        for index, (which, status) in enumerate(self.failures):
            if which(request):
                del self.failures[index]
                self.injected.append(f"{request.method} {request.url.path} -> {status}")
                if status == RESET:
                    return await self._reset(request)
                return _error(status)
        hold = next((h for h in self.holds if h.which(request)), None)
        if hold is not None:
            self.holds.remove(hold)
            if not hold.answered:
                await hold.passing()
        assert self._http is not None
        upstream = await self._http.request(
            request.method,
            f"{self.upstream}{request.url.path}",
            params=request.url.query,  # the raw query string, exactly as the client signed it
            headers=[(k, v) for k, v in request.headers.items() if k.lower() != "host"]
            + [("host", self.upstream.split("//", 1)[1])],
            content=await request.body(),
        )
        dropped = {"transfer-encoding", "content-encoding"}
        if request.method != "HEAD":  # a HEAD answer's length describes the object: keep it
            dropped.add("content-length")
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
        if hold is not None and hold.answered:
            await hold.passing()
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    async def _reset(self, request: Request) -> Response:
        """Take the first MiB of the body, start an answer and break off: the server closes the
        connection with the rest of the body unread, which the kernel answers with a reset."""
        taken = 0
        async for chunk in request.stream():
            taken += len(chunk)
            if taken >= RESET_AFTER_BYTES:
                break

        async def broken() -> AsyncIterator[bytes]:
            raise ConnectionResetError("fault injected: connection dropped mid-request")
            yield b""  # an async generator that fails on its first step

        return StreamingResponse(broken(), headers={"content-length": "100"})

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=60)
        methods = ["GET", "PUT", "POST", "DELETE", "HEAD"]
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=methods)])
        self._server = InLoopServer(app, self.port)
        await self._server.start()

    async def stop(self) -> None:
        for hold in self.holds:
            hold.open()
        if self._server is not None:
            await self._server.stop()
        if self._http is not None:
            await self._http.aclose()


def _error(status: int) -> Response:
    body = SLOW_DOWN if status == 503 else b"<Error><Code>InternalError</Code></Error>"
    return Response(body, status_code=status, media_type="application/xml")
