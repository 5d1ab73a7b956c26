"""The source URL policy refuses, before any connection, every address that is not public:
literal, behind a name, behind a redirect, or behind a name that resolves differently later.

Loopback targets are real servers that count the connections they accept; addresses nothing here
can listen on (10/8, 169.254.169.254, ...) sit behind a test resolver that maps public-looking
names to them, and their refusal is told apart from a timeout by the policy's own error.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from notetaker.common.source_policy import (
    ForbiddenAddress,
    SourceForbidden,
    SourcePolicy,
    host_of,
    is_forbidden_failure,
)

POLICY = SourcePolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
        "fe80::1",
        "100.64.0.1",  # shared address space (carrier NAT)
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",  # documentation
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "4000::1",  # reserved IPv6 (not in any private range, so "global" to ipaddress)
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert not POLICY.address_allowed(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "52.216.1.1",
        "2600:1f18::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8: a provider on an IPv6-only network
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert POLICY.address_allowed(address)


def test_loopback_is_allowed_only_by_the_dev_stack_setting() -> None:
    dev = SourcePolicy(allow_loopback=True)
    assert dev.address_allowed("127.0.0.1")
    assert dev.address_allowed("::1")
    assert dev.address_allowed("::ffff:127.0.0.1")
    assert not dev.address_allowed("10.0.0.1")  # loopback only, not every private range
    assert not dev.address_allowed("169.254.169.254")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://recordings.example.com/a.mp4",
        "file:///etc/passwd",
        "gopher://x/",
        "http:///no-host",
        "not a url",
    ],
)
def test_only_http_urls_with_a_host_are_fetched(url: str) -> None:
    with pytest.raises(SourceForbidden):
        POLICY.check_url(url)


def test_the_allow_list_matches_host_suffixes_on_label_boundaries() -> None:
    policy = SourcePolicy(allowed_host_suffixes=("meetingbaas.com", ".amazonaws.com"))
    policy.check_url("https://meetingbaas.com/x")
    policy.check_url("https://files.meetingbaas.com/x")
    policy.check_url("https://bucket.s3.amazonaws.com/x")
    for url in ("https://evilmeetingbaas.com/x", "https://meetingbaas.com.evil.io/x"):
        with pytest.raises(SourceForbidden):
            policy.check_url(url)


def test_errors_name_the_host_never_the_signature() -> None:
    url = "https://s3.amazonaws.com/rec/video.mp4?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
    assert host_of(url) == "s3.amazonaws.com"
    with pytest.raises(SourceForbidden) as refused:
        SourcePolicy(allowed_host_suffixes=("meetingbaas.com",)).check_url(url)
    assert "deadbeef" not in str(refused.value)
    assert "AKIA" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["not a url", "http:///no-host", "http://[::1/x", "http://[bad]/x", ""]
)
def test_a_url_without_a_host_to_name_is_named_as_a_question_mark(url: str) -> None:
    # What a caller's error says of a URL it could not fetch ("... is at ?, not a public
    # address"): never the URL itself.
    assert host_of(url) == "?"


def caught(raise_it: Callable[[], object]) -> BaseException:
    try:
        raise_it()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def refused_here() -> None:
    POLICY.check_url("http://10.0.0.1/transcript.json")


def wrapped_explicitly() -> None:
    try:
        refused_here()
    except SourceForbidden as refusal:
        raise RuntimeError("fetching the transcript failed") from refusal


def wrapped_while_handling() -> None:
    try:
        refused_here()
    except SourceForbidden:
        raise RuntimeError("fetching the transcript failed")  # noqa: B904 - chained implicitly


def wrapped_twice() -> None:
    try:
        wrapped_while_handling()
    except RuntimeError as failure:
        raise ValueError("the meeting has no transcript") from failure


def refused_at_connect() -> None:
    try:
        raise ForbiddenAddress("10.0.0.1")
    except OSError:
        raise RuntimeError("cannot connect")  # noqa: B904 - chained implicitly


def refused_connection() -> None:
    try:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    except OSError as failure:
        raise RuntimeError("fetching the transcript failed") from failure


@pytest.mark.parametrize(
    ("raise_it", "forbidden"),
    [
        (refused_here, True),
        (wrapped_explicitly, True),
        (wrapped_while_handling, True),
        (wrapped_twice, True),
        (refused_at_connect, True),
        (refused_connection, False),
    ],
)
def test_a_refusal_is_recognised_under_whatever_a_caller_wrapped_it_in(
    raise_it: Callable[[], object], forbidden: bool
) -> None:
    # A refusal is permanent (source_forbidden, never retried); anything else is worth a retry.
    assert is_forbidden_failure(caught(raise_it)) is forbidden


# --- through a real client session -------------------------------------------------------------


@dataclass
class Counting:
    """A minimal HTTP server on loopback that counts the connections it accepts."""

    host: str
    port: int = 0
    connections: int = 0
    redirect_to: str | None = None
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.answer, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if self.redirect_to is not None:
            head = f"HTTP/1.1 302 Found\r\nLocation: {self.redirect_to}\r\nContent-Length: 0"
            body = b""
        else:
            body = b"recording bytes"
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}"
        writer.write(f"{head}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    def url(self, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}/video.mp4?X-Amz-Signature=s3cr3t"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def loopback() -> AsyncIterator[Counting]:
    server = Counting("127.0.0.1")
    await server.start()
    yield server
    await server.stop()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass
class NamesTo(AbstractResolver):
    """A resolver for tests: each name maps to a list of answers, the next one per lookup."""

    answers: dict[str, list[str]]
    lookups: list[str] = field(default_factory=list)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        queue = self.answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            ResolveResult(hostname=host, host=address, port=port, family=kind, proto=0, flags=0)
        ]

    async def close(self) -> None:
        return None


async def fetch(policy: SourcePolicy, url: str, resolver: AbstractResolver | None = None) -> bytes:
    async with (
        policy.session(
            resolver=resolver, connector_options={"force_close": True, "use_dns_cache": False}
        ) as http,
        policy.get(http, url) as response,
    ):
        return await response.read()


async def refused(policy: SourcePolicy, url: str, resolver: AbstractResolver | None = None) -> str:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - which type depends on the stage
        await asyncio.wait_for(fetch(policy, url, resolver), 10)
    assert is_forbidden_failure(caught.value), repr(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"])
async def test_loopback_targets_are_refused_before_any_connection(
    loopback: Counting, host: str
) -> None:
    message = await refused(POLICY, loopback.url(host))
    assert "s3cr3t" not in message
    assert loopback.connections == 0
    # The same server answers the dev stack's policy: the count above is not a dead server's.
    assert await fetch(SourcePolicy(allow_loopback=True), loopback.url()) == b"recording bytes"
    assert loopback.connections == 1


async def test_ipv6_loopback_is_refused_before_any_connection() -> None:
    if not ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback; the [::1] case cannot be shown here")
    server = Counting("::1")
    await server.start()
    try:
        await refused(POLICY, server.url("[::1]"))
        assert server.connections == 0
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "address", ["10.20.30.40", "169.254.169.254", "192.168.0.10", "fd00:ec2::254", "::1"]
)
async def test_a_public_looking_name_for_a_private_address_is_refused(address: str) -> None:
    resolver = NamesTo({"recordings.example.com": [address]})
    message = await refused(POLICY, "http://recordings.example.com/video.mp4", resolver)
    assert resolver.lookups == ["recordings.example.com"]  # refused at connect, after resolving
    assert address in message


@dataclass
class AllAt(AbstractResolver):
    """A resolver for tests: a name answers with all of its addresses at once (A and AAAA)."""

    answers: dict[str, list[str]]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


async def test_a_name_with_private_ipv4_and_ipv6_addresses_is_refused_at_each() -> None:
    # Each address is refused on its own; the connection then fails with one error naming both
    # ("Multiple exceptions: ..."), a permission error (EACCES) like a single refusal.
    resolver = AllAt({"dual.example.com": ["10.0.0.1", "fd00:ec2::254"]})
    with pytest.raises(aiohttp.ClientConnectorError) as raised:
        await asyncio.wait_for(
            fetch(POLICY, "http://dual.example.com/v.mp4?sig=s3cr3t", resolver), 10
        )
    assert is_forbidden_failure(raised.value)
    assert raised.value.errno == errno.EACCES
    message = str(raised.value)
    for address in ("10.0.0.1", "fd00:ec2::254"):
        assert f"[Errno 13] refused by the source URL policy: address {address} is not public" in (
            message
        )
    assert "s3cr3t" not in message


async def test_a_name_mapped_to_loopback_never_reaches_the_server(loopback: Counting) -> None:
    resolver = NamesTo({"cdn.example.com": ["127.0.0.1"]})
    await refused(POLICY, f"http://cdn.example.com:{loopback.port}/video.mp4", resolver)
    assert loopback.connections == 0


class PublicForTests(SourcePolicy):
    """Treats 127.0.0.2 as a public address, so a 'public' source can run on this machine."""

    def address_allowed(self, address: str) -> bool:
        return address == "127.0.0.2" or super().address_allowed(address)


@pytest.fixture
async def public_source() -> AsyncIterator[Counting]:
    server = Counting("127.0.0.2")
    await server.start()
    yield server
    await server.stop()


async def test_a_redirect_to_loopback_is_refused(
    public_source: Counting, loopback: Counting
) -> None:
    public_source.redirect_to = loopback.url()
    policy = PublicForTests()
    await refused(policy, public_source.url())
    assert public_source.connections == 1  # the first hop went out
    assert loopback.connections == 0  # the second never did


async def test_a_name_that_rebinds_to_loopback_is_refused_on_the_next_connection(
    public_source: Counting,
) -> None:
    # Loopback's server listens on the same port, so a connection that got through would land.
    loopback = Counting("127.0.0.1", port=public_source.port)
    await loopback.start()
    try:
        resolver = NamesTo({"rebind.example.com": ["127.0.0.2", "127.0.0.1"]})
        policy = PublicForTests()
        url = f"http://rebind.example.com:{public_source.port}/video.mp4"
        assert await fetch(policy, url, resolver) == b"recording bytes"
        await refused(policy, url, resolver)
        assert resolver.lookups == ["rebind.example.com", "rebind.example.com"]
        assert public_source.connections == 1
        assert loopback.connections == 0
    finally:
        await loopback.stop()


async def test_redirects_are_bounded(public_source: Counting) -> None:
    public_source.redirect_to = public_source.url()  # to itself, forever
    with pytest.raises(aiohttp.TooManyRedirects):
        await fetch(PublicForTests(max_redirects=3), public_source.url())
    assert public_source.connections == 4  # the request and three redirects


async def test_the_allow_list_is_checked_on_every_redirect_hop(
    public_source: Counting,
) -> None:
    resolver = NamesTo({"files.meetingbaas.com": ["127.0.0.2"], "evil.example.com": ["127.0.0.2"]})
    public_source.redirect_to = f"http://evil.example.com:{public_source.port}/x"
    policy = PublicForTests(allowed_host_suffixes=("meetingbaas.com",))
    message = await refused(
        policy, f"http://files.meetingbaas.com:{public_source.port}/video.mp4", resolver
    )
    assert "evil.example.com" in message
    assert public_source.connections == 1
