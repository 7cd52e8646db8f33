"""Whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the app believes: those of the reverse
proxies ``TASKFLOW_LINK_FORWARDED_ALLOW_IPS`` names (uvicorn's middleware reads them, under
any server). The client's address is what the rate limits spend, the audit trail and the
access log name."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, cast

from litestar.middleware.base import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# Where IPv6 writes an IPv4 address (``::ffff:a.b.c.d``).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def trusted_networks(entries: list[str]) -> list[str]:
    """The setting's addresses and networks (checked at start-up), as the networks uvicorn's
    middleware matches. It reads a network only as Python does by default (strictly), and
    anything it cannot read as a name that no address matches: ``10.0.0.5/8``, which the
    setting takes for ``10.0.0.0/8`` (as nginx's ``set_real_ip_from`` does), trusted no proxy
    at all, silently, and every client then spent the proxy's one budget.

    Each IPv4 one also as IPv6 writes it, and the other way round: a server listening on
    ``[::]`` (gunicorn's ``-b [::]:8000``, granian's ``--host ::``) sees a proxy that
    connects over IPv4 at ``::ffff:10.0.0.2``, and a proxy may write the hop before it so,
    which ``10.0.0.2`` did not match: the proxy was not trusted, and again every client spent
    its budget. (Networks, not addresses: a link-local proxy's address comes with its zone,
    ``fe80::1%eth0``, which only a network ignores.)"""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in entries:
        network = ipaddress.ip_network(entry, strict=False)
        networks.append(network)
        if isinstance(network, ipaddress.IPv4Network):
            mapped = int(_MAPPED.network_address) | int(network.network_address)
            prefix = _MAPPED.prefixlen + network.prefixlen
            networks.append(ipaddress.IPv6Network((mapped, prefix)))
        elif network.subnet_of(_MAPPED):
            ipv4 = int(network.network_address) & 0xFFFFFFFF
            prefix = network.prefixlen - _MAPPED.prefixlen
            networks.append(ipaddress.IPv4Network((ipv4, prefix)))
        elif network.supernet_of(_MAPPED):
            networks.append(ipaddress.IPv4Network((0, 0)))
    return list(dict.fromkeys(str(network) for network in networks))


def forwarded_client(entries: list[str]) -> DefineMiddleware:
    """The middleware that takes the client's address (and the scheme) from the headers of a
    request a trusted proxy sent; outermost, so that everything inside sees the client."""
    if entries == ["*"]:
        return DefineMiddleware(_behind_any_proxy, trusted="*")
    networks = trusted_networks(entries)
    if any(ipaddress.ip_network(network).prefixlen == 0 for network in networks):
        # Every IPv4 or every IPv6 address (0.0.0.0/0, ::/0, ::ffff:0:0/96): whoever
        # connects is a proxy, as with "*", and uvicorn's walk, which skips the addresses it
        # trusts and, trusting them all, takes the first, would take the client's own words.
        return DefineMiddleware(_behind_any_proxy, trusted=networks)
    middleware = cast("Callable[..., ASGIApp]", ProxyHeadersMiddleware)  # ASGI 3, typed apart
    return DefineMiddleware(middleware, trusted_hosts=networks)


def _behind_any_proxy(app: ASGIApp, trusted: list[str] | str) -> ASGIApp:
    """``*`` (or every address of a family): every peer is a proxy, and the client is the
    address the proxy that connected wrote, the last in ``X-Forwarded-For``. uvicorn's
    middleware, trusting everyone, takes the first, which behind a proxy that appends the
    peer to what the client sent (nginx's ``$proxy_add_x_forwarded_for``, HAProxy's
    ``option forwardedfor``, AWS's and Google's load balancers) is whatever the client
    wrote: an attacker's review spent a stranger's budget (their address, named) and made
    up a fresh one for each try. Behind several proxies in a row, the last is the one
    before the nearest: name them instead."""
    read = cast("ASGIApp", ProxyHeadersMiddleware(cast("Any", app), trusted_hosts=trusted))

    async def nearest_proxys_word(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            written = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
            if written:
                last = b",".join(written).rpartition(b",")[2].strip()
                headers = [(k, v) for k, v in scope["headers"] if k != b"x-forwarded-for"]
                # In place, as uvicorn's middleware sets the client: Litestar's hooks (the
                # access log) see the scope the app was called with.
                scope["headers"] = [*headers, (b"x-forwarded-for", last)]
        await read(scope, receive, send)

    return nearest_proxys_word
