"""Input Discord refuses with a 4xx gets one from the emulator too, never a 500: secrets and
tokens beyond ASCII (a path, a form field or a header may hold any character)."""

from __future__ import annotations

import base64
import math
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import hikari
import pytest
from litestar import Litestar
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TEST_GUILD_ID, Interaction

APP_ID = "1200000000000000042"
NOT_ASCII = "s\u00e9cret"  # what compare_digest refuses to compare as str


@pytest.fixture
def emulator() -> Iterator[tuple[EmulatorState, TestClient[Litestar]]]:
    state = EmulatorState(APP_ID, "secret", set(), response_deadline=60.0)
    with TestClient(app=create_emulator_app(state)) as client:
        yield state, client


def _header(value: str) -> list[tuple[bytes, bytes]]:
    """An Authorization header sent as UTF-8 bytes (httpx encodes str headers as ASCII)."""
    return [(b"authorization", value.encode())]


@pytest.mark.parametrize("endpoint", ["/api/v10/oauth2/token", "/api/v10/oauth2/token/revoke"])
def test_a_client_secret_beyond_ascii_is_a_wrong_one(
    emulator: tuple[EmulatorState, TestClient[Litestar]], endpoint: str
) -> None:
    _, client = emulator
    form = {"grant_type": "refresh_token", "refresh_token": "r", "token": "t"}
    in_body = client.post(endpoint, data={**form, "client_id": APP_ID, "client_secret": NOT_ASCII})
    basic = base64.b64encode(f"{APP_ID}:{NOT_ASCII}".encode()).decode()
    in_header = client.post(endpoint, data=form, headers={"authorization": f"Basic {basic}"})
    for answer in (in_body, in_header):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "invalid_client"


def test_an_interaction_token_beyond_ascii_is_an_unknown_one(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    state, client = emulator
    interaction = _pending(state)
    token = "%C3%A9"  # "é" in the path
    reply = {"type": 4, "data": {"content": "Hello"}}
    callback = client.post(f"/api/v10/interactions/{interaction.id}/{token}/callback", json=reply)
    assert (callback.status_code, callback.json()["code"]) == (404, 10062)
    webhook = f"/api/v10/webhooks/{APP_ID}/{token}"
    for answer in (
        client.patch(f"{webhook}/messages/@original", json={"content": "x"}),
        client.post(webhook, json={"content": "x"}),
    ):
        assert (answer.status_code, answer.json()["code"]) == (404, 10015)
    assert interaction.response is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/v10/gateway/bot",
        "/api/v10/oauth2/applications/@me",
        f"/api/v10/applications/{APP_ID}/commands",
        f"/api/v10/applications/{APP_ID}/role-connections/metadata",
    ],
)
def test_a_bot_token_beyond_ascii_is_unauthorized(
    emulator: tuple[EmulatorState, TestClient[Litestar]], path: str
) -> None:
    _, client = emulator
    answer = client.get(path, headers=_header(f"Bot {NOT_ASCII}"))
    assert answer.status_code == 401, answer.text


def test_an_identify_with_a_token_beyond_ascii_fails_authentication(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    _, client = emulator
    with client.websocket_connect("/gateway?v=10&encoding=json") as socket:
        assert socket.receive_json()["op"] == 10  # HELLO
        socket.send_json({"op": 2, "d": {"token": NOT_ASCII, "intents": 0, "properties": {}}})
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == 4004


# -- components whose content is not emulated --------------------------------------------------

TEXT = {"type": 10, "content": "Hello"}


def _pending(state: EmulatorState) -> Interaction:
    interaction = Interaction(
        id=state.snowflake(),
        token=secrets.token_urlsafe(48),
        user_id=state.add_user("nina").id,
        command="link",
        guild_id=None,
        sent_at=time.monotonic(),
    )
    state.interactions[interaction.id] = interaction
    return interaction


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (  # a section of text displays holding a number
            {"type": 4, "data": {"flags": 32768, "components": [{"type": 9, "components": [1]}]}},
            ("data", "components", 0, "components", 0),
        ),
        (  # the same inside a container
            {
                "type": 4,
                "data": {
                    "flags": 32768,
                    "components": [
                        {"type": 17, "components": [{"type": 9, "components": [TEXT, "x"]}]}
                    ],
                },
            },
            ("data", "components", 0, "components", 0, "components", 1),
        ),
        (  # a modal's (deprecated) action row holding a number
            {
                "type": 9,
                "data": {
                    "custom_id": "ask",
                    "title": "Your name",
                    "components": [{"type": 1, "components": [1]}],
                },
            },
            ("data", "components", 0, "components", 0),
        ),
    ],
    ids=["section", "section-in-container", "modal-row"],
)
def test_a_component_that_is_not_an_object_is_refused_not_a_crash(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
    body: dict[str, object],
    path: tuple[str | int, ...],
) -> None:
    state, client = emulator
    interaction = _pending(state)
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    answer = client.post(url, json=body, params={"with_response": "true"})
    assert answer.status_code == 400, answer.text
    node = answer.json()["errors"]
    for key in path:
        node = node[str(key)]
    assert [e["code"] for e in node["_errors"]] == ["MODEL_TYPE_CONVERT"]
    assert interaction.response is None


