"""Dependencies that misbehave on purpose, for tests: TCP proxies in front of PostgreSQL, Kafka
or any TCP service.

- `OutageProxy` goes away and comes back: while down, every connection through it is cut and new
  ones are closed as soon as they arrive (what a client of a stopped server, or of a cut network,
  sees: its connections drop, its reconnects fail). Up again, connections pass untouched.
- `HeldProxy` holds what clients send: while held, their bytes wait in the proxy (recorded in
  `held`) and go on when released, so a request is provably in flight and blocked, for as long as
  a test wants, without a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class _TcpProxy:
    """Pumps bytes both ways between each client and a new connection to `upstream`, which may
    be set after `start` (a broker that must advertise the proxy's port starts once it listens)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
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

    def url_for(self, url: str) -> str:
        """`url` (a database URL, say) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}"))

    async def stop(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _admit(self) -> bool:
        return True

    async def _before_send(self, chunk: bytes) -> None:
        """Called with each chunk a client sends, before it goes upstream."""

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        if not self._admit():
            to_client.transport.abort()
            return
        try:
            server, to_server = await asyncio.open_connection(*self.upstream)
        except OSError:
            to_client.transport.abort()
            return
        self._writers |= {to_client, to_server}
        for pump in (self._pump(client, to_server, upstream=True), self._pump(server, to_client)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool = False
    ) -> None:
        try:
            while chunk := await source.read(65_536):
                if upstream:
                    await self._before_send(chunk)
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            with contextlib.suppress(Exception):
                sink.close()


class OutageProxy(_TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.up = True
        self.refused = 0  # connections closed on arrival while down

    def down(self) -> None:
        """Cut every connection and refuse new ones until `restore`."""
        self.up = False
        self._cut()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.up = False
        await super().stop()

    def _admit(self) -> bool:
        if not self.up:
            self.refused += 1
        return self.up


class HeldProxy(_TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.held = bytearray()
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def stop(self) -> None:
        self.release()
        await super().stop()

    async def _before_send(self, chunk: bytes) -> None:
        if not self._open.is_set():
            self.held += chunk
            await self._open.wait()
