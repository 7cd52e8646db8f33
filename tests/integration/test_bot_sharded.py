"""Several copies of the gateway bot sharing the work as shards: real ``hikari.GatewayBot``s
and lightbulb against the emulator's gateway, which routes each interaction as Discord does
(a server's to shard ``(guild_id >> 22) % count``, a DM's to shard 0)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import hikari
import httpx
import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from adapters.sql import SqlDatabase
from adapters.sql.tables import link_tickets
from entrypoints.bot import runtime
from entrypoints.bot.claims import ClaimingGatewayClient
from entrypoints.bot.commands import command_classes
from entrypoints.bot.runtime import GatewayRunner, build_gateway_bot, sync_commands
from entrypoints.container import build_container
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import Guild, TestUser
from entrypoints.settings import Settings
from entrypoints.web import create_app
from tests.bot_support import (
    CONNECT_SECONDS,
    WAIT_SECONDS,
    ShiftedClock,
    assert_under_gateway_rate_limit,
    late_interactions,
    run_command,
    wait_until,
)
from tests.harness import TEST_SECRET_KEY, make_settings
from tests.integration.stack import count
from tests.servers import serve

APP_ID = "1234567890123456781"
# Servers whose interactions belong to each of 2 shards: (guild_id >> 22) % 2.
SERVERS_OF_SHARD = {
    0: (1300000000000000001, 1300000000008388609),
    1: (1300000000004194305, 1300000000012582913),
}


@pytest.fixture
def emulator() -> Iterator[tuple[EmulatorState, str]]:
    state = EmulatorState(APP_ID, "secret", set(), response_deadline=60.0, gateway_shards=2)
    for server in (str(s) for servers in SERVERS_OF_SHARD.values() for s in servers):
        state.guilds.setdefault(server, Guild(server, f"Server {server}"))  # the app is in each
    with serve(create_emulator_app(state)) as url:
        yield state, url
    assert_under_gateway_rate_limit(state)


def _in_every_server(state: EmulatorState, user: TestUser) -> TestUser:
    """The user joins each server of SERVERS_OF_SHARD (Discord offers a server's commands to
    its members only)."""
    for guild in state.guilds.values():
        guild.members.setdefault(user.id, set())
    return user


def _settings(state: EmulatorState, url: str, **overrides: Any) -> Settings:
    return make_settings(
        discord_bot_token=state.bot_token,
        discord_api_url=f"{url}/api/v10",
        discord_reply_deadline_seconds=20.0,
        discord_answer_deadline_seconds=25.0,
        **overrides,
    )


@dataclass
class BotCopy:
    """One copy of ``taskflow-link bot`` and the interactions its gateway delivered to it."""

    runner: GatewayRunner
    received: list[tuple[str, int]] = field(default_factory=list)  # (interaction, shard id)

    def interactions(self) -> set[str]:
        return {interaction for interaction, _ in self.received}


@contextlib.asynccontextmanager
async def running_copy(
    state: EmulatorState, url: str, clock: ShiftedClock | None = None, /, **shards: Any
) -> AsyncIterator[BotCopy]:
    """A separate ``GatewayBot`` (own container, own lightbulb client) on this event loop;
    ``clock``: the one it measures an interaction's age by."""
    container = build_container(_settings(state, url, **shards))
    if clock is not None:
        container.interaction_clock.override(providers.Object(clock))
    runner = build_gateway_bot(container)
    bot_copy = BotCopy(runner)

    async def record(event: hikari.InteractionCreateEvent) -> None:
        bot_copy.received.append((str(event.interaction.id), event.shard.id))

    runner.bot.subscribe(hikari.InteractionCreateEvent, record)
    await runner.start()
    try:
        await asyncio.wait_for(runner.ready.wait(), CONNECT_SECONDS)
        yield bot_copy
    finally:
        await runner.bot.close()


async def _registered_by_an_older_release(state: EmulatorState, url: str) -> dict[str, Any]:
    """Register the commands (the release step), then make them look like an older release's:
    a copy that synced at start would put this version's back."""
    await sync_commands(build_container(_settings(state, url)))
    for command in state.commands["global"]:
        command["description"] = "as the previous release registered it"
    return copy.deepcopy(state.commands)


def test_the_servers_used_here_belong_to_the_shards_named() -> None:
    for shard, servers in SERVERS_OF_SHARD.items():
        assert all((server >> 22) % 2 == shard for server in servers)


