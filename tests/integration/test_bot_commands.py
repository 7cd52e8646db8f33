"""The slash commands, run for real: the Discord emulator signs an interaction and posts it to
the web app's /interactions; hikari + lightbulb run the command on the in-memory adapters and
answer through the emulator's callback endpoint.

No test here measures time. Deadlines are settings: the fixtures give the service and the
emulator generous ones (a busy machine never hits them), and the tests of what happens at a
deadline make only the deadline under test short, so the outcome cannot depend on speed. Where
what comes first is the point (a slow check against the answer deadline), the service's event
loop and the emulator share a clock that the test stops and moves (``shared_clock``)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import hikari
import httpx
import lightbulb
import pytest
from click.testing import CliRunner
from dependency_injector import providers
from litestar import Litestar, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody

from adapters.shared_state import MemoryReplayGuard
from domain import errors
from domain.model import AccountId, DiscordId
from domain.use_cases import LinkedAccount
from entrypoints.bot.inband import InBandRestClient
from entrypoints.bot.replies import (
    LINK_BUTTON_LABEL,
    NO_LONGER_WORKS,
    SOMETHING_WENT_WRONG,
    Replies,
    Reply,
)
from entrypoints.bot.runtime import HttpInteractions, InteractionAnswer, Verified
from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.emulator import EmulatorState, TestUser, create_emulator_app
from entrypoints.emulator.bot_api import interaction_payload, message_json
from entrypoints.emulator.state import (
    INTERACTION_TOKEN_LIFETIME,
    TEST_GUILD_ID,
    Guild,
    Interaction,
)
from entrypoints.settings import SettingsError
from entrypoints.web import create_app
from tests.bot_support import (
    LINK_BUTTON,
    WAIT_SECONDS,
    BotReply,
    SharedClock,
    ShiftedClock,
    late_interactions,
    run_command,
    signed_request,
    snowflake_at,
    wait_until,
)
from tests.harness import TEST_SECRET_KEY, Harness, make_settings
from tests.servers import bound_socket, free_port, port_of, serve, serve_here

# Generous: nothing but a hanging command reaches these on a busy machine.
REPLY_DEADLINE = 20.0
ANSWER_DEADLINE = 25.0
# Below the reply deadline (so a slow command may still defer) but far above what any command
# takes on a busy machine: a reply is the HTTP answer itself (type 4), never "thinking…" first.
# The tests about deferring set a short one.
DEFER_AFTER = 15.0
EMULATOR_DEADLINE = 60.0
APP_ID = "1234567890123456789"


@dataclass
class Bot:
    h: Harness
    emulator: EmulatorState
    emulator_url: str
    app_url: str
    app: Litestar

    def user(self, username: str = "alice") -> TestUser:
        return self.emulator.add_user(username, global_name=username.title())

    async def run(self, user: TestUser, command: str, where: str = "guild") -> BotReply:
        return await run_command(self.emulator_url, user.id, command, where=where)

    async def link(self, user: TestUser, account_id: AccountId) -> None:
        """Link through the real path: /link's button, redeemed for the signed-in account."""
        reply = await self.run(user, "link")
        ticket = urlsplit(reply.button["url"]).path.rsplit("/", 1)[1]
        await self.h.confirm_ticket(ticket, account_id)


def bot_settings(app_url: str, emulator: EmulatorState, emulator_url: str) -> dict[str, object]:
    return {
        "public_url": app_url,
        "discord_client_id": emulator.client_id,
        "discord_client_secret": emulator.client_secret,
        "discord_bot_token": emulator.bot_token,
        "discord_public_key": emulator.public_key,
        "discord_api_url": f"{emulator_url}/api/v10",
        "discord_authorize_url": f"{emulator_url}/oauth2/authorize",
    }


@dataclass
class ServedEmulator:
    """An emulator already served (``served_emulator``): the tests that need no emulator of
    their own share it, reset before each (``bot_stack``)."""

    state: EmulatorState
    url: str


@pytest.fixture(scope="module")
def served_emulator() -> Iterator[ServedEmulator]:
    state = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    with serve(create_emulator_app(state)) as url:
        yield ServedEmulator(state, url)


@contextlib.contextmanager
def _emulator_for(
    emulator: EmulatorState | ServedEmulator | None, app_url: str
) -> Iterator[tuple[EmulatorState, str]]:
    """A test's own emulator, served for it alone; or the shared one, reset (nothing an
    earlier test left: users, members, faults, commands, interactions, settings)."""
    if isinstance(emulator, ServedEmulator):
        state = emulator.state
        state.reset()
        state.response_deadline = EMULATOR_DEADLINE
        state.redirect_uris.add(f"{app_url}/auth/discord/callback")
        state.interactions_url = f"{app_url}/interactions"
        try:
            yield state, emulator.url
        finally:
            # Lifted before the app stops: a "timeout" fault would hold its calls for seconds.
            state.faults.clear()
        return
    state = emulator or EmulatorState(
        APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE
    )
    state.redirect_uris.add(f"{app_url}/auth/discord/callback")
    state.interactions_url = f"{app_url}/interactions"
    with serve(create_emulator_app(state)) as emulator_url:
        yield state, emulator_url


@contextlib.asynccontextmanager
async def bot_stack(
    emulator: EmulatorState | ServedEmulator | None = None,
    *,
    interaction_clock: ShiftedClock | None = None,
    **settings: object,
) -> AsyncIterator[Bot]:
    """The web app on this test's event loop, and the emulator: ``emulator`` (a test's own,
    or ``served_emulator``, shared and reset here), or a new one."""
    sock = bound_socket()  # the app's, its port known now: its URL is in its settings
    app_url = f"http://127.0.0.1:{port_of(sock)}"
    with sock, _emulator_for(emulator, app_url) as (state, emulator_url):
        values = bot_settings(app_url, state, emulator_url)
        values.update(
            discord_reply_deadline_seconds=REPLY_DEADLINE,
            discord_answer_deadline_seconds=ANSWER_DEADLINE,
            discord_defer_after_seconds=DEFER_AFTER,
        )
        values.update(settings)
        container = build_container(make_settings(**values))
        if interaction_clock is not None:  # what the service reads an interaction's age with
            container.interaction_clock.override(providers.Object(interaction_clock))
        h = Harness.build(container)
        app = create_app(container)
        async with serve_here(app, sock):
            yield Bot(h, state, emulator_url, app_url, app)


@pytest.fixture
async def bot(served_emulator: ServedEmulator) -> AsyncIterator[Bot]:
    async with bot_stack(served_emulator) as stack:
        yield stack


@pytest.fixture
async def shared_clock(monkeypatch: pytest.MonkeyPatch) -> SharedClock:
    """Discord's clock and the service's (see ``SharedClock``): this test's event loop, which
    runs the service, runs on it; an emulator is given it (``EmulatorState.clock``)."""
    loop = asyncio.get_running_loop()
    clock = SharedClock(loop.time)
    monkeypatch.setattr(loop, "time", clock)
    return clock


