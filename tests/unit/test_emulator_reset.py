"""``EmulatorState.reset``: the tests that share one served emulator reset it before each test,
so that none sees what an earlier one left (users, servers and members, messages, faults,
commands, role connections, tokens), while the service's settings still name the same
application."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from litestar.testing import AsyncTestClient

from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import KEPT_ON_RESET, TEST_GUILD_ID, Guild, Interaction

API = "/api/v10"


def used_state() -> tuple[EmulatorState, str]:
    """An emulator a test has used every part of; and an access token it issued."""
    state = EmulatorState("1200000000000000042", "secret", {"http://127.0.0.1:1/cb"})
    dora = state.add_user("dora", email="dora@example.com", verified=True)
    role = state.add_role("Linked to TaskFlow")
    state.test_guild.members[dora.id].add(role.id)
    state.guilds["42"] = Guild("42", "Another server", members={dora.id: set()})
    scopes = frozenset({"identify", "role_connections.write"})
    state.authorize(dora, scopes)
    code = state.issue_code(dora, scopes, "http://127.0.0.1:1/cb", None)
    grant = state.redeem_code(code, "http://127.0.0.1:1/cb", None)
    assert not isinstance(grant, tuple)
    token = state.issue_token(grant)
    state.issue_refresh_token(grant)
    state.issue_code(dora, scopes, "http://127.0.0.1:1/cb", None)
    state.revoked.add("an-old-token")
    state.sign_in_browser(dora)
    state.faults.update({"users_me": "500", "callback": "reject"})
    state.calls["users_me"] += 3
    state.user_agents.append("DiscordBot (x, 1)")
    state.commands["global"] = [{"name": "link"}]
    state.commands[TEST_GUILD_ID] = [{"name": "whoami"}]
    state.refused_commands.append({"code": 50035})
    state.role_metadata.append({"key": "linked", "type": 7})
    state.role_connections[dora.id] = {"platform_name": "TaskFlow", "metadata": {}}
    state.role_connection_windows[dora.id] = (1.0, 1)
    state.role_connection_limit = 1
    interaction = Interaction(state.snowflake(), "tok", dora.id, "link", TEST_GUILD_ID, 0.0)
    interaction.message_id = state.snowflake()
    interaction.followups.append({"content": "a follow-up message"})
    state.interactions[interaction.id] = interaction
    state.service_links["Web app"] = "http://127.0.0.1:1/"
    state.interactions_url = "http://127.0.0.1:1/interactions"
    state.role_connections_verification_url = "http://127.0.0.1:1/linked-roles"
    state.fault_delay = 60.0
    state.response_deadline = 60.0
    state.transit_delay = 0.3
    state.gateway_shards = 4
    return state, token


def test_reset_clears_what_the_tests_depend_on() -> None:
    state, token = used_state()
    dora = next(iter(state.users))

    state.reset()

    assert state.users == {}
    assert list(state.guilds) == [TEST_GUILD_ID]
    assert state.test_guild.members == {}
    assert set(state.test_guild.roles) == {TEST_GUILD_ID, state.test_guild.bot_role_id}
    assert state.interactions == {}  # and the messages they answered with
    assert state.faults == {}
    assert state.calls == {}
    assert state.commands == {}
    assert state.refused_commands == []
    assert state.role_connections == {}
    assert state.role_metadata == []
    assert state.role_connection_windows == {}
    assert state.grant_of(token) is None
    assert state.tokens == state.refresh_tokens == state.codes == {}
    assert state.token_expiry == {}
    assert state.revoked == set()
    assert state.authorizations == {}
    assert not state.already_granted(dora, frozenset({"identify"}))
    assert state.browser_sessions == {}
    assert state.redirect_uris == set()
    assert state.interactions_url is None


def test_reset_leaves_what_a_new_emulator_has_but_the_applications_identity() -> None:
    """Every field (also one added later) is a new emulator's again, but those the service's
    settings name; ids stay ever increasing, none given twice."""
    state, _ = used_state()
    identity = {name: getattr(state, name) for name in KEPT_ON_RESET}
    last_id = int(state.snowflake())

    state.reset()

    fresh = EmulatorState(state.client_id, state.client_secret, set())
    for each in fields(EmulatorState):
        if each.name not in KEPT_ON_RESET:
            assert getattr(state, each.name) == getattr(fresh, each.name), each.name
    assert {name: getattr(state, name) for name in KEPT_ON_RESET if name != "_next_id"} == {
        name: value for name, value in identity.items() if name != "_next_id"
    }
    assert int(state.snowflake()) > last_id


async def test_a_served_emulator_serves_the_reset_state() -> None:
    """Reset in place: the server already running answers from the new state."""
    state, token = used_state()
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        bearer: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
        before = await client.get(f"{API}/users/@me", **bearer)
        assert before.status_code == 500  # the fault

        state.reset()

        after = await client.get(f"{API}/users/@me", **bearer)
        assert after.status_code == 401  # no fault, and the token is gone
        listed = await client.get("/_emulator/users")
        assert listed.status_code == 200
        assert listed.json() == []
        bot = {"Authorization": f"Bot {state.bot_token}"}
        commands = await client.get(f"{API}/applications/{state.client_id}/commands", headers=bot)
        assert commands.status_code == 200
        assert commands.json() == []
