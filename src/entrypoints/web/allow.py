"""``OPTIONS`` and 405 answers list every method a path serves, HEAD wherever GET is (see
``head``).

Litestar 2 builds the automatic OPTIONS handler of a path when its first handler is
registered, and that handler keeps listing only the methods known then: ``OPTIONS
/api/v1/links/1`` said ``GET, OPTIONS`` although ``DELETE`` is served too (litestar#4169,
fixed in Litestar 3). The app's ``before_send`` hook puts the path's methods into ``Allow``
(see ``security``).
(405 answers list the methods already: Litestar's router names them itself, all but HEAD.)
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import HTTPResponseStartEvent, Scope

from entrypoints.web.head import with_head

METHOD_NOT_ALLOWED = 405


def allow_every_method(message: HTTPResponseStartEvent, scope: Scope) -> None:
    if message["status"] == METHOD_NOT_ALLOWED:
        answer = MutableScopeHeaders(message)
        allowed = answer.get("allow")
        if allowed is not None:
            answer["allow"] = with_head(allowed)
        return
    if scope.get("method") != "OPTIONS":
        return
    template = scope.get("path_template")
    app = scope.get("litestar_app")
    if message["status"] != 204 or not isinstance(template, str) or app is None:
        return
    served = {
        method
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path_format == template
        for method in route.methods
    }
    if "GET" in served:
        served.add("HEAD")
    if served:
        headers = [(k, v) for k, v in message.get("headers", []) if bytes(k).lower() != b"allow"]
        message["headers"] = [*headers, (b"allow", ", ".join(sorted(served)).encode())]
