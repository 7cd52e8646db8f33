"""``OPTIONS`` answers list every method a path serves.

Litestar 2 builds the automatic OPTIONS handler of a path when its first handler is
registered, and that handler keeps listing only the methods known then: ``OPTIONS
/api/v1/links/1`` said ``GET, OPTIONS`` although ``DELETE`` is served too (litestar#4169,
fixed in Litestar 3). This ``before_send`` hook puts the path's methods into ``Allow``.
(405 answers are right already: Litestar's router lists the methods itself.)
"""

from __future__ import annotations

from litestar.routes import HTTPRoute
from litestar.types import Message, Scope


async def allow_every_method(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
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
    if served:
        headers = [(k, v) for k, v in message.get("headers", []) if bytes(k).lower() != b"allow"]
        message["headers"] = [*headers, (b"allow", ", ".join(sorted(served)).encode())]
