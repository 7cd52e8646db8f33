"""The emulator's HTTP app. Shapes follow Discord's documentation:
https://discord.com/developers/docs/topics/oauth2 and .../resources/user."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import re
import struct
import time
import zlib
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Litestar, Request, get, post
from litestar.enums import MediaType, RequestEncodingType
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.params import Body, FromPath, FromQuery, JSONBody
from litestar.response import Redirect, Response

from entrypoints.emulator.bodies import no_such_route, refuse_invalid_json
from entrypoints.emulator.bot_api import bot_routes
from entrypoints.emulator.channel import channel_routes
from entrypoints.emulator.gateway import GatewaySession, gateway_routes
from entrypoints.emulator.guilds import guild_routes
from entrypoints.emulator.limits import route_limits
from entrypoints.emulator.role_connections import role_connection_routes
from entrypoints.emulator.state import EmulatorState, TestUser, same_secret

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
IMAGE_FORMATS = ("png", "jpg", "jpeg", "webp", "gif")
# Discord's OAuth2 scopes (https://discord.com/developers/docs/topics/oauth2#shared-resources-
# oauth2-scopes) that any application may ask a user for with the authorization code grant and
# that change nothing of the flow: a grant with them works as Discord's does. What they open
# beyond /users/@me and the role connection (/users/@me/guilds, …/connections, joining a
# server) is not emulated: those routes are 404 here, in Discord's words.
SCOPES = frozenset(
    {
        "identify", "email", "role_connections.write",  # what the service asks for
        "connections", "guilds", "guilds.join", "guilds.members.read", "gdm.join",
        "applications.builds.read", "applications.entitlements", "applications.store.update",
        "applications.commands.permissions.update",
    }
)  # fmt: skip
# Discord's too, but refused: ``bot``, ``applications.commands`` and ``webhook.incoming`` add
# the application to a server or make a webhook (a choice on the consent screen, a field of
# the token response) that the emulator does not have; ``applications.commands.update`` is
# the client credentials grant's; the rest need Discord's approval (``rpc``, ``voice``, …) or
# are not available to applications (``activities.read``), which the emulated one has not.
NOT_EMULATED_SCOPES = frozenset(
    {
        "bot", "applications.commands", "webhook.incoming", "applications.commands.update",
        "activities.read", "activities.write", "applications.builds.upload",
        "dm_channels.read", "identify.premium", "messages.read", "relationships.read", "rpc",
        "rpc.activities.write", "rpc.notifications.read", "rpc.voice.read", "rpc.voice.write",
        "voice",
    }
)  # fmt: skip
PROMPTS = {"none", "consent"}
# RFC 7636: BASE64URL(SHA256(code_verifier)) without padding is 43 characters of this alphabet.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
RETRY_AFTER = 1.5  # seconds a rate-limit fault asks the caller to wait
SESSION_COOKIE = "discord_emulator_session"  # who is signed in to "Discord" in this browser


_NEVER_FRAMED = {"x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'"}


async def _never_framed(response: Response[Any]) -> Response[Any]:
    """Discord's pages refuse to show in another site's frame, and so do the emulator's (an
    ``after_request`` hook): a page of another site could frame the channel, which runs
    /unlink in one click, or the consent screen, under something else to click."""
    if response.media_type == MediaType.HTML:  # the enum, or its value
        for name, value in _NEVER_FRAMED.items():
            response.headers.setdefault(name, value)
    return response


def _page(title: str, body: str, status: int = 200) -> Response[str]:
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(title)} · Discord emulator</title>
<style>body{{font-family:system-ui,sans-serif;background:#313338;color:#dbdee1;margin:0;
display:flex;justify-content:center}}main{{background:#2b2d31;margin:2rem 1rem;padding:1.5rem;
border-radius:8px;max-width:28rem;width:100%}}h1{{font-size:1.25rem;color:#f2f3f5}}
button{{font:inherit;padding:.6rem 1rem;border:0;border-radius:4px;cursor:pointer}}
.primary{{background:#5865f2;color:#fff}}.secondary{{background:#4e5058;color:#fff}}
label{{display:block;padding:.5rem;border-radius:4px;margin:.25rem 0;background:#383a40}}
.muted{{color:#949ba4;font-size:.9rem}}</style></head>
<body><main>{body}</main></body></html>"""
    return Response(html, media_type=MediaType.HTML, status_code=status)


