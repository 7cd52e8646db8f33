"""Security headers, the request id and the access log, as one ``before_send`` hook: it sees
every response, including 404s and errors raised before any route matched. One hook, not
one each: Litestar awaits every hook for every message of every answer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from litestar.types import Message, Scope

from entrypoints.logs import one_line
from entrypoints.web.allow import allow_every_method
from entrypoints.web.errors import redact_path
from entrypoints.web.head import HEAD_AS_GET
from entrypoints.web.request_id import SCOPE_KEY, with_request_id

access_log = logging.getLogger("taskflow_link.access")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what a Content-Security-Policy names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(
    discord_authorize_origin: str, discord_cdn_origin: str, *, https: bool
) -> list[tuple[bytes, bytes]]:
    csp = (
        f"default-src 'none'; style-src 'self'; img-src 'self' {discord_cdn_origin}; "
        # The link/login forms answer with a redirect to Discord's consent page.
        f"form-action 'self' {discord_authorize_origin}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    headers = [
        (b"content-security-policy", csp.encode()),
        (b"referrer-policy", b"no-referrer"),  # ticket URLs never leak through Referer
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    ]
    return _with_hsts(headers, https=https)


def _with_hsts(headers: list[tuple[bytes, bytes]], *, https: bool) -> list[tuple[bytes, bytes]]:
    """On https, browsers are told to use nothing else for a year."""
    return [*headers, (b"strict-transport-security", b"max-age=31536000")] if https else headers


def api_security_headers(*, https: bool) -> list[tuple[bytes, bytes]]:
    """The JSON API's answers are data, never a document: no policy for pages, forms or
    windows, only never stored, never sniffed into something else, never framed (what OWASP's
    REST cheat sheet asks of an API). Every header costs the server on every lookup."""
    headers = [
        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    return _with_hsts(headers, https=https)


def before_send_hook(
    pages: list[tuple[bytes, bytes]], api: list[tuple[bytes, bytes]]
) -> Callable[[Message, Scope], Awaitable[None]]:
    """The security headers (``api``'s under ``/api/``, ``pages``' everywhere else, unless the
    answer set its own), every method of the path in ``Allow`` (see ``allow``), the request
    id (see ``request_id``) and the access log line, for every answer."""

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        path = str(scope.get("path", ""))
        headers = api if path.startswith("/api/") else pages
        present = {bytes(k).lower() for k, _ in message.get("headers", [])}
        extra = [(k, v) for k, v in headers if k not in present]
        message["headers"] = [*message.get("headers", []), *extra]
        allow_every_method(message, scope)
        current = scope.get(SCOPE_KEY)
        if isinstance(current, str):
            with_request_id(message, current)
        # Client, method, redacted path and status only: never query strings (OAuth codes,
        # states). The client is the peer's address, or behind a proxy that
        # TASKFLOW_LINK_FORWARDED_ALLOW_IPS names, the one it forwards (set in the scope).
        client = scope.get("client")
        fields = {
            "client": client[0] if client else "-",
            "method": "HEAD" if HEAD_AS_GET in scope else scope.get("method", "-"),
            # Decoded: a %0A would start a forged line of a plain-text log.
            "path": one_line(redact_path(path)),
            "status": message["status"],
        }
        # The same fields again, separately, for JSON logs.
        access_log.info("%s %s %s %s", *fields.values(), extra=fields)

    return before_send
