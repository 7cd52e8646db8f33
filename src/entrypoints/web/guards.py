"""Refusals at the door, before any route: malformed requests get a plain 4xx, never a 500.

- A ``Host`` header that is not a host name (or address) with an optional port: everything
  that builds a URL from the request would otherwise fail (``Host: x:abc`` gave 500 on every
  route, ``/healthz`` included). Two of them, or none in HTTP/1.1, likewise.
- Control characters (NUL, escapes...) in a query string or a submitted form: no field of
  ours takes them, and a NUL reaching Postgres looked like a database outage.
- A form that is not UTF-8 (another charset declared, a byte that is not UTF-8 once
  decoded): Litestar read it as UTF-8 all the same, each such byte a U+FFFD.
- A form with more fields than any of ours, before anything parses it: Litestar's form (its
  ``FormMultiDict``, on multidict 6) takes time growing with the square of the fields under
  one name to close, so 64 KB of ``a=b&a=b&…`` cost a third of a second of the event loop,
  and a megabyte a minute.
"""

from __future__ import annotations

import codecs
import errno
import functools
import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from litestar import Request
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import HTTPException
from litestar.file_system import BaseLocalFileSystem
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import (
    ASGIApp,
    FileInfo,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    PathType,
    Receive,
    Scope,
    Send,
)

from domain import errors
from entrypoints.web.metrics import RequestMetrics

# A DNS name or IPv4 address, or a bracketed IPv6 address; then an optional port 1-65535.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
_BAD_HOST = "the Host header is not a valid host name."
# Each kind of route refuses in its own shape: the JSON API's documented error, the
# interactions endpoint's (as its other refusals), a sentence for people elsewhere.
_BAD_HOST_ANSWERS: tuple[tuple[str, bytes, bytes], ...] = (
    (
        "/api/",
        b"application/json",
        json.dumps(
            {"error": {"code": "http_400", "message": f"Bad Request: {_BAD_HOST}"}}
        ).encode(),
    ),
    ("/interactions", b"application/json", json.dumps({"detail": _BAD_HOST}).encode()),
)


def _bad_host_answer(path: str) -> tuple[bytes, bytes]:
    for prefix, content_type, body in _BAD_HOST_ANSWERS:
        if path.startswith(prefix):
            return content_type, body
    return b"text/plain; charset=utf-8", f"Bad Request: {_BAD_HOST}".encode()


def valid_host(value: str) -> bool:
    # The length first: the cache keeps only values short enough to be valid.
    return len(value) <= 255 and _valid_host(value)


@functools.lru_cache(maxsize=256)  # a server sees a handful of Host values, on every request
def _valid_host(value: str) -> bool:
    found = _HOST.fullmatch(value)
    return found is not None and (found["port"] is None or 0 < int(found["port"]) < 65536)