def _refusal(problem: str) -> Response[str]:
    """An authorize request refused, on the screen or from its form: a page titled alike."""
    return _page("Invalid request", f"<h1>Invalid OAuth2 request</h1><p>{escape(problem)}</p>", 400)


def _error_json(error: str, status: int, description: str = "") -> Response[dict[str, str]]:
    return Response({"error": error, "error_description": description}, status_code=status)


def _client_ok(state: EmulatorState, request: Request[Any, Any, Any], form: dict[str, str]) -> bool:
    """client_secret_basic or client_secret_post, as Discord accepts both."""
    client_id, secret = form.get("client_id"), form.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, _, secret = decoded.partition(":")
    return (
        client_id == state.client_id
        and secret is not None
        and same_secret(secret, state.client_secret)
    )


# What POST /_emulator/faults takes (the endpoints _fault serves, and the bot's callback).
_FAULTS = frozenset(
    {
        "500",
        "timeout",
        "garbage",
        "429",
        "429-global",
        "429-shared",
        "cloudflare",
        "cloudflare-403",
        "blocked",
    }
)
_CALLBACK_FAULTS = frozenset({"reject"})
# The token endpoint's own: "late" grants as asked (a refresh spends the refresh token), then
# holds the answer as "timeout" does: an answer on its way when the caller stops, or lost.
_TOKEN_FAULTS = _FAULTS | {"late"}
_FAULT_ENDPOINTS = frozenset(
    {"token", "users_me", "token_revoke", "member_roles", "role_connection", "callback"}
)


