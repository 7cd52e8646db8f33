"""The bot half of the emulator: application info, slash-command registration, the interaction
callback, and a test API that sends signed interactions to the service.

Shapes follow https://discord.com/developers/docs/interactions/receiving-and-responding and
.../interactions/application-commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from litestar import Request, delete, get, patch, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response
from nacl.signing import SigningKey

from entrypoints.emulator.bodies import json_body
from entrypoints.emulator.gateway import GatewaySession
from entrypoints.emulator.guilds import not_snowflakes
from entrypoints.emulator.shards import connections_for
from entrypoints.emulator.state import (
    INTERACTION_TOKEN_LIFETIME,
    TEST_CHANNEL_ID,
    TEST_GUILD_ID,
    EmulatorState,
    Interaction,
    same_secret,
)
from entrypoints.emulator.validation import (
    CONTEXT_BOT_DM,
    CONTEXT_GUILD,
    EDIT_FLAGS,
    FLAG_SUPPRESS_EMBEDS,
    check_commands,
    check_interaction_response,
    check_webhook_message,
)

EPHEMERAL = 64
LOADING = 128  # the message flag of a deferred response's "thinking…" message
COMMAND_TYPE_CHAT_INPUT = 1
INTERACTION_PING, INTERACTION_APPLICATION_COMMAND, INTERACTION_COMPONENT = 1, 2, 3
COMPONENT_BUTTON = 2
RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE = 4, 5
# The HTTP answer to an interaction already answered through the callback endpoint: "respond
# to the original HTTP request with a 202 and no body". Nothing else will do, not even a 204
# (hikari's own answer when it has no body to send).
ANSWERED_ELSEWHERE = 202


def _discord_error(message: str, code: int, status: int) -> Response[Any]:
    return Response({"message": message, "code": code}, status_code=status)


def _refuse(interaction: Interaction, message: str, code: int, status: int) -> Response[Any]:
    """Discord's refusal of an answer to ``interaction``, remembered with it."""
    interaction.refused.append(code)
    interaction.errors.append({"message": message, "code": code})
    return _discord_error(message, code, status)


def _unauthorized() -> Response[Any]:
    return _discord_error("401: Unauthorized", 0, 401)


def application_json(state: EmulatorState) -> dict[str, Any]:
    return {
        "id": state.client_id,
        "name": state.application_name,
        "icon": None,
        "description": "A local stand-in for a Discord application.",
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": {
            "id": "1000000000000000001",
            "username": "emulator",
            "discriminator": "0",
            "avatar": None,
            "global_name": None,
            "public_flags": 0,
            "flags": 0,
        },
        "verify_key": state.public_key,
        "team": None,
        "flags": 0,
        "redirect_uris": sorted(state.redirect_uris),
        "interactions_endpoint_url": state.interactions_url,
        "role_connections_verification_url": state.role_connections_verification_url,
        "integration_types_config": {"0": {}},  # installed to servers
        "approximate_guild_count": 1,
        "approximate_user_install_count": 0,
    }


def _stored_command(
    state: EmulatorState,
    body: dict[str, Any],
    scope: str,
    existing: dict[tuple[int, str], dict[str, Any]],
) -> dict[str, Any]:
    """A command of a bulk overwrite as Discord keeps it: one already there (the same type
    and name: a slash command and a context menu command may share a name) keeps its id."""
    name = str(body.get("name", ""))
    kind = int(body.get("type", COMMAND_TYPE_CHAT_INPUT))
    previous = existing.get((kind, name))
    command: dict[str, Any] = {
        "id": previous["id"] if previous else state.snowflake(),
        "application_id": state.client_id,
        "version": state.snowflake(),
        "type": kind,
        "name": name,
        "description": str(body.get("description", "")),
        "options": body.get("options") or [],
        "default_member_permissions": body.get("default_member_permissions"),
        "nsfw": bool(body.get("nsfw", False)),
        "contexts": body.get("contexts"),
        "integration_types": body.get("integration_types") or [0],
    }
    if scope != "global":
        # Only global commands have these: a server's command is used in that server only.
        command |= {"guild_id": scope, "contexts": None, "integration_types": [0]}
    return command


def offered_in(command: dict[str, Any], guild_id: str | None) -> bool:
    """Whether Discord offers the command there: its ``contexts`` (all when unset) must
    include servers, or DMs with the bot."""
    contexts = command.get("contexts")
    return contexts is None or (CONTEXT_GUILD if guild_id else CONTEXT_BOT_DM) in contexts


