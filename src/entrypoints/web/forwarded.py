"""Whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the app believes: those of the reverse
proxies ``TASKFLOW_LINK_FORWARDED_ALLOW_IPS`` names (uvicorn's middleware reads them, under
any server). The client's address is what the rate limits spend, the audit trail and the
access log name."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import cast

from litestar.middleware.base import DefineMiddleware
from litestar.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


def trusted_networks(entries: list[str]) -> list[str]:
    """The setting's addresses and networks (checked at start-up), as the networks uvicorn's
    middleware matches. It reads a network only as Python does by default (strictly), and
    anything it cannot read as a name that no address matches: ``10.0.0.5/8``, which the
    setting takes for ``10.0.0.0/8`` (as nginx's ``set_real_ip_from`` does), trusted no proxy
    at all, silently, and every client then spent the proxy's one budget."""
    return [str(ipaddress.ip_network(entry, strict=False)) for entry in entries]


def forwarded_client(entries: list[str]) -> DefineMiddleware:
    """The middleware that takes the client's address (and the scheme) from the headers of a
    request a trusted proxy sent; outermost, so that everything inside sees the client."""
    trusted: list[str] | str = "*" if entries == ["*"] else trusted_networks(entries)
    middleware = cast("Callable[..., ASGIApp]", ProxyHeadersMiddleware)  # ASGI 3, typed apart
    return DefineMiddleware(middleware, trusted_hosts=trusted)
