"""The same commands over the gateway: a real ``hikari.GatewayBot`` connects to the emulator's
gateway WebSocket (HELLO, IDENTIFY, READY, heartbeats) and receives INTERACTION_CREATE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hikari
import httpx
import pytest
from dependency_injector import providers
from hikari.impl.shard import GatewayShardImpl

from adapters.shared_state import MemoryReplayGuard
from adapters.sql import SqlDatabase, migrate
from domain.model import DiscordId
from entrypoints.bot.replies import NO_LONGER_WORKS
from entrypoints.bot.runtime import build_gateway_bot, warn_of_interactions_endpoint
from entrypoints.container import Container, build_container
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TEST_GUILD_ID
from tests.bot_support import (
    ShiftedClock,
    assert_under_gateway_rate_limit,
    late_interactions,
    run_command,
    running_gateway_bot,
    wait_until,
)
from tests.harness import TEST_SECRET_KEY, Harness, make_settings
from tests.servers import serve

APP_ID = "1234567890123456780"


@pytest.fixture
def emulator() -> Iterator[tuple[EmulatorState, str]]:
    state = EmulatorState(APP_ID, "secret", set(), response_deadline=60.0)
    with serve(create_emulator_app(state)) as url:
        yield state, url
    assert_under_gateway_rate_limit(state)


@pytest.fixture
async def gateway_bot(emulator: tuple[EmulatorState, str]) -> AsyncIterator[Harness]:
    state, url = emulator
    container = _bot_container(state, url)
    h = Harness.build(container)
    async with running_gateway_bot(container, state):
        yield h


def _bot_container(state: EmulatorState, url: str) -> Container:
    return build_container(
        make_settings(
            discord_bot_token=state.bot_token,
            discord_api_url=f"{url}/api/v10",
            public_url="http://taskflow.example",
            development=True,  # the outbox, with a public URL that is not loopback
            discord_reply_deadline_seconds=20.0,
            discord_answer_deadline_seconds=25.0,
        )
    )


async def test_commands_work_over_the_gateway(
    gateway_bot: Harness, emulator: tuple[EmulatorState, str]
) -> None:
    state, url = emulator
    user = state.add_user("gail")
    h = gateway_bot

    reply = await run_command(url, user.id, "link", via="gateway")
    assert reply.status is None
    assert reply.ephemeral
    assert reply.button["url"].startswith("http://taskflow.example/link/")

    account = (await h.sign_up("gail_tf", "gail@example.com")).account
    ticket = urlsplit(reply.button["url"]).path.rsplit("/", 1)[1]
    await h.confirm_ticket(ticket, account.id)

    for where in ("guild", "dm"):
        whoami = await run_command(url, user.id, "whoami", where=where, via="gateway")
        assert r"**gail\_tf**" in whoami.content
    unlinked = await run_command(url, user.id, "unlink", via="gateway")
    assert "no longer linked" in unlinked.content
    assert await h.container.who_am_i().execute(DiscordId(int(user.id))) is None


async def test_a_button_nothing_handles_is_answered_at_once_over_the_gateway_too(
    gateway_bot: Harness, emulator: tuple[EmulatorState, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A press of a button no handler of this version takes (one on a message of an older
    version): over HTTP it is told at once, privately, that it no longer works; over the
    gateway it got no answer at all, and Discord showed "This interaction failed"."""
    state, url = emulator
    user = state.add_user("gus")

    with caplog.at_level(logging.INFO):
        reply = await run_command(
            url, user.id, "whoami", via="gateway", custom_id="from-an-older-version"
        )

    assert reply.content == NO_LONGER_WORKS
    assert reply.ephemeral
    assert reply.raw["errors"] == []  # a type Discord takes for a component's interaction
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_servers_command_left_from_before_the_commands_went_global_is_answered(
    gateway_bot: Harness, emulator: tuple[EmulatorState, str]
) -> None:
    """The test server still holds copies of the commands from when they lived there only
    (see the HTTP interactions' test): over the gateway nobody answered them, as lightbulb
    ignored them and so no copy of the bot claimed them."""
    state, url = emulator
    state.commands[TEST_GUILD_ID] = [
        {**command, "id": state.snowflake(), "guild_id": TEST_GUILD_ID, "contexts": None}
        for command in state.commands["global"]
    ]
    user = state.add_user("gwen")

    reply = await run_command(url, user.id, "whoami", via="gateway")

    assert "not linked" in reply.content
    assert reply.ephemeral