async def test_a_command_run_the_moment_a_shard_is_ready_is_answered(
    emulator: tuple[EmulatorState, str],
) -> None:
    """Discord delivers interactions from a shard's READY on (someone ran a command while
    the bot came up): the commands are served before any shard connects, not once every
    shard is (lightbulb drops what comes before its client started)."""
    state, url = emulator
    await sync_commands(build_container(_settings(state, url)))
    user = state.add_user("rae")
    shards = {"discord_shard_ids": "0", "discord_shard_count": 1}
    runner = build_gateway_bot(build_container(_settings(state, url, **shards)))
    serving_at_ready: list[bool] = []
    answers: list[dict[str, Any]] = []

    async def on_ready(_: hikari.ShardReadyEvent) -> None:
        serving_at_ready.append(runner.serving)
        body = {"user_id": user.id, "command": "whoami", "via": "gateway"}
        async with httpx.AsyncClient(base_url=url, timeout=90) as client:
            answers.append((await client.post("/_emulator/interactions", json=body)).json())

    runner.bot.subscribe(hikari.ShardReadyEvent, on_ready)
    await runner.start()
    try:
        await wait_until(lambda: answers, seconds=90)
    finally:
        await runner.bot.close()
    assert serving_at_ready == [True]
    assert "not linked" in answers[0]["reply"]["data"]["content"]


