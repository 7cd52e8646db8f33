"""The emulator's servers: a member's roles as Discord changes them (and refuses to), the test
API that sets a server up, and the channel page showing the roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TEST_GUILD_ID, GuildRole, TestUser

API = "/api/v10"


@dataclass
class Server:
    state: EmulatorState
    client: AsyncTestClient[Any]
    dora: TestUser
    role: GuildRole

    def path(
        self, role: str | None = None, user: str | None = None, guild: str = TEST_GUILD_ID
    ) -> str:
        return f"{API}/guilds/{guild}/members/{user or self.dora.id}/roles/{role or self.role.id}"

    @property
    def bot(self) -> dict[str, str]:
        return {"Authorization": f"Bot {self.state.bot_token}"}

    def roles_of(self, user: TestUser) -> set[str]:
        return self.state.test_guild.members[user.id]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = EmulatorState("1200000000000000042", "secret", {"http://127.0.0.1:1/cb"})
    dora = state.add_user("dora", global_name="Dora")
    role = state.add_role("Linked to TaskFlow")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        yield Server(state, client, dora, role)


async def test_the_bot_adds_and_removes_a_members_role(server: Server) -> None:
    reason = "TaskFlow Link: linked ✓"
    added = await server.client.put(
        server.path(),
        headers={**server.bot, "X-Audit-Log-Reason": "TaskFlow%20Link%3A%20linked%20%E2%9C%93"},
    )
    assert added.status_code == 204
    assert added.content == b""
    assert server.roles_of(server.dora) == {server.role.id}
    again = await server.client.put(server.path(), headers=server.bot)  # already has it: fine
    assert again.status_code == 204
    removed = await server.client.delete(server.path(), headers=server.bot)
    assert removed.status_code == 204
    assert server.roles_of(server.dora) == set()
    again = await server.client.delete(server.path(), headers=server.bot)  # has it not: fine
    assert again.status_code == 204
    requests = server.state.test_guild.role_requests
    assert [(r.method, r.status) for r in requests] == [
        ("PUT", 204),
        ("PUT", 204),
        ("DELETE", 204),
        ("DELETE", 204),
    ]
    assert requests[0].reason == reason


async def test_without_the_bot_token_it_is_401(server: Server) -> None:
    for headers in (
        {},
        {"Authorization": "Bot wrong"},
        {"Authorization": f"Bearer {server.state.bot_token}"},
    ):
        answer = await server.client.put(server.path(), headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"message": "401: Unauthorized", "code": 0}
    assert server.roles_of(server.dora) == set()


async def test_ids_that_are_not_snowflakes_are_refused(server: Server) -> None:
    answer = await server.client.put(server.path(role="abc", user="-1"), headers=server.bot)
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == 50035
    assert body["errors"]["role_id"]["_errors"][0] == {
        "code": "NUMBER_TYPE_COERCE",
        "message": 'Value "abc" is not snowflake.',
    }
    assert "user_id" in body["errors"]
    assert "guild_id" not in body["errors"]


async def test_unknown_server_member_and_role_get_discords_codes(server: Server) -> None:
    outsider = server.state.add_user("outsider", member=False)
    cases = [
        (server.path(guild="1999999999999999999"), 10004, "Unknown Guild"),
        (server.path(user=outsider.id), 10007, "Unknown Member"),
        (server.path(user="1999999999999999999"), 10007, "Unknown Member"),
        (server.path(role="1999999999999999999"), 10011, "Unknown Role"),
        (server.path(role=TEST_GUILD_ID), 10011, "Unknown Role"),  # @everyone
    ]
    for path, code, message in cases:
        for method in ("PUT", "DELETE"):
            answer = await server.client.request(method, path, headers=server.bot)
            assert answer.status_code == 404, path
            assert answer.json() == {"message": message, "code": code}


async def test_missing_manage_roles_or_a_role_above_the_bots_is_50013(server: Server) -> None:
    high = server.state.add_role("Moderators", position=20)  # above the bot's role (10)
    answer = await server.client.put(server.path(role=high.id), headers=server.bot)
    assert answer.status_code == 403
    assert answer.json() == {"message": "Missing Permissions", "code": 50013}
    bot_role = server.state.test_guild.bot_role_id
    assert (
        await server.client.put(server.path(role=bot_role), headers=server.bot)
    ).status_code == 403

    changed = await server.client.patch(
        f"/_emulator/guilds/{TEST_GUILD_ID}/bot", json={"manage_roles": False}
    )
    assert changed.json()["manage_roles"] is False
    answer = await server.client.put(server.path(), headers=server.bot)
    assert answer.status_code == 403
    assert answer.json()["code"] == 50013
    assert server.roles_of(server.dora) == set()


async def test_a_bot_removed_from_the_server_is_50001(server: Server) -> None:
    """Discord answers a bot that is no longer in the server 403 Missing Access."""
    changed = await server.client.patch(
        f"/_emulator/guilds/{TEST_GUILD_ID}/bot", json={"member": False}
    )
    assert changed.json()["member"] is False
    for method in ("PUT", "DELETE"):
        answer = await server.client.request(method, server.path(), headers=server.bot)
        assert answer.status_code == 403
        assert answer.json() == {"message": "Missing Access", "code": 50001}
    assert server.roles_of(server.dora) == set()


async def test_every_answer_says_what_is_left_of_the_routes_limit(server: Server) -> None:
    """Discord's rate limit headers on every answer (the server is the route's top-level
    resource: another server's calls count apart), and a 429 past the limit."""
    limit = await server.client.patch(
        f"/_emulator/guilds/{TEST_GUILD_ID}/role-limit", json={"calls": 2, "window": 60}
    )
    assert limit.json() == {"calls": 2, "window": 60.0}
    first = await server.client.put(server.path(), headers=server.bot)
    outsider = server.state.add_user("outsider", member=False)
    refused = await server.client.put(server.path(user=outsider.id), headers=server.bot)
    limited = await server.client.delete(server.path(), headers=server.bot)

    assert (first.status_code, refused.status_code, limited.status_code) == (204, 404, 429)
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert refused.headers["x-ratelimit-remaining"] == "0"  # a refusal counts too
    assert 0 < float(refused.headers["x-ratelimit-reset-after"]) <= 60
    assert first.headers["x-ratelimit-bucket"] == refused.headers["x-ratelimit-bucket"]
    assert limited.json()["global"] is False
    assert 0 < limited.json()["retry_after"] <= 60
    assert limited.headers["x-ratelimit-scope"] == "user"
    assert server.roles_of(server.dora) == {server.role.id}  # the 429 changed nothing
    assert [r.status for r in server.state.test_guild.role_requests] == [204, 404, 429]
    for wrong in ({"calls": 0, "window": 1}, {"calls": 1, "window": 0}, {"calls": 1}):
        refused_limit = await server.client.patch(
            f"/_emulator/guilds/{TEST_GUILD_ID}/role-limit", json=wrong
        )
        assert refused_limit.status_code == 400, wrong