def slow_replay_check(monkeypatch: pytest.MonkeyPatch, clock: SharedClock, seconds: float) -> None:
    """Every interaction's replay check takes ``seconds`` of ``clock`` (stopped), as with a
    Redis that stopped answering, and its timeout."""
    checked = MemoryReplayGuard.first_time

    async def slow_check(self: MemoryReplayGuard, key: str, *args: Any, **kwargs: Any) -> bool:
        await clock.let_pass(seconds)
        return await checked(self, key, *args, **kwargs)

    monkeypatch.setattr(MemoryReplayGuard, "first_time", slow_check)


def clock_behind() -> ShiftedClock:
    """This host's clock a minute behind Discord's: every interaction reads as just created,
    so the deadlines counted from its creation (see ``Deadline``) do not start it "thinking…"
    at once, or not at all; those counted on the event loop from the request's arrival are
    the only ones left to answer in time."""
    clock = ShiftedClock()
    clock.ahead = -timedelta(minutes=1)
    return clock


class StuckWhoAmI:
    """Never answers; the (stopped) shared clock runs on meanwhile, as time does while a
    command hangs: only a deadline ends it."""

    def __init__(self, clock: SharedClock) -> None:
        self._clock = clock

    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        await self._clock.let_pass(60)
        await asyncio.Event().wait()
        return None


# -- /link ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["guild", "dm"])
async def test_link_answers_privately_with_a_one_time_button(bot: Bot, where: str) -> None:
    user = bot.user()

    reply = await bot.run(user, "link", where)

    assert reply.status == 200  # the reply is the HTTP answer: no extra round trip to Discord
    assert reply.raw["body"]["type"] == 4
    assert reply.ephemeral
    assert reply.button["style"] == LINK_BUTTON
    assert reply.button["label"] == LINK_BUTTON_LABEL
    url = urlsplit(reply.button["url"])
    assert f"{url.scheme}://{url.netloc}" == bot.app_url
    assert url.path.startswith("/link/")
    assert user.id not in reply.button["url"]  # the URL carries only the ticket
    assert "10 minutes" in reply.content

    ticket = await bot.h.container.show_link_ticket().execute(url.path.removeprefix("/link/"))
    assert ticket.discord.id == DiscordId(int(user.id))
    assert ticket.discord.username == user.username


async def test_each_link_gets_a_new_ticket_that_ends_the_one_before(bot: Bot) -> None:
    user = bot.user()
    first = (await bot.run(user, "link")).button["url"]
    second = (await bot.run(user, "link")).button["url"]
    assert first != second
    show = bot.h.container.show_link_ticket()
    with pytest.raises(errors.SecretConsumed):
        await show.execute(urlsplit(first).path.removeprefix("/link/"))
    await show.execute(urlsplit(second).path.removeprefix("/link/"))


async def test_a_link_ticket_is_single_use(bot: Bot) -> None:
    user = bot.user()
    alice = (await bot.h.sign_up("alice", "alice@example.com")).account
    bob = (await bot.h.sign_up("bob", "bob@example.com")).account
    ticket = urlsplit((await bot.run(user, "link")).button["url"]).path.rsplit("/", 1)[1]

    await bot.h.confirm_ticket(ticket, alice.id)
    with pytest.raises(errors.SecretConsumed):
        await bot.h.confirm_ticket(ticket, bob.id)


@pytest.mark.parametrize("where", ["guild", "dm"])
async def test_link_when_already_linked_names_the_account(bot: Bot, where: str) -> None:
    user = bot.user()
    alice = (await bot.h.sign_up("alice_tf", "alice@example.com")).account
    await bot.link(user, alice.id)

    reply = await bot.run(user, "link", where)

    assert reply.ephemeral
    assert "already linked" in reply.content
    assert r"**alice\_tf**" in reply.content  # Markdown in names is escaped
    assert "/unlink" in reply.content
    assert "/link/" not in reply.button["url"]
    assert reply.button["url"] == f"{bot.app_url}/account"


# -- /whoami ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["guild", "dm"])
async def test_whoami(bot: Bot, where: str) -> None:
    user = bot.user()

    not_linked = await bot.run(user, "whoami", where)
    assert not_linked.ephemeral
    assert "not linked" in not_linked.content
    assert "/link" in not_linked.content
    assert not_linked.buttons == []

    alice = (await bot.h.sign_up("alice", "alice@example.com")).account
    await bot.link(user, alice.id)
    linked = await bot.run(user, "whoami", where)
    assert linked.ephemeral
    assert "**alice**" in linked.content
    assert bot.h.clock.now().strftime("%Y-%m-%d") in linked.content


# -- /unlink ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["guild", "dm"])
async def test_unlink(bot: Bot, where: str) -> None:
    user = bot.user()
    alice = (await bot.h.sign_up("alice", "alice@example.com")).account
    await bot.link(user, alice.id)

    reply = await bot.run(user, "unlink", where)

    assert reply.ephemeral
    assert "no longer linked" in reply.content
    assert "**alice**" in reply.content
    assert await bot.h.container.who_am_i().execute(DiscordId(int(user.id))) is None


async def test_unlink_when_not_linked(bot: Bot) -> None:
    reply = await bot.run(bot.user(), "unlink")
    assert reply.ephemeral
    assert "not linked" in reply.content
    assert "/link" in reply.content


async def test_unlink_refused_when_discord_is_the_only_sign_in(bot: Bot) -> None:
    user = bot.user()
    profile = bot.h.discord_user(int(user.id), username=user.username, email="a@example.com")
    created = await bot.h.discord_login(profile)  # an account with no password

    reply = await bot.run(user, "unlink")

    assert reply.ephemeral
    assert "password" in reply.content
    assert reply.button["url"] == f"{bot.app_url}/account"
    linked = await bot.h.container.who_am_i().execute(profile.id)
    assert linked is not None
    assert linked.account.id == created.account_id


# -- failures -----------------------------------------------------------------------------------


class BrokenWhoAmI:
    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        raise RuntimeError("boom: password=hunter2")


class DatabaseDownWhoAmI:
    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        raise errors.StorageError()


class RolledBackWhoAmI:
    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        raise errors.StorageContention()


class HangingWhoAmI:
    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        await asyncio.Event().wait()  # never done: only the reply deadline ends it
        return None


@pytest.mark.parametrize("failure", [BrokenWhoAmI, DatabaseDownWhoAmI, HangingWhoAmI])
async def test_a_failing_command_says_something_went_wrong(
    failure: type,
    caplog: pytest.LogCaptureFixture,
    served_emulator: ServedEmulator,
) -> None:
    # A short reply deadline ends the hanging command; the emulator's stays generous, so the
    # answer is accepted however busy the machine is. The other failures keep the usual
    # deadline: a command that works must not be cut short by a busy machine.
    hangs = failure is HangingWhoAmI
    deadline = 0.3 if hangs else REPLY_DEADLINE
    async with bot_stack(served_emulator, discord_reply_deadline_seconds=deadline) as bot:
        user = bot.user()
        with bot.h.container.who_am_i.override(providers.Factory(failure)):
            reply = await bot.run(user, "whoami")
            assert reply.ephemeral
            assert reply.content == SOMETHING_WENT_WRONG
            assert "/whoami failed" in caplog.text
            if hangs:  # a hung command holds nothing up: the next one is answered too
                assert (await bot.run(user, "whoami")).content == SOMETHING_WENT_WRONG
        if not hangs:  # and the bot keeps working afterwards
            assert "not linked" in (await bot.run(user, "whoami")).content


