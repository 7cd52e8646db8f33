"""``POST /interactions``: Discord's HTTP interactions, verified here and answered by the bot."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Request, post
from litestar.openapi import ResponseSpec
from litestar.response import Response
from msgspec import Struct

from entrypoints.bot.signature_headers import malformed_signature

if TYPE_CHECKING:
    from entrypoints.bot.runtime import HttpInteractions


log = logging.getLogger("taskflow_link.web")
# Discord's interaction payloads are a few KB; resolved data of a big command stays far below.
INTERACTION_BODY_LIMIT = 1024 * 1024
NOT_ENABLED = (
    "HTTP interactions are not enabled on this server: set TASKFLOW_LINK_DISCORD_PUBLIC_KEY "
    "and TASKFLOW_LINK_DISCORD_BOT_TOKEN."
)


class InteractionRefusal(Struct):
    """Why an interaction request was refused (Discord reads only the status)."""

    detail: str


def _refusal(why: str) -> ResponseSpec:
    return ResponseSpec(data_container=InteractionRefusal, description=why, generate_examples=False)


@post(
    "/interactions",
    status_code=200,
    request_max_body_size=INTERACTION_BODY_LIMIT,
    tags=["discord"],
    summary="Discord HTTP interactions",
    description="Discord's Interactions Endpoint URL. Requests must be signed with the "
    "application's Ed25519 key (X-Signature-Ed25519, X-Signature-Timestamp); others get 401.",
    response_description="The interaction response (a PONG, or the command's reply)",
    responses={
        400: ResponseSpec(
            data_container=str,
            media_type=MediaType.TEXT,
            description="Signed, but not an interaction (not JSON, no type)",
            generate_examples=False,
        ),
        401: _refusal(
            "A missing or invalid signature, a stale timestamp, a replay of a request "
            "already received, or an interaction that came after Discord stopped waiting for "
            "its answer (not run)"
        ),
        404: _refusal("HTTP interactions are not enabled on this server"),
        413: _refusal("The body is larger than 1 MB"),
    },
)
async def interactions(request: Request[Any, Any, Any]) -> Response[Any]:
    endpoint: HttpInteractions | None = request.app.state.get("interactions")
    if endpoint is None:
        return Response({"detail": NOT_ENABLED}, status_code=404)
    # Discord's 3 seconds run from here: the replay check (a Redis call) comes out of them.
    arrived = asyncio.get_running_loop().time()
    signature = request.headers.get("x-signature-ed25519")
    timestamp = request.headers.get("x-signature-timestamp")
    # Refused before its body (up to 1 MB) is read when its head shows it unsigned. The body
    # left unread is drained by the server's protocol (``entrypoints.http11``: the parser
    # reads past it to the next request, dropping it) as for any answer given before a body;
    # one its client waits to send (``Expect: 100-continue``) closes the connection instead.
    if (malformed := malformed_signature(signature, timestamp)) is not None:
        log.warning("refused an interaction request: %s", malformed)
        return Response({"detail": malformed}, status_code=401)
    body = await request.body()
    checked = await endpoint.verify(body, signature, timestamp)
    if isinstance(checked, str):
        log.warning("refused an interaction request: %s", checked)
        return Response({"detail": checked}, status_code=401)
    answer = await endpoint.dispatch(checked, arrived=arrived)
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type)
