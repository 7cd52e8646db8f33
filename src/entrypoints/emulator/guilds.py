"""Servers (guilds) with members and roles: what the bot may do to a member's roles, answered
as Discord answers (https://discord.com/developers/docs/resources/guild#add-guild-member-role),
and a test API to set up and inspect a server.

``PUT`` / ``DELETE /api/v10/guilds/{guild}/members/{user}/roles/{role}``, with the bot token:
204; 401 without it; 400 (50035, "is not snowflake") for an id that is not one, or for an
``X-Audit-Log-Reason`` over 512 characters (decoded); 404 with 10004
Unknown Guild, 10007 Unknown Member or 10011 Unknown Role; 403 with 50001 Missing Access when
the bot is no longer in the server, with 50013 Missing Permissions when the bot's role lacks
Manage Roles or is not above the role. The ``X-Audit-Log-Reason`` is recorded with each call.

Every answer of the bot's carries the route's rate limit headers, the server being the route's
top-level resource (https://discord.com/developers/docs/topics/rate-limits): ``X-RateLimit-
Limit``, ``-Remaining``, ``-Reset`` (epoch seconds), ``-Reset-After`` (seconds) and
``-Bucket``; a call past the limit is a 429 (``retry_after``, ``X-RateLimit-Scope: user``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from litestar import HttpMethod, Request, delete, get, patch, post, put, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from entrypoints.emulator.limits import Window, bucket_of, limit_asked, over, rate_limited
from entrypoints.emulator.state import EmulatorState, Guild, RoleRequest, same_secret

Fault = Callable[[EmulatorState, str], Awaitable[Response[Any] | None]]
MAX_SNOWFLAKE = 2**64 - 1
# "The X-Audit-Log-Reason header supports 1-512 URL-encoded UTF-8 characters"; a longer one
# is refused as the reason field (discord/discord-api-docs#811: "an error is thrown").
MAX_REASON = 512


def _error(message: str, code: int, status: int) -> Response[Any]:
    return Response({"message": message, "code": code}, status_code=status)


def not_snowflakes(ids: dict[str, str]) -> Response[Any] | None:
    """Discord's answer to an id in the path that is not a snowflake."""
    wrong = {
        name: {
            "_errors": [
                {"code": "NUMBER_TYPE_COERCE", "message": f'Value "{value}" is not snowflake.'}
            ]
        }
        for name, value in ids.items()
        if not (value.isascii() and value.isdecimal() and 0 <= int(value) <= MAX_SNOWFLAKE)
    }
    if not wrong:
        return None
    return Response(
        {"message": "Invalid Form Body", "code": 50035, "errors": wrong}, status_code=400
    )


def _refusal(guild: Guild, user_id: str, role_id: str) -> tuple[str, int, int] | None:
    """Why Discord would refuse to change this member's role (message, code, HTTP status)."""
    if not guild.bot_member:
        return "Missing Access", 50001, 403
    if user_id not in guild.members:
        return "Unknown Member", 10007, 404
    role = guild.roles.get(role_id)
    if role is None or role.id == guild.id:  # @everyone is nobody's to give
        return "Unknown Role", 10011, 404
    if not guild.bot_manage_roles or role.position >= guild.bot_position:
        return "Missing Permissions", 50013, 403
    return None


_ROLE_BUCKET = bucket_of("/guilds/{guild}/members/{user}/roles/{role}")


def _take_call(guild: Guild) -> dict[str, str]:
    """Count a call in the server's window of the route's limit; its rate limit headers."""
    window = Window(guild.role_limit, guild.role_limit_window, *guild.role_window)
    limits = window.take(_ROLE_BUCKET)
    guild.role_window = (window.ends, window.made)
    return limits


def _guild_json(guild: Guild) -> dict[str, Any]:
    return {
        "id": guild.id,
        "name": guild.name,
        "roles": [r.public() for r in sorted(guild.roles.values(), key=lambda r: r.position)],
        "members": {user: sorted(roles) for user, roles in guild.members.items()},
        "bot": {
            "role_id": guild.bot_role_id,
            "manage_roles": guild.bot_manage_roles,
            "member": guild.bot_member,
        },
        "role_limit": {"calls": guild.role_limit, "window": guild.role_limit_window},
        "role_requests": [vars(request) for request in guild.role_requests],
    }