async def test_a_command_rolled_back_by_the_database_is_a_warning_without_a_traceback(
    caplog: pytest.LogCaptureFixture, served_emulator: ServedEmulator
) -> None:
    """Postgres broke a deadlock (StorageContention): nothing is broken, as on the web, where
    it is a warning; it was logged as an error with a traceback, as a bug."""
    async with bot_stack(served_emulator) as bot:
        user = bot.user()
        with (
            bot.h.container.who_am_i.override(providers.Factory(RolledBackWhoAmI)),
            caplog.at_level(logging.INFO),
        ):
            reply = await bot.run(user, "whoami")
        assert reply.content == SOMETHING_WENT_WRONG
        said = [r for r in caplog.records if "/whoami" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], said
        assert all(r.exc_info is None for r in said)


async def test_replies_travel_in_the_http_answer_without_the_callback_endpoint(
    served_emulator: ServedEmulator,
) -> None:
    """One round trip: Discord's callback endpoint is never needed (here it refuses all)."""
    async with bot_stack(served_emulator) as bot:
        bot.emulator.faults["callback"] = "reject"
        reply = await bot.run(bot.user(), "link")
        assert reply.status == 200
        assert reply.button["label"] == LINK_BUTTON_LABEL
        assert not reply.raw["reply"].get("deferred")


class SlowWhoAmI:
    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        # Longer than the defer delay below, whatever the machine's speed: the "thinking…"
        # timer starts before this one.
        await asyncio.sleep(0.3)
        return None


async def test_a_slow_command_answers_thinking_then_edits_its_reply(
    served_emulator: ServedEmulator,
) -> None:
    async with bot_stack(served_emulator, discord_defer_after_seconds=0.05) as bot:
        user = bot.user()
        with bot.h.container.who_am_i.override(providers.Factory(SlowWhoAmI)):
            reply = await bot.run(user, "whoami")
        assert reply.status == 200
        assert reply.raw["body"] == {"type": 5, "data": {"flags": 64}}  # private "thinking…"
        assert reply.raw["reply"]["deferred"] is True  # then the webhook edited it
        assert "not linked" in reply.content
        assert reply.ephemeral
        # A fast command is answered in the HTTP response: see the test above, with a generous
        # delay (here a busy machine could make any command take longer than 50 ms).


def once_thinking(emulator: EmulatorState) -> Any:
    """Waits until Discord shows "thinking…" for the interaction, then past the reply
    deadline the tests below set (0.3 s), whatever the machine's speed."""

    async def wait() -> None:
        # The emulator runs on another thread's loop: no asyncio.Event to wait on.
        while not any(i.response for i in emulator.interactions.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)

    return wait


async def test_a_command_that_answered_thinking_is_not_cut_off_at_the_reply_deadline() -> None:
    """The reply deadline is for the first answer: once Discord shows "thinking…", the reply
    has 15 minutes, and the command has the deferred deadline. Cut off at the reply deadline,
    an /unlink that was slow but went through was reported as failed (helper-53's review)."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    slow = once_thinking(emulator)
    async with bot_stack(
        emulator, discord_defer_after_seconds=0.05, discord_reply_deadline_seconds=0.3
    ) as bot:
        user = bot.user()
        alice = (await bot.h.sign_up("alice", "alice@example.com")).account
        await bot.link(user, alice.id)
        unlink = bot.h.container.unlink_discord()

        class SlowUnlink:
            async def execute(self, discord_id: DiscordId) -> Any:
                await slow()
                return await unlink.execute(discord_id)

        with bot.h.container.unlink_discord.override(providers.Factory(SlowUnlink)):
            reply = await bot.run(user, "unlink")
        assert reply.raw["body"] == {"type": 5, "data": {"flags": 64}}  # private "thinking…"
        assert reply.raw["reply"]["deferred"] is True
        assert "no longer linked" in reply.content
        assert reply.ephemeral
        assert await bot.h.container.who_am_i().execute(DiscordId(int(user.id))) is None


async def test_a_command_that_answered_thinking_gives_up_at_the_deferred_deadline(
    caplog: pytest.LogCaptureFixture,
    shared_clock: SharedClock,
    served_emulator: ServedEmulator,
) -> None:
    """On the shared clock, stopped: the command after the stuck one has its 0.6 s whatever
    the machine's speed (on the real clock a busy machine could cut it off too)."""
    async with bot_stack(
        served_emulator,
        interaction_clock=clock_behind(),
        discord_defer_after_seconds=0.05,
        discord_reply_deadline_seconds=0.3,
        discord_deferred_deadline_seconds=0.6,
    ) as bot:
        user = bot.user()
        with shared_clock.stopped():
            with bot.h.container.who_am_i.override(providers.Factory(StuckWhoAmI, shared_clock)):
                reply = await bot.run(user, "whoami")
            assert reply.raw["body"] == {"type": 5, "data": {"flags": 64}}
            assert reply.content == SOMETHING_WENT_WRONG  # the "thinking…" message, edited
            assert reply.ephemeral
            assert "/whoami failed" in caplog.text
            assert "not linked" in (await bot.run(user, "whoami")).content  # still serving