def _user_object(state: EmulatorState, user_id: str) -> dict[str, Any]:
    return state.users[user_id].public(frozenset())


def interaction_payload(
    state: EmulatorState, interaction: Interaction, command: dict[str, Any]
) -> dict[str, Any]:
    user = _user_object(state, interaction.user_id)
    data: dict[str, Any] = {
        "id": command["id"],
        "name": command["name"],
        "type": COMMAND_TYPE_CHAT_INPUT,
    }
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    payload: dict[str, Any] = {
        "id": interaction.id,
        "application_id": state.client_id,
        "type": INTERACTION_APPLICATION_COMMAND,
        "token": interaction.token,
        "version": 1,
        "data": data,
        "app_permissions": "0",
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10 * 1024 * 1024,
    }
    if interaction.guild_id:
        payload |= {
            "guild_id": interaction.guild_id,
            "guild_locale": "en-US",
            "channel_id": TEST_CHANNEL_ID,
            "channel": {"id": TEST_CHANNEL_ID, "type": 0, "name": "general", "permissions": "0"},
            "member": {
                "user": user,
                "roles": [],
                "joined_at": datetime(2024, 1, 1, tzinfo=UTC).isoformat(),
                "permissions": "0",
                "nick": None,
                "avatar": None,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                "premium_since": None,
                "communication_disabled_until": None,
            },
            "authorizing_integration_owners": {"0": interaction.guild_id},
            "context": CONTEXT_GUILD,
        }
    else:
        dm_channel = str(int(interaction.user_id) + 1)
        payload |= {
            "channel_id": dm_channel,
            "channel": {"id": dm_channel, "type": 1},
            "user": user,
            "authorizing_integration_owners": {"0": "0"},
            "context": CONTEXT_BOT_DM,
        }
    return payload


def signed_headers(state: EmulatorState, body: bytes, *, forged: bool = False) -> dict[str, str]:
    """Discord's headers for an interaction request. ``forged``: signed with another key, as
    Discord's check of a new endpoint URL does (the service must refuse it)."""
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "user-agent": "Discord-Interactions/1.0 (+https://discord.com)",
        "x-signature-ed25519": state.sign(
            body, timestamp, SigningKey.generate() if forged else None
        ),
        "x-signature-timestamp": timestamp,
    }


async def deliver(
    state: EmulatorState, payload: dict[str, Any], *, forged: bool = False
) -> httpx.Response:
    """POST a signed (or ``forged``) interaction to the service, as Discord does; the
    network's transit (there and back) is part of the wait, as it is part of Discord's 3
    seconds."""
    if not state.interactions_url:
        raise LookupError("no interactions URL is configured for this application")
    await asyncio.sleep(state.transit_delay)
    body = json.dumps(payload).encode()
    headers = signed_headers(state, body, forged=forged)
    # A service on this machine is called directly, never through the environment's proxy
    # (httpx's own reading of it proxies loopback hosts too): the proxy's localhost is the
    # proxy's machine, and it would read the plain-http request on its way.
    direct = _on_this_machine(state.interactions_url)
    timeout = max(10.0, state.response_deadline + 5)
    async with httpx.AsyncClient(timeout=timeout, trust_env=not direct) as client:
        answer = await client.post(state.interactions_url, content=body, headers=headers)
    await asyncio.sleep(state.transit_delay)
    return answer


def _on_this_machine(url: str) -> bool:
    """``localhost`` or a loopback address (the emulator may not import the service's own
    check, ``adapters.loopback``; as it, ``localhost.`` is a name the network's DNS answers)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def _await_reply(state: EmulatorState, interaction: Interaction) -> None:
    """Over the gateway the answer only comes through the callback endpoint; a "thinking…"
    one is then completed through the webhook, as after an HTTP answer."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(interaction.answered.wait(), state.response_deadline + 0.5)
    if (interaction.response or {}).get("type") == RESPONSE_DEFERRED_MESSAGE:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interaction.edited.wait(), state.followup_wait)


def _connections(gateway: list[GatewaySession], guild: str | None) -> list[GatewaySession] | str:
    """The gateway connections an interaction goes to, or why none can take it."""
    if not gateway:
        return "no bot is connected to the gateway"
    connections = connections_for(gateway, None if guild is None else int(guild))
    if connections:
        return connections
    shards = sorted({s.shard for s in gateway if s.shard is not None})
    return (
        f"no gateway connection serves this {'server' if guild else 'DM'}: the connected "
        f"shards (id, count) are {shards}; a server's events go to shard "
        "(guild_id >> 22) % count, DMs to shard 0"
    )


