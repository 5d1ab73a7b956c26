"""A dependency that goes away and comes back: a TCP proxy in front of PostgreSQL (or any TCP
service) that can be taken down, as a stopped server or a cut network would be, and brought up.

While down, every connection through it is cut and new ones are closed as soon as they arrive
(what a client of a stopped server sees: its connections drop, its reconnects fail). Up again,
connections pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib


class OutageProxy:
    """`upstream` may be set after `start` (a broker that must advertise the proxy's port is
    started once the proxy listens)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.up = True
        self.refused = 0  # connections closed on arrival while down
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def down(self) -> None:
        """Cut every connection and refuse new ones until `restore`."""
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            to_client.transport.abort()
            return
        try:
            server, to_server = await asyncio.open_connection(*self.upstream)
        except OSError:
            to_client.transport.abort()
            return
        self._writers |= {to_client, to_server}
        for pump in (self._pump(client, to_server), self._pump(server, to_client)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65_536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            with contextlib.suppress(Exception):
                sink.close()