async def test_a_command_still_running_at_shutdown_finishes_its_reply() -> None:
    """A command that answered "thinking…" runs on after its HTTP answer went: a shutdown (a
    rolling deploy's SIGTERM) waited only for the HTTP requests, then closed the REST client
    and the database under it, so its reply never came ("thinking…" for 15 minutes, then
    "The application did not respond") and an /unlink under way could be cut off. Stopping
    now lets the commands under way finish first, as the gateway bot does."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    closing = asyncio.Event()

    class UntilShutdown:
        async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
            await closing.wait()  # done only once the app is stopping
            return None

    async with bot_stack(emulator, discord_defer_after_seconds=0.05) as bot:
        user = bot.user()
        endpoint = bot.app.state["interactions"]
        close = endpoint.close

        async def close_once_the_command_may_finish() -> None:
            closing.set()
            await close()

        endpoint.close = close_once_the_command_may_finish
        client = httpx.AsyncClient(timeout=90, base_url=bot.emulator_url)
        with bot.h.container.who_am_i.override(providers.Factory(UntilShutdown)):
            sent = asyncio.create_task(
                client.post(
                    "/_emulator/interactions", json={"user_id": user.id, "command": "whoami"}
                )
            )
            await wait_until(lambda: any(i.response for i in emulator.interactions.values()))
    try:  # the app has stopped
        answer = await sent
    finally:
        await client.aclose()
    result = answer.json()
    assert result["body"] == {"type": 5, "data": {"flags": 64}}  # "thinking…"
    assert result["errors"] == []
    assert result["reply"]["deferred"] is True
    assert "not linked" in result["reply"]["data"]["content"]


async def test_a_reply_that_comes_after_the_fallback_answer_edits_it(
    monkeypatch: pytest.MonkeyPatch,
    served_emulator: ServedEmulator,
) -> None:
    """An event loop that stalled past the answer deadline (a long pause, a starved CPU)
    wakes with that deadline and "thinking…" both due: the deadline went first and the HTTP
    answer said "something went wrong", while the command ran on and its reply, handed to an
    answer already gone, was lost (an /unlink done, reported failed). The reply edits that
    answer now. The stall is stood in for: the answer deadline is due almost at once and
    "thinking…" far later; the command waits for the test, which lets it go once Discord
    shows the fallback."""
    original = HttpInteractions.dispatch

    async def stalled(
        endpoint: HttpInteractions, request: Verified, *, arrived: float | None = None
    ) -> InteractionAnswer:
        due = asyncio.get_running_loop().time() - ANSWER_DEADLINE + 0.2
        return await original(endpoint, request, arrived=due)

    monkeypatch.setattr(HttpInteractions, "dispatch", stalled)
    monkeypatch.setattr(InBandRestClient, "_thinking_in", lambda client: 600.0)
    go = asyncio.Event()

    class WaitsForTheTest:
        async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
            await go.wait()
            return None

    async with bot_stack(served_emulator) as bot:
        user = bot.user()
        with bot.h.container.who_am_i.override(providers.Factory(WaitsForTheTest)):
            fallback = await bot.run(user, "whoami")
            assert fallback.content == SOMETHING_WENT_WRONG
            assert fallback.raw["body"]["type"] == 4
            go.set()
            [interaction] = bot.emulator.interactions.values()
            await wait_until(
                lambda: "not linked" in (interaction.response or {})["data"]["content"]
            )
        assert interaction.errors == []
        assert interaction.response is not None
        assert interaction.response["data"]["flags"] == 64  # still private


async def test_a_reply_after_the_token_expired_is_logged_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The interaction's token ends after 15 minutes: Discord then answers its webhook 401
    Invalid Webhook Token (50027; hikari raises UnauthorizedError, not NotFoundError). The
    service logs it without the token (its URL carries it) and keeps serving."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    emulator.followup_wait = 0.5  # no edit will come: the test waits for the refusals below

    class TokenEndsFirst:
        async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
            # Once Discord shows "thinking…", let the interaction's 15 minutes pass. (The
            # emulator runs on another thread's loop: no asyncio.Event to wait on.)
            while not any(i.response for i in emulator.interactions.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            for interaction in emulator.interactions.values():
                interaction.sent_at -= INTERACTION_TOKEN_LIFETIME + 1
            return None

    async with bot_stack(emulator, discord_defer_after_seconds=0.05) as bot:
        user = bot.user()
        with bot.h.container.who_am_i.override(providers.Factory(TokenEndsFirst)):
            async with httpx.AsyncClient(timeout=90, base_url=bot.emulator_url) as client:
                answer = await client.post(
                    "/_emulator/interactions", json={"user_id": user.id, "command": "whoami"}
                )
        [interaction] = emulator.interactions.values()
        for _ in range(3000):  # the reply's edit, then the error reply's: both refused
            if len(interaction.errors) >= 2 and "error reply either" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert answer.json()["body"] == {"type": 5, "data": {"flags": 64}}  # "thinking…"
        assert [e["code"] for e in interaction.errors] == [50027, 50027]
        assert "/whoami failed: UnauthorizedError (HTTP 401, Discord code 50027)" in caplog.text
        assert "could not send the error reply either: UnauthorizedError" in caplog.text
        assert interaction.token not in caplog.text
        assert "not linked" in (await bot.run(user, "whoami")).content  # still serving


async def test_a_command_the_bot_does_not_know_gets_an_answer(
    served_emulator: ServedEmulator,
) -> None:
    """E.g. Discord still lists a command that a newer version renamed."""
    async with bot_stack(
        served_emulator, discord_reply_deadline_seconds=0.3, discord_answer_deadline_seconds=0.6
    ) as bot:
        bot.emulator.commands["global"].append(
            {**bot.emulator.commands["global"][0], "id": bot.emulator.snowflake(), "name": "old"}
        )
        reply = await bot.run(bot.user(), "old")
        assert reply.status == 200  # in the HTTP response: nothing answered through the callback
        assert reply.ephemeral
        assert reply.content == SOMETHING_WENT_WRONG


async def test_the_emulator_refuses_a_malformed_reply_as_discord_does(
    monkeypatch: pytest.MonkeyPatch,
    served_emulator: ServedEmulator,
) -> None:
    """A reply Discord would refuse (content over 2000 characters) is not shown: the person
    sees "This interaction failed", and the emulator says which field was wrong."""
    monkeypatch.setattr(Replies, "who_am_i", lambda self, linked: Reply("x" * 2001))
    async with (
        bot_stack(served_emulator) as bot,
        httpx.AsyncClient(timeout=30, base_url=bot.emulator_url) as client,
    ):
        answer = await client.post(
            "/_emulator/interactions",
            json={"user_id": bot.user().id, "command": "whoami"},
            timeout=30,
        )
    result = answer.json()
    assert result["status"] == 200
    assert result["reply"] is None
    [refusal] = result["errors"]
    assert refusal["code"] == 50035
    assert refusal["errors"]["data"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"


async def test_network_transit_counts_in_discords_deadline() -> None:
    """Discord's 3 seconds include the network both ways: with more transit than the deadline
    allows, even an instant answer arrives too late."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=0.5)
    emulator.transit_delay = 0.3  # there and back: 0.6 s before any answer can arrive
    async with (
        bot_stack(emulator) as bot,
        httpx.AsyncClient(timeout=30, base_url=bot.emulator_url) as client,
    ):
        answer = await client.post(
            "/_emulator/interactions",
            json={"user_id": bot.user().id, "command": "link"},
            timeout=30,
        )
    result = answer.json()
    assert result["reply"] is None  # "The application did not respond"
    assert result["status"] is None


async def test_the_replay_check_counts_in_the_answer_deadline(
    monkeypatch: pytest.MonkeyPatch, shared_clock: SharedClock
) -> None:
    """Discord's 3 seconds run from when the interaction came in, and every one is checked
    against the replay guard first: on Redis, a call that waits up to the Redis timeout when
    Redis stops answering. The answer deadline (the fallback "something went wrong") counted
    only from after that check, so the answer came the check's time later, after Discord had
    stopped waiting. Here the check takes 4 s, the command (stuck) has a reply deadline of
    3 s, the answer deadline is 3.5 s, and "Discord" waits 5.5 s: before, the first answer
    came at 7 s. All on the shared clock, stopped: no busy machine decides the outcome, and
    the test waits for none of it."""
    slow_replay_check(monkeypatch, shared_clock, 4)
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=5.5, clock=shared_clock)
    async with (
        bot_stack(
            emulator,
            interaction_clock=clock_behind(),
            discord_reply_deadline_seconds=3.0,
            discord_answer_deadline_seconds=3.5,
        ) as bot,
        httpx.AsyncClient(timeout=30, base_url=bot.emulator_url) as client,
    ):
        with (
            bot.h.container.who_am_i.override(providers.Factory(StuckWhoAmI, shared_clock)),
            shared_clock.stopped(),
        ):
            answer = await client.post(
                "/_emulator/interactions", json={"user_id": bot.user().id, "command": "whoami"}
            )
    result = answer.json()
    assert result["status"] == 200  # in time (the fallback: its deadline had passed)
    assert result["reply"]["data"]["content"] == SOMETHING_WENT_WRONG