def _asked_problem(
    state: EmulatorState, where: str, via: str, guild_id: str | None
) -> tuple[int, str] | None:
    """What is wrong with a test's ``where``, ``via`` and ``guild_id`` (a status and why), or
    ``None``.
    An application with an Interactions Endpoint URL gets its interactions there only:
    Discord sends none over the gateway, however many bots are connected; without one, they
    come over the gateway only."""
    if where not in ("guild", "dm"):
        return 400, 'where must be "guild" or "dm"'
    if via not in ("http", "gateway"):
        return 400, 'via must be "http" or "gateway"'
    if guild_id is not None and not (guild_id.isascii() and guild_id.isdecimal()):
        return 400, "guild_id must be a server id (a snowflake: digits)"
    if via == "gateway" and state.interactions_url:
        return 409, (
            f"the application has an Interactions Endpoint URL ({state.interactions_url}): "
            "Discord sends its interactions there, none over the gateway. A gateway bot's "
            "application has none (`taskflow-link emulator --interactions-url ''`)"
        )
    if via == "http" and not state.interactions_url:
        return 409, (
            "the application has no Interactions Endpoint URL: Discord sends its interactions "
            "over the gateway (to `taskflow-link bot`)"
        )
    return None


def _not_usable_in(state: EmulatorState, guild_id: str | None, user_id: str) -> str | None:
    """Why the user could not run the application's commands in that server (``None``: in
    a DM with its bot), or ``None``: Discord offers them (and sends interactions) only in a
    server the application was added to, and only its members are there to use them; a DM
    with the bot of an application installed in servers is open only to someone who shares
    one of them."""
    if guild_id is None:
        if any(user_id in s.members for s in state.guilds.values() if s.bot_member):
            return None
        return (
            f"test user {user_id} shares no server with the application: Discord opens no "
            "DM with its bot"
        )
    server = state.guilds.get(guild_id)
    if server is None or not server.bot_member:  # never added, or removed since
        return (
            f"the application is not in server {guild_id}: Discord sends interactions only "
            "from servers it was added to"
        )
    if user_id not in server.members:
        return f"test user {user_id} is not a member of server {guild_id}"
    return None


def as_pressed(
    state: EmulatorState, interaction: Interaction, payload: dict[str, Any], custom_id: str | None
) -> dict[str, Any]:
    """With a ``custom_id``, the interaction made a press of that button (type 3) on a
    message the command's answer made earlier: answered as a component's."""
    if custom_id is None:
        return payload
    interaction.kind, interaction.on_message = INTERACTION_COMPONENT, True
    earlier = message_json(state, interaction, {"content": "Earlier"}, state.snowflake())
    return payload | {
        "type": INTERACTION_COMPONENT,
        "data": {"custom_id": custom_id, "component_type": COMPONENT_BUTTON},
        "message": earlier,
    }


