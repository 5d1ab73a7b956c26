"""Which URLs from outside (provider recordings, transcripts, results) may be fetched.

http(s) only, at most a few redirects, an optional allow-list of host suffixes checked on every
hop, and no connection to an address that is not public: private, loopback, link-local (cloud
metadata at 169.254.169.254 among them), shared, multicast, reserved or unspecified, IPv4 and
IPv6, IPv4-mapped included. Addresses are checked in the socket factory, on the exact address
each connection is about to use, so neither a redirect nor a name that resolves differently the
second time (DNS rebinding) gets around it. The dev stack opts into loopback (its simulator) by a
setting that production never sets.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

REASON = "source_forbidden"
MAX_REDIRECTS = 3
_MARK = "refused by the source URL policy"


class SourceForbidden(Exception):
    """A URL the policy refuses before any connection. The message names the host, never the
    path or query (provider URLs carry signatures)."""

    reason = REASON


class ForbiddenAddress(OSError):
    """Raised by the socket factory: aiohttp wraps it in a ClientConnectorError."""

    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, f"{_MARK}: address {address} is not public")


def is_forbidden_failure(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is the policy refusing a URL or an address."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SourceForbidden | ForbiddenAddress) or _MARK in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def host_of(url: str | URL) -> str:
    """What may be said of a URL in errors and logs: its host, never path or query."""
    try:
        return URL(url).host or "?"
    except (TypeError, ValueError):
        return "?"


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return _public(embedded)
        if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64: the IPv4 sits in the low bits
            return _public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class SourcePolicy:
    allow_loopback: bool = False
    allowed_host_suffixes: tuple[str, ...] = ()
    max_redirects: int = MAX_REDIRECTS

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if self.allow_loopback and (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            return True
        return _public(ip)

    def check_url(self, url: str | URL) -> URL:
        """Refuse what is wrong before any connection: scheme, host, allow-list, literal address."""
        try:
            parsed = URL(url)
        except (TypeError, ValueError) as exc:
            raise SourceForbidden("the source URL does not parse") from exc
        host = (parsed.host or "").rstrip(".").lower()
        if parsed.scheme not in ("http", "https") or not host:
            raise SourceForbidden(f"only http(s) URLs with a host are fetched (host {host!r})")
        if self.allowed_host_suffixes and not any(
            host == suffix.lstrip(".") or host.endswith("." + suffix.lstrip("."))
            for suffix in self.allowed_host_suffixes
        ):
            raise SourceForbidden(f"host {host} is not in the allowed source hosts")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return parsed
        if not self.address_allowed(str(literal)):
            raise SourceForbidden(f"host {host} is not a public address")
        return parsed

    def socket_factory(self) -> Callable[[Any], socket.socket]:
        """aiohttp's socket factory: refuses any address that is not public, then makes the
        socket as aiohttp would."""

        def make(addr_info: Any) -> socket.socket:
            family, type_, proto, _, sockaddr = addr_info
            if not self.address_allowed(sockaddr[0]):
                raise ForbiddenAddress(sockaddr[0])
            return socket.socket(family=family, type=type_, proto=proto)

        return make

    async def _every_hop(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        self.check_url(request.url)  # the first request and every redirect hop
        return await handler(request)

    def session(
        self,
        *,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        connector_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> aiohttp.ClientSession:
        """A client session that fetches only what this policy allows. Use `get` on it, which
        also bounds the redirects."""
        connector = aiohttp.TCPConnector(
            socket_factory=self.socket_factory(), resolver=resolver, **(connector_options or {})
        )
        return aiohttp.ClientSession(connector=connector, middlewares=(self._every_hop,), **options)

    def get(
        self, session: aiohttp.ClientSession, url: str, **options: Any
    ) -> aiohttp.client._RequestContextManager:
        """`session.get(url)` with the URL checked first and at most `max_redirects` hops."""
        self.check_url(url)
        return get(session, url, max_redirects=self.max_redirects, **options)


def get(
    session: aiohttp.ClientSession, url: str, *, max_redirects: int = MAX_REDIRECTS, **options: Any
) -> aiohttp.client._RequestContextManager:
    """`session.get` on a policy's session with at most `max_redirects` redirects followed (the
    session's middleware checks every hop's URL, its socket factory every address)."""
    # aiohttp refuses the redirect that brings its count to max_redirects: one more follows N.
    return session.get(url, max_redirects=max_redirects + 1, **options)