async def test_a_replay_check_that_used_the_answer_deadline_up_starts_no_command(
    monkeypatch: pytest.MonkeyPatch, shared_clock: SharedClock
) -> None:
    """Its answer is the fallback ("something went wrong"), so the command must not run: it
    ran on its own all the same, after that answer, and an /unlink unlinked the member it
    had just told that something went wrong. The app's stop waits for the commands under way,
    so whatever one did is in the store once the stack is down. (The check takes 4 s of the
    shared clock, stopped: see the test above.)"""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=5.5, clock=shared_clock)
    async with bot_stack(
        emulator,
        interaction_clock=clock_behind(),
        discord_reply_deadline_seconds=3.0,
        discord_answer_deadline_seconds=3.5,
    ) as bot:
        user = bot.user()
        alice = (await bot.h.sign_up("alice", "alice@example.com")).account
        with shared_clock.stopped():  # the link's deadlines too: they pass only as told
            await bot.link(user, alice.id)
            slow_replay_check(monkeypatch, shared_clock, 4)
            reply = await bot.run(user, "unlink")
        assert reply.content == SOMETHING_WENT_WRONG
    assert await bot.h.container.who_am_i().execute(DiscordId(int(user.id))) is not None


class SlowerWhoAmI:
    """Takes 2 s of the (stopped) shared clock."""

    def __init__(self, clock: SharedClock) -> None:
        self._clock = clock

    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        await self._clock.let_pass(2)
        return None


async def test_a_slow_replay_check_leaves_a_slow_command_time_to_answer_thinking(
    monkeypatch: pytest.MonkeyPatch, shared_clock: SharedClock
) -> None:
    """The answer deadline counts from the interaction's arrival, the "thinking…" delay from
    the command's start: a replay check that took longer than their difference (a Redis that
    was slow to answer) made the fallback come first. The person read "something went
    wrong" while the command, which runs on its own, went on and did what it was asked (an
    /unlink unlinked), its reply lost. "Thinking…" now comes in time, and the reply edits
    it. Here the check takes 4 s, the command 2 s; "thinking…" after 3 s of the command
    (7 s after the arrival), the answer deadline 5 s after the arrival, "Discord" waits 8 s.
    All on the shared clock, stopped: no busy machine decides the outcome, and the test
    waits for none of it."""
    slow_replay_check(monkeypatch, shared_clock, 4)
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=8.0, clock=shared_clock)
    async with bot_stack(
        emulator,
        interaction_clock=clock_behind(),
        discord_defer_after_seconds=3.0,
        discord_reply_deadline_seconds=4.5,
        discord_answer_deadline_seconds=5.0,
    ) as bot:
        with (
            bot.h.container.who_am_i.override(providers.Factory(SlowerWhoAmI, shared_clock)),
            shared_clock.stopped(),
        ):
            reply = await bot.run(bot.user(), "whoami")
    assert reply.raw["body"] == {"type": 5, "data": {"flags": 64}}  # private "thinking…"
    assert reply.raw["reply"]["deferred"] is True  # then the command's reply edited it
    assert "not linked" in reply.content


async def _deferred_then(
    emulator: EmulatorState,
    webhook_call: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]],
) -> tuple[dict[str, Any], httpx.Response]:
    """A service that answers /link with "thinking…" (type 5) in the HTTP response and, 50 ms
    later, makes ``webhook_call`` (given a client and the interaction's webhook URL): what the
    emulator's test API answered, and what the webhook call got."""
    emulator.commands["global"] = [{"id": emulator.snowflake(), "name": "link", "type": 1}]
    sent: list[asyncio.Task[httpx.Response]] = []

    with serve(create_emulator_app(emulator)) as emulator_url:

        async def call_later(token: str) -> httpx.Response:
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(timeout=30) as client:
                return await webhook_call(
                    client, f"{emulator_url}/api/v10/webhooks/{APP_ID}/{token}"
                )

        @post("/interactions", status_code=200)
        async def defer(data: JSONBody[dict[str, object]]) -> dict[str, object]:
            sent.append(asyncio.create_task(call_later(str(data["token"]))))
            return {"type": 5, "data": {"flags": 64}}

        async with serve_here(Litestar([defer])) as service_url:
            emulator.interactions_url = f"{service_url}/interactions"
            async with httpx.AsyncClient(timeout=30, base_url=emulator_url) as client:
                answer = await client.post(
                    "/_emulator/interactions",
                    json={"user_id": emulator.add_user("rita").id, "command": "link"},
                )
            [called] = await asyncio.gather(*sent)
    result: dict[str, Any] = answer.json()
    return result, called


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "/messages/@original"), ("POST", "")], ids=["edit", "follow-up"]
)
async def test_a_reply_sent_just_after_deferring_crosses_the_same_network(
    method: str, path: str
) -> None:
    """A service that answers "thinking…" (type 5) in the HTTP response and sends its reply
    through the webhook 50 ms later: with real Discord the reply crosses the same network as
    the answer, so it lands after it. The emulator once let the webhook call land at once,
    before the deferral (404 Unknown Message; Discord's answer there is 10015 Unknown
    Webhook)."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    emulator.transit_delay = 0.2
    result, webhook_call = await _deferred_then(
        emulator,
        lambda client, webhook: client.request(method, webhook + path, json={"content": "Done"}),
    )
    assert webhook_call.status_code == 200, webhook_call.text
    assert result["errors"] == []
    assert result["reply"]["data"] == {"content": "Done", "flags": 64}


async def test_a_reply_the_service_deletes_is_reported_deleted_not_awaited() -> None:
    """A service that answers "thinking…" and then deletes that message through the webhook
    (DELETE ``@original``, which the emulator answered 405): the test API reports the reply
    deleted, and stops waiting for an edit that cannot come."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    emulator.followup_wait = 600.0  # unnoticed, the deletion would leave the call waiting
    result, deletion = await _deferred_then(
        emulator, lambda client, webhook: client.delete(webhook + "/messages/@original")
    )
    assert deletion.status_code == 204, deletion.text
    assert (result["reply"], result["deleted"], result["errors"]) == (None, True, [])