async def run_slash_command(
    state: EmulatorState,
    gateway: list[GatewaySession],
    *,
    user_id: str,
    command: str,
    where: str = "guild",
    via: str | None = None,
    guild_id: str | None = None,
    custom_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """What Discord does when a test user runs ``/command``: sign and send the interaction
    (HTTP) or dispatch it (gateway), then wait for the answer. Returns an HTTP status and a
    JSON body for the test API: ``reply`` is what the user would see. With ``custom_id``,
    the user presses that button (a component interaction, type 3) on a message the
    command's answer made earlier instead."""
    name = command.strip().lstrip("/")
    via = via or ("http" if state.interactions_url else "gateway")
    if user_id not in state.users:
        return 404, {"error": f"unknown test user {user_id!r}"}
    if (problem := _asked_problem(state, where, via, guild_id)) is not None:
        return problem[0], {"error": problem[1]}
    guild = (guild_id or TEST_GUILD_ID) if where == "guild" else None
    if (problem_text := _not_usable_in(state, guild, user_id)) is not None:
        return 409, {"error": problem_text}
    connections = _connections(gateway, guild) if via == "gateway" else []
    if isinstance(connections, str):
        return 409, {"error": connections}
    found = state.find_command(name, guild)
    if found is None:
        return 409, {
            "error": f"/{name} is not registered here: the service registers its "
            "commands when it starts, or run `taskflow-link bot sync`"
        }
    if not offered_in(found, guild):
        return 409, {
            "error": f"/{name} is not offered {'in servers' if guild else 'in DMs'}: its "
            f"contexts are {found.get('contexts')}"
        }
    interaction = Interaction(
        id=state.snowflake(),
        token=secrets.token_urlsafe(48),
        user_id=user_id,
        command=name,
        guild_id=guild,
        sent_at=state.clock(),
    )
    state.interactions[interaction.id] = interaction
    payload = as_pressed(
        state, interaction, interaction_payload(state, interaction, found), custom_id
    )
    status, body = None, None
    if via == "gateway":
        interaction.shards = [c.shard for c in connections if c.shard is not None]
        await asyncio.sleep(state.transit_delay)
        for connection in connections:
            await connection.dispatch("INTERACTION_CREATE", payload)
        await _await_reply(state, interaction)
    else:
        try:
            answer = await deliver(state, payload)
        except (LookupError, httpx.HTTPError) as exc:
            return 502, {"error": f"could not reach the service: {exc}"}
        status, body = answer.status_code, _answer(answer)
        if state.clock() - interaction.sent_at > state.response_deadline:
            status = None  # Discord gave up: "The application did not respond"
        else:
            await take_http_answer(state, interaction, status, body)
    return 200, {
        "interaction_id": interaction.id,
        "via": via,
        "shards": [list(shard) for shard in interaction.shards],
        "status": status,
        "body": body,
        "reply": None if interaction.deleted else interaction.response,
        "deleted": interaction.deleted,  # the service deleted its reply through the webhook
        "responded_after_ms": None
        if interaction.responded_after is None
        else round(interaction.responded_after * 1000),
        # What Discord refused of the service's answers (its error bodies), oldest first.
        "errors": interaction.errors,
    }


async def take_http_answer(
    state: EmulatorState, interaction: Interaction, status: int, body: Any
) -> None:
    """Discord's reading of the HTTP answer that came in time. Answered through the callback
    already: it must be 202 without a body (a body would be a second answer). Otherwise it
    must be a valid interaction response (type 4, or 5 then the webhook); anything else is
    "This interaction failed"."""
    if interaction.response is not None:
        if status != ANSWERED_ELSEWHERE or body not in ("", None):
            interaction.errors.append(
                {
                    "code": 40060,
                    "message": "Interaction has already been acknowledged: after a reply "
                    "through the callback endpoint, answer the HTTP request with 202 and no "
                    f"body (got {status} with {body!r:.200})",
                }
            )
        return
    if status == ANSWERED_ELSEWHERE:
        return  # nothing was answered anywhere: "The application did not respond"
    refused = (
        check_interaction_response(body, interaction.kind, on_message=interaction.on_message)
        if status == 200
        else (400, {"status": status, "message": f"Discord cannot read an HTTP {status} answer"})
    )
    if refused is not None:
        interaction.errors.append(refused[1])
        return
    assert isinstance(body, dict)  # noqa: S101 - checked above
    interaction.response = _stored_response(body)
    interaction.responded_after = state.clock() - interaction.sent_at
    made_message(state, interaction)
    if body["type"] == RESPONSE_DEFERRED_MESSAGE:  # "thinking…": the webhook brings the reply
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interaction.edited.wait(), state.followup_wait)