async def test_a_slow_command_answers_thinking_over_the_gateway_too(
    emulator: tuple[EmulatorState, str],
) -> None:
    """A command that has not replied within the defer delay says "thinking…" through the
    callback, and its reply completes that message: cut off at the reply deadline instead, a
    slow command was told it had failed (helper-53's review)."""
    state, url = emulator
    container = build_container(
        make_settings(
            discord_bot_token=state.bot_token,
            discord_api_url=f"{url}/api/v10",
            discord_defer_after_seconds=0.05,
            discord_reply_deadline_seconds=0.3,
            discord_answer_deadline_seconds=25.0,
        )
    )

    class SlowWhoAmI:
        async def execute(self, discord_id: DiscordId) -> None:
            # Once Discord shows "thinking…", on past the reply deadline (0.3 s) in any case.
            while not any(i.response for i in state.interactions.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)

    user = state.add_user("iris")
    async with running_gateway_bot(container, state):
        with container.who_am_i.override(providers.Factory(SlowWhoAmI)):
            reply = await run_command(url, user.id, "whoami", via="gateway")
    [interaction] = state.interactions.values()
    assert reply.raw["reply"]["deferred"] is True  # "thinking…", then the webhook
    assert "not linked" in reply.content
    assert reply.ephemeral
    assert interaction.errors == []


@pytest.mark.parametrize("command", ["unlink", "link"])
async def test_an_interaction_that_comes_after_discord_stopped_waiting_is_not_run(
    emulator: tuple[EmulatorState, str], caplog: pytest.LogCaptureFixture, command: str
) -> None:
    """Past Discord's 3 s nothing answers an interaction (the token is invalidated), yet one
    that came later (a resumed session replaying what it missed, a stalled process) ran: an
    /unlink unlinked while the person was shown "The application did not respond", a /link
    ended the button shown without showing a new one. Not run now, logged once with its age."""
    state, url = emulator
    container = build_container(
        make_settings(
            discord_bot_token=state.bot_token,
            discord_api_url=f"{url}/api/v10",
            public_url="http://taskflow.example",
            development=True,
            discord_reply_deadline_seconds=20.0,
            discord_answer_deadline_seconds=25.0,
            # Far below the 2 minutes of the late one, far above what a busy machine takes to
            # deliver the one in time.
            discord_late_interaction_seconds=60.0,
        )
    )
    h = Harness.build(container)
    clock = ShiftedClock()
    container.interaction_clock.override(providers.Object(clock))
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    user = state.add_user("lena")
    account = (await h.sign_up("lena_tf", "lena@example.com")).account
    async with running_gateway_bot(container, state):
        shown = await run_command(url, user.id, "link", via="gateway")  # in time: runs
        ticket = urlsplit(shown.button["url"]).path.rsplit("/", 1)[1]
        if command == "unlink":
            await h.confirm_ticket(ticket, account.id)
        counted = late_interactions("gateway")

        clock.ahead = timedelta(minutes=2)  # what reaches the bot now is 2 minutes old
        state.response_deadline = 1.0  # no answer will come: wait less for it
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            sent = await client.post(
                "/_emulator/interactions",
                json={"user_id": user.id, "command": command, "via": "gateway"},
            )
        result = sent.json()
        assert result["reply"] is None  # not run: no answer (Discord would take none now)...
        await wait_until(lambda: late_interactions("gateway") > counted)
        said = [r for r in caplog.records if f"interaction {result['interaction_id']}" in r.message]

    linked = await h.container.who_am_i().execute(DiscordId(int(user.id)))
    if command == "unlink":  # ...but nothing was unlinked
        assert linked is not None
        assert linked.account.id == account.id
    else:  # ...and the button shown still links
        assert linked is None
        await h.confirm_ticket(ticket, account.id)
    [refused] = said
    assert refused.levelno == logging.WARNING
    assert f"(/{command}) not run: it came 12" in refused.message  # 120.x s
    assert "TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS (60)" in refused.message
    assert state.interactions[result["interaction_id"]].token not in caplog.text
    assert late_interactions("gateway") == counted + 1