async def test_the_emulator_drops_an_answer_later_than_its_deadline() -> None:
    """Like Discord after 3 s: the emulator's deadline is what makes the tests above honest.
    The service cannot answer before its own reply deadline here, which is far above the
    emulator's, so the answer is late whatever the machine's speed."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=0.05)
    async with bot_stack(
        emulator, discord_reply_deadline_seconds=1.0, discord_answer_deadline_seconds=1.5
    ) as bot:
        user = bot.user()
        with bot.h.container.who_am_i.override(providers.Factory(HangingWhoAmI)):
            async with httpx.AsyncClient(base_url=bot.emulator_url, timeout=30) as client:
                answer = await client.post(
                    "/_emulator/interactions", json={"user_id": user.id, "command": "whoami"}
                )
    result = answer.json()
    assert result["reply"] is None  # Discord would show "The application did not respond"
    assert result["status"] is None


class PressMe(lightbulb.components.Menu):
    """A message component answered the way lightbulb answers them: through the callback."""

    def __init__(self) -> None:
        self.add_interactive_button(
            hikari.ButtonStyle.PRIMARY, self.pressed, custom_id="press-me", label="Press me"
        )

    async def pressed(self, ctx: lightbulb.components.MenuContext) -> None:
        await ctx.respond("Pressed.", ephemeral=True)


async def test_after_a_reply_through_the_callback_the_http_answer_is_202_without_a_body(
    bot: Bot,
) -> None:
    """Discord: "If you send this request for an interaction received over HTTP, respond to
    the original HTTP request with a 202 and no body" (not a second answer)."""
    user = bot.user()
    client = bot.app.state["interactions"]._client
    PressMe().attach_persistent(client, timeout=None)
    # A button press on an earlier reply: Discord sends a component interaction.
    interaction = Interaction(
        id=bot.emulator.snowflake(),
        token=secrets.token_urlsafe(48),
        user_id=user.id,
        command="press-me",
        guild_id=TEST_GUILD_ID,
        sent_at=time.monotonic(),
    )
    bot.emulator.interactions[interaction.id] = interaction
    payload = interaction_payload(bot.emulator, interaction, bot.emulator.commands["global"][0])
    message = message_json(bot.emulator, interaction, {"content": "Earlier"}, interaction.id)
    payload |= {
        "type": 3,  # MESSAGE_COMPONENT
        "data": {"custom_id": "press-me", "component_type": 2},
        "message": message,
    }
    body, headers = signed_request(bot.emulator, payload)
    async with httpx.AsyncClient(base_url=bot.app_url, timeout=30) as client_:
        answer = await client_.post("/interactions", content=body, headers=headers)

    assert interaction.response is not None  # the reply went through the callback...
    assert interaction.response["data"]["content"] == "Pressed."
    assert (answer.status_code, answer.content) == (202, b"")  # ...so no second one here


async def _unhandled(bot: Bot, kind: int, data: dict[str, Any]) -> httpx.Response:
    """A signed interaction of ``kind`` with ``data``, sent to the service as Discord would."""
    interaction = Interaction(
        id=bot.emulator.snowflake(),
        token=secrets.token_urlsafe(48),
        user_id=bot.user().id,
        command="whoami",
        guild_id=TEST_GUILD_ID,
        sent_at=time.monotonic(),
    )
    bot.emulator.interactions[interaction.id] = interaction
    command = next(c for c in bot.emulator.commands["global"] if c["name"] == "whoami")
    payload = interaction_payload(bot.emulator, interaction, command)
    if kind != 4:  # a component's, a modal's: on a message of the bot's
        message = message_json(bot.emulator, interaction, {"content": "Earlier"}, interaction.id)
        payload["message"] = message
    payload |= {"type": kind, "data": data}
    body, headers = signed_request(bot.emulator, payload)
    async with httpx.AsyncClient(base_url=bot.app_url, timeout=30) as client:
        return await client.post("/interactions", content=body, headers=headers)


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (3, {"custom_id": "from-an-older-version", "component_type": 2}),
        (5, {"custom_id": "from-an-older-version", "components": []}),
    ],
    ids=["button", "modal-submit"],
)
async def test_a_button_or_modal_nothing_handles_is_answered_at_once_privately(
    bot: Bot, kind: int, data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A press of a button (or a modal's submit) that no handler of this version takes: it
    waited lightbulb's 5 s, then got "something went wrong" past the answer deadline, with an
    ERROR saying no reply came in time (none ever would). Now it is told, privately, at once,
    that it no longer works; not an error of the service's."""
    with caplog.at_level(logging.INFO):
        answer = await _unhandled(bot, kind, data)
    assert answer.status_code == 200
    reply = answer.json()
    assert reply["type"] == 4  # CHANNEL_MESSAGE_WITH_SOURCE: what Discord takes for both
    assert reply["data"]["content"] == NO_LONGER_WORKS
    assert reply["data"]["flags"] & 64  # ephemeral
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_button_pressed_through_the_emulator_is_answered_with_a_type_discord_takes(
    bot: Bot,
) -> None:
    """The emulator's test API presses a button (a component interaction) as Discord would,
    and judges the answer as a component's."""
    user = bot.user()
    reply = await run_command(bot.emulator_url, user.id, "whoami", custom_id="gone")
    assert reply.status == 200
    assert reply.content == NO_LONGER_WORKS
    assert reply.ephemeral
    assert reply.raw["errors"] == []


async def test_an_autocomplete_nothing_handles_gets_no_choices_at_once(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord takes only type 8 (APPLICATION_COMMAND_AUTOCOMPLETE_RESULT) for an
    autocomplete interaction: the fallback message (type 4) was refused as well as late."""
    data = {
        "id": next(c for c in bot.emulator.commands["global"] if c["name"] == "whoami")["id"],
        "name": "whoami",
        "type": 1,
        "options": [{"name": "who", "type": 3, "value": "al", "focused": True}],
    }
    with caplog.at_level(logging.INFO):
        answer = await _unhandled(bot, 4, data)
    assert answer.status_code == 200
    assert answer.json() == {"type": 8, "data": {"choices": []}}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# -- the HTTP endpoint -------------------------------------------------------------------------


async def test_ping_gets_pong(bot: Bot) -> None:
    """Discord's check of the endpoint URL: a signed PING gets PONG, a forged one 401."""
    async with httpx.AsyncClient(timeout=30, base_url=bot.emulator_url) as client:
        answer = await client.post("/_emulator/ping")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": 200,
        "body": {"type": 1},
        "bad_signature_status": 401,
        "accepted": True,
        "problems": [],
    }


@post("/interactions", status_code=200, sync_to_thread=False)
def pong_to_anyone() -> dict[str, int]:
    return {"type": 1}  # never checks the signature


@post("/interactions", status_code=200, sync_to_thread=False)
def not_a_pong() -> str:
    return "ok"  # (nor checks the signature)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [(pong_to_anyone, "badly signed request must get 401"), (not_a_pong, "must get 200")],
    ids=["signature-unchecked", "no-pong"],
)
async def test_the_ping_refuses_an_endpoint_discord_would_refuse(
    endpoint: HTTPRouteHandler, problem: str
) -> None:
    emulator = EmulatorState(APP_ID, "secret-bot", set())
    with (
        serve(Litestar([endpoint])) as endpoint_url,
        serve(create_emulator_app(emulator)) as emulator_url,
    ):
        emulator.interactions_url = f"{endpoint_url}/interactions"
        async with httpx.AsyncClient(timeout=30, base_url=emulator_url) as client:
            answer = await client.post("/_emulator/ping")
    assert answer.status_code == 400
    assert answer.json()["accepted"] is False
    assert any(problem in said for said in answer.json()["problems"])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "Missing"),
        ({"x-signature-ed25519": "00" * 64, "x-signature-timestamp": "1"}, "signature"),
        ({"x-signature-ed25519": "not hex", "x-signature-timestamp": "1"}, "signature"),
    ],
)
async def test_unsigned_or_badly_signed_requests_get_401(
    bot: Bot, headers: dict[str, str], reason: str
) -> None:
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=b'{"type": 1}', headers=headers)
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]