def with_component_ids(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The components as Discord stores them: each has an ``id``, unique in the message,
    "generated sequentially if left empty" (0 counts as empty), never reusing one the
    message names itself."""
    taken: set[int] = set()

    def children(item: dict[str, Any]) -> list[Any]:
        """The components an item holds: only a list of them (anything else there was
        refused by the checks, or is a field Discord ignores)."""
        nested = item.get("components")
        return nested if isinstance(nested, list) else []

    def copy(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        nested = item.get("components")
        return {**item, "components": walk(nested)} if isinstance(nested, list) else dict(item)

    def walk(items: list[Any]) -> list[Any]:
        return [copy(item) for item in items]

    def given(items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("id"), int) and item["id"] > 0:
                taken.add(item["id"])
            given(children(item))

    def number(items: list[Any], next_id: int) -> int:
        for item in items:
            if not isinstance(item, dict):
                continue
            if not (isinstance(item.get("id"), int) and item["id"] > 0):
                while next_id in taken:
                    next_id += 1
                item["id"] = next_id
                taken.add(next_id)
            next_id = number(children(item), next_id)
        return next_id

    copied = walk(components)
    given(copied)
    number(copied, 1)
    return copied


def as_stored(message: dict[str, Any]) -> dict[str, Any]:
    """A message's data as Discord keeps (and later returns) it: its components numbered."""
    components = message.get("components")
    if not isinstance(components, list):
        return message
    return {**message, "components": with_component_ids(components)}


def _stored_response(response: dict[str, Any]) -> dict[str, Any]:
    data = response.get("data")
    return {**response, "data": as_stored(data)} if isinstance(data, dict) else response


def message_json(
    state: EmulatorState, interaction: Interaction, data: dict[str, Any], message_id: str
) -> dict[str, Any]:
    """Discord's message object for a reply (what the webhook endpoints answer with): the
    original response's keeps the time it was sent, and carries its last edit's; any other
    (a follow-up) is a new message, sent now and never edited."""
    original = message_id == interaction.message_id
    sent = interaction.message_sent_at if original else None
    return {
        "id": message_id,
        "channel_id": TEST_CHANNEL_ID
        if interaction.guild_id
        else str(int(interaction.user_id) + 1),
        "author": {
            "id": state.client_id,
            "username": state.application_name,
            "discriminator": "0000",
            "avatar": None,
            "global_name": None,
            "bot": True,
        },
        "content": data.get("content", ""),
        "timestamp": sent or datetime.now(UTC).isoformat(),
        "edited_timestamp": interaction.message_edited_at if original else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 20,  # CHAT_INPUT_COMMAND
        "flags": int(data.get("flags") or 0),
        "components": with_component_ids(data.get("components") or []),
        "application_id": state.client_id,
        "webhook_id": state.client_id,
    }


def edited_flags(previous: dict[str, Any], edit: dict[str, Any]) -> int:
    """A message's flags after an edit: only SUPPRESS_EMBEDS comes and goes, and
    IS_COMPONENTS_V2 may be set ("can only be set"); every other bit sent is ignored, as
    Discord ignores "unsupported flag changes" (EPHEMERAL: "an existing message's ephemeral
    state cannot be changed"), and every other bit the message had stays."""
    before = int(previous.get("flags") or 0)
    sent = int(edit.get("flags") or 0) if "flags" in edit else before  # checked: an int
    return (before & ~FLAG_SUPPRESS_EMBEDS) | (sent & EDIT_FLAGS)


def original_message_id(state: EmulatorState, interaction: Interaction) -> str:
    """The id of the message the interaction's response made: the same in the callback
    response, the edits and the reads of ``@original``."""
    if interaction.message_id is None:
        interaction.message_id = state.snowflake()
        interaction.message_sent_at = datetime.now(UTC).isoformat()
    return interaction.message_id


def made_message(state: EmulatorState, interaction: Interaction) -> None:
    """The response just taken sent a message (a reply, or "thinking…"; a modal sends none):
    its id, and its ``timestamp`` now, whenever it is first read."""
    if (interaction.response or {}).get("type") in (RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE):
        original_message_id(state, interaction)


def original_message(interaction: Interaction) -> dict[str, Any] | None:
    """What ``@original`` shows (a deferred response: its "thinking…" message, flagged
    LOADING), or ``None`` when there is no such message: no response yet, a modal (which
    makes none), or a deleted one."""
    response = interaction.response
    if interaction.deleted or response is None:
        return None
    data = response.get("data") or {}
    if response.get("type") == RESPONSE_DEFERRED_MESSAGE:
        return {"content": "", "flags": int(data.get("flags") or 0) | LOADING}
    if response.get("type") != RESPONSE_MESSAGE:
        return None
    return data


def callback_response(
    state: EmulatorState, interaction: Interaction, data: dict[str, Any]
) -> dict[str, Any]:
    """Discord's interaction callback response: the interaction, and the message it made.
    A modal makes none: no ``response_message_*`` (its ``data`` has no message flags either,
    whatever it sends under that name)."""
    answer: dict[str, Any] = {"interaction": {"id": interaction.id, "type": interaction.kind}}
    if data["type"] not in (RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE):
        return answer
    message_data = data.get("data") or {}
    flags = int(message_data.get("flags") or 0)  # checked: an int
    message_id = original_message_id(state, interaction)
    answer["interaction"] |= {
        "response_message_id": message_id,
        "response_message_loading": data["type"] == RESPONSE_DEFERRED_MESSAGE,
        "response_message_ephemeral": bool(flags & EPHEMERAL),
    }
    if data["type"] == RESPONSE_MESSAGE:
        message = message_json(state, interaction, message_data, message_id)
        answer["resource"] = {"type": RESPONSE_MESSAGE, "message": message}
    return answer


def bot_routes(  # noqa: PLR0915 - one route table
    state: EmulatorState, gateway: list[GatewaySession]
) -> list[HTTPRouteHandler]:
    def is_bot(request: Request[Any, Any, Any]) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bot ") and same_secret(header[4:], state.bot_token)

    def scope_of(guild_id: str | None) -> str:
        return guild_id or "global"

    def not_in_server(guild_id: str | None) -> Response[Any] | None:
        """Discord's answer to a server's commands asked for where the app is not: 400 for an
        id that is not a snowflake, 403 Missing Access for a server it was not added to."""
        if guild_id is None:
            return None
        if (invalid := not_snowflakes({"guild_id": guild_id})) is not None:
            return invalid
        server = state.guilds.get(guild_id)
        if server is None or not server.bot_member:  # never added, or removed since
            return _discord_error("Missing Access", 50001, 403)
        return None

    # Discord's "Get Current Bot Application Information" and "Get Current Application":
    # the same application object, its interactions_endpoint_url included (null when none).
    @get(
        ["/api/v10/oauth2/applications/@me", "/api/v10/applications/@me"],
        sync_to_thread=False,
    )
    def application(request: Request[Any, Any, Any]) -> Response[Any]:
        if not is_bot(request):
            return _unauthorized()
        return Response(application_json(state))

    def list_commands(
        request: Request[Any, Any, Any], app_id: str, guild: str | None
    ) -> Response[Any]:
        if not is_bot(request):
            return _unauthorized()
        if app_id != state.client_id:
            return _discord_error("Unknown Application", 10002, 404)
        if (refused := not_in_server(guild)) is not None:
            return refused
        return Response(state.commands.get(scope_of(guild), []))

    def replace_commands(
        request: Request[Any, Any, Any], app_id: str, guild: str | None, body: Any
    ) -> Response[Any]:
        if not is_bot(request):
            return _unauthorized()
        if app_id != state.client_id:
            return _discord_error("Unknown Application", 10002, 404)
        if (refused := not_in_server(guild)) is not None:
            return refused
        errors = check_commands(body, guild=guild is not None)
        if errors:
            state.refused_commands.append(errors.body())
            return Response(errors.body(), status_code=400)
        scope = scope_of(guild)
        existing = {(c["type"], c["name"]): c for c in state.commands.get(scope, [])}
        state.commands[scope] = [_stored_command(state, c, scope, existing) for c in body]
        return Response(state.commands[scope])

    @get("/api/v10/applications/{app_id:str}/commands", sync_to_thread=False)
    def global_commands(request: Request[Any, Any, Any], app_id: FromPath[str]) -> Response[Any]:
        return list_commands(request, app_id, None)

    @put("/api/v10/applications/{app_id:str}/commands")
    async def put_global_commands(
        request: Request[Any, Any, Any], app_id: FromPath[str]
    ) -> Response[Any]:
        return replace_commands(request, app_id, None, await json_body(request))

    @get("/api/v10/applications/{app_id:str}/guilds/{guild_id:str}/commands", sync_to_thread=False)
    def guild_commands(
        request: Request[Any, Any, Any], app_id: FromPath[str], guild_id: FromPath[str]
    ) -> Response[Any]:
        return list_commands(request, app_id, guild_id)

    @put("/api/v10/applications/{app_id:str}/guilds/{guild_id:str}/commands")
    async def put_guild_commands(
        request: Request[Any, Any, Any], app_id: FromPath[str], guild_id: FromPath[str]
    ) -> Response[Any]:
        return replace_commands(request, app_id, guild_id, await json_body(request))

    @post("/api/v10/interactions/{interaction_id:str}/{token:str}/callback", status_code=200)
    async def callback(
        request: Request[Any, Any, Any],
        interaction_id: FromPath[str],
        token: FromPath[str],
        with_response: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """Create the interaction's response: 204, or with ``?with_response=true`` 200 and
        the interaction callback response object (what hikari asks for)."""
        data = await json_body(request)
        await asyncio.sleep(state.transit_delay)  # the request travels to Discord first
        if state.faults.get("callback") == "reject":
            return _discord_error("Interaction has already been acknowledged.", 40060, 400)
        interaction = state.interactions.get(interaction_id)
        if interaction is None or not same_secret(token, interaction.token):
            return _discord_error("Unknown interaction", 10062, 404)
        elapsed = state.clock() - interaction.sent_at
        if elapsed > state.response_deadline:
            return _refuse(interaction, "Unknown interaction", 10062, 404)  # too late
        if interaction.response is not None:
            return _refuse(interaction, "Interaction has already been acknowledged.", 40060, 400)
        refused = check_interaction_response(
            data, interaction.kind, on_message=interaction.on_message
        )
        if refused is not None:
            interaction.refused.append(refused[1]["code"])
            interaction.errors.append(refused[1])
            return Response(refused[1], status_code=refused[0])
        stored = _stored_response(data)
        interaction.response, interaction.responded_after = stored, elapsed
        made_message(state, interaction)
        interaction.answered.set()
        if (with_response or "").lower() not in ("true", "1"):
            return Response(None, status_code=204)
        return Response(callback_response(state, interaction, stored))

    def by_token(app_id: str, token: str) -> Interaction | Response[Any]:
        """The interaction whose webhook this is, or Discord's refusal: 404 Unknown Webhook
        for a token it never gave (or another app's), and for an interaction not answered
        yet (its webhook exists once it is: discordjs/discord.js#10587 met 10015 deleting
        the reply of one not yet acknowledged), 401 Invalid Webhook Token once the token's
        15 minutes are over."""
        found = next(
            (i for i in state.interactions.values() if same_secret(token, i.token)),
            None,
        )
        if found is None or app_id != state.client_id or found.response is None:
            return _discord_error("Unknown Webhook", 10015, 404)
        if state.clock() - found.sent_at > INTERACTION_TOKEN_LIFETIME:
            found.errors.append({"message": "Invalid Webhook Token", "code": 50027})
            return _discord_error("Invalid Webhook Token", 50027, 401)
        return found

    @patch("/api/v10/webhooks/{app_id:str}/{token:str}/messages/@original")
    async def edit_original(
        request: Request[Any, Any, Any], app_id: FromPath[str], token: FromPath[str]
    ) -> Response[Any]:
        """Complete a deferred answer (or edit a reply), as Discord's webhook does."""
        data = await json_body(request)
        # The request crosses the network as the callback does: sent just after the HTTP
        # answer that deferred, it lands after that answer, not before it.
        await asyncio.sleep(state.transit_delay)
        interaction = by_token(app_id, token)
        if isinstance(interaction, Response):
            return interaction
        if original_message(interaction) is None or interaction.response is None:
            return _discord_error("Unknown Message", 10008, 404)  # a modal's, or deleted
        previous = interaction.response.get("data") or {}
        refused = check_webhook_message(data, current=previous)
        if refused is not None:
            interaction.errors.append(refused[1])
            return Response(refused[1], status_code=refused[0])
        data = data or {}  # a JSON null body edits nothing, as check_message read it
        return edit_reply(interaction, {**previous, **data, "flags": edited_flags(previous, data)})

    def edit_reply(interaction: Interaction, message: dict[str, Any]) -> Response[Any]:
        """The original response becomes ``message`` (a deferred one stops "thinking…")."""
        merged = as_stored(message)
        interaction.response = {"type": 4, "data": merged, "deferred": True}
        interaction.edited.set()
        message_id = original_message_id(state, interaction)
        interaction.message_edited_at = datetime.now(UTC).isoformat()
        return Response(message_json(state, interaction, merged, message_id))

    @get("/api/v10/webhooks/{app_id:str}/{token:str}/messages/@original")
    async def get_original(app_id: FromPath[str], token: FromPath[str]) -> Response[Any]:
        """The original response's message (a deferred one's "thinking…", flagged LOADING);
        404 10008 Unknown Message when there is none (a modal, deleted)."""
        await asyncio.sleep(state.transit_delay)  # the network, as for the callback
        interaction = by_token(app_id, token)
        if isinstance(interaction, Response):
            return interaction
        message = original_message(interaction)
        if message is None:
            return _discord_error("Unknown Message", 10008, 404)
        message_id = original_message_id(state, interaction)
        return Response(message_json(state, interaction, message, message_id))

    @delete(
        "/api/v10/webhooks/{app_id:str}/{token:str}/messages/@original",
        status_code=200,  # the Response says 204, or the refusal's status
    )
    async def delete_original(app_id: FromPath[str], token: FromPath[str]) -> Response[Any]:
        """Delete the original response (a "thinking…" one too): 204; it is then gone for
        reads and edits (404 10008), and is still an answer (a second one is refused)."""
        await asyncio.sleep(state.transit_delay)
        interaction = by_token(app_id, token)
        if isinstance(interaction, Response):
            return interaction
        if original_message(interaction) is None:
            return _discord_error("Unknown Message", 10008, 404)
        interaction.deleted = True
        interaction.edited.set()  # nothing more to wait for: there is no message to complete
        return Response(None, status_code=204)

    @post("/api/v10/webhooks/{app_id:str}/{token:str}", status_code=200)
    async def follow_up(
        request: Request[Any, Any, Any], app_id: FromPath[str], token: FromPath[str]
    ) -> Response[Any]:
        data = await json_body(request)
        await asyncio.sleep(state.transit_delay)  # the network, as for the callback
        interaction = by_token(app_id, token)
        if isinstance(interaction, Response):
            return interaction
        refused = check_webhook_message(data)
        if refused is not None:
            interaction.errors.append(refused[1])
            return Response(refused[1], status_code=refused[0])
        response = interaction.response or {}  # there is one: by_token checked
        if response.get("type") == RESPONSE_DEFERRED_MESSAGE and not interaction.deleted:
            # "The first followup message will edit the loading message ... no new message
            # will be created ... The ephemeral flag will be ignored": the deferral decided
            # who sees it. What an edit may set (IS_COMPONENTS_V2, SUPPRESS_EMBEDS) is kept,
            # as the follow-up's content is read with it.
            deferral = response.get("data") or {}
            flags = int(deferral.get("flags") or 0) & EPHEMERAL
            flags |= int(data.get("flags") or 0) & EDIT_FLAGS
            return edit_reply(interaction, {**deferral, **data, "flags": flags})
        message = as_stored(data)
        interaction.followups.append(message)
        return Response(message_json(state, interaction, message, state.snowflake()))

    # -- test API -------------------------------------------------------------------------------

    @post("/_emulator/interactions", status_code=200)
    async def send_command(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """Run a slash command as a test user: {"user_id", "command", "where": "guild"|"dm",
        "via": "http"|"gateway"}. By default, HTTP when an interactions URL is set. With
        "custom_id", press that button on a message of the command's instead."""
        status, body = await run_slash_command(
            state,
            gateway,
            user_id=str(data.get("user_id", "")),
            command=str(data.get("command", "")),
            where=data.get("where", "guild"),
            via=data.get("via"),
            guild_id=str(data["guild_id"]) if data.get("guild_id") else None,
            custom_id=str(data["custom_id"]) if data.get("custom_id") is not None else None,
        )
        return Response(body, status_code=status)

    def ping_payload() -> dict[str, Any]:
        return {
            "id": state.snowflake(),
            "application_id": state.client_id,
            "type": INTERACTION_PING,
            "token": secrets.token_urlsafe(48),
            "version": 1,
        }

    @post("/_emulator/ping", status_code=200)
    async def ping() -> Response[Any]:
        """What Discord does when the Interactions Endpoint URL is saved: a validly signed
        PING, which must get 200 ``{"type": 1}``, and a badly signed one, which must get 401;
        Discord refuses the URL otherwise. 200 when both were right, else 400 saying what was
        wrong (``problems``)."""
        try:
            answer = await deliver(state, ping_payload())
            forged = await deliver(state, ping_payload(), forged=True)
        except (LookupError, httpx.HTTPError) as exc:
            return Response({"error": f"could not reach the service: {exc}"}, status_code=502)
        body = _answer(answer)
        problems = []
        if answer.status_code != 200 or not (isinstance(body, dict) and body.get("type") == 1):
            problems.append(
                f'a validly signed PING must get 200 {{"type": 1}} (got {answer.status_code})'
            )
        if forged.status_code != 401:
            problems.append(f"a badly signed request must get 401 (got {forged.status_code})")
        report = {
            "status": answer.status_code,
            "body": body,
            "bad_signature_status": forged.status_code,
            "accepted": not problems,
            "problems": problems,
        }
        return Response(report, status_code=400 if problems else 200)

    return [
        application,
        global_commands,
        put_global_commands,
        guild_commands,
        put_guild_commands,
        callback,
        edit_original,
        get_original,
        delete_original,
        follow_up,
        send_command,
        ping,
    ]
