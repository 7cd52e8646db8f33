"""Discord's sharding rules as the emulator applies them: which shard owns a server, what an
IDENTIFY may say, and which gateway connections an interaction goes to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.shards import connections_for, parse_shard, shard_for

GUILD_ON_SHARD_0_OF_2 = 1300000000000000001
GUILD_ON_SHARD_1_OF_2 = 1300000000004194305  # the same plus 1 << 22: the next shard


@dataclass
class Connection:
    name: str
    shard: tuple[int, int] | None


def test_a_server_belongs_to_the_shard_of_its_id_and_a_dm_to_shard_0() -> None:
    # Discord's worked example (also serenity's): server 81384788765712384 with 17 shards.
    assert shard_for(81384788765712384, 17) == 7
    assert shard_for(GUILD_ON_SHARD_0_OF_2, 2) == 0
    assert shard_for(GUILD_ON_SHARD_1_OF_2, 2) == 1
    assert shard_for(GUILD_ON_SHARD_1_OF_2, 1) == 0  # one shard has everything
    assert shard_for(None, 5) == 0  # DMs: always the first shard
    # Only the bits above the snowflake's lowest 22 (worker, process, increment) count.
    first_of_block = GUILD_ON_SHARD_0_OF_2 & ~((1 << 22) - 1)
    assert shard_for(first_of_block, 2) == shard_for(first_of_block + (1 << 22) - 1, 2) == 0
    assert shard_for(first_of_block + (1 << 22), 2) == 1
    with pytest.raises(ValueError, match="at least 1"):
        shard_for(GUILD_ON_SHARD_0_OF_2, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, (0, 1)), ([0, 1], (0, 1)), ([0, 2], (0, 2)), ([1, 2], (1, 2)), ([6, 7], (6, 7))],
)
def test_identify_shards_discord_accepts(value: object, expected: tuple[int, int]) -> None:
    assert parse_shard(value) == expected


@pytest.mark.parametrize(
    "value",
    [[2, 2], [5, 2], [-1, 2], [0, 0], [0, -1], [0], [0, 1, 2], [], "0,2", {"0": 2}, [True, 2],
     [0, 2.0], ["0", "2"]],
)  # fmt: skip
def test_identify_shards_discord_refuses(value: object) -> None:
    assert parse_shard(value) is None


def test_each_server_goes_to_the_one_connection_of_its_shard() -> None:
    first, second = Connection("first", (0, 2)), Connection("second", (1, 2))
    connections = [first, second]
    assert connections_for(connections, GUILD_ON_SHARD_0_OF_2) == [first]
    assert connections_for(connections, GUILD_ON_SHARD_1_OF_2) == [second]
    assert connections_for(connections, None) == [first]


def test_no_connection_for_a_shard_nobody_runs() -> None:
    only_shard_1 = [Connection("second", (1, 2)), Connection("not identified yet", None)]
    assert connections_for(only_shard_1, GUILD_ON_SHARD_0_OF_2) == []
    assert connections_for(only_shard_1, None) == []  # DMs need shard 0
    assert connections_for([], None) == []


def test_connections_of_the_same_shard_all_get_the_event() -> None:
    """What Discord does with copies that are not sharded: each receives every interaction
    (and all but the first answer get 40060)."""
    copies = [Connection("copy 1", (0, 1)), Connection("copy 2", (0, 1))]
    assert connections_for(copies, GUILD_ON_SHARD_1_OF_2) == copies
    assert connections_for(copies, None) == copies


def test_each_connection_routes_by_its_own_shard_count() -> None:
    """A new deployment with another count, started next to the old one."""
    old, new_0, new_1 = (
        Connection("old", (0, 1)),
        Connection("0/2", (0, 2)),
        Connection("1/2", (1, 2)),
    )
    assert connections_for([old, new_0, new_1], GUILD_ON_SHARD_1_OF_2) == [old, new_1]
    assert connections_for([old, new_0, new_1], GUILD_ON_SHARD_0_OF_2) == [old, new_0]


# -- the emulator's gateway -------------------------------------------------------------------


def _identify(state: EmulatorState, **fields: Any) -> dict[str, Any]:
    """IDENTIFY as hikari sends it, with ``fields`` changed."""
    data: dict[str, Any] = {"token": state.bot_token, "intents": 0, "properties": {}}
    return {"op": 2, "d": data | fields}


def _state(**fields: Any) -> EmulatorState:
    return EmulatorState("1200000000000000042", "secret", set(), **fields)


def test_gateway_bot_tells_the_recommended_shard_count() -> None:
    state = _state(gateway_shards=2)
    with TestClient(app=create_emulator_app(state)) as client:
        answer = client.get(
            "/api/v10/gateway/bot", headers={"authorization": f"Bot {state.bot_token}"}
        )
        assert answer.status_code == 200
        assert answer.json()["shards"] == 2
        assert answer.json()["url"].endswith("/gateway")
        refused = client.get("/api/v10/gateway/bot", headers={"authorization": "Bot nope"})
        assert refused.status_code == 401


@pytest.fixture(scope="module")
def refusing() -> tuple[EmulatorState, Litestar]:
    """One emulator for every refused IDENTIFY below (a refused one changes nothing)."""
    state = _state()
    return state, create_emulator_app(state)


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], [0], "0,1"])
def test_an_identify_with_an_invalid_shard_is_closed_with_4010(
    refusing: tuple[EmulatorState, Litestar], shard: object
) -> None:
    state, app = refusing
    with (
        TestClient(app=app) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json(_identify(state, shard=shard))
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == 4010
    assert closed.value.detail == "Invalid shard."


@pytest.mark.parametrize(
    ("intents", "code", "reason"),
    [
        (None, 4013, "Invalid intent(s)."),  # required since v8: leaving it out is wrong
        ("0", 4013, "Invalid intent(s)."),
        (True, 4013, "Invalid intent(s)."),
        (-1, 4013, "Invalid intent(s)."),
        (1 << 26, 4013, "Invalid intent(s)."),  # beyond every intent Discord has
        (1 << 1, 4014, "Disallowed intent(s)."),  # GUILD_MEMBERS
        (1 | 1 << 8, 4014, "Disallowed intent(s)."),  # GUILD_PRESENCES
        (1 << 15, 4014, "Disallowed intent(s)."),  # MESSAGE_CONTENT
    ],
)
def test_an_identify_with_intents_discord_refuses_is_closed(
    refusing: tuple[EmulatorState, Litestar], intents: object, code: int, reason: str
) -> None:
    """Intents are required (v8 and later): an invalid value is closed with 4013, and a
    privileged intent the application has not enabled in the Developer Portal (the emulated
    one has none) with 4014, so a bot that starts asking for one fails here as on Discord."""
    state, app = refusing
    identify = _identify(state, intents=intents)
    if intents is None:
        del identify["d"]["intents"]
    with (
        TestClient(app=app) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json(identify)
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert (closed.value.code, closed.value.detail) == (code, reason)


def test_intents_that_are_not_privileged_or_enabled_ones_are_taken() -> None:
    state = _state(privileged_intents=1 << 1)  # GUILD_MEMBERS enabled in the portal
    with TestClient(app=create_emulator_app(state)) as client:
        for intents in (0, 1 | 1 << 9, 1 << 25, 1 << 1):
            with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
                socket.receive_json()
                socket.send_json(_identify(state, intents=intents))
                assert socket.receive_json()["t"] == "READY"


def test_ready_echoes_the_shard_and_a_second_identify_is_refused() -> None:
    state = _state(gateway_shards=2)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        socket.receive_json()
        socket.send_json(_identify(state, shard=[1, 2]))
        ready = socket.receive_json()
        assert (ready["t"], ready["d"]["shard"]) == ("READY", [1, 2])
        socket.send_json(_identify(state, shard=[0, 2]))
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == 4005  # Already authenticated


def test_too_few_shards_for_the_bots_servers_is_closed_with_4011() -> None:
    """Discord's answer to a bot in more servers than its shard count allows."""
    state = _state(gateway_shards=2, required_shards=2)
    with TestClient(app=create_emulator_app(state)) as client:
        with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
            socket.receive_json()
            socket.send_json(_identify(state))  # no shard: one connection for everything
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert closed.value.code == 4011
        with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
            socket.receive_json()
            socket.send_json(_identify(state, shard=[0, 2]))
            assert socket.receive_json()["t"] == "READY"


