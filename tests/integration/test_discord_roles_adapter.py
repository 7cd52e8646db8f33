"""The real guild-roles adapter against the emulator, over real HTTP: each of Discord's answers
becomes the outcome the queue acts on, the reason reaches Discord's audit log, and the bot
token appears in no log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from adapters.discord_oauth import DiscordHttp
from adapters.discord_roles import HttpDiscordGuildRoles
from domain.model import DiscordId, LinkedRole
from domain.ports import RoleCallOutcome, RoleCallResult
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TEST_GUILD_ID
from tests.servers import serve

REASON = "TaskFlow Link: linked to TaskFlow (ünïcode ✓)"


@dataclass
class Discord:
    state: EmulatorState
    url: str
    role: LinkedRole
    member: DiscordId
    sessions: list[DiscordHttp] = field(default_factory=list)

    def http(self, timeout: float) -> DiscordHttp:
        """A session of its own, closed after the test."""
        self.sessions.append(
            DiscordHttp(user_agent="DiscordBot (https://test.invalid, 1)", timeout=timeout)
        )
        return self.sessions[-1]

    def roles(self, token: str | None = None, timeout: float = 30.0) -> HttpDiscordGuildRoles:
        return HttpDiscordGuildRoles(
            bot_token=token or self.state.bot_token,
            api_url=f"{self.url}/api/v10",
            http=self.http(timeout),
        )

    def fault(self, mode: str | None) -> None:
        if mode is None:
            self.state.faults.pop("member_roles", None)
        else:
            self.state.faults["member_roles"] = mode


@pytest.fixture
async def discord() -> AsyncIterator[Discord]:
    state = EmulatorState("1200000000000000042", "secret", set(), fault_delay=3.0)
    member = state.add_user("dora")
    role = state.add_role("Linked")
    with serve(create_emulator_app(state)) as url:
        discord = Discord(
            state,
            url,
            LinkedRole(DiscordId.parse(TEST_GUILD_ID), DiscordId.parse(role.id)),
            DiscordId.parse(member.id),
        )
        try:
            yield discord
        finally:
            # Lifted before the server stops: it waits for the requests under way, and a
            # "timeout" fault holds the calls a test gave up on for seconds.
            state.faults.clear()
        for http in discord.sessions:
            await http.aclose()


async def test_adding_and_removing_a_role(discord: Discord) -> None:
    roles = discord.roles()
    added = await roles.add_role(discord.role, discord.member, reason=REASON)
    assert added == RoleCallResult(RoleCallOutcome.DONE, status=204)
    guild = discord.state.test_guild
    assert guild.members[str(discord.member)] == {str(discord.role.role_id)}
    assert guild.role_requests[-1].reason == REASON  # sent URL-encoded, as Discord wants
    removed = await roles.remove_role(discord.role, discord.member, reason=REASON)
    assert removed.outcome is RoleCallOutcome.DONE
    assert guild.members[str(discord.member)] == set()


async def test_a_reason_too_long_for_discord_is_cut_to_its_limit(discord: Discord) -> None:
    """Discord refuses an X-Audit-Log-Reason over 512 characters (400 50035): the adapter
    cuts it, counting characters, not the bytes of its URL-encoding."""
    long = "TaskFlow Link: ✓ " + "é" * 600
    added = await discord.roles().add_role(discord.role, discord.member, reason=long)
    assert added == RoleCallResult(RoleCallOutcome.DONE, status=204)
    assert discord.state.test_guild.role_requests[-1].reason == long[:512]


async def test_an_answer_that_leaves_no_call_says_until_when(discord: Discord) -> None:
    """Discord's X-RateLimit-Remaining: 0 with X-RateLimit-Reset-After, on a 204 or a
    refusal alike: the caller is told, to make no call for that server until then."""
    guild = discord.state.test_guild
    guild.role_limit, guild.role_limit_window = 2, 30.0
    roles = discord.roles()
    first = await roles.add_role(discord.role, discord.member, reason=REASON)
    last = await roles.remove_role(discord.role, discord.member, reason=REASON)
    limited = await roles.add_role(discord.role, discord.member, reason=REASON)

    assert first == RoleCallResult(RoleCallOutcome.DONE, status=204)  # one call left
    assert last.outcome is RoleCallOutcome.DONE
    assert last.reset_after is not None
    assert 0 < last.reset_after <= 30
    assert limited.outcome is RoleCallOutcome.RATE_LIMITED
    assert limited.retry_after is not None
    assert limited.reset_after is None  # its retry_after says it
    outsider = DiscordId.parse(discord.state.add_user("outsider", member=False).id)
    guild.role_limit, guild.role_window = 1, (0.0, 0)  # a new window, of one call
    refused = await roles.add_role(discord.role, outsider, reason=REASON)
    assert refused.outcome is RoleCallOutcome.NOT_A_MEMBER
    assert refused.reset_after is not None


async def test_discords_refusals_become_outcomes(discord: Discord) -> None:
    roles, state = discord.roles(), discord.state
    outsider = DiscordId.parse(state.add_user("outsider", member=False).id)
    high = state.add_role("Moderators", position=50)
    elsewhere = LinkedRole(DiscordId(1999999999999999999), discord.role.role_id)
    cases = [
        (discord.role, outsider, RoleCallOutcome.NOT_A_MEMBER, 404),
        (LinkedRole(discord.role.guild_id, DiscordId(1999)), discord.member, "unknown_role", 404),
        (
            LinkedRole(discord.role.guild_id, DiscordId.parse(high.id)),
            discord.member,
            "missing_permissions",
            403,
        ),
        (elsewhere, discord.member, RoleCallOutcome.UNKNOWN_GUILD, 404),
    ]
    for role, member, outcome, status in cases:
        for call in (roles.add_role, roles.remove_role):
            assert await call(role, member, reason=REASON) == RoleCallResult(
                RoleCallOutcome(outcome), status=status
            )
    discord.state.test_guild.bot_member = False  # someone removed the bot from the server
    for call in (roles.add_role, roles.remove_role):
        assert await call(discord.role, discord.member, reason=REASON) == RoleCallResult(
            RoleCallOutcome.UNKNOWN_GUILD, status=403
        )
    discord.state.test_guild.bot_member = True
    wrong_token = discord.roles(token="not-the-token")
    assert await wrong_token.add_role(discord.role, discord.member, reason=REASON) == (
        RoleCallResult(RoleCallOutcome.REJECTED, status=401)
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("500", RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=500)),
        ("timeout", RoleCallResult(RoleCallOutcome.UNAVAILABLE)),
        ("429", RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=1.5, status=429)),
        (
            "429-global",
            RoleCallResult(
                RoleCallOutcome.RATE_LIMITED, retry_after=1.5, status=429, global_limit=True
            ),
        ),
        ("cloudflare", RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=429)),
        # An address Cloudflare blocks: a 403 for every call, not a refusal of this one (taken
        # as one, every change in the queue would be refused for good while the block lasts).
        # Like Cloudflare's 429, it pauses every call, for longer after each one in a row.
        ("cloudflare-403", RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=403)),
        ("blocked", RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=403)),
    ],
)
async def test_discord_failing_becomes_a_retry(
    discord: Discord, mode: str, expected: RoleCallResult
) -> None:
    discord.fault(mode)
    # The emulator's "timeout" answers after 3 s; the others must not time out on a busy
    # machine (a timeout is "unavailable", not what they are).
    roles = discord.roles(timeout=1.0 if mode == "timeout" else 30.0)
    assert await roles.add_role(discord.role, discord.member, reason=REASON) == expected
    assert discord.state.test_guild.members[str(discord.member)] == set()


async def test_a_404_that_is_not_discords_is_tried_again_not_refused(discord: Discord) -> None:
    """A wrong API address (or a proxy's page) answers 404 without Discord's error code: not
    "this member is not in the server", which would finish the change unsent."""
    roles = HttpDiscordGuildRoles(
        bot_token=discord.state.bot_token,
        api_url=f"{discord.url}/not-the-api/v10",
        http=discord.http(30.0),
    )
    for call in (roles.add_role, roles.remove_role):
        result = await call(discord.role, discord.member, reason=REASON)
        assert result == RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=404)


async def test_no_unreachable_discord_stops_the_adapter(discord: Discord) -> None:
    roles = HttpDiscordGuildRoles(
        bot_token=discord.state.bot_token,
        api_url="http://127.0.0.1:9/api/v10",  # nothing listens there
        http=discord.http(timeout=2.0),
    )
    result = await roles.add_role(discord.role, discord.member, reason=REASON)
    assert result == RoleCallResult(RoleCallOutcome.UNAVAILABLE)


async def test_the_bot_token_is_never_logged(
    discord: Discord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    roles = discord.roles(token=discord.state.bot_token)
    await roles.add_role(discord.role, DiscordId(1999), reason=REASON)
    await discord.roles(token="Zm9v.secret-looking.token-value").add_role(
        discord.role, discord.member, reason=REASON
    )
    discord.fault("500")
    await roles.remove_role(discord.role, discord.member, reason=REASON)
    assert caplog.records  # something was said...
    assert discord.state.bot_token not in caplog.text  # ...but never the token
    assert "secret-looking" not in caplog.text


async def test_a_token_with_a_trailing_newline_is_unavailable_not_a_crash(
    discord: Discord,
) -> None:
    """A secret made from a file often ends in a newline: aiohttp refuses the header with a
    ValueError, which must end as an outcome the queue acts on (and retries), not escape."""
    roles = discord.roles(token=discord.state.bot_token + "\n")
    result = await roles.add_role(discord.role, discord.member, reason=REASON)
    assert result == RoleCallResult(RoleCallOutcome.UNAVAILABLE)