def _rate_limited(endpoint: str, scope: str) -> Response[Any]:
    """Discord's 429 (https://discord.com/developers/docs/topics/rate-limits): JSON
    ``message``, ``retry_after`` (seconds, a float) and ``global``, and ``Retry-After`` (whole
    seconds, rounded up). A route's limit also carries its bucket's headers, "normal route
    rate-limiting headers will also be sent" (``X-RateLimit-Limit``, ``-Remaining`` 0,
    ``-Reset``, ``-Reset-After``, ``-Bucket``) and ``X-RateLimit-Scope: user``; the global
    one ``X-RateLimit-Global: true`` and ``X-RateLimit-Scope: global`` only; a resource's
    (``scope`` "shared", every caller's) the bucket's headers of the caller's own window, not
    used up, with ``X-RateLimit-Scope: shared``, as in Discord's example of one."""
    headers = {"Retry-After": str(math.ceil(RETRY_AFTER))}
    message = "You are being rate limited."
    if scope == "global":
        headers |= {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
    else:
        shared = scope == "shared"
        reset_after = 0.5 if shared else RETRY_AFTER  # the caller's own window, when shared
        headers |= {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4" if shared else "0",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha256(endpoint.encode()).hexdigest()[:32],
            "X-RateLimit-Scope": scope,
        }
        if shared:
            message = "The resource is being rate limited."
    body = {"message": message, "retry_after": RETRY_AFTER, "global": scope == "global"}
    return Response(body, status_code=429, headers=headers)


async def _held(state: EmulatorState, endpoint: str, mode: str) -> None:
    """No answer for fault_delay seconds, or until the fault is lifted ("Discord is back"): a
    call the caller gave up on does not keep the emulator busy after that. (Tests lift it
    from another thread's loop: no asyncio.Event to wait on.)"""
    loop = asyncio.get_running_loop()
    until = loop.time() + state.fault_delay
    while state.faults.get(endpoint) == mode and loop.time() < until:  # noqa: ASYNC110
        await asyncio.sleep(min(0.05, max(0.0, until - loop.time())))


async def _fault(state: EmulatorState, endpoint: str) -> Response[Any] | None:
    state.calls[endpoint] += 1
    mode = state.faults.get(endpoint)
    if mode == "500":
        return Response({"message": "500: Internal Server Error", "code": 0}, status_code=500)
    if mode == "timeout":
        await _held(state, endpoint, mode)
        return Response({"message": "too slow"}, status_code=504)
    if mode == "garbage":
        return Response("<html>not json", media_type=MediaType.HTML, status_code=200)
    if mode in ("429", "429-global", "429-shared"):  # 429-global: every route of the bot waits
        return _rate_limited(endpoint, {"429": "user"}.get(mode, mode.removeprefix("429-")))
    if mode in ("cloudflare", "cloudflare-403"):  # Cloudflare's to an abusive client: HTML
        return Response(
            "<!doctype html><title>Access denied | discord.com used Cloudflare</title>",
            media_type=MediaType.HTML,
            status_code=403 if mode == "cloudflare-403" else 429,
        )
    if mode == "blocked":  # the same block as Discord has answered it since 2023: JSON, 40333
        return Response({"message": "internal network error", "code": 40333}, status_code=403)
    return None


def create_emulator_app(state: EmulatorState) -> Litestar:  # noqa: PLR0915 - one route table
    gateway: list[GatewaySession] = state.gateway_sessions  # connected gateway bots

    def authorize_problem(params: dict[str, str]) -> str | None:
        if params.get("client_id") != state.client_id:
            return "Unknown application (client_id)."
        if params.get("redirect_uri") not in state.redirect_uris:
            return "Invalid OAuth2 redirect_uri: it is not registered for this application."
        if params.get("response_type") != "code":
            return "Only response_type=code is supported."
        scopes = set(params.get("scope", "").split())
        if not scopes:
            return f"Invalid scope: none given. This emulator knows {sorted(SCOPES)}."
        if not_emulated := sorted(scopes & NOT_EMULATED_SCOPES):
            return (
                f"Scope {', '.join(not_emulated)} is Discord's, but not emulated "
                f"(it knows {sorted(SCOPES)})."
            )
        if unknown := sorted(scopes - SCOPES):
            return f"Invalid scope {', '.join(unknown)}. This emulator knows {sorted(SCOPES)}."
        if "code_challenge" in params:
            if params.get("code_challenge_method") != "S256":
                return "Only PKCE S256 is supported."
            if not S256_CHALLENGE.fullmatch(params["code_challenge"]):
                return (
                    "Invalid code_challenge: S256 wants BASE64URL(SHA256(code_verifier)) "
                    "without padding, 43 characters of A-Z a-z 0-9 - _ (RFC 7636)."
                )
        if params.get("prompt", "none") not in PROMPTS:
            return f"Invalid prompt: use one of {sorted(PROMPTS)}."
        return None

    def redirect_with(params: dict[str, str], answer: dict[str, str]) -> Redirect:
        if "state" in params:
            answer["state"] = params["state"]
        redirect_uri = params["redirect_uri"]
        separator = "&" if "?" in redirect_uri else "?"
        return Redirect(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    def code_for(user: TestUser, params: dict[str, str]) -> dict[str, str]:
        scopes = frozenset(params["scope"].split())
        state.authorize(user, scopes)
        code = state.issue_code(
            user, scopes, params["redirect_uri"], params.get("code_challenge") or None
        )
        return {"code": code}

    @get("/oauth2/authorize", sync_to_thread=False)
    def authorize_page(request: Request[Any, Any, Any]) -> Response[str]:
        params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        problem = authorize_problem(params)
        if problem:
            return _refusal(problem)
        signed_in = state.browser_sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        scopes = params["scope"].split()
        returning = signed_in in state.users and state.already_granted(signed_in, frozenset(scopes))
        if returning and params.get("prompt", "none") == "none":
            # Discord skips its screen for someone who already granted these scopes.
            return redirect_with(params, code_for(state.users[str(signed_in)], params))
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in params.items()
        )
        first = signed_in if signed_in in state.users else next(iter(state.users), None)
        choices = (_user_choice(u, checked=u.id == first) for u in state.users.values())
        users = "".join(choices) or (
            '<p class="muted">No test users yet: create one through the emulator.</p>'
        )
        body = (
            "<h1>An application wants to access your Discord account</h1>"
            f'<p class="muted">It asks for: {escape(", ".join(scopes))}</p>'
            f'<form method="post" action="/oauth2/authorize">{hidden}'
            f"<fieldset><legend>Sign in as a test user</legend>{users}</fieldset><p>"
            '<button class="secondary" name="decision" value="deny">Cancel</button> '
            '<button class="primary" name="decision" value="approve">Authorize</button>'
            "</p></form>"
        )
        return _page("Authorize", body)

    @post("/oauth2/authorize", status_code=302, sync_to_thread=False)
    def authorize_decision(data: Form) -> Response[Any]:
        problem = authorize_problem(data)
        if problem:
            return _refusal(problem)
        params = {k: v for k, v in data.items() if k not in ("user_id", "decision")}
        user = state.users.get(data.get("user_id", ""))
        if data.get("decision") != "approve" or user is None:
            return redirect_with(
                params,
                {
                    "error": "access_denied",
                    "error_description": "The resource owner or "
                    "authorization server denied the request",
                },
            )
        answer = redirect_with(params, code_for(user, params))
        # This browser is now signed in to "Discord" as the user who pressed Authorize.
        answer.set_cookie(SESSION_COOKIE, state.sign_in_browser(user), httponly=True, path="/")
        return answer

    @post("/api/v10/oauth2/token", status_code=200)
    async def token(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
        state.user_agents.append(request.headers.get("user-agent", ""))
        if (fault := await _fault(state, "token")) is not None:
            return fault
        # The grant type is judged first: a body that is not a form (JSON) has none for
        # Discord, which answers unsupported_grant_type whoever the client is
        # (discord-api-docs#645, #5249), naming it as Discord does ("Grant type None is not
        # supported"). Discord also has the client credentials grant (a token of the
        # application's owner), which the service never asks for: the emulator has only these.
        grant_type = data.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            return _error_json(
                "unsupported_grant_type", 400, f"Grant type {grant_type} is not supported"
            )
        if not _client_ok(state, request, data):
            return _error_json("invalid_client", 401)
        if grant_type == "refresh_token":
            # Discord rotates refresh tokens: each works once, then only the new one does.
            refreshed = state.refresh(data.get("refresh_token", ""))
            if refreshed is None:
                return _error_json("invalid_grant", 400, 'Invalid "refresh_token" in request.')
            grant = refreshed
        else:  # authorization_code
            redeemed = state.redeem_code(
                data.get("code", ""), data.get("redirect_uri"), data.get("code_verifier")
            )
            if isinstance(redeemed, tuple):
                error, field = redeemed
                return _error_json(error, 400, f'Invalid "{field}" in request.')
            grant = redeemed
        answer = {
            "access_token": state.issue_token(grant),
            "token_type": "Bearer",
            "expires_in": state.access_token_lifetime,
            "refresh_token": state.issue_refresh_token(grant),
            "scope": " ".join(sorted(grant.scopes)),
        }
        if state.faults.get("token") == "late":  # granted: the answer comes late
            await _held(state, "token", "late")
        return Response(answer)

    @get("/api/v10/users/@me")
    async def users_me(request: Request[Any, Any, Any]) -> Response[Any]:
        if (fault := await _fault(state, "users_me")) is not None:
            return fault
        header = request.headers.get("authorization", "")
        grant = state.grant_of(header[7:]) if header.startswith("Bearer ") else None
        # "identify: allows /users/@me without email": a token without it is refused.
        if grant is None or grant.user_id not in state.users or "identify" not in grant.scopes:
            return Response({"message": "401: Unauthorized", "code": 0}, status_code=401)
        return Response(state.users[grant.user_id].public(grant.scopes))

    @post("/api/v10/oauth2/token/revoke", status_code=200)
    async def revoke(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
        if (fault := await _fault(state, "token_revoke")) is not None:
            return fault
        if not _client_ok(state, request, data):
            return _error_json("invalid_client", 401)
        # RFC 7009's ``token`` is required (Discord: a bare invalid_request, discord-api-docs
        # #2259), and a hint, when sent, names one of the two kinds (#6356); a token Discord
        # does not know is revoked already: 200.
        if not data.get("token"):
            return Response({"error": "invalid_request"}, status_code=400)
        if data.get("token_type_hint", "access_token") not in ("access_token", "refresh_token"):
            return Response({"error": "unsupported_token_type"}, status_code=400)
        state.revoke(data["token"])
        return Response({})

    # -- test API -------------------------------------------------------------------------------

    @post("/_emulator/users", status_code=201, sync_to_thread=False)
    def create_user(data: JSONBody[dict[str, Any]]) -> Response[dict[str, Any]]:
        username = data.get("username")
        if not isinstance(username, str) or not username.strip():
            return Response({"error": "username is required"}, status_code=400)
        if (problem := _user_fields_problem(data)) is not None:
            return Response({"error": problem}, status_code=400)
        user = state.add_user(
            username.strip(),
            global_name=data.get("global_name"),
            email=data.get("email"),
            verified=bool(data.get("verified", False)),
            user_id=str(data["id"]) if data.get("id") else None,
        )
        return Response(_user_json(user), status_code=201)

    @get("/_emulator/users", sync_to_thread=False)
    def list_users() -> list[dict[str, Any]]:
        return [_user_json(u) for u in state.users.values()]

    @post("/_emulator/faults", status_code=200, sync_to_thread=False)
    def set_fault(data: JSONBody[dict[str, Any]]) -> Response[dict[str, str]]:
        endpoint, mode = str(data.get("endpoint", "")), data.get("mode")
        modes = {"callback": _CALLBACK_FAULTS, "token": _TOKEN_FAULTS}.get(endpoint, _FAULTS)
        known = mode is None or (isinstance(mode, str) and mode in modes)
        if endpoint not in _FAULT_ENDPOINTS or not known:
            # Unknown, it would have done nothing: a test that meant a fault would pass unseen.
            error = (
                f"endpoint is one of {', '.join(sorted(_FAULT_ENDPOINTS))}; its mode one of "
                f"{', '.join(sorted(modes))} or null"
            )
            return Response({"error": error}, status_code=400)
        if mode is None:
            state.faults.pop(endpoint, None)
        else:
            state.faults[endpoint] = str(mode)
        return Response(dict(state.faults))

    @get("/", sync_to_thread=False)
    def home() -> Redirect:
        return Redirect("/channel")

    @get("/avatars/{user_id:str}/{file_name:str}", sync_to_thread=False)
    def avatar(
        user_id: FromPath[str], file_name: FromPath[str], size: FromQuery[str | None] = None
    ) -> Response[Any]:
        """Discord's CDN for user avatars: sizes are powers of two from 16 to 4096, and the
        hash must be the user's current one (an old hash is gone)."""
        avatar_hash, _, extension = file_name.rpartition(".")
        user = state.users.get(user_id)
        if user is None or not user.avatar or avatar_hash != user.avatar:
            return Response("Not Found", media_type=MediaType.TEXT, status_code=404)
        animated = avatar_hash.startswith("a_")
        if extension not in IMAGE_FORMATS or (extension == "gif" and not animated):
            return Response("Bad Request", media_type=MediaType.TEXT, status_code=400)
        if size is not None and not _cdn_size_ok(size):
            return Response("Invalid size", media_type=MediaType.TEXT, status_code=400)
        return Response(
            _avatar_png(avatar_hash),
            media_type="image/png",
            headers={"cache-control": "public, max-age=86400"},
        )

    return Litestar(
        route_handlers=[
            authorize_page,
            authorize_decision,
            token,
            users_me,
            revoke,
            create_user,
            list_users,
            set_fault,
            home,
            avatar,
            *bot_routes(state, gateway),
            *channel_routes(state, gateway),
            *gateway_routes(state, gateway),
            *guild_routes(state, _fault),
            *role_connection_routes(state, _fault),
        ],
        # Discord's 50109 for a body sent as JSON that is not JSON, before any handler reads it.
        before_request=refuse_invalid_json,
        exception_handlers={
            NotFoundException: no_such_route,
            MethodNotAllowedException: no_such_route,
        },
        after_request=_never_framed,
        middleware=[route_limits],  # Discord's X-RateLimit-* headers on its API's answers
        openapi_config=None,
        logging_config=None,
    )


def _user_choice(user: TestUser, *, checked: bool) -> str:
    email = escape(user.email or "no email")
    if user.email:
        email += " (verified)" if user.verified else " (unverified)"
    return (
        f'<label><input type="radio" name="user_id" value="{escape(user.id)}" required'
        f"{' checked' if checked else ''}> {escape(user.global_name or user.username)} "
        f'<span class="muted">@{escape(user.username)} · {email}</span></label>'
    )


def _user_fields_problem(data: dict[str, Any]) -> str | None:
    """What makes a test user unlike a Discord user: an id that is not a snowflake (a DM's
    channel id is computed from it), a name or email that is not text (pages show them)."""
    user_id = data.get("id")
    if user_id and not (
        (isinstance(user_id, str) and user_id.isascii() and user_id.isdecimal())
        or (type(user_id) is int and user_id > 0)
    ):
        return "id is a snowflake: digits"
    for field in ("global_name", "email"):
        if data.get(field) is not None and not isinstance(data[field], str):
            return f"{field} is a string or null"
    return None


def _user_json(user: TestUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "global_name": user.global_name,
        "email": user.email,
        "verified": user.verified,
    }


def _cdn_size_ok(size: str) -> bool:
    """Discord's image sizes: a power of two from 16 to 4096."""
    if not (size.isascii() and size.isdecimal()):
        return False
    number = int(size)
    return 16 <= number <= 4096 and number & (number - 1) == 0


def _avatar_png(avatar_hash: str) -> bytes:
    """A 16x16 square in a colour of the hash's own (every user looks different)."""
    red, green, blue = bytes.fromhex(avatar_hash.removeprefix("a_").ljust(6, "0")[:6])
    row = b"\x00" + bytes((red, green, blue)) * 16
    raw = zlib.compress(row * 16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
