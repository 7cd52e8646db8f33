"""The emulator's gateway: the WebSocket a ``hikari.GatewayBot`` connects to. It speaks just
enough of https://discord.com/developers/docs/events/gateway: HELLO, IDENTIFY (with ``shard``,
see ``shards``), READY, heartbeats (a connection whose heartbeats stop is closed with 4009
Session timed out), the rate limit of what a connection sends (4008 Rate limited), and
INTERACTION_CREATE dispatches sent by the test API."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import BaseRouteHandler
from litestar.response import Response

from entrypoints.emulator.shards import parse_shard
from entrypoints.emulator.state import EmulatorState, same_secret

log = logging.getLogger("taskflow_link.emulator")

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 9, 10, 11
# What a client may send (https://discord.com/developers/docs/topics/opcodes-and-status-codes):
# heartbeat, identify, presence update, voice state update, resume, request guild members,
# request soundboard sounds, request channel info. Before IDENTIFY only the heartbeat and the
# handshakes (IDENTIFY, RESUME) are taken; anything else is 4003 Not authenticated.
CLIENT_OPS = frozenset({1, 2, 3, 4, 6, 8, 31, 43})
BEFORE_IDENTIFY_OPS = frozenset({OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME})
CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR, CLOSE_NOT_AUTHENTICATED = 4001, 4002, 4003
CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED = 4004, 4005
CLOSE_INVALID_SHARD, CLOSE_SHARDING_REQUIRED, CLOSE_INVALID_API_VERSION = 4010, 4011, 4012
# The gateway URL's ``v``: Discord's available API versions are 10 and 9 (the same payloads
# here); 6 (the default when ``v`` is left out), 7 and 8 are deprecated, older ones gone. The
# emulator speaks v10's payloads only, so it takes 9 and 10 and closes the rest with 4012.
GATEWAY_VERSIONS = frozenset({"9", "10"})
CLOSE_INVALID_INTENTS, CLOSE_DISALLOWED_INTENTS = 4013, 4014
# Intents (https://discord.com/developers/docs/events/gateway#gateway-intents): the highest is
# DIRECT_MESSAGE_POLLS (1 << 25). The privileged ones, GUILD_MEMBERS, GUILD_PRESENCES and
# MESSAGE_CONTENT, need enabling in the Developer Portal before an IDENTIFY may name them.
ALL_INTENTS = (1 << 26) - 1
PRIVILEGED_INTENTS = 1 << 1 | 1 << 8 | 1 << 15
CLOSE_RATE_LIMITED, CLOSE_SESSION_TIMED_OUT = 4008, 4009
# How many heartbeat intervals a connection may go without a heartbeat before the gateway closes
# it with 4009 Session timed out (Discord: "Your session timed out. Reconnect and start a new
# one."; it keeps "tolerance in the heartbeat_interval" without saying how much). hikari takes
# 4009 as a close to reconnect after; its RESUME is refused and it identifies anew.
HEARTBEAT_GRACE = 1.5


@dataclass
class GatewaySession:
    """One gateway connection; ``shard`` is what it identified as."""

    socket: WebSocket[Any, Any, Any]
    compressor: Any  # zlib compress object for "zlib-stream", or None
    sequence: int = 0
    shard: tuple[int, int] | None = None  # (shard_id, num_shards), set by IDENTIFY
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The rate limit's window under way: its end (the event loop's clock), payloads received.
    window: tuple[float, int] = (0.0, 0)

    def over_the_limit(self, now: float, limit: int, seconds: float) -> bool:
        """Count a payload the client sent; whether it is past ``limit`` in the window of
        ``seconds`` that began with the first (Discord: 120 in 60 s a connection)."""
        ends, received = self.window
        if ends <= now:
            ends, received = now + seconds, 0
        self.window = (ends, received + 1)
        return received + 1 > limit

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        async with self.lock:
            await self._write(op, data, event)

    async def _write(self, op: int, data: Any, event: str | None) -> None:
        """Send a payload (the caller holds ``lock``)."""
        message: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
        if op == OP_DISPATCH:
            self.sequence += 1
            message["s"] = self.sequence
        encoded = json.dumps(message).encode()
        if self.compressor is None:
            await self.socket.send_text(encoded.decode())
        else:
            chunk = self.compressor.compress(encoded) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            await self.socket.send_bytes(chunk)

    async def ready(self, data: dict[str, Any], sessions: list[GatewaySession]) -> None:
        """Join ``sessions`` and send READY as one step: the session is live (interactions go
        to it) before the bot can have READY, as on Discord, and nothing dispatched to it
        comes before READY. (Joining after READY was sent left a moment in which a bot was
        ready and the emulator had no connection to send its interactions to.)"""
        async with self.lock:
            sessions.append(self)
            await self._write(OP_DISPATCH, data, "READY")

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await self.send(OP_DISPATCH, data, event)


def _bot_user(state: EmulatorState) -> dict[str, Any]:
    return {
        "id": state.client_id,  # a bot user shares its application's id
        "username": state.application_name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": True,
        "flags": 0,
        "public_flags": 0,
        "mfa_enabled": True,
        "locale": "en-US",
        "verified": True,
        "email": None,
        "premium_type": 0,
    }


async def _receive(socket: WebSocket[Any, Any, Any]) -> str | bytes:
    """The next frame, text or binary (Discord accepts JSON in either)."""
    event = await socket.receive()
    if event["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(detail="closed", code=event.get("code", 1000))
    frame = event.get("text") or event.get("bytes") or b""
    return frame if isinstance(frame, str | bytes) else b""


@dataclass(frozen=True, slots=True)
class Refusal:
    """How Discord closes a connection whose IDENTIFY it refuses."""

    code: int
    reason: str


def _identify(
    state: EmulatorState, session: GatewaySession, data: Any
) -> tuple[int, int] | Refusal:
    """The shard an IDENTIFY names, ``(shard_id, num_shards)``, or why it is refused."""
    if session.shard is not None:
        return Refusal(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
    if not isinstance(data, dict):
        return Refusal(CLOSE_DECODE_ERROR, "Decode error.")
    if not same_secret(str(data.get("token", "")), state.bot_token):
        return Refusal(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
    intents = data.get("intents")
    # Required since v8; an invalid value is 4013, a privileged intent not enabled 4014.
    if type(intents) is not int or intents < 0 or intents & ~ALL_INTENTS:
        return Refusal(CLOSE_INVALID_INTENTS, "Invalid intent(s).")
    if intents & PRIVILEGED_INTENTS & ~state.privileged_intents:
        return Refusal(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
    shard = parse_shard(data.get("shard"))
    if shard is None:
        return Refusal(CLOSE_INVALID_SHARD, "Invalid shard.")
    if shard[1] < state.required_shards:
        return Refusal(CLOSE_SHARDING_REQUIRED, "Sharding required.")
    return shard


def _url_refusal(query: Any) -> Refusal | None:
    """Why the gateway URL's query (``v``, ``encoding``, ``compress``) is not one the
    emulator may answer as Discord would, or ``None``."""
    version = query.get("v")
    if version not in GATEWAY_VERSIONS:
        # Deprecated ones (the default too) would be other payloads: not emulated.
        return Refusal(CLOSE_INVALID_API_VERSION, "Invalid API version (9 and 10 are emulated).")
    encoding = query.get("encoding", "json")  # Discord's default
    if encoding != "json":
        # Discord also speaks ETF; nothing else ("json" or "etf").
        return Refusal(CLOSE_DECODE_ERROR, "Only encoding=json is emulated (json or etf).")
    if query.get("compress") not in (None, "zlib-stream"):
        return Refusal(CLOSE_DECODE_ERROR, "Only compress=zlib-stream is emulated.")
    return None


def _payload(
    state: EmulatorState, session: GatewaySession, frame: str | bytes, now: float
) -> dict[str, Any] | Refusal:
    """A frame as Discord reads it: a JSON object with a known ``op`` (before IDENTIFY: a
    heartbeat, IDENTIFY or RESUME), or why the connection is closed. Each frame counts
    towards the rate limit (at ``now``, the event loop's clock), one Discord would refuse
    too; past it the connection is closed at once, the frame unread."""
    limit, seconds = state.gateway_command_limit, state.gateway_command_window
    if session.over_the_limit(now, limit, seconds):
        return Refusal(CLOSE_RATE_LIMITED, "Rate limited.")
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, dict) or type(message.get("op")) is not int:
        return Refusal(CLOSE_DECODE_ERROR, "Decode error.")
    if message["op"] not in CLIENT_OPS:
        return Refusal(CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")
    if session.shard is None and message["op"] not in BEFORE_IDENTIFY_OPS:
        return Refusal(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
    return message


async def _close(state: EmulatorState, socket: WebSocket[Any, Any, Any], refusal: Refusal) -> None:
    """Close the connection as Discord does, and note the close code (``gateway_closes``)."""
    state.gateway_closes.append(refusal.code)
    await socket.close(refusal.code, refusal.reason)


def gateway_routes(state: EmulatorState, sessions: list[GatewaySession]) -> list[BaseRouteHandler]:
    def gateway_url(request: Request[Any, Any, Any]) -> str:
        return f"ws://{request.url.netloc}/gateway"

    @get("/api/v10/gateway/bot", sync_to_thread=False)
    def gateway_bot(request: Request[Any, Any, Any]) -> Response[Any]:
        header = request.headers.get("authorization", "")
        if not (header.startswith("Bot ") and same_secret(header[4:], state.bot_token)):
            return Response({"message": "401: Unauthorized", "code": 0}, status_code=401)
        return Response(
            {
                "url": gateway_url(request),
                "shards": state.gateway_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    @websocket("/gateway")
    async def gateway(socket: WebSocket[Any, Any, Any]) -> None:
        async def close(refusal: Refusal) -> None:
            await _close(state, socket, refusal)

        await socket.accept()
        if (refused := _url_refusal(socket.query_params)) is not None:
            await close(refused)
            return
        compression = socket.query_params.get("compress")
        session = GatewaySession(socket, zlib.compressobj() if compression else None)
        interval = state.heartbeat_interval
        await session.send(OP_HELLO, {"heartbeat_interval": round(interval * 1000)})
        loop = asyncio.get_running_loop()
        # Every heartbeat (nothing else) moves the deadline; HELLO starts the first interval.
        heartbeat_deadline = loop.time() + interval * HEARTBEAT_GRACE
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(
                        _receive(socket), max(0.0, heartbeat_deadline - loop.time())
                    )
                except TimeoutError:
                    await close(Refusal(CLOSE_SESSION_TIMED_OUT, "Session timed out."))
                    return
                message = _payload(state, session, frame, loop.time())
                if isinstance(message, Refusal):
                    await close(message)
                    return
                op = message["op"]
                if op == OP_HEARTBEAT:
                    heartbeat_deadline = loop.time() + interval * HEARTBEAT_GRACE
                    await session.send(OP_HEARTBEAT_ACK, None)
                elif op == OP_IDENTIFY:
                    identified = _identify(state, session, message.get("d"))
                    if isinstance(identified, Refusal):
                        await close(identified)
                        return
                    session.shard = identified
                    await session.ready(
                        {
                            "v": 10,
                            "user": _bot_user(state),
                            "guilds": [],
                            "session_id": secrets.token_hex(16),
                            "resume_gateway_url": f"ws://{socket.url.netloc}/gateway",
                            "shard": list(identified),
                            "application": {"id": state.client_id, "flags": 0},
                        },
                        sessions,
                    )
                elif op == OP_RESUME:
                    # The emulator keeps no session to resume: each ends with its connection.
                    # Discord answers a RESUME it cannot honour with op 9 Invalid Session, ``d``
                    # false ("the gateway could not resume a previous session", "most of the
                    # time" false: identify anew); an unknown or ended session_id is such a
                    # one. Its docs name 4004 Authentication failed for IDENTIFY's token only
                    # and say nothing of a RESUME with a wrong token, so that gets op 9 too;
                    # 4007 Invalid seq needs a session to compare with. A real resume (replay
                    # after ``seq``, then RESUMED) is not emulated: hikari resumes here only
                    # after 4009, whose session Discord ends too ("start a new one").
                    await session.send(OP_INVALID_SESSION, False)
        except (WebSocketDisconnect, OSError):
            # The client went: seen on a receive, or on a send (uvicorn's ClientDisconnected,
            # an OSError, when a bot closed right after its heartbeat) - not a failure.
            pass
        except Exception:
            log.exception("gateway session failed")
            raise
        finally:
            if session in sessions:
                sessions.remove(session)

    return [gateway_bot, gateway]