def guild_routes(state: EmulatorState, fault: Fault) -> list[HTTPRouteHandler]:  # noqa: PLR0915
    def is_bot(request: Request[Any, Any, Any]) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bot ") and same_secret(header[4:], state.bot_token)

    @route(
        "/api/v10/guilds/{guild_id:str}/members/{user_id:str}/roles/{role_id:str}",
        http_method=[HttpMethod.PUT, HttpMethod.DELETE],
        status_code=200,  # the Response says 204, or the refusal's status
    )
    async def member_role(
        request: Request[Any, Any, Any],
        guild_id: FromPath[str],
        user_id: FromPath[str],
        role_id: FromPath[str],
    ) -> Response[Any]:
        """Add (PUT) or remove (DELETE) a member's role."""
        if (failed := await fault(state, "member_roles")) is not None:
            return failed
        if not is_bot(request):
            return _error("401: Unauthorized", 0, 401)
        ids = {"guild_id": guild_id, "user_id": user_id, "role_id": role_id}
        if (invalid := not_snowflakes(ids)) is not None:
            return invalid
        reason = request.headers.get("x-audit-log-reason")
        if reason is not None and len(unquote(reason)) > MAX_REASON:
            return Response(
                {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": {
                        "reason": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": f"Must be {MAX_REASON} or fewer in length.",
                                }
                            ]
                        }
                    },
                },
                status_code=400,
            )
        guild = state.guilds.get(guild_id)
        if guild is None:
            return _error("Unknown Guild", 10004, 404)
        limits = _take_call(guild)
        decoded = unquote(reason) if reason is not None else None
        if over(limits):
            guild.role_requests.append(
                RoleRequest(request.method, user_id, role_id, 429, None, decoded)
            )
            return rate_limited(limits)
        refusal = _refusal(guild, user_id, role_id)
        guild.role_requests.append(
            RoleRequest(
                request.method,
                user_id,
                role_id,
                refusal[2] if refusal else 204,
                refusal[1] if refusal else None,
                decoded,
            )
        )
        if refusal is not None:
            message, code, status = refusal
            return Response({"message": message, "code": code}, status_code=status, headers=limits)
        held = guild.members[user_id]
        if request.method == "PUT":
            held.add(role_id)
        else:
            held.discard(role_id)
        return Response(None, status_code=204, headers=limits)

    # -- test API -------------------------------------------------------------------------------

    def found(guild_id: str) -> Guild | Response[Any]:
        guild = state.guilds.get(guild_id)
        return (
            guild if guild is not None else Response({"error": "no such server"}, status_code=404)
        )

    @get("/_emulator/guilds/{guild_id:str}", sync_to_thread=False)
    def show_guild(guild_id: FromPath[str]) -> Response[Any]:
        """The server: roles, members and their role ids, the bot, every role change asked."""
        guild = found(guild_id)
        return guild if isinstance(guild, Response) else Response(_guild_json(guild))

    @get("/_emulator/guilds/{guild_id:str}/members/{user_id:str}", sync_to_thread=False)
    def show_member(guild_id: FromPath[str], user_id: FromPath[str]) -> Response[Any]:
        """A member's roles: ``{"user_id", "roles": [role objects, highest first]}``."""
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        if user_id not in guild.members:
            return Response({"error": "not a member of this server"}, status_code=404)
        roles = [role.public() for role in guild.roles_of(user_id)]
        return Response({"user_id": user_id, "roles": roles})

    @put("/_emulator/guilds/{guild_id:str}/members/{user_id:str}", sync_to_thread=False)
    def join(guild_id: FromPath[str], user_id: FromPath[str]) -> Response[Any]:
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        if user_id not in state.users:
            return Response({"error": "unknown test user"}, status_code=404)
        guild.members.setdefault(user_id, set())
        return Response(None, status_code=204)

    @delete(
        "/_emulator/guilds/{guild_id:str}/members/{user_id:str}",
        status_code=200,  # the Response says 204, or the refusal's status
        sync_to_thread=False,
    )
    def leave(guild_id: FromPath[str], user_id: FromPath[str]) -> Response[Any]:
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        guild.members.pop(user_id, None)
        return Response(None, status_code=204)

    @post("/_emulator/guilds/{guild_id:str}/roles", status_code=201, sync_to_thread=False)
    def create_role(guild_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """``{"name", "position" (default 1: below the bot), "color"}``."""
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        name, position = str(data.get("name") or "").strip(), data.get("position", 1)
        if not name or type(position) is not int or position < 1:
            return Response(
                {"error": "a role needs a name and a position of at least 1"}, status_code=400
            )
        role = state.add_role(name, guild_id=guild.id, position=position)
        return Response(role.public(), status_code=201)

    @delete(
        "/_emulator/guilds/{guild_id:str}/roles/{role_id:str}",
        status_code=200,  # the Response says 204, or the refusal's status
        sync_to_thread=False,
    )
    def delete_role(guild_id: FromPath[str], role_id: FromPath[str]) -> Response[Any]:
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        if role_id in (guild.id, guild.bot_role_id) or guild.roles.pop(role_id, None) is None:
            return Response({"error": "no such role (or one that cannot go)"}, status_code=404)
        for held in guild.members.values():
            held.discard(role_id)
        return Response(None, status_code=204)

    @patch("/_emulator/guilds/{guild_id:str}/bot", sync_to_thread=False)
    def bot_role(guild_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """``{"manage_roles": bool, "position": int, "member": bool}``: what the bot's own
        role may do, and whether the bot is in the server (``false``: someone removed it)."""
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        if "manage_roles" in data:
            guild.bot_manage_roles = bool(data["manage_roles"])
        if "member" in data:
            guild.bot_member = bool(data["member"])
        if type(data.get("position")) is int:
            guild.roles[guild.bot_role_id].position = data["position"]
        return Response(_guild_json(guild)["bot"])

    @patch("/_emulator/guilds/{guild_id:str}/role-limit", sync_to_thread=False)
    def role_limit(guild_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """``{"calls": int, "window": seconds}``: the member roles route's rate limit in the
        server (a new window starts with the next call)."""
        guild = found(guild_id)
        if isinstance(guild, Response):
            return guild
        asked = limit_asked(data)
        if isinstance(asked, Response):
            return asked
        calls, window = asked
        guild.role_limit, guild.role_limit_window = calls, window
        guild.role_window = (0.0, 0)
        return Response(_guild_json(guild)["role_limit"])

    return [
        member_role,
        role_limit,
        show_guild,
        show_member,
        join,
        leave,
        create_role,
        delete_role,
        bot_role,
    ]
