"""How Discord reads a request's body.

A body whose ``Content-Type`` says JSON must be JSON: anything else (an empty body too, even
on a ``DELETE`` that takes none) is ``400 {"code": 50109, "message": "The request body
contains invalid JSON."}`` (https://discord.com/developers/docs/topics/opcodes-and-status-codes,
and what clients that sent an empty JSON body met in 2025), whatever the endpoint. A body sent
as something else is not read as JSON: a webhook message posted as a form field holding JSON
is "Cannot send an empty message". (Form bodies, which Discord also reads, are not emulated
on the JSON endpoints: such a body counts as none.)

Only Discord's API (``/api/...``) answers so; the emulator's own test API answers as Litestar
does. The same goes for a route Discord does not have, or a method it does not take there
(``no_such_route``).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.enums import MediaType
from litestar.exceptions import (
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
)
from litestar.exceptions.responses import create_exception_response
from litestar.response import Response
from litestar.serialization import decode_json

INVALID_JSON = {"code": 50109, "message": "The request body contains invalid JSON."}
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _sent_as_json(request: Request[Any, Any, Any]) -> bool:
    return request.content_type[0] == MediaType.JSON


async def refuse_invalid_json(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Discord's 50109 for a body sent as JSON that is not JSON (the app's ``before_request``:
    it runs before a handler reads the body, so none answers in Litestar's words)."""
    if not request.url.path.startswith("/api/") or request.method not in _WITH_BODY:
        return None
    if not _sent_as_json(request):
        return None
    try:
        decode_json(await request.body())
    except SerializationException:
        return Response(INVALID_JSON, status_code=400)
    return None


async def json_body(request: Request[Any, Any, Any]) -> Any:
    """The body as Discord reads it: the JSON sent with a JSON ``Content-Type`` (valid, once
    ``refuse_invalid_json`` let the request through), else nothing (``None``), which each
    endpoint judges as a missing body."""
    if not _sent_as_json(request):
        return None
    return await request.json()


def no_such_route(
    request: Request[Any, Any, Any], exc: NotFoundException | MethodNotAllowedException
) -> Response[Any]:
    """A path Discord's API does not serve (404) or a method its route does not take (405),
    in Discord's words, as its other errors: ``{"message": "404: Not Found", "code": 0}``.
    Elsewhere (the test API, the pages) Litestar's own answer."""
    if not request.url.path.startswith("/api/"):
        return create_exception_response(request, exc)
    status = exc.status_code
    message = "404: Not Found" if status == 404 else "405: Method Not Allowed"
    return Response({"message": message, "code": 0}, status_code=status, headers=exc.headers)