def _closed_at_once(app: Litestar, path: str) -> WebSocketDisconnect:
    """How the gateway at ``path`` closed before sending anything."""
    with (
        TestClient(app=app) as client,
        client.websocket_connect(path) as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        socket.receive_json()
    return closed.value


@pytest.mark.parametrize(
    "query",
    ["", "?encoding=json", "?v=8&encoding=json", "?v=5&encoding=json", "?v=11&encoding=json",
     "?v=ten&encoding=json", "?v=&encoding=json"],
)  # fmt: skip
def test_a_gateway_url_without_an_available_api_version_is_closed_with_4012(
    refusing: tuple[EmulatorState, Litestar], query: str
) -> None:
    """Discord's gateway speaks the version the URL's ``v`` names (without one, its default,
    v6, deprecated); the emulator speaks v10's payloads (v9's are the same), so anything else
    is Discord's 4012 Invalid API version, not v10's events under another version's name."""
    closed = _closed_at_once(refusing[1], f"/gateway{query}")
    assert closed.code == 4012
    assert closed.detail.startswith("Invalid API version")


@pytest.mark.parametrize("encoding", ["xml", "etf"])
def test_a_gateway_url_with_an_encoding_not_emulated_is_closed_with_4002(
    refusing: tuple[EmulatorState, Litestar], encoding: str
) -> None:
    """``encoding`` is ``json`` (Discord's default) or ``etf``; the emulator sends JSON only,
    so it refuses to answer anything else in JSON, as Discord would not."""
    assert _closed_at_once(refusing[1], f"/gateway?v=10&encoding={encoding}").code == 4002


@pytest.mark.parametrize("query", ["?v=10&encoding=json", "?v=9&encoding=json", "?v=10"])
def test_a_gateway_url_naming_v9_or_v10_and_json_says_hello(
    refusing: tuple[EmulatorState, Litestar], query: str
) -> None:
    _, app = refusing
    with TestClient(app=app) as client, client.websocket_connect(f"/gateway{query}") as socket:
        assert socket.receive_json()["op"] == 10  # HELLO


@pytest.mark.parametrize(
    "message",
    [
        {"op": 3, "d": {"since": None, "activities": [], "status": "online", "afk": False}},
        {"op": 8, "d": {"guild_id": "1300000000000000001", "query": "", "limit": 0}},
        {"op": 4, "d": {"guild_id": "1", "channel_id": None, "self_mute": False}},
    ],
)
def test_a_payload_before_identify_is_closed_with_4003(
    refusing: tuple[EmulatorState, Litestar], message: dict[str, Any]
) -> None:
    """Only heartbeats, IDENTIFY and RESUME may come before a session is identified: Discord
    closes anything else with 4003 Not authenticated."""
    _, app = refusing
    with (
        TestClient(app=app) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json({"op": 1, "d": None})  # a heartbeat is fine before IDENTIFY
        assert socket.receive_json()["op"] == 11  # HEARTBEAT_ACK
        socket.send_json(message)
        socket.send_json({"op": 1, "d": None})  # its ACK, were the session still open
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert (closed.value.code, closed.value.detail) == (4003, "Not authenticated.")


@pytest.mark.parametrize("frame", ["{bad", "[1, 2]", '"op"', '{"d": null}', '{"op": "1"}'])
def test_a_payload_discord_cannot_decode_is_closed_with_4002(
    refusing: tuple[EmulatorState, Litestar], frame: str
) -> None:
    """Not JSON, or not a payload object with an integer ``op``: Discord's 4002 Decode error
    (the emulator's session failed with an internal error, or ignored it)."""
    _, app = refusing
    with (
        TestClient(app=app) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_text(frame)
        socket.send_json({"op": 1, "d": None})  # its ACK, were the session still open
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert (closed.value.code, closed.value.detail) == (4002, "Decode error.")


def test_an_unknown_opcode_after_identify_is_closed_with_4001() -> None:
    state = _state()
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        socket.receive_json()
        socket.send_json(_identify(state))
        assert socket.receive_json()["t"] == "READY"
        socket.send_json({"op": 3, "d": {"since": None, "activities": [], "status": "online",
                                         "afk": False}})  # fmt: skip
        socket.send_json({"op": 1, "d": 1})  # a presence update is known: the session lives
        assert socket.receive_json()["op"] == 11
        socket.send_json({"op": 5, "d": {}})  # no such opcode (5 was never one to send)
        socket.send_json({"op": 1, "d": 1})  # its ACK, were the session still open
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert (closed.value.code, closed.value.detail) == (4001, "Unknown opcode.")


def test_a_bot_gone_when_its_heartbeat_is_answered_is_no_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a CI run: a copy stopped right after a heartbeat, and the acknowledgement met
    the closed connection. uvicorn says so with ClientDisconnected (an OSError), not Litestar's
    WebSocketDisconnect, and the emulator logged "gateway session failed" with a traceback.
    The send fails here as uvicorn's does (the test client's connection cannot vanish in the
    middle of a send)."""
    from uvicorn.protocols.utils import ClientDisconnected

    from entrypoints.emulator import gateway

    sent = gateway.GatewaySession.send

    async def gone_at_the_ack(
        session: gateway.GatewaySession, op: int, data: Any, event: str | None = None
    ) -> None:
        if op == gateway.OP_HEARTBEAT_ACK:
            raise ClientDisconnected
        await sent(session, op, data, event)

    monkeypatch.setattr(gateway.GatewaySession, "send", gone_at_the_ack)
    state = _state()
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json({"op": 1, "d": None})  # the heartbeat; then the bot is gone
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_an_application_with_an_interactions_url_gets_none_over_the_gateway() -> None:
    """Discord sends an application's interactions to its Interactions Endpoint URL when it
    has one, and then none over the gateway, a bot connected or not; the emulator's test API
    dispatched one there anyway when asked ``"via": "gateway"``, so a gateway bot's tests
    passed with a setup under which real Discord never sends it a command."""
    state = _state(response_deadline=0.2)
    state.interactions_url = "http://127.0.0.1:9/interactions"  # nothing listens there
    user = state.add_user("gail")
    bot = {"authorization": f"Bot {state.bot_token}"}
    command = {"name": "whoami", "description": "Who am I?", "type": 1}
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        socket.receive_json()  # HELLO
        socket.send_json(_identify(state))
        assert socket.receive_json()["t"] == "READY"
        registered = client.put(
            f"/api/v10/applications/{state.client_id}/commands", json=[command], headers=bot
        )
        assert registered.status_code == 200, registered.text
        run = {"user_id": user.id, "command": "whoami"}

        asked = client.post("/_emulator/interactions", json=run | {"via": "gateway"})
        assert asked.status_code == 409, asked.text
        assert "has an Interactions Endpoint URL" in asked.json()["error"]
        assert state.interactions == {}  # nothing was sent anywhere
        by_default = client.post("/_emulator/interactions", json=run)  # to the URL only
        assert by_default.status_code == 502, by_default.text
        [to_the_url] = state.interactions.values()
        assert to_the_url.shards == []

        # Without the URL the next one comes over the gateway: the first frame since READY.
        state.interactions_url = None
        refused = client.post("/_emulator/interactions", json=run | {"via": "http"})
        assert refused.status_code == 409, refused.text
        assert "no Interactions Endpoint URL" in refused.json()["error"]
        sent = client.post("/_emulator/interactions", json=run)
        assert (sent.status_code, sent.json()["via"]) == (200, "gateway"), sent.text
        dispatched = socket.receive_json()
        assert dispatched["t"] == "INTERACTION_CREATE"
        assert dispatched["d"]["id"] == sent.json()["interaction_id"] != to_the_url.id


def test_a_connection_that_stops_heartbeating_is_closed_with_4009() -> None:
    """Discord closes a zombied connection, one whose heartbeats stopped, with 4009 Session
    timed out (hikari reconnects after it); the emulator's gateway kept such a connection open
    for ever, and dispatched interactions into it. The interval is HELLO's."""
    state = _state(heartbeat_interval=0.05)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json() == {
            "op": 10, "d": {"heartbeat_interval": 50}, "s": None, "t": None
        }  # fmt: skip
        socket.send_json(_identify(state))
        assert socket.receive_json()["t"] == "READY"
        socket.send_json({"op": 1, "d": 1})
        assert socket.receive_json()["op"] == 11  # answered while it heartbeats
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json(timeout=60)  # no more heartbeats: nothing but the close
    assert (closed.value.code, closed.value.detail) == (4009, "Session timed out.")
    assert state.gateway_sessions == []


def test_a_connection_that_never_heartbeats_is_closed_with_4009() -> None:
    state = _state(heartbeat_interval=0.05)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO; then neither IDENTIFY nor heartbeat
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json(timeout=60)  # fails (queue.Empty) if it is never closed
    assert closed.value.code == 4009


def test_a_connection_past_the_gateway_rate_limit_is_closed_with_4008() -> None:
    """Discord takes 120 payloads a connection in 60 seconds and closes the connection that
    sends more with 4008 Rate limited; the emulator took any number. Counted, not timed: the
    window outlasts the test, and every payload counts (IDENTIFY and heartbeats too)."""
    state = _state(gateway_command_limit=3, gateway_command_window=3600.0)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json(_identify(state))  # 1
        assert socket.receive_json()["t"] == "READY"
        for beat in (2, 3):  # up to the limit: each answered, the session open
            socket.send_json({"op": 1, "d": 1})
            assert socket.receive_json()["op"] == 11, beat
        assert len(state.gateway_sessions) == 1
        socket.send_json({"op": 1, "d": 1})  # 4: one too many
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert (closed.value.code, closed.value.detail) == (4008, "Rate limited.")
    assert state.gateway_sessions == []
    assert state.gateway_closes == [4008]


def test_each_connection_has_its_own_gateway_rate_limit() -> None:
    """Discord counts per connection: a bot's second connection (another shard, or the one
    it makes after a close) starts with none counted."""
    state = _state(gateway_command_limit=2, gateway_command_window=3600.0)
    with TestClient(app=create_emulator_app(state)) as client:
        for _ in range(2):
            with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
                socket.receive_json()  # HELLO
                socket.send_json(_identify(state))
                assert socket.receive_json()["t"] == "READY"
                socket.send_json({"op": 1, "d": 1})
                assert socket.receive_json()["op"] == 11
    assert 4008 not in state.gateway_closes


def test_the_gateway_rate_limit_counts_again_in_each_window() -> None:
    """A window of no time ends before each next payload: one a window never meets the
    limit of one (no timing assumed: each payload comes after the window it began)."""
    state = _state(gateway_command_limit=1, gateway_command_window=0.0)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        socket.receive_json()  # HELLO
        socket.send_json(_identify(state))
        assert socket.receive_json()["t"] == "READY"
        for _ in range(5):
            socket.send_json({"op": 1, "d": 1})
            assert socket.receive_json()["op"] == 11
    assert state.gateway_closes == []


@pytest.mark.parametrize("token", ["the bot's", "another"])
def test_a_resume_is_answered_invalid_session_not_resumable(token: str) -> None:
    """Discord answers a RESUME it cannot honour with op 9 Invalid Session, ``d`` false (its
    docs: "could not resume a previous session"; 4004 is IDENTIFY's wrong token, and they say
    nothing of RESUME's); the emulator keeps no session after its connection, so each RESUME
    gets that, a wrong token too, and the connection stays unidentified: only IDENTIFY
    starts a session."""
    state = _state()
    with TestClient(app=create_emulator_app(state)) as client:
        with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
            socket.receive_json()  # HELLO
            socket.send_json(_identify(state))
            ready = socket.receive_json()
        resume = {
            "token": state.bot_token if token == "the bot's" else state.bot_token + "x",
            "session_id": ready["d"]["session_id"],
            "seq": ready["s"],
        }
        with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
            socket.receive_json()  # HELLO
            socket.send_json({"op": 6, "d": resume})
            assert socket.receive_json() == {"op": 9, "d": False, "s": None, "t": None}
            socket.send_json({"op": 3, "d": {"since": None, "activities": [], "status": "online",
                                             "afk": False}})  # fmt: skip
            socket.send_json({"op": 1, "d": None})  # its ACK, were the session still open
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert closed.value.code == 4003  # Not authenticated: nothing was resumed
        with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
            socket.receive_json()  # HELLO
            socket.send_json({"op": 6, "d": resume})
            assert socket.receive_json()["op"] == 9
            socket.send_json(_identify(state))  # what hikari does next
            assert socket.receive_json()["t"] == "READY"


def test_a_connection_is_live_before_its_ready_goes_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a CI run: the gateway sent READY, then counted the connection among those
    interactions go to; a bot (another thread) that took READY at once was ready while the
    emulator had no connection for it ("[first] = state.gateway_sessions" found none). The
    connection joins first, under its lock, so nothing dispatched to it precedes READY."""
    from litestar import WebSocket

    state = _state()
    live_at_ready: list[int] = []
    send_text = WebSocket.send_text

    async def watched(socket: Any, data: str, *args: Any, **kwargs: Any) -> None:
        if '"READY"' in data:
            live_at_ready.append(len(state.gateway_sessions))
        await send_text(socket, data, *args, **kwargs)

    monkeypatch.setattr(WebSocket, "send_text", watched)
    with (
        TestClient(app=create_emulator_app(state)) as client,
        client.websocket_connect("/gateway?v=10&encoding=json") as socket,
    ):
        socket.receive_json()  # HELLO
        socket.send_json(_identify(state))
        assert socket.receive_json()["t"] == "READY"
    assert live_at_ready == [1]