async def test_a_bot_that_cannot_serve_its_commands_stops(
    emulator: tuple[EmulatorState, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hikari only logs what a StartingEvent listener raises and connects anyway: a bot whose
    commands could not be set up must not then look healthy while it answers nothing."""
    state, url = emulator

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the command loader broke")

    monkeypatch.setattr(runtime, "prepare_client", broken)
    shards = {"discord_shard_ids": "0", "discord_shard_count": 1}
    runner = build_gateway_bot(build_container(_settings(state, url, **shards)))
    await runner.start()
    await wait_until(lambda: not runner.bot.is_alive, seconds=60)  # it closed itself

    assert runner.failed
    assert not runner.serving
    assert not runner.ready.is_set()
    assert "The bot cannot serve its commands; stopping" in caplog.text


async def test_two_copies_each_answer_the_interactions_of_their_own_shard_once(
    emulator: tuple[EmulatorState, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = emulator
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    registered = await _registered_by_an_older_release(state, url)
    user = _in_every_server(state, state.add_user("sam"))
    owner: dict[str, int] = {}  # interaction id -> the shard that must answer it

    async with (
        running_copy(state, url, discord_shard_ids="0", discord_shard_count=2) as first,
        running_copy(state, url, discord_shard_ids="1", discord_shard_count=2) as second,
    ):
        for _ in range(2):
            for shard, servers in SERVERS_OF_SHARD.items():
                for server in servers:
                    reply = await run_command(
                        url, user.id, "whoami", via="gateway", guild_id=server
                    )
                    assert "not linked" in reply.content
                    assert reply.raw["shards"] == [[shard, 2]]
                    owner[reply.raw["interaction_id"]] = shard
            dm = await run_command(url, user.id, "whoami", where="dm", via="gateway")
            assert dm.raw["shards"] == [[0, 2]]
            owner[dm.raw["interaction_id"]] = 0

    assert len(owner) == 10
    assert sorted(first.received) == sorted((i, 0) for i, shard in owner.items() if shard == 0)
    assert sorted(second.received) == sorted((i, 1) for i, shard in owner.items() if shard == 1)
    for interaction_id in owner:
        interaction = state.interactions[interaction_id]
        assert interaction.response is not None
        assert interaction.refused == []  # no second answer, no 40060
    # Neither copy registered the commands: what was there is untouched.
    assert state.commands == registered
    refusing = [r for r in caplog.records if "not registering the slash commands" in r.message]
    assert sorted(r.getMessage().split("(")[1].split(")")[0] for r in refusing) == [
        "shard 0 of 2",
        "shard 1 of 2",
    ]


async def test_copies_that_are_not_sharded_race_for_every_interaction(
    emulator: tuple[EmulatorState, str],
) -> None:
    """Why sharding: Discord sends every interaction to every copy that identified as the same
    shard; without a Redis they share, each runs it, the first answer wins and the others get
    40060, as the emulator shows."""
    state, url = emulator
    state.gateway_shards = 1  # Discord recommends one shard: each copy runs "all" of them
    user = state.add_user("rae")
    async with running_copy(state, url) as first, running_copy(state, url) as second:
        reply = await run_command(url, user.id, "whoami", via="gateway")
        interaction = state.interactions[reply.raw["interaction_id"]]
        await wait_until(lambda: interaction.refused)
        assert reply.raw["shards"] == [[0, 1], [0, 1]]
        assert first.interactions() == second.interactions() == {interaction.id}
    assert set(interaction.refused) == {40060}


async def test_copies_sharing_redis_run_each_interaction_once(
    emulator: tuple[EmulatorState, str],
    redis_url: str,
    sqlite_db: SqlDatabase,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two copies of one shard (not sharded, or the old and new copy while a rolling upgrade
    overlaps them) both receive each interaction. Each used to run it: the /link button shown
    was nearly always dead, spent by the other copy's newer ticket ("already used, or it was
    replaced"). Sharing Redis, one copy claims the interaction and runs it, once
    (helper-78's review)."""
    state, url = emulator
    state.gateway_shards = 1
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    user = state.add_user("rae")
    shared = {"storage": "sql", "database_url": sqlite_url, "redis_url": redis_url}
    async with running_copy(state, url, **shared), running_copy(state, url, **shared):
        replies = [await run_command(url, user.id, "link", via="gateway") for _ in range(3)]
        await wait_until(
            lambda: caplog.text.count("another copy of the bot claimed it") == len(replies)
        )
    for reply in replies:
        assert reply.raw["shards"] == [[0, 1], [0, 1]]  # both copies received it
        assert state.interactions[reply.raw["interaction_id"]].refused == []  # no 40060
    assert await count(sqlite_db, link_tickets) == len(replies)  # one ticket per /link
    web = build_container(_settings(state, url, **shared))
    try:
        newest = urlsplit(replies[-1].button["url"]).path.rsplit("/", 1)[1]
        await web.show_link_ticket().execute(newest)  # live, not "already used"
    finally:
        await web.sql_db().dispose()


async def test_copies_sharing_redis_refuse_a_late_interaction_once(
    emulator: tuple[EmulatorState, str],
    redis_url: str,
    sqlite_db: SqlDatabase,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interaction that came after Discord stopped waiting for its answer is not run (see
    test_bot_gateway), and of two copies that both received it, the one that claimed it
    says so: one warning for the interaction, not one per copy."""
    state, url = emulator
    state.gateway_shards = 1
    state.response_deadline = 1.0  # no answer will come: wait less for it
    caplog.set_level(logging.INFO, logger="taskflow_link.bot")
    user = state.add_user("rae")
    clock = ShiftedClock()
    clock.ahead = timedelta(minutes=2)  # what reaches the copies is 2 minutes old
    shared = {
        "storage": "sql",
        "database_url": sqlite_url,
        "redis_url": redis_url,
        "discord_late_interaction_seconds": 5.0,
    }
    counted = late_interactions("gateway")
    async with (
        running_copy(state, url, clock, **shared),
        running_copy(state, url, clock, **shared),
    ):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            sent = await client.post(
                "/_emulator/interactions",
                json={"user_id": user.id, "command": "link", "via": "gateway"},
            )
        result = sent.json()
        await wait_until(
            lambda: (
                "another copy of the bot claimed it" in caplog.text
                and late_interactions("gateway") > counted
            )
        )
    assert result["shards"] == [[0, 1], [0, 1]]  # both copies received it
    assert result["reply"] is None
    said = [
        r.message for r in caplog.records if f"interaction {result['interaction_id']}" in r.message
    ]
    assert len([m for m in said if "not run: it came 12" in m]) == 1
    assert late_interactions("gateway") == counted + 1  # once (both copies count here)
    assert await count(sqlite_db, link_tickets) == 0  # no ticket issued


async def test_a_copy_that_does_not_know_a_command_leaves_it_to_one_that_does(
    emulator: tuple[EmulatorState, str],
    redis_url: str,
    sqlite_db: SqlDatabase,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rolling upgrade that adds a command overlaps a copy of the older release, which has
    no handler for it, with one of the new. The old copy claimed every interaction it
    received, then ignored the command it did not know, and the new copy left it to the
    claim: nobody answered ("The application did not respond"). A copy claims only what it
    runs."""
    state, url = emulator
    state.gateway_shards = 1
    state.response_deadline = 10.0  # time enough to answer; none is a failure here
    user = state.add_user("rae")
    shared = {"storage": "sql", "database_url": sqlite_url, "redis_url": redis_url}

    def older_release(*, server_commands: bool) -> Any:  # /link and /unlink only
        import lightbulb

        loader = lightbulb.Loader()
        for command in command_classes(server_commands=server_commands):
            if command.__name__ != "WhoAmICommand":
                loader.command(command)
        return loader

    with monkeypatch.context() as patched:
        patched.setattr(runtime, "command_loader", older_release)
        old = running_copy(state, url, **shared)
        await old.__aenter__()
    try:
        async with running_copy(state, url, **shared):  # the new release (registers /whoami)
            for _ in range(3):  # whichever copy receives it first
                reply = await run_command(url, user.id, "whoami", via="gateway")
                assert reply.raw["shards"] == [[0, 1], [0, 1]]
                assert state.interactions[reply.raw["interaction_id"]].refused == []
                assert "went wrong" not in reply.content
    finally:
        await old.__aexit__(None, None, None)


async def test_a_copy_that_stops_answers_the_commands_it_runs_first(
    emulator: tuple[EmulatorState, str], sqlite_db: SqlDatabase, sqlite_url: str
) -> None:
    """A copy that stops (a rolling upgrade, a restart) closed its shards and its REST client
    under a command it was running: that command's answer never went out, and, claimed, no
    other copy ran it. A stopping copy lets the commands under way finish first."""
    state, url = emulator
    state.gateway_shards = 1
    user = state.add_user("rae")
    container = build_container(
        _settings(
            state,
            url,
            storage="sql",
            database_url=sqlite_url,
            discord_defer_after_seconds=10.0,  # a busy machine's run: no "thinking…" first
            shutdown_timeout_seconds=60.0,  # the stop waits for the command, however busy
        )
    )
    started = asyncio.Event()
    real = container.who_am_i()  # made before the override

    class Slow:
        async def execute(self, discord_id: Any) -> Any:
            started.set()
            await asyncio.sleep(0.5)  # still running when the copy is told to stop
            return await real.execute(discord_id)

    container.who_am_i.override(providers.Factory(Slow))
    runner = build_gateway_bot(container)
    await runner.start()
    try:
        await asyncio.wait_for(runner.ready.wait(), CONNECT_SECONDS)
        command = asyncio.create_task(run_command(url, user.id, "whoami", via="gateway"))
        await asyncio.wait_for(started.wait(), WAIT_SECONDS)
        await runner.bot.close()
        reply = await command
    finally:
        if runner.bot.is_alive:
            await runner.bot.close()
    assert "not linked" in reply.content.lower()


async def test_a_copy_that_stops_while_claiming_an_interaction_runs_it_first(
    emulator: tuple[EmulatorState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy told to stop while it was claiming an interaction (its Redis call under way)
    stopped without waiting for it: the command was not under way yet, so the stop found
    nothing to wait for, and the claim then won ran on a copy closing its connections (no
    answer), while no other copy would run it. The copy now counts an interaction as under
    way from its arrival, its claim included."""
    state, url = emulator
    state.gateway_shards = 1
    user = state.add_user("ray")
    container = build_container(
        _settings(
            state,
            url,
            discord_defer_after_seconds=10.0,  # a busy machine's run: no "thinking…" first
            shutdown_timeout_seconds=60.0,  # the stop waits for the command, however busy
        )
    )
    claims = container.shared_state().replay_guard
    claiming, release, stopping = asyncio.Event(), asyncio.Event(), asyncio.Event()
    claim = claims.first_time

    async def slow_claim(key: str, ttl_seconds: int) -> bool:
        claiming.set()
        await release.wait()  # a Redis call still under way when the stop begins
        return await claim(key, ttl_seconds)

    monkeypatch.setattr(claims, "first_time", slow_claim)
    stop = ClaimingGatewayClient.stop

    async def stop_noted(self: ClaimingGatewayClient, *args: Any) -> None:
        stopping.set()
        await stop(self, *args)

    monkeypatch.setattr(ClaimingGatewayClient, "stop", stop_noted)
    real = container.who_am_i()

    class Slow:
        async def execute(self, discord_id: Any) -> Any:
            await asyncio.sleep(0.5)  # still running when the copy would have closed
            return await real.execute(discord_id)

    container.who_am_i.override(providers.Factory(Slow))
    runner = build_gateway_bot(container)
    await runner.start()
    try:
        await asyncio.wait_for(runner.ready.wait(), CONNECT_SECONDS)
        command = asyncio.create_task(run_command(url, user.id, "whoami", via="gateway"))
        await asyncio.wait_for(claiming.wait(), WAIT_SECONDS)
        closing = asyncio.create_task(runner.bot.close())
        await asyncio.wait_for(stopping.wait(), WAIT_SECONDS)
        release.set()
        await closing
        reply = await command
    finally:
        release.set()
        if runner.bot.is_alive:
            await runner.bot.close()
    assert "not linked" in reply.content.lower()


async def test_a_shard_that_does_not_exist_is_refused_with_4010(
    emulator: tuple[EmulatorState, str],
) -> None:
    """hikari itself does not check ``shard_ids`` against ``shard_count``: Discord does."""
    state, url = emulator
    runner = build_gateway_bot(build_container(_settings(state, url)))
    try:
        with pytest.raises(hikari.GatewayServerClosedConnectionError) as refused:
            await runner.bot.start(check_for_updates=False, shard_ids=[2], shard_count=2)
    finally:
        await runner.bot.close()
    assert refused.value.code == hikari.ShardCloseCode.INVALID_SHARD
    assert not refused.value.can_reconnect


async def test_the_bot_command_runs_the_shards_it_is_given(
    emulator: tuple[EmulatorState, str],
) -> None:
    """``taskflow-link bot --shard-ids 1 --shard-count 2`` as an operator runs it."""
    state, url = emulator
    registered = await _registered_by_an_older_release(state, url)
    user = _in_every_server(state, state.add_user("ida"))
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
        [
            sys.executable,
            "-c",
            "from entrypoints.cli import main; main()",
            "bot",
            "--shard-ids",
            "1",
            "--shard-count",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        server = SERVERS_OF_SHARD[1][0]
        body = {"user_id": user.id, "command": "whoami", "via": "gateway", "guild_id": str(server)}
        answer = await _until_connected(url, body, process)
        assert answer["shards"] == [[1, 2]]
        assert "not linked" in answer["reply"]["data"]["content"]
        # This copy runs shard 1 only: DMs (shard 0) have nowhere to go.
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            dm = await client.post("/_emulator/interactions", json=body | {"where": "dm"})
        assert dm.status_code == 409
        assert "no gateway connection serves this DM" in dm.json()["error"]
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "as shard 1 of 2" in output
    assert "not registering the slash commands at start" in output
    assert "Traceback" not in output
    assert state.commands == registered


async def _until_connected(
    url: str, body: dict[str, Any], process: subprocess.Popen[str]
) -> dict[str, Any]:
    """Run the command until a gateway connection takes it (409 until the bot connected)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url, timeout=90) as client:
        while True:
            assert process.poll() is None, process.communicate()[0]
            answer = await client.post("/_emulator/interactions", json=body)
            if answer.status_code != 409:
                assert answer.status_code == 200, answer.text
                result: dict[str, Any] = answer.json()
                return result
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.05)


async def test_copies_that_share_no_redis_name_each_other(
    emulator: tuple[EmulatorState, str],
    sqlite_db: SqlDatabase,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two copies receiving the same interactions without Redis each run every command (the
    test before, without Redis): each says so in its log, naming the other."""
    state, url = emulator
    state.gateway_shards = 1
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    alike = {"storage": "sql", "database_url": sqlite_url, "instance_check_seconds": 0.2}
    named = "Another copy of the gateway bot uses this database but not this one's claims"
    async with running_copy(state, url, **alike), running_copy(state, url, **alike):
        await wait_until(lambda: caplog.text.count(named) == 2)
    assert "neither it nor this one has TASKFLOW_LINK_REDIS_URL" in caplog.text


async def test_a_copy_with_another_public_url_than_the_web_instances_says_so_at_start(
    emulator: tuple[EmulatorState, str], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway bot builds its /link buttons and the links of the emails its worker
    sends (any queued email it claims: confirmations, password resets) from its own
    TASKFLOW_LINK_PUBLIC_URL. Web instances compare theirs at start, the bot did not: one
    left at the default sent some of the deployment's emails with links to 127.0.0.1, and
    nothing said so. It now takes part in the comparison, both ways."""
    state, url = emulator
    state.gateway_shards = 1
    web_url = "http://127.0.0.1:9400"  # a deployment whose people reach it here

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    async def start_web() -> None:
        settings = make_settings(redis_url=redis_url, public_url=web_url)
        async with AsyncTestClient(app=create_app(build_container(settings))):
            pass

    caplog.set_level(logging.WARNING)
    await start_web()
    async with running_copy(state, url, redis_url=redis_url, public_url=web_url):
        pass
    assert errors() == []  # the same settings: nothing to say
    caplog.clear()
    async with running_copy(state, url, redis_url=redis_url, public_url="http://127.0.0.1:8000"):
        pass
    [differs] = errors()
    assert differs.startswith("TASKFLOW_LINK_PUBLIC_URL differs"), differs
    caplog.clear()
    await start_web()  # and the web instance that starts after it hears of it too
    [differs] = errors()
    assert differs.startswith("TASKFLOW_LINK_PUBLIC_URL differs"), differs