@pytest.mark.parametrize(
    "signed",
    [
        b"",
        b"X-Signature-Timestamp: 1700000000\r\n",
        b"X-Signature-Ed25519: not hex\r\nX-Signature-Timestamp: 1700000000\r\n",
        b"X-Signature-Ed25519: " + b"0" * 128 + b"\r\nX-Signature-Timestamp: soon\r\n",
    ],
    ids=["unsigned", "no-signature", "signature-not-hex", "timestamp-not-a-time"],
)
async def test_a_request_without_a_well_formed_signature_is_refused_before_its_body(
    bot: Bot, signed: bytes
) -> None:
    """Refused without reading its body (up to 1 MB was read first, for nothing): its 401
    comes while the body is still to come. The connection stays sound: the body that follows
    is never read as requests (it holds one here), the client's next request is answered, or
    the connection closed."""
    port = int(bot.app_url.rsplit(":", 1)[1])
    smuggled = b"GET /smuggled-in-a-body HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    body = smuggled.ljust(200_000, b" ")
    head = (
        b"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        + signed
        + b"\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body[:10])  # its body barely begun
        first = await asyncio.wait_for(reader.readline(), WAIT_SECONDS)
        assert first.startswith(b"HTTP/1.1 401 "), first
        rest = b""
        with contextlib.suppress(ConnectionError):
            writer.write(body[10:])
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
            writer.write(b"Connection: close\r\n\r\n")
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), WAIT_SECONDS)  # until it closes
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    later = re.findall(rb"HTTP/1\.1 (\d{3}) ", rest)
    assert later in ([], [b"200"]), rest[:2000]


async def test_a_body_signed_by_another_key_gets_401(bot: Bot) -> None:
    other = EmulatorState("x", "y", set())
    body, headers = signed_request(other, {"type": 1})
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert answer.status_code == 401


async def test_a_tampered_body_gets_401(bot: Bot) -> None:
    body, headers = signed_request(bot.emulator, {"type": 1})
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body + b" ", headers=headers)
    assert answer.status_code == 401


@pytest.mark.parametrize("offset", [-600, 600])
async def test_stale_or_future_timestamps_are_refused(bot: Bot, offset: int) -> None:
    body, headers = signed_request(bot.emulator, {"type": 1}, timestamp=int(time.time()) + offset)
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert answer.status_code == 401
    assert "timestamp" in answer.json()["detail"]


@pytest.mark.parametrize(
    "stamp", ["9" * 400, "-5", "1e9", "12.5"], ids=["huge", "neg", "exp", "fraction"]
)
async def test_absurd_signed_timestamps_get_401_not_500(bot: Bot, stamp: str) -> None:
    """The issue: a signed interaction with a 400-digit timestamp gave 500 (overflow)."""
    body = b'{"type": 1}'
    headers = {
        "content-type": "application/json",
        "x-signature-ed25519": bot.emulator.sign(body, stamp),
        "x-signature-timestamp": stamp,
    }
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert answer.status_code == 401
    assert "timestamp" in answer.json()["detail"]


async def test_an_interaction_over_a_megabyte_is_refused_unread(bot: Bot) -> None:
    body, headers = signed_request(bot.emulator, {"type": 1, "pad": "x" * 2_000_000})
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert answer.status_code == 413


async def test_a_replayed_request_is_refused(bot: Bot) -> None:
    body, headers = signed_request(bot.emulator, {"type": 1})
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        first = await client.post("/interactions", content=body, headers=headers)
        again = await client.post("/interactions", content=body, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 401
    assert "already received" in again.json()["detail"]


@pytest.mark.parametrize("command", ["unlink", "link"])
async def test_an_interaction_that_comes_after_discord_stopped_waiting_is_not_run(
    command: str,
    caplog: pytest.LogCaptureFixture,
    served_emulator: ServedEmulator,
) -> None:
    """Discord never sends an interaction late, but a proxy that held the request (a queue
    in front of busy workers) delivers it after Discord gave up, its signature good and its
    timestamp within the max age: run, a late /unlink unlinked unannounced, a late /link ended
    the button shown, as over the gateway. Refused as late, once; a copy as a replay."""
    # Far below the 2 minutes of the late one, far above what a busy machine takes to deliver
    # the one in time.
    async with bot_stack(served_emulator, discord_late_interaction_seconds=60.0) as bot:
        user = bot.user("lena")
        account = (await bot.h.sign_up("lena_tf", "lena@example.com")).account
        shown = await bot.run(user, "link")  # in time: runs
        ticket = urlsplit(shown.button["url"]).path.rsplit("/", 1)[1]
        if command == "unlink":
            await bot.h.confirm_ticket(ticket, account.id)
        counted = late_interactions("http")
        sent = time.time() - 120  # Discord sent it 2 minutes ago
        interaction = Interaction(
            id=snowflake_at(sent),
            token=secrets.token_urlsafe(48),
            user_id=user.id,
            command=command,
            guild_id=TEST_GUILD_ID,
            sent_at=time.monotonic(),
        )
        found = bot.emulator.find_command(command, TEST_GUILD_ID)
        assert found is not None
        payload = interaction_payload(bot.emulator, interaction, found)
        body, headers = signed_request(bot.emulator, payload, timestamp=int(sent))
        async with httpx.AsyncClient(base_url=bot.app_url, timeout=30) as client:
            answer = await client.post("/interactions", content=body, headers=headers)
            again = await client.post("/interactions", content=body, headers=headers)

        assert answer.status_code == 401
        assert f"(/{command}) not run: it came 12" in answer.json()["detail"]  # 120.x s
        assert again.status_code == 401
        assert "already received" in again.json()["detail"]
        linked = await bot.h.container.who_am_i().execute(DiscordId(int(user.id)))
        if command == "unlink":  # nothing was unlinked
            assert linked is not None
            assert linked.account.id == account.id
        else:  # the button shown still links
            assert linked is None
            await bot.h.confirm_ticket(ticket, account.id)
    said = [r for r in caplog.records if f"interaction {interaction.id}" in r.getMessage()]
    assert len(said) == 1
    assert "TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS (60)" in said[0].getMessage()
    assert interaction.token not in caplog.text
    assert late_interactions("http") == counted + 1


async def test_a_late_ping_still_gets_pong(bot: Bot) -> None:
    """Only what would run a command is refused as late: a PING changes nothing."""
    sent = time.time() - 120
    ping = {"type": 1, "id": snowflake_at(sent), "application_id": APP_ID, "token": "t" * 40}
    body, headers = signed_request(bot.emulator, ping, timestamp=int(sent))
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"type": 1})