def test_a_components_field_that_is_not_a_list_holds_nothing_to_number(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    """A text display has no ``components``: one sent anyway (a string here) is a field
    Discord ignores, and the emulator stores the message as it does any other."""
    state, client = emulator
    interaction = _pending(state)
    text = {**TEXT, "components": "ab"}
    body = {"type": 4, "data": {"flags": 32768, "components": [text]}}
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    answer = client.post(url, json=body, params={"with_response": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["resource"]["message"]["components"] == [{**text, "id": 1}]


def test_a_modal_makes_no_message_whatever_its_data_says_of_flags(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    """A modal's ``data`` has no message flags: one sent under that name (a string here) is
    not read, and the callback response names no message, which hikari reads as none."""
    state, client = emulator
    interaction = _pending(state)
    label = {"type": 18, "label": "Name", "component": {"type": 4, "custom_id": "n", "style": 1}}
    data = {"custom_id": "ask", "title": "Your name", "components": [label], "flags": "x"}
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    answer = client.post(url, json={"type": 9, "data": data}, params={"with_response": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"interaction": {"id": interaction.id, "type": 2}}
    entities = hikari.impl.EntityFactoryImpl(Mock(spec=hikari.RESTAware))
    response = entities.deserialize_interaction_callback_response(answer.json())
    assert response.interaction.response_message_id is hikari.UNDEFINED
    assert response.resource is hikari.UNDEFINED


# -- the test API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"username": ["nina"]},
        {"username": "nina", "id": "abc"},
        {"username": "nina", "id": -5},
        {"username": "nina", "global_name": 5},
        {"username": "nina", "email": {"at": "example.com"}},
    ],
)
def test_a_test_user_unlike_a_discord_user_is_refused_with_400(
    emulator: tuple[EmulatorState, TestClient[Litestar]], body: dict[str, object]
) -> None:
    """Taken, such a user broke the pages that show it and the DMs sent as it (500s)."""
    state, client = emulator
    refused = client.post("/_emulator/users", json=body)
    assert refused.status_code == 400, refused.text
    assert state.users == {}
    assert client.get("/channel").status_code == 200
    created = client.post("/_emulator/users", json={"username": "nina", "id": 1300000000000000077})
    assert created.status_code == 201
    assert created.json()["id"] == "1300000000000000077"


@pytest.mark.parametrize("mode", [["429"], {"429": True}, 429])
def test_a_fault_mode_that_is_not_a_name_is_refused_with_400(
    emulator: tuple[EmulatorState, TestClient[Litestar]], mode: object
) -> None:
    state, client = emulator
    refused = client.post("/_emulator/faults", json={"endpoint": "token", "mode": mode})
    assert refused.status_code == 400, refused.text
    assert state.faults == {}


# -- bodies that are not JSON ------------------------------------------------------------------

INVALID_JSON = {"code": 50109, "message": "The request body contains invalid JSON."}
ROLE = "1300000000000000010"


def _discord_endpoints(state: EmulatorState, interaction: Interaction) -> list[tuple[str, str]]:
    """Each endpoint of Discord's API the emulator serves that a client sends a body to (or,
    for a member's role, may send a JSON Content-Type to without one)."""
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    member_role = f"/api/v10/guilds/{TEST_GUILD_ID}/members/{interaction.user_id}/roles/{ROLE}"
    return [
        ("PUT", f"/api/v10/applications/{APP_ID}/commands"),
        ("PUT", f"/api/v10/applications/{APP_ID}/guilds/{TEST_GUILD_ID}/commands"),
        ("POST", f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"),
        ("PATCH", f"{webhook}/messages/@original"),
        ("POST", webhook),
        ("PUT", f"/api/v10/applications/{APP_ID}/role-connections/metadata"),
        ("PUT", f"/api/v10/users/@me/applications/{APP_ID}/role-connection"),
        ("PUT", member_role),
        ("DELETE", member_role),
    ]


@pytest.mark.parametrize("body", [b"{bad", b"", b"\xff", b'{"content": "x"', b"NaN"], ids=repr)
def test_a_body_sent_as_json_that_is_not_json_is_discords_50109_everywhere(
    emulator: tuple[EmulatorState, TestClient[Litestar]], body: bytes
) -> None:
    """Discord answers such a body (an empty one too, even on a DELETE) with 400 50109 on
    every endpoint; the emulator answered in Litestar's words (``status_code``, ``detail``),
    which no Discord client reads."""
    state, client = emulator
    interaction = _pending(state)
    interaction.response = {"type": 5, "data": {"flags": 64}}
    state.guilds[TEST_GUILD_ID].members[interaction.user_id] = set()
    state.add_role("Linked", guild_id=TEST_GUILD_ID, position=1, role_id=ROLE)
    headers = {
        "content-type": "application/json",
        "authorization": f"Bot {state.bot_token}",
    }
    for method, path in _discord_endpoints(state, interaction):
        answer = client.request(method, path, content=body, headers=headers)
        assert (answer.status_code, answer.json()) == (400, INVALID_JSON), (method, path)
    assert interaction.response == {"type": 5, "data": {"flags": 64}}
    assert interaction.followups == []
    assert state.guilds[TEST_GUILD_ID].members[interaction.user_id] == set()


def test_a_body_not_sent_as_json_is_not_read(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    """Discord reads a body as JSON only when its Content-Type says so: without one (or as
    text) the body counts as none, which each endpoint judges as it judges a missing body
    (an edit of nothing changes nothing; a follow-up of nothing is 50006)."""
    state, client = emulator
    interaction = _pending(state)
    callback = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    as_text = {"content-type": "text/plain"}
    refused = client.post(callback, content=b'{"type": 4, "data": {"content": "Hi"}}')
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == 50035
    assert interaction.response is None
    client.post(callback, json={"type": 4, "data": {"content": "Hello"}})
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    for body in (b"", b"{bad", b'{"content": "Changed"}'):
        edit = client.patch(f"{webhook}/messages/@original", content=body, headers=as_text)
        assert edit.status_code == 200, edit.text
        assert edit.json()["content"] == "Hello"
        follow_up = client.post(webhook, content=body, headers=as_text)
        assert (follow_up.status_code, follow_up.json()["code"]) == (400, 50006)
    assert interaction.followups == []


# -- rate limits -------------------------------------------------------------------------------

_FAULTED_CALLS = {
    "token": ("POST", "/api/v10/oauth2/token"),
    "users_me": ("GET", "/api/v10/users/@me"),
    "token_revoke": ("POST", "/api/v10/oauth2/token/revoke"),
    "member_roles": ("PUT", f"/api/v10/guilds/{TEST_GUILD_ID}/members/1/roles/{ROLE}"),
    "role_connection": ("PUT", f"/api/v10/users/@me/applications/{APP_ID}/role-connection"),
}


@pytest.mark.parametrize("endpoint", sorted(_FAULTED_CALLS))
def test_a_resources_rate_limit_says_it_is_shared(
    emulator: tuple[EmulatorState, TestClient[Litestar]], endpoint: str
) -> None:
    """Discord's 429 for a limit shared per resource (every caller's, not the token's):
    X-RateLimit-Scope: shared, "global" false, and the route's bucket headers, whose
    X-RateLimit-Remaining is the caller's own, not used up (Discord's example)."""
    _, client = emulator
    method, path = _FAULTED_CALLS[endpoint]
    client.post("/_emulator/faults", json={"endpoint": endpoint, "mode": "429-shared"})
    limited = client.request(method, path)
    assert limited.status_code == 429, limited.text
    body = limited.json()
    assert body == {
        "message": "The resource is being rate limited.",
        "retry_after": body["retry_after"],
        "global": False,
    }
    headers = limited.headers
    assert int(headers["retry-after"]) == math.ceil(body["retry_after"])
    assert headers["x-ratelimit-scope"] == "shared"
    assert "x-ratelimit-global" not in headers
    assert int(headers["x-ratelimit-remaining"]) > 0
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-ratelimit-bucket"])


@pytest.mark.parametrize("endpoint", sorted(_FAULTED_CALLS))
def test_a_rate_limit_carries_the_headers_discord_sends(
    emulator: tuple[EmulatorState, TestClient[Litestar]], endpoint: str
) -> None:
    """Discord's 429 for a route's limit carries the route's bucket (X-RateLimit-Limit,
    -Remaining, -Reset, -Reset-After, -Bucket) with its scope; the global one says it is
    global. Both: Retry-After (whole seconds) and JSON ``retry_after`` and ``global``. The
    emulator sent no bucket headers."""
    _, client = emulator
    method, path = _FAULTED_CALLS[endpoint]
    for mode, is_global in (("429", False), ("429-global", True)):
        client.post("/_emulator/faults", json={"endpoint": endpoint, "mode": mode})
        before = time.time()
        limited = client.request(method, path)
        assert limited.status_code == 429, limited.text
        body = limited.json()
        assert body == {
            "message": "You are being rate limited.",
            "retry_after": body["retry_after"],
            "global": is_global,
        }
        headers = limited.headers
        assert int(headers["retry-after"]) == math.ceil(body["retry_after"])
        if is_global:
            assert (headers["x-ratelimit-global"], headers["x-ratelimit-scope"]) == (
                "true",
                "global",
            )
            assert "x-ratelimit-bucket" not in headers
            continue
        assert "x-ratelimit-global" not in headers
        assert headers["x-ratelimit-scope"] == "user"
        assert int(headers["x-ratelimit-limit"]) > 0
        assert headers["x-ratelimit-remaining"] == "0"
        assert float(headers["x-ratelimit-reset-after"]) == body["retry_after"]
        assert float(headers["x-ratelimit-reset"]) >= before + body["retry_after"] - 0.001
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-ratelimit-bucket"])


def _limits(answer: Any) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("x-ratelimit-")}


def test_every_answer_of_the_api_carries_its_routes_rate_limit_headers(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
) -> None:
    """Discord sends X-RateLimit-Limit, -Remaining, -Reset, -Reset-After and -Bucket with
    its answers, not only with a 429; the emulator sent them from the member roles and role
    connection routes only, so a client that misread them on any other route (hikari's
    webhook and callback calls, our token refresh) met them first on Discord. A bucket per
    route, whatever its parameters; a window per route's parameters and caller."""
    state, client = emulator
    bot = {"authorization": f"Bot {state.bot_token}"}
    first = client.get("/api/v10/applications/@me", headers=bot)
    second = client.get("/api/v10/applications/@me", headers=bot)
    refused = client.get("/api/v10/applications/@me", headers={"authorization": "Bot nope"})
    assert first.status_code == second.status_code == 200
    assert refused.status_code == 401
    one, two, other = _limits(first), _limits(second), _limits(refused)
    assert set(one) == {
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
    }
    assert re.fullmatch(r"[0-9a-f]{32}", one["x-ratelimit-bucket"])
    assert one["x-ratelimit-bucket"] == two["x-ratelimit-bucket"] == other["x-ratelimit-bucket"]
    assert int(two["x-ratelimit-remaining"]) == int(one["x-ratelimit-remaining"]) - 1
    assert other["x-ratelimit-remaining"] == one["x-ratelimit-remaining"]  # another caller
    assert 0 <= float(one["x-ratelimit-reset-after"]) <= 60
    assert float(one["x-ratelimit-reset"]) > time.time() - 1

    # The webhook of two interactions: one bucket, a window each; a refusal carries them too.
    webhooks = [
        client.get(f"/api/v10/webhooks/{APP_ID}/{token}/messages/@original")
        for token in ("first-token", "second-token")
    ]
    assert [w.status_code for w in webhooks] == [404, 404]
    [a, b] = [_limits(w) for w in webhooks]
    assert a["x-ratelimit-bucket"] == b["x-ratelimit-bucket"] != one["x-ratelimit-bucket"]
    assert a["x-ratelimit-remaining"] == b["x-ratelimit-remaining"]
    invalid = client.patch(
        f"/api/v10/webhooks/{APP_ID}/t/messages/@original",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert invalid.json()["code"] == 50109
    assert "x-ratelimit-bucket" in invalid.headers

    # Not where Discord sends none: the test API, a route it does not have, Cloudflare's page.
    assert _limits(client.get("/_emulator/users")) == {}
    assert _limits(client.get("/api/v10/users/@me/guilds/nope")) == {}
    client.post("/_emulator/faults", json={"endpoint": "users_me", "mode": "cloudflare"})
    assert _limits(client.get("/api/v10/users/@me")) == {}


# -- routes Discord does not have ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/api/v10/users/@me/guilds/nope", 404, "404: Not Found"),
        ("POST", "/api/v10/oauth2/tokens", 404, "404: Not Found"),
        ("PUT", "/api/v10/users/@me", 405, "405: Method Not Allowed"),
        ("GET", "/api/v10/oauth2/token", 405, "405: Method Not Allowed"),
        ("DELETE", f"/api/v10/applications/{APP_ID}/commands", 405, "405: Method Not Allowed"),
    ],
)
def test_a_route_or_method_discord_does_not_have_is_answered_in_discords_words(
    emulator: tuple[EmulatorState, TestClient[Litestar]],
    method: str,
    path: str,
    status: int,
    message: str,
) -> None:
    """Discord's API answers a path it does not serve 404 and a method a route does not
    take 405, as its other errors: ``{"message": ..., "code": 0}``. The emulator answered
    in Litestar's words (``status_code``, ``detail``), which no Discord client reads; its
    own test API still does."""
    _, client = emulator
    answer = client.request(method, path)
    assert (answer.status_code, answer.json()) == (status, {"message": message, "code": 0})
    own = client.get("/_emulator/nope")
    assert (own.status_code, own.json()["status_code"]) == (404, 404)
