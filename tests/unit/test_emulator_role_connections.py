"""The emulator's Linked Roles refuse what Discord refuses: metadata records (at most 5, key
rules, types), role connections (registered keys only, values as strings of their record's
type, the role_connections.write scope), /users/@me without identify, and the refresh grant
(refresh tokens rotate; a used one, or one of a removed grant, is invalid_grant)."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from entrypoints.emulator import EmulatorState, create_emulator_app

APP = "1200000000000000042"
REDIRECT = "http://127.0.0.1:1/cb"
RECORDS = [
    {"type": 7, "key": "linked", "name": "Linked", "description": "Linked to TaskFlow"},
    {"type": 2, "key": "linked_days", "name": "Days", "description": "Days linked"},
]


def _state() -> EmulatorState:
    return EmulatorState(APP, "secret", {REDIRECT})


@pytest.fixture(scope="module")
def shared() -> tuple[EmulatorState, Litestar]:
    """One emulator for the parametrized cases below: each case either is refused (and
    checks that nothing changed) or works on a user of its own. (Building an emulator for
    each case was a tenth of this file's time.)"""
    state = _state()
    return state, create_emulator_app(state)


_users = itertools.count()


def _bot(state: EmulatorState) -> dict[str, str]:
    return {"Authorization": f"Bot {state.bot_token}"}


async def _tokens(
    client: AsyncTestClient[Any], state: EmulatorState, user_id: str, scopes: str
) -> dict[str, Any]:
    code = state.issue_code(state.users[user_id], frozenset(scopes.split()), REDIRECT, None)
    answer = await client.post(
        "/api/v10/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=(APP, "secret"),
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _refresh(client: AsyncTestClient[Any], refresh_token: str) -> httpx.Response:
    return await client.post(
        "/api/v10/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(APP, "secret"),
    )


def _put(client: AsyncTestClient[Any], token: str, body: Any) -> Any:
    return client.put(
        f"/api/v10/users/@me/applications/{APP}/role-connection",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize(
    ("records", "where"),
    [
        ([{**RECORDS[0], "key": f"k{n}"} for n in range(6)], None),  # more than 5
        ([{**RECORDS[0], "key": "Linked!"}], "key"),
        ([{**RECORDS[0], "key": "x" * 51}], "key"),
        ([{**RECORDS[0], "type": 9}], "type"),
        ([{**RECORDS[0], "type": "7"}], "type"),
        ([{**RECORDS[0], "name": ""}], "name"),
        ([{**RECORDS[0], "description": "d" * 201}], "description"),
        ([RECORDS[0], RECORDS[0]], "key"),  # keys are unique
        # Translations: keys among Discord's locales, values of the field's lengths.
        ([{**RECORDS[0], "name_localizations": {"xx": "Nom"}}], "name_localizations"),
        ([{**RECORDS[0], "name_localizations": {"fr": ""}}], "name_localizations"),
        ([{**RECORDS[0], "name_localizations": {"fr": "x" * 101}}], "name_localizations"),
        ([{**RECORDS[0], "name_localizations": {"fr": 5}}], "name_localizations"),
        (
            [{**RECORDS[0], "description_localizations": {"de": "d" * 201}}],
            "description_localizations",
        ),
    ],
)
async def test_metadata_records_discord_refuses(
    shared: tuple[EmulatorState, Litestar], records: list[dict[str, Any]], where: str | None
) -> None:
    state, app = shared
    before = list(state.role_metadata)
    async with AsyncTestClient(app=app) as client:
        answer = await client.put(
            f"/api/v10/applications/{APP}/role-connections/metadata",
            json=records,
            headers=_bot(state),
        )
    assert answer.status_code == 400
    assert answer.json()["code"] == 50035
    if where is not None:
        assert where in str(answer.json()["errors"])
    assert state.role_metadata == before


async def test_metadata_records_with_translations_discord_takes() -> None:
    state = _state()
    record = {
        **RECORDS[0],
        "name_localizations": {"fr": "Lié", "en-GB": None, "es-419": "x" * 100},
        "description_localizations": {"zh-TW": "d" * 200},
    }
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        answer = await client.put(
            f"/api/v10/applications/{APP}/role-connections/metadata",
            json=[record],
            headers=_bot(state),
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["name_localizations"]["fr"] == "Lié"


async def test_metadata_records_need_the_bot_token_and_are_replaced_whole() -> None:
    state = _state()
    url = f"/api/v10/applications/{APP}/role-connections/metadata"
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        assert (await client.put(url, json=RECORDS)).status_code == 401
        assert (await client.put(url, json=RECORDS, headers=_bot(state))).status_code == 200
        listed = await client.get(url, headers=_bot(state))
        assert [(r["key"], r["type"]) for r in listed.json()] == [
            ("linked", 7),
            ("linked_days", 2),
        ]
        assert (await client.put(url, json=RECORDS[:1], headers=_bot(state))).status_code == 200
    assert [r["key"] for r in state.role_metadata] == ["linked"]


@pytest.mark.parametrize(
    ("metadata", "status"),
    [
        ({"linked": "1", "linked_days": "12"}, 200),
        ({"linked": "0"}, 200),
        # A JSON integer is taken and kept as its string, as Discord's own Linked Roles
        # sample (discord/linked-roles-sample) pushes {"cookieseaten": 1483, ...: 0}.
        ({"linked": 1, "linked_days": 12}, 200),
        ({"linked_days": -3}, 200),
        ({"linked_days": 2**63}, 400),  # beyond a 64-bit integer
        ({"linked_days": 1.5}, 400),  # not an integer
        ({"linked": True}, 400),  # booleans are 1 or 0
        ({"linked_days": None}, 400),
        ({"linked": "true"}, 400),  # booleans are 1 or 0
        ({"linked_days": "twelve"}, 400),
        ({"linked_days": ""}, 400),  # at least 1 character
        ({"linked_days": "1" * 101}, 400),  # at most 100 characters
        ({"cookies_eaten": "3"}, 400),  # not a registered record
    ],
)
async def test_role_connection_values_are_checked_against_the_records(
    shared: tuple[EmulatorState, Litestar], metadata: dict[str, Any], status: int
) -> None:
    state, app = shared
    user = state.add_user(f"alice{next(_users)}")
    async with AsyncTestClient(app=app) as client:
        await client.put(
            f"/api/v10/applications/{APP}/role-connections/metadata",
            json=RECORDS,
            headers=_bot(state),
        )
        tokens = await _tokens(client, state, user.id, "identify role_connections.write")
        body = {
            "platform_name": "TaskFlow",
            "platform_username": user.username,
            "metadata": metadata,
        }
        answer = await _put(client, tokens["access_token"], body)
        assert answer.status_code == status, answer.text
        shown = await client.get(
            f"/api/v10/users/@me/applications/{APP}/role-connection",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
    if status == 200:
        as_strings = {key: str(value) for key, value in metadata.items()}
        assert answer.json()["metadata"] == as_strings  # Discord answers strings
        assert state.role_connections[user.id]["metadata"] == as_strings
        assert shown.json()["platform_username"] == user.username
    else:
        assert answer.json()["code"] == 50035
        assert user.id not in state.role_connections


async def test_a_role_connection_needs_the_scope_and_a_live_token() -> None:
    state = _state()
    user = state.add_user("bob")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        body = {"platform_name": "TaskFlow", "metadata": {}}
        identify_only = await _tokens(client, state, user.id, "identify")
        assert (await _put(client, identify_only["access_token"], body)).status_code == 403
        tokens = await _tokens(client, state, user.id, "identify role_connections.write")
        assert (await _put(client, tokens["access_token"], body)).status_code == 200
        expired = await client.post(f"/_emulator/users/{user.id}/expire-tokens")
        assert expired.json()["expired"] >= 1
        assert (await _put(client, tokens["access_token"], body)).status_code == 401
        shown = await client.get("/_emulator/role-connections")
        assert shown.json()["connections"][user.id]["platform_name"] == "TaskFlow"


@pytest.mark.parametrize("hint", ["access_token", "refresh_token"])
async def test_revoking_a_token_removes_the_role_connection_as_removing_the_app_does(
    hint: str,
) -> None:
    """Discord: revoking a token revokes the whole authorization, a deauthorization as the
    user removing the app is (both send APPLICATION_DEAUTHORIZED, webhook events docs); the
    emulator took the role connection away on the second only, so a revoked user kept it."""
    state = _state()
    user = state.add_user("frank")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        tokens = await _tokens(client, state, user.id, "identify role_connections.write")
        body = {"platform_name": "TaskFlow", "metadata": {}}
        assert (await _put(client, tokens["access_token"], body)).status_code == 200
        assert user.id in state.role_connections
        revoked = await client.post(
            "/api/v10/oauth2/token/revoke",
            data={"token": tokens[hint], "token_type_hint": hint},
            auth=(APP, "secret"),
        )
        assert revoked.status_code == 200
        shown = await client.get("/_emulator/role-connections")
        assert user.id not in shown.json()["connections"]
        assert (await _put(client, tokens["access_token"], body)).status_code == 401
        assert (await _refresh(client, tokens["refresh_token"])).status_code == 400


async def test_a_field_left_out_keeps_its_value_and_null_clears_it() -> None:
    """Discord lists every field of the role connection as optional and does not say that
    leaving one out clears it; its spec takes ``null`` for the platform name and username.
    So the emulator keeps what a body leaves out: only an explicit ``null`` clears, and a
    service that counted on omission clearing the username is caught."""
    state = _state()
    user = state.add_user("erin")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        await client.put(
            f"/api/v10/applications/{APP}/role-connections/metadata",
            json=RECORDS,
            headers=_bot(state),
        )
        token = (await _tokens(client, state, user.id, "identify role_connections.write"))[
            "access_token"
        ]
        linked = {"linked": "1", "linked_days": "3"}
        full = {"platform_name": "TaskFlow", "platform_username": "erin_tf", "metadata": linked}
        assert (await _put(client, token, full)).status_code == 200

        unlinked = {"linked": "0", "linked_days": "0"}
        omitted = await _put(client, token, {"platform_name": "TaskFlow", "metadata": unlinked})
        assert omitted.status_code == 200
        assert omitted.json() == {**full, "metadata": unlinked}  # the username stays
        assert (await _put(client, token, {})).json() == {**full, "metadata": unlinked}

        cleared = await _put(
            client, token, {"platform_name": None, "platform_username": None, "metadata": None}
        )
        assert cleared.status_code == 200, cleared.text
        assert cleared.json() == {"platform_name": None, "platform_username": None, "metadata": {}}
        assert state.role_connections[user.id] == cleared.json()


async def test_users_me_needs_the_identify_scope() -> None:
    """A token for ``role_connections.write`` alone can push a role connection, not read who
    the user is: Discord answers /users/@me 401 without ``identify``."""
    state = _state()
    user = state.add_user("dora")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        for scopes, status in (("role_connections.write", 401), ("identify", 200)):
            token = (await _tokens(client, state, user.id, scopes))["access_token"]
            me = await client.get(
                "/api/v10/users/@me", headers={"Authorization": f"Bearer {token}"}
            )
            assert me.status_code == status, scopes
            if status == 401:
                assert me.json() == {"message": "401: Unauthorized", "code": 0}
            else:
                assert me.json()["id"] == user.id


async def test_refresh_tokens_rotate_and_die_with_the_grant() -> None:
    state = _state()
    user = state.add_user("carol")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        first = await _tokens(client, state, user.id, "identify role_connections.write")
        assert first["expires_in"] == 604800
        refreshed = await _refresh(client, first["refresh_token"])
        assert refreshed.status_code == 200
        second = refreshed.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["scope"] == "identify role_connections.write"
        used = await _refresh(client, first["refresh_token"])  # a refresh token works once
        assert (used.status_code, used.json()["error"]) == (400, "invalid_grant")

        await client.post(f"/_emulator/users/{user.id}/deauthorize")
        removed = await _refresh(client, second["refresh_token"])
        assert (removed.status_code, removed.json()["error"]) == (400, "invalid_grant")
        me = await client.get(
            "/api/v10/users/@me", headers={"Authorization": f"Bearer {second['access_token']}"}
        )
        assert me.status_code == 401


@pytest.mark.parametrize(
    ("mode", "status", "json"),
    [
        ("429", 429, True),
        ("429-global", 429, True),
        ("429-shared", 429, True),
        ("cloudflare", 429, False),
        ("cloudflare-403", 403, False),
        ("blocked", 403, True),
    ],
)
async def test_pushes_and_refreshes_meet_rate_limits_and_blocks_without_effect(
    mode: str, status: int, json: bool
) -> None:
    """The faults the role for linked members meets, at the role connection and the token
    endpoint (the refresh grant too): Discord's JSON or Cloudflare's HTML, nothing stored and
    no refresh token spent; every call counted, answered by a fault or not."""
    state = _state()
    state.role_metadata = list(RECORDS)
    user = state.add_user("gail")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        tokens = await _tokens(client, state, user.id, "identify role_connections.write")
        before = state.calls.copy()
        for endpoint in ("role_connection", "token"):
            fault = {"endpoint": endpoint, "mode": mode}
            assert (await client.post("/_emulator/faults", json=fault)).status_code == 200
        pushed = await _put(
            client, tokens["access_token"], {"metadata": {"linked": "1", "linked_days": "3"}}
        )
        refreshed = await _refresh(client, tokens["refresh_token"])
        for answer in (pushed, refreshed):
            assert answer.status_code == status
            if json:
                assert "retry_after" in answer.json() or answer.json()["code"] == 40333
            else:
                assert answer.headers["content-type"].startswith("text/html")
        assert user.id not in state.role_connections
        assert tokens["refresh_token"] in state.refresh_tokens
        assert state.calls - before == {"role_connection": 1, "token": 1}


def test_a_late_token_answer_grants_first_and_answers_once_lifted() -> None:
    """The token endpoint's "late" fault: the grant is made as asked (the refresh token
    spent, the new pair issued), and only the answer waits, for the fault to be lifted (or
    ``fault_delay``): what a caller that stops, or gives up, meanwhile never hears. Only the
    token endpoint has it (elsewhere it is refused, as any unknown fault)."""
    state = _state()
    state.fault_delay = 60.0  # a bound: lifted long before
    user = state.add_user("hana")
    with TestClient(app=create_emulator_app(state)) as client:
        code = state.issue_code(user, frozenset({"identify"}), REDIRECT, None)
        first = client.post(
            "/api/v10/oauth2/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
            auth=(APP, "secret"),
        ).json()
        for endpoint in ("role_connection", "users_me", "callback"):
            fault = {"endpoint": endpoint, "mode": "late"}
            assert client.post("/_emulator/faults", json=fault).status_code == 400, endpoint
        fault = {"endpoint": "token", "mode": "late"}
        assert client.post("/_emulator/faults", json=fault).status_code == 200
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                client.post,
                "/api/v10/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                auth=(APP, "secret"),
            )
            deadline = time.monotonic() + 60  # a bound, not a measurement
            while first["refresh_token"] in state.refresh_tokens:
                assert time.monotonic() < deadline, "the refresh was never granted"
                time.sleep(0.01)
            assert not answer.done()  # granted, the answer held
            state.faults.pop("token")  # lifted
            refreshed = answer.result(timeout=60)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] in state.refresh_tokens
    assert refreshed.json()["access_token"] in state.tokens


async def test_a_users_own_global_limit_answers_their_calls_only() -> None:
    """Discord's global limit is a user's (per token): the user whose token met it is
    answered its global 429 ("global": true, X-RateLimit-Global, X-RateLimit-Scope: global)
    at both role connection routes until it resets; another user's push goes through."""
    state = _state()
    state.role_metadata = list(RECORDS)
    held, other = state.add_user("hal"), state.add_user("ida")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        held_tokens = await _tokens(client, state, held.id, "identify role_connections.write")
        other_tokens = await _tokens(client, state, other.id, "identify role_connections.write")
        for refused in ({"seconds": 0}, {"seconds": "5"}, {"seconds": True}, {}):
            asked = await client.post(f"/_emulator/users/{held.id}/global-limit", json=refused)
            assert asked.status_code == 400
        asked = await client.post(f"/_emulator/users/{held.id}/global-limit", json={"seconds": 60})
        assert asked.status_code == 200
        body = {"metadata": {"linked": "1", "linked_days": "3"}}

        pushed = await _put(client, held_tokens["access_token"], body)
        read = await client.get(
            f"/api/v10/users/@me/applications/{APP}/role-connection",
            headers={"Authorization": f"Bearer {held_tokens['access_token']}"},
        )
        for answer in (pushed, read):
            assert answer.status_code == 429
            assert answer.json()["global"] is True
            assert 0 < answer.json()["retry_after"] <= 60
            assert answer.headers["x-ratelimit-global"] == "true"
            assert answer.headers["x-ratelimit-scope"] == "global"
        assert held.id not in state.role_connections
        assert (await _put(client, other_tokens["access_token"], body)).status_code == 200

        state.globally_limited[held.id] = 0.0  # reset: it goes through again
        assert (await _put(client, held_tokens["access_token"], body)).status_code == 200
