"""``HEAD`` wherever ``GET`` is served: the same answer without its content (RFC 9110, 9.3.2:
"all general-purpose servers MUST support the methods GET and HEAD").

Litestar 2 serves HEAD only where a handler says so (its static files do): a HEAD of a page,
of the JSON API's lookups, of ``/healthz`` or of the OpenAPI document got 405, and tools that
ask HEAD first (uptime monitors, link checkers, hey-api's watch mode, which asks HEAD of the
schema to see whether it changed) took the service for broken. Such a request runs as the GET
it stands for (the same key check, limits and refusals) and its body is dropped: the headers,
``Content-Length`` included, are the GET's. The access log names it HEAD; the request metrics
count it with the GET it ran as. Where that GET would start a Discord round trip, a HEAD
starts nothing: it gets the page to continue from (see ``cookies.starts_no_round_trip``).
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Litestar, Request
from litestar.exceptions import HTTPException, MethodNotAllowedException
from litestar.types import HTTPScope, Message, Send
from litestar.utils import normalize_path

# Set in the scope of a HEAD request that runs as a GET (for the access log).
HEAD_AS_GET: Final = "taskflow_link.head_as_get"


def asked_as_head(request: Request[Any, Any, Any]) -> bool:
    """Whether this GET's handler runs for a HEAD: then it may change nothing (RFC 9110,
    9.2.1), whatever its GET does."""
    return bool(request.scope.get(HEAD_AS_GET))


def runs_as_get(app: Litestar, scope: HTTPScope) -> bool:
    """Whether this HEAD request's path is served by GET and not by HEAD itself. Routed as
    Litestar routes (the same path, normalized); only HEAD requests pay for it."""
    path = scope["path"]
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    path = normalize_path(path)
    routing = app.asgi_router.handle_routing
    try:
        routing(path=path, method="HEAD")
    except MethodNotAllowedException:
        pass
    except HTTPException:  # no route at all: a 404 as it is
        return False
    else:
        return False  # a handler of its own (the static files)
    try:
        routing(path=path, method="GET")
    except HTTPException:
        return False
    return True


def without_body(send: Send) -> Send:
    """``send`` for a HEAD answered as a GET: the start as it is, every body part empty."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body":
            await send(
                {
                    "type": "http.response.body",
                    "body": b"",
                    "more_body": message.get("more_body", False),
                }
            )
            return
        await send(message)

    return sending


def with_head(allowed: str) -> str:
    """An ``Allow`` value with HEAD beside GET (``GET, DELETE, OPTIONS`` →
    ``GET, DELETE, OPTIONS, HEAD``); as it is without GET or with HEAD already."""
    methods = [m.strip() for m in allowed.split(",") if m.strip()]
    if "GET" not in methods or "HEAD" in methods:
        return allowed
    return ", ".join([*methods, "HEAD"])