async def test_faults_make_discord_fail(server: Server) -> None:
    await server.client.post("/_emulator/faults", json={"endpoint": "member_roles", "mode": "500"})
    assert (await server.client.put(server.path(), headers=server.bot)).status_code == 500
    await server.client.post("/_emulator/faults", json={"endpoint": "member_roles", "mode": "429"})
    limited = await server.client.put(server.path(), headers=server.bot)
    assert limited.status_code == 429
    assert limited.json()["retry_after"] == 1.5
    assert limited.json()["global"] is False
    fault = {"endpoint": "member_roles", "mode": "429-global"}
    await server.client.post("/_emulator/faults", json=fault)
    everywhere = await server.client.put(server.path(), headers=server.bot)
    assert everywhere.status_code == 429
    assert everywhere.json()["global"] is True
    assert everywhere.headers["x-ratelimit-global"] == "true"
    await server.client.post("/_emulator/faults", json={"endpoint": "member_roles", "mode": None})
    assert (await server.client.put(server.path(), headers=server.bot)).status_code == 204


async def test_an_audit_log_reason_over_512_characters_is_refused(server: Server) -> None:
    """Discord's audit log reason is 1-512 characters (URL-encoded in the header, counted
    decoded): a longer one is refused as the ``reason`` field, and nothing changes."""
    fits = quote("é" * 512)  # 1536 characters on the wire, 512 once decoded
    assert (
        await server.client.put(server.path(), headers={**server.bot, "X-Audit-Log-Reason": fits})
    ).status_code == 204
    for method in ("PUT", "DELETE"):
        long = await server.client.request(
            method,
            server.path(),
            headers={**server.bot, "X-Audit-Log-Reason": quote("é" * 513)},
        )
        assert long.status_code == 400, method
        assert long.json()["code"] == 50035
        assert long.json()["errors"]["reason"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
    assert server.roles_of(server.dora) == {server.role.id}


async def test_an_unknown_fault_is_refused_not_ignored(server: Server) -> None:
    """A mistyped fault did nothing at all: a test meant to make Discord fail passed unseen."""
    for fault in (
        {"endpoint": "member_roles", "mode": "cloudflare403"},
        {"endpoint": "member-roles", "mode": "500"},
        {"endpoint": "callback", "mode": "500"},
        {"mode": "500"},
        {"endpoint": "x"},
    ):
        refused = await server.client.post("/_emulator/faults", json=fault)
        assert refused.status_code == 400, fault
        assert "member_roles" in refused.json()["error"]
    lifted = await server.client.post("/_emulator/faults", json={"endpoint": "token", "mode": None})
    assert lifted.status_code == 200
    assert (await server.client.put(server.path(), headers=server.bot)).status_code == 204


async def test_an_address_cloudflare_blocks_gets_403_for_every_call(server: Server) -> None:
    """DISCORD.md: "Cloudflare may answer HTML 429/403 to abusive clients"; since 2023
    Discord words the block as JSON, ``{"message": "internal network error", "code": 40333}``
    (discord/discord-api-docs#6473). Neither is a refusal of the call itself."""
    for mode in ("cloudflare-403", "blocked"):
        await server.client.post(
            "/_emulator/faults", json={"endpoint": "member_roles", "mode": mode}
        )
        blocked = await server.client.put(server.path(), headers=server.bot)
        assert blocked.status_code == 403, mode
        if mode == "blocked":
            assert blocked.json() == {"message": "internal network error", "code": 40333}
        else:
            assert blocked.headers["content-type"].startswith("text/html")
            assert "Cloudflare" in blocked.text
    assert server.roles_of(server.dora) == set()


async def test_the_test_api_sets_up_and_shows_a_server(server: Server) -> None:
    client, guild = server.client, f"/_emulator/guilds/{TEST_GUILD_ID}"
    created = await client.post(f"{guild}/roles", json={"name": "Verified", "position": 2})
    assert created.status_code == 201
    role = created.json()
    assert (role["name"], role["position"], role["managed"]) == ("Verified", 2, False)
    assert (await client.post(f"{guild}/roles", json={"name": ""})).status_code == 400
    await client.put(server.path(role=role["id"]), headers=server.bot)

    member = await client.get(f"{guild}/members/{server.dora.id}")
    assert [r["name"] for r in member.json()["roles"]] == ["Verified"]
    shown = (await client.get(guild)).json()
    assert shown["members"][server.dora.id] == [role["id"]]
    assert [r["name"] for r in shown["roles"]][:2] == ["@everyone", "Linked to TaskFlow"]
    assert shown["role_requests"][0]["status"] == 204

    assert (await client.delete(f"{guild}/roles/{role['id']}")).status_code == 204  # deleted
    answer = await client.put(server.path(role=role["id"]), headers=server.bot)
    assert answer.json()["code"] == 10011
    assert (await client.delete(f"{guild}/members/{server.dora.id}")).status_code == 204  # left
    assert (await client.get(f"{guild}/members/{server.dora.id}")).status_code == 404
    assert (await client.put(server.path(), headers=server.bot)).json()["code"] == 10007
    assert (await client.put(f"{guild}/members/{server.dora.id}")).status_code == 204  # back
    assert (await client.put(server.path(), headers=server.bot)).status_code == 204
    assert (await client.get("/_emulator/guilds/1999999999999999999")).status_code == 404


async def test_the_channel_page_shows_each_members_roles(server: Server) -> None:
    page = await server.client.get(f"/channel?user={server.dora.id}")
    assert "Linked to TaskFlow" not in page.text
    await server.client.put(server.path(), headers=server.bot)
    page = await server.client.get(f"/channel?user={server.dora.id}")
    item = page.text.split(f'data-user-id="{server.dora.id}"', 1)[1].split("</li>", 1)[0]
    assert f'data-role-id="{server.role.id}"' in item
    assert "Linked to TaskFlow" in item
    assert "TaskFlow Link</span>" not in item  # the bot's own role is not shown