def host_guard(app: ASGIApp) -> ASGIApp:
    """ASGI middleware, outside the app: a bad ``Host`` never reaches Litestar."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and _bad_host(scope):
            await _refuse_host(scope, send)
            return
        await app(scope, receive, send)

    return guarded


def front_door(metrics: PrometheusConfig | None) -> Callable[[ASGIApp], ASGIApp]:
    """The app's own middleware as one layer: ``host_guard``, then the request metrics (when
    on; see ``RequestMetrics``), which count what it lets through. One layer, not two: each
    costs again at every point where a request waits (a lookup waits three times), and
    Litestar's base class of the metrics' middleware adds one more, which checks exclusions
    that these metrics do not have."""
    if metrics is None:
        return host_guard

    def door(app: ASGIApp) -> ASGIApp:
        counted = RequestMetrics(app, metrics)
        # Litestar's own code for options that RequestMetrics does not handle.
        counting = counted.counting if not counted.stock else counted

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await counted(scope, receive, send)  # (the base class decides)
            elif _bad_host(scope):
                await _refuse_host(scope, send)
            else:
                await counting(scope, receive, send)

        return guarded

    return door


def _bad_host(scope: Scope) -> bool:
    """Not exactly one valid ``Host`` (none at all is fine in HTTP/1.0): RFC 9112 answers 400
    to a second one, or to none in HTTP/1.1. h11 refused both before the app saw them;
    httptools (and granian) pass them on, and the check, the URLs Litestar builds and a
    proxy in front could each have read another of two."""
    hosts = [v for k, v in scope["headers"] if k == b"host"]
    if len(hosts) == 1:
        return not valid_host(hosts[0].decode("latin-1"))
    return bool(hosts) or scope.get("http_version") == "1.1"


async def _refuse_host(scope: Scope, send: Send) -> None:
    content_type, answer = _bad_host_answer(scope.get("path", ""))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 400,
        "headers": [(b"content-type", content_type)],
    }
    await send(start)
    body: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": answer,
        "more_body": False,
    }
    await send(body)


# Our forms have a handful of fields (the CSRF token included): room to spare, and far from
# the sizes that are slow.
MAX_FORM_FIELDS = 64


def few_form_fields(app: ASGIApp) -> ASGIApp:
    """Router middleware for the browser's routes: a POST's body is a URL-encoded form (415
    otherwise) with at most ``MAX_FORM_FIELDS`` fields (400 otherwise), checked before
    anything parses it. The pages' handlers read their body as a form whatever its declared
    type, and CSRF takes its token from a header too: a body sent as ``text/plain`` went past
    this limit and the control-character check. Its bytes are read once, and kept for
    whoever reads them next, as Litestar keeps them; the route's size limit applies."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "POST":
            request: Request[Any, Any, Any] = Request(scope, receive)
            body = await request.body()
            if request.content_type[0] != RequestEncodingType.URL_ENCODED and body:
                raise HTTPException(
                    status_code=415,
                    detail="Send this form as application/x-www-form-urlencoded, as browsers do.",
                )
            if body.count(b"&") >= MAX_FORM_FIELDS:
                raise errors.InvalidInput(
                    f"The form has too many fields (at most {MAX_FORM_FIELDS})."
                )
            if body:
                _refuse_other_than_utf_8(request.content_type[1].get("charset"), body)
        await app(scope, receive, send)

    return limited


def _is_utf_8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


def _refuse_other_than_utf_8(charset: str | None, body: bytes) -> None:
    """A form is UTF-8, as our pages (``<meta charset="utf-8">``) have browsers send it: they
    name no charset, and percent-encode every byte past ASCII. Litestar reads a form as UTF-8
    whatever it says, each byte that is not UTF-8 as U+FFFD (the passwords ``caf%E9`` and
    ``caf%E8`` were the same), and a byte left unencoded as Latin-1: refused (415 for a form
    that says it is in another charset, 400 for one that is not UTF-8), never guessed at."""
    if charset is not None and not _is_utf_8(charset):
        raise HTTPException(
            status_code=415,
            detail="Send this form in UTF-8 (no charset, or charset=utf-8), as browsers do.",
        )
    if not body.isascii() or not _decodes(unquote_to_bytes(body)):
        raise errors.InvalidInput(
            "The form is not in UTF-8 (each byte past ASCII percent-encoded), as browsers "
            "send it: reload the page and try again."
        )


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


async def refuse_control_characters(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook for the pages (JSON APIs and interactions validate their own
    bodies): 400 for a control character in the query or in a submitted form."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    values = [v for _, v in parse_qsl(query, keep_blank_values=True)]
    if request.method == "POST" and request.content_type[0] == RequestEncodingType.URL_ENCODED:
        form = await request.form()  # parsed once: the handler gets it from the cache
        values.extend(v for v in form.values() if isinstance(v, str))
    if any(_has_control_characters(v) for v in values):
        raise errors.InvalidInput(
            "The request contains characters that are not allowed (control characters)."
        )


class AsciiCsrfMiddleware(CSRFMiddleware):
    """Litestar's CSRF check, for which a token with a character past ASCII (in the form's
    field, the header or the cookie) is simply not valid: Litestar compares tokens with
    ``secrets.compare_digest``, which raises TypeError for such a str, and every page's form
    answered 500 (a traceback in the log) to a token, or a CSRF cookie, with one past its
    64th character. The tokens it issues are hexadecimal."""

    def _decode_csrf_token(self, token: str) -> str | None:
        if not token.isascii():
            return None
        return super()._decode_csrf_token(token)


class StaticFiles(BaseLocalFileSystem):
    """The pages' files under ``/static/``. A name the system cannot look up (a NUL byte, a
    part longer than 255 bytes, a file taken for a directory) names no file: Litestar then
    answers 404, where it answered 500 (and logged a traceback for the NUL)."""

    async def info(self, path: PathType, **kwargs: Any) -> FileInfo:
        try:
            return await super().info(path, **kwargs)
        except (ValueError, OSError) as exc:
            raise FileNotFoundError(errno.ENOENT, "no such static file") from exc