def gateway_container(url: str, state: EmulatorState, **settings: object) -> Container:
    values: dict[str, object] = {
        "discord_bot_token": state.bot_token,
        "discord_api_url": f"{url}/api/v10",
        "public_url": "http://taskflow.example",
        "development": True,
        "discord_defer_after_seconds": 1.0,
        "discord_reply_deadline_seconds": 20.0,
        "discord_answer_deadline_seconds": 25.0,
        # Generous: an interaction made 2.5 s old (``ShiftedClock``) must not be late however
        # long a busy machine takes to deliver it.
        "discord_late_interaction_seconds": 60.0,
    }
    values.update(settings)
    return build_container(make_settings(**values))


async def test_an_interaction_that_came_after_the_defer_delay_says_thinking_before_it_runs(
    emulator: tuple[EmulatorState, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Discord's 3 s count from the interaction's creation: one that reached the bot 2.5 s
    after it (a stalled process, a slow claim) passed the late check (5 s) and said "thinking…"
    only after the defer delay (1 s) from its arrival, at 3.5 s, which Discord no longer took.
    The delay counts from the creation now: "thinking…" at once, before the command starts."""
    state, url = emulator
    container = gateway_container(url, state)
    clock = ShiftedClock()
    container.interaction_clock.override(providers.Object(clock))
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    thinking_first: list[bool] = []

    class NotesWhetherThinking:
        async def execute(self, discord_id: DiscordId) -> None:
            thinking_first.append(any(i.response for i in state.interactions.values()))

    user = state.add_user("tess")
    async with running_gateway_bot(container, state):
        clock.ahead = timedelta(seconds=2.5)  # what reaches the bot now is 2.5 s old
        with container.who_am_i.override(providers.Factory(NotesWhetherThinking)):
            reply = await run_command(url, user.id, "whoami", via="gateway")
    assert thinking_first == [True]
    assert reply.raw["reply"]["deferred"] is True  # "thinking…", then the webhook
    assert "not linked" in reply.content
    assert reply.ephemeral
    said = [r.getMessage() for r in caplog.records if "before it runs" in r.getMessage()]
    assert len(said) == 1
    # 2.5 s old when sent, and older still by the time it took to reach the bot: on a busy
    # machine that can be more than the half second "came 2." allowed.
    came = re.search(
        rf"interaction {reply.raw['interaction_id']} \(/whoami\) came ([\d.]+) s", said[0]
    )
    assert came is not None, said[0]
    assert float(came.group(1)) >= 2.5


async def test_an_interaction_whose_thinking_discord_refuses_is_not_run(
    emulator: tuple[EmulatorState, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reached the bot in time by its clock (a clock behind, a claim that took long), yet
    Discord's 3 s were over: its "thinking…" comes before the command, and Discord refusing it
    (Unknown interaction) leaves the command unrun. It ran first: an /unlink unlinked while
    the person saw "The application did not respond"."""
    state, url = emulator
    container = gateway_container(url, state)
    h = Harness.build(container)
    clock = ShiftedClock()
    container.interaction_clock.override(providers.Object(clock))
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    user = state.add_user("ula")
    account = (await h.sign_up("ula_tf", "ula@example.com")).account
    claim = MemoryReplayGuard.first_time

    async def claimed_after_discord_gave_up(
        guard: MemoryReplayGuard, key: str, *args: Any, **kwargs: Any
    ) -> bool:
        for interaction in state.interactions.values():  # Discord's 3 s are over
            interaction.sent_at -= 100
        return await claim(guard, key, *args, **kwargs)

    async with running_gateway_bot(container, state):
        shown = await run_command(url, user.id, "link", via="gateway")
        ticket = urlsplit(shown.button["url"]).path.rsplit("/", 1)[1]
        await h.confirm_ticket(ticket, account.id)

        clock.ahead = timedelta(seconds=2.5)
        state.response_deadline = 1.0  # no answer will come: wait less for it
        monkeypatch.setattr(MemoryReplayGuard, "first_time", claimed_after_discord_gave_up)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            sent = await client.post(
                "/_emulator/interactions",
                json={"user_id": user.id, "command": "unlink", "via": "gateway"},
            )
        result = sent.json()
        assert result["reply"] is None
        name = f"interaction {result['interaction_id']} (/unlink) not run"
        await wait_until(lambda: name in caplog.text)
    linked = await h.container.who_am_i().execute(DiscordId(int(user.id)))
    assert linked is not None  # nothing was unlinked
    assert linked.account.id == account.id
    [refused] = [r for r in caplog.records if name in r.getMessage()]
    assert refused.levelno == logging.WARNING
    assert "Discord code 10062" in refused.getMessage()
    assert "/unlink failed" not in caplog.text
    assert state.interactions[result["interaction_id"]].token not in caplog.text


async def test_the_bot_says_at_start_that_a_later_release_migrated_its_database(
    emulator: tuple[EmulatorState, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`taskflow-link bot` after a rollback, on a schema a later release migrated: it serves
    on it (refusing would stop the older copies as each restarts in a rolling upgrade), and
    the log says so and how to take the schema back. It logged nothing."""
    state, url = emulator
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    database = SqlDatabase(database_url)
    await migrate.upgrade(database)
    await database.dispose()
    with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    container = build_container(
        make_settings(
            storage="sql",
            database_url=database_url,
            discord_bot_token=state.bot_token,
            discord_api_url=f"{url}/api/v10",
        )
    )

    def said() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "taskflow_link.bot" and r.getMessage().startswith("The database at")
        ]

    async with running_gateway_bot(container, state):
        await wait_until(said)
    [warning] = said()
    assert "is at revision 9999_from_the_future, which this version does not know" in warning
    assert "a later release migrated it. This version serves on it" in warning
    assert f"`taskflow-link db downgrade {migrate.head_revision()} --yes`" in warning


async def test_the_bot_warns_at_start_of_an_interactions_endpoint_url(
    emulator: tuple[EmulatorState, str], caplog: pytest.LogCaptureFixture
) -> None:
    """With an Interactions Endpoint URL set on the application, Discord sends no
    interaction over the gateway: the bot started, connected, and silently never answered.
    It now reads the application (GET /applications/@me) and names the setting to clear."""
    state, url = emulator
    state.interactions_url = "https://taskflow.example/interactions"
    container = build_container(
        make_settings(discord_bot_token=state.bot_token, discord_api_url=f"{url}/api/v10")
    )
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")

    def said() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "Interactions Endpoint URL" in r.getMessage()]

    async with running_gateway_bot(container, state):
        await wait_until(said)
    [warning] = said()
    assert warning.levelno == logging.WARNING
    assert "https://taskflow.example/interactions" in warning.getMessage()
    assert "clear Interactions Endpoint URL" in warning.getMessage()

    # None set (Discord's null): nothing to say, nor a failed read.
    state.interactions_url = None
    caplog.clear()
    await warn_of_interactions_endpoint(container)
    await container.discord_http().aclose()
    assert said() == []


async def test_a_wrong_token_is_refused_by_the_gateway(emulator: tuple[EmulatorState, str]) -> None:
    _, url = emulator
    wrong = EmulatorState(APP_ID, "secret", set()).bot_token  # well-formed, not the bot's
    container = build_container(
        make_settings(discord_bot_token=wrong, discord_api_url=f"{url}/api/v10")
    )
    runner = build_gateway_bot(container)
    with pytest.raises(hikari.UnauthorizedError):
        await runner.start()
    await runner.bot.close()


async def test_the_bot_command_runs_and_stops_on_ctrl_c(
    emulator: tuple[EmulatorState, str],
) -> None:
    """``taskflow-link bot`` as a person runs it: a process that serves until interrupted."""
    state, url = emulator
    env = {
        **os.environ,
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_STORAGE": "memory",
        "TASKFLOW_LINK_DISCORD_BOT_TOKEN": state.bot_token,
        "TASKFLOW_LINK_DISCORD_API_URL": f"{url}/api/v10",
        "TASKFLOW_LINK_DISCORD_REPLY_DEADLINE_SECONDS": "20",
        "TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS": "25",
        "TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS": "60",
    }
    process = subprocess.Popen(  # noqa: ASYNC220 - the test waits for it with to_thread
        [sys.executable, "-c", "from entrypoints.cli import main; main()", "bot"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await wait_until(lambda: "global" in state.commands or process.poll() is not None)
        assert process.poll() is None, process.communicate()[0]
        user = state.add_user("hank")
        reply = await run_command(url, user.id, "whoami", via="gateway")
        assert "not linked" in reply.content
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert state.bot_token not in output
    # Memory no web app sees: its /link buttons lead nowhere, and it says so.
    assert "This bot keeps its data in its own memory" in output


def test_the_bot_command_explains_a_token_discord_refuses(
    emulator: tuple[EmulatorState, str],
) -> None:
    _, url = emulator
    env = {
        **os.environ,
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        # well-formed, but not the bot's: the emulator answers 401 as Discord does
        "TASKFLOW_LINK_DISCORD_BOT_TOKEN": EmulatorState(APP_ID, "x", set()).bot_token,
        "TASKFLOW_LINK_DISCORD_API_URL": f"{url}/api/v10",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from entrypoints.cli import main; main()", "bot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "could not connect to Discord" in done.stderr
    assert "Unauthorized" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_bot_connects_again_after_discord_closes_its_zombied_connection(
    emulator: tuple[EmulatorState, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Discord closes a connection whose heartbeats stopped with 4009 Session timed out; the
    bot (hikari) takes that as a close to reconnect after: its RESUME is refused and it
    identifies anew, and commands reach it again. The interval is small for the test, not so
    small that a busy machine makes the bot miss a heartbeat it sends."""
    state, url = emulator
    state.heartbeat_interval = 4.0
    user = state.add_user("gail")
    zombie = False
    heartbeat = GatewayShardImpl._send_heartbeat

    async def stalled_heartbeat(shard: GatewayShardImpl) -> None:
        if not zombie:  # the connection looks alive to the bot, but nothing goes out
            await heartbeat(shard)

    monkeypatch.setattr(GatewayShardImpl, "_send_heartbeat", stalled_heartbeat)
    caplog.set_level(logging.INFO, logger="hikari.gateway")
    async with running_gateway_bot(_bot_container(state, url), state):
        [first] = state.gateway_sessions
        zombie = True
        await wait_until(lambda: first not in state.gateway_sessions)
        zombie = False
        await wait_until(lambda: len(state.gateway_sessions) == 1)
        assert "[code:4009, reason:Session timed out.]" in caplog.text
        whoami = await run_command(url, user.id, "whoami", via="gateway")
        assert "not linked" in whoami.content
