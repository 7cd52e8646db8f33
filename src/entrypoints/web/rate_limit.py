"""Litestar's rate limit (its configuration, exclusions, identifiers and ``RateLimit-*``
headers), counted by a fixed-window counter (``adapters.shared_state``) in one atomic step.

Litestar's own middleware reads a key's history from its store and writes it back under one
lock per route and process: with Redis behind the store, every request to a route waited for
every other request's two round trips, whatever its key, so one client's flood (its 429s
too) queued every API key's requests behind it, and the lock did not even make the count
exact across instances. Here a hit is one call that nothing else waits for: one round trip
to Redis (``SET NX EX``, ``INCR``, ``TTL`` in a ``MULTI``), or no await at all in memory.
A refused request counts too, which changes nothing: the window ends when it ends."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, Final

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import DURATION_VALUES, RateLimitConfig, RateLimitMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# A key's hits in its window, this one included, and the whole seconds until the window ends.
Hit = Callable[[str, int], Awaitable[tuple[int, int]]]

# An IPv6 client's budget is its /64 network's: the least a home or a server is given, and
# each of its 2^64 addresses its own budget would make a limit by address no limit at all.
IPV6_NETWORK_BITS: Final = 64
# And its /48's, which it shares with the other /64s there, at ``SITE_BUDGET_FACTOR`` times the
# limit: a /48 is what a site is given, and a tunnel broker gives one away for free, 65,536
# /64s, each a budget of its own. Whoever holds one can spend its whole budget and so block
# the /48's other networks (as one client behind an IPv4 NAT blocks the others).
IPV6_SITE_BITS: Final = 48
SITE_BUDGET_FACTOR: Final = 64


def client_budget(request: Request[Any, Any, Any]) -> str:
    """The budget a client spends by address: an IPv4 address's own; an IPv6 address's /64
    network's, unless it carries an IPv4 client (mapped ``::ffff:a.b.c.d``, NAT64's
    ``64:ff9b::a.b.c.d``, 6to4, Teredo: that client's own, or every IPv4 client behind one
    translator would share one budget) or is this machine's (its own). The
    audit trail and the access log still name the whole address."""
    host = request.client.host if request.client else None
    if not host:
        return "client:-"
    address = _address_of(host)
    if address is None:  # not an address (a Unix socket's peer, a test client): as it is
        return f"client:{host}"
    if isinstance(address, ipaddress.IPv6Address):
        carried = _ipv4_inside(address)
        if carried is not None:
            return f"client:{carried}"
        if address.is_loopback:
            return f"client:{address}"
        host_bits = 128 - IPV6_NETWORK_BITS
        network = ipaddress.IPv6Address(int(address) >> host_bits << host_bits)
        return f"client:{network}/{IPV6_NETWORK_BITS}"
    return f"client:{address}"


def site_budget(budget: str) -> str | None:
    """The coarser budget a client's ``budget`` (``client_budget``) also spends: an IPv6
    /64 network's /48 (see ``IPV6_SITE_BITS``); ``None`` for any other (an IPv4 address, this
    machine's, an API key's)."""
    suffix = f"/{IPV6_NETWORK_BITS}"
    if not (budget.startswith("client:") and budget.endswith(suffix)):
        return None
    try:
        network = ipaddress.IPv6Address(budget.removeprefix("client:").removesuffix(suffix))
    except ValueError:
        return None
    host_bits = 128 - IPV6_SITE_BITS
    site = ipaddress.IPv6Address(int(network) >> host_bits << host_bits)
    return f"client:{site}/{IPV6_SITE_BITS}"


# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 client's address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _ipv4_inside(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client)
    return None


def _address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, also as some proxies write it in X-Forwarded-For: with a
    port (``203.0.113.7:51234``, ``[2001:db8::1]:443``) or in brackets; otherwise each
    port would be a budget of its own."""
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:  # an IPv4 address and a port (IPv6 has two colons or more)
        host = host.partition(":")[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class CountedRateLimitMiddleware(RateLimitMiddleware):
    def __init__(self, app: ASGIApp, config: RateLimitConfig, hit: Hit) -> None:
        super().__init__(app, config)
        self._hit = hit
        self._seconds = DURATION_VALUES[self.unit]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope)
        if await self.should_check_request(request=request):
            hits, reset_in = await self._hit(self.cache_key_from_request(request), self._seconds)
            left = self.max_requests - hits
            site = site_budget(self.get_identifier_for_request(request))
            # Only what its own budget let through spends its /48's: a /64 past its own
            # limit spends no more of its neighbours'.
            if left >= 0 and site is not None:
                site_hits, site_reset = await self._hit(
                    f"{type(self).__name__}::{site}", self._seconds
                )
                site_left = SITE_BUDGET_FACTOR * self.max_requests - site_hits
                if site_left < left:
                    left, reset_in = site_left, site_reset
            headers = self._headers(left, reset_in) if self.config.set_rate_limit_headers else {}
            if left < 0:
                raise TooManyRequestsException(headers=headers or None)
            if headers:
                send = _sending_headers(send, headers)
        await self.app(scope, receive, send)

    def _headers(self, left: int, reset_in: int) -> dict[str, str]:
        """The IETF draft's headers, as Litestar writes them (``left``: what is left of the
        budget after this request, of whichever is spent the most: the client's own, or its
        /48's)."""
        config = self.config
        return {
            config.rate_limit_policy_header_key: f"{self.max_requests}; w={self._seconds}",
            config.rate_limit_limit_header_key: str(self.max_requests),
            config.rate_limit_remaining_header_key: str(max(0, left)),
            config.rate_limit_reset_header_key: str(reset_in),
        }


def _sending_headers(send: Send, headers: dict[str, str]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            response_headers = MutableScopeHeaders(message)
            for name, value in headers.items():
                response_headers[name] = value
        await send(message)

    return sending


def counted_rate_limit(config: RateLimitConfig, hit: Hit) -> DefineMiddleware:
    """``hit``: a function (Litestar deep-copies a router's middleware arguments; a function
    is kept as it is, a bound method would have its counter copied)."""
    return DefineMiddleware(CountedRateLimitMiddleware, config=config, hit=hit)