async def test_a_valid_signature_is_accepted(bot: Bot) -> None:
    body, headers = signed_request(bot.emulator, {"type": 1})
    async with httpx.AsyncClient(timeout=30, base_url=bot.app_url) as client:
        answer = await client.post("/interactions", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"type": 1}


# -- command registration ------------------------------------------------------------------------


async def test_commands_are_registered_globally_for_servers_and_dms(bot: Bot) -> None:
    registered = {c["name"]: c for c in bot.emulator.commands["global"]}
    assert set(registered) == {"link", "unlink", "whoami"}
    for command in registered.values():
        assert sorted(command["contexts"]) == [0, 1]  # servers and bot DMs
        assert command["description"]


async def test_commands_can_live_in_chosen_servers_only() -> None:
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    emulator.guilds["42"] = Guild("42", "A second server")  # the app was added to both
    async with bot_stack(emulator, discord_command_guilds=f"{TEST_GUILD_ID}, 42") as bot:
        # Discord refuses a server's command that asks for DMs: none was refused.
        assert bot.emulator.refused_commands == []
        assert "global" not in bot.emulator.commands
        for guild in (TEST_GUILD_ID, "42"):
            assert {c["name"] for c in bot.emulator.commands[guild]} == {"link", "unlink", "whoami"}
        user = bot.user()
        assert "not linked" in (await bot.run(user, "whoami")).content
        async with httpx.AsyncClient(timeout=30, base_url=bot.emulator_url) as client:
            in_dm = await client.post(
                "/_emulator/interactions",
                json={"user_id": user.id, "command": "whoami", "where": "dm"},
            )
        assert in_dm.status_code == 409  # not registered outside those servers


async def test_a_servers_command_left_from_before_the_commands_went_global_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server commands while developing (TASKFLOW_LINK_DISCORD_COMMAND_GUILDS), then global:
    syncing replaces the global commands, never those of a server no longer listed, so that
    server lists each command twice (Discord shows both). lightbulb ignored the server's copy:
    "something went wrong" for each use over HTTP, no answer at all over the gateway. It is
    now answered as the global command, and the log says which server still holds copies."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    async with bot_stack(emulator, discord_command_guilds=TEST_GUILD_ID):
        pass
    async with bot_stack(emulator) as bot:
        assert {c["name"] for c in emulator.commands[TEST_GUILD_ID]} == {"link", "unlink", "whoami"}
        assert {c["name"] for c in emulator.commands["global"]} == {"link", "unlink", "whoami"}
        user = bot.user()
        reply = await bot.run(user, "whoami")  # the emulator, as Discord, runs the server's
        [interaction] = emulator.interactions.values()
        assert "not linked" in reply.content
        assert reply.ephemeral
    sent = interaction_payload(
        emulator, interaction, emulator.find_command("whoami", TEST_GUILD_ID) or {}
    )
    assert sent["data"]["guild_id"] == TEST_GUILD_ID  # the server's copy indeed
    assert f"registered in server {TEST_GUILD_ID}" in caplog.text


async def test_without_sync_the_commands_must_be_registered_separately(
    served_emulator: ServedEmulator,
) -> None:
    async with bot_stack(served_emulator, discord_sync_commands=False) as bot:
        assert bot.emulator.commands == {}
        await asyncio.to_thread(sync_with_cli, bot)
        assert "not linked" in (await bot.run(bot.user(), "whoami")).content


async def test_a_failed_sync_at_start_does_not_stop_the_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    async with bot_stack(emulator):
        registered = copy.deepcopy(emulator.commands)
    assert registered["global"]
    # Restart with a token Discord refuses: syncing fails, the registered commands still work.
    async with bot_stack(emulator, discord_bot_token="revoked-token") as bot:
        assert bot.emulator.commands == registered
        assert "Could not sync the slash commands" in caplog.text
        assert "not linked" in (await bot.run(bot.user(), "whoami")).content


def sync_with_cli(bot: Bot) -> None:
    env = {
        "TASKFLOW_LINK_" + k.upper(): str(v)
        for k, v in bot_settings(bot.app_url, bot.emulator, bot.emulator_url).items()
    }
    env |= {"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY, "TASKFLOW_LINK_STORAGE": "memory"}
    result = CliRunner().invoke(cli, ["bot", "sync"], env=env)
    assert result.exit_code == 0, result.output
    assert "global: /link, /unlink, /whoami" in result.output


def test_bot_sync_explains_an_unreachable_discord() -> None:
    env = {
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DISCORD_BOT_TOKEN": "token",
        "TASKFLOW_LINK_DISCORD_API_URL": f"http://127.0.0.1:{free_port()}/api/v10",
    }
    result = CliRunner().invoke(cli, ["bot", "sync"], env=env, standalone_mode=True)
    assert result.exit_code == 1
    assert "Could not register the commands" in result.output


def test_bot_needs_a_token() -> None:
    result = CliRunner().invoke(
        cli, ["bot", "sync"], env={"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY}
    )
    assert isinstance(result.exception, SettingsError)
    assert "TASKFLOW_LINK_DISCORD_BOT_TOKEN" in str(result.exception)


def test_an_empty_token_counts_as_missing() -> None:
    with pytest.raises(SettingsError, match="TASKFLOW_LINK_DISCORD_BOT_TOKEN"):
        make_settings(discord_bot_token=" ").require("discord_bot_token")


async def test_interactions_are_off_without_a_public_key() -> None:
    container = build_container(make_settings())
    async with (
        serve_here(create_app(container)) as url,
        httpx.AsyncClient(timeout=30, base_url=url) as client,
    ):
        answer = await client.post("/interactions", content=b"{}")
    assert answer.status_code == 404
    assert "TASKFLOW_LINK_DISCORD_PUBLIC_KEY" in answer.json()["detail"]


async def test_a_server_dropped_from_the_chosen_ones_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Commands in chosen servers, then one server dropped from
    TASKFLOW_LINK_DISCORD_COMMAND_GUILDS: syncing never removes that server's copies, so its
    members still see /link and the others, and every use was answered "something went wrong
    on our side, try again in a minute" (over the gateway, nothing), the log saying only "a
    command this version lacks?". They are still not run there, and the log names the server
    and how to remove its copies."""
    emulator = EmulatorState(APP_ID, "secret-bot", set(), response_deadline=EMULATOR_DEADLINE)
    emulator.guilds["42"] = Guild("42", "A second server")
    async with bot_stack(emulator, discord_command_guilds=f"{TEST_GUILD_ID}, 42"):
        pass
    async with bot_stack(emulator, discord_command_guilds=TEST_GUILD_ID) as bot:
        assert {c["name"] for c in emulator.commands["42"]} == {"link", "unlink", "whoami"}
        user = bot.user()
        emulator.guilds["42"].members[user.id] = set()
        reply = await run_command(bot.emulator_url, user.id, "link", guild_id=42)
        assert reply.buttons == []  # not run: no ticket
        assert reply.ephemeral
    assert "server 42" in caplog.text
    assert "guilds/42/commands" in caplog.text
