"""Driving the bot through the Discord emulator: run a slash command as a test user and read
the reply the service sent back through Discord's callback endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import hikari
import httpx
from prometheus_client import REGISTRY

from entrypoints.bot.runtime import build_gateway_bot
from entrypoints.container import Container
from entrypoints.emulator import EmulatorState
from entrypoints.emulator.gateway import CLOSE_RATE_LIMITED

EPHEMERAL = 64
LINK_BUTTON = 5


@dataclass(frozen=True)
class BotReply:
    status: int | None  # what the service answered to the interaction POST (None: gateway)
    content: str
    flags: int
    buttons: list[dict[str, Any]]
    raw: dict[str, Any]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def button(self) -> dict[str, Any]:
        assert len(self.buttons) == 1, self.buttons
        return self.buttons[0]


async def run_command(
    emulator_url: str,
    user_id: str,
    command: str,
    *,
    where: str = "guild",
    via: str = "http",
    guild_id: int | None = None,
    custom_id: str | None = None,
) -> BotReply:
    """Run ``command`` as a test user, delivered over HTTP or over the gateway (in the
    emulator's test server, or in ``guild_id``); with ``custom_id``, press that button on a
    message of the command's instead."""
    body: dict[str, Any] = {"user_id": user_id, "command": command, "where": where, "via": via}
    if guild_id is not None:
        body["guild_id"] = str(guild_id)
    if custom_id is not None:
        body["custom_id"] = custom_id
    deadline = time.monotonic() + CONNECT_SECONDS
    async with httpx.AsyncClient(base_url=emulator_url, timeout=90) as client:
        answer = await client.post("/_emulator/interactions", json=body)
        # A bot that registered its commands may not have connected yet (it registers them
        # first): over the gateway, wait for it to.
        while answer.status_code == 409 and "no bot is connected" in answer.text:
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.05)
            answer = await client.post("/_emulator/interactions", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    if via == "http":  # Discord needs a 2xx answer to its POST within its deadline
        assert result["status"] in (200, 204), result
    assert result["reply"] is not None, f"the service sent no reply: {result}"
    reply = result["reply"]
    assert reply["type"] == 4, reply  # CHANNEL_MESSAGE_WITH_SOURCE
    data = reply["data"]
    buttons = [c for row in data.get("components", []) for c in row["components"]]
    return BotReply(result["status"], data["content"], data.get("flags", 0), buttons, result)


def signed_request(
    emulator: EmulatorState, payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """A request as Discord would sign it (optionally with a chosen timestamp)."""
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return body, {
        "content-type": "application/json",
        "x-signature-ed25519": emulator.sign(body, stamp),
        "x-signature-timestamp": stamp,
    }


# How long a test waits for something another task, thread or process does (generous: the
# suite must pass with both cores busy; a wait that ends early costs nothing).
WAIT_SECONDS = 60.0
CONNECT_SECONDS = 60.0


async def wait_until(condition: Any, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def assert_under_gateway_rate_limit(emulator: EmulatorState) -> None:
    """No bot connected to ``emulator`` was closed with 4008 Rate limited: hikari keeps under
    Discord's gateway limit (120 payloads a connection in 60 s), which the emulator applies."""
    assert CLOSE_RATE_LIMITED not in emulator.gateway_closes, emulator.gateway_closes


@contextlib.asynccontextmanager
async def running_gateway_bot(container: Container, emulator: EmulatorState) -> AsyncIterator[None]:
    """``taskflow-link bot``'s GatewayBot, connected to the emulator, on this event loop."""
    runner = build_gateway_bot(container)
    await runner.start()
    try:
        await asyncio.wait_for(runner.ready.wait(), CONNECT_SECONDS)
        assert "global" in emulator.commands
        yield
        assert_under_gateway_rate_limit(emulator)
    finally:
        await runner.bot.close()


class ShiftedClock:
    """This host's clock, ``ahead`` of the time: what the bot sees of an interaction that
    reaches it that much after Discord created it (the time in its id)."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead


def late_interactions(via: str) -> float:
    """Interactions this process refused as late so far (the metric; compare with its own
    value before)."""
    found = REGISTRY.get_sample_value("taskflow_link_discord_interactions_late_total", {"via": via})
    return found or 0.0


def snowflake_at(unix_time: float) -> str:
    """An id Discord would have made at ``unix_time`` (milliseconds since 2015-01-01 in its
    upper bits)."""
    return str(hikari.Snowflake.from_datetime(datetime.fromtimestamp(unix_time, UTC)) + 1)


class SharedClock:
    """Discord's clock and the service's, one clock that the test moves. The emulator times
    interactions with it (``EmulatorState.clock``: its answer deadline, the token's life) and
    the service's event loop runs on it (``loop.time``, which the answer deadline, the reply
    deadline and the "thinking…" delay count in, and every timeout and sleep).

    Running, it is the loop's own clock. ``stopped()``, it moves only by ``let_pass``, which
    stands for time that a slow step takes (a Redis call, a command): whether an answer comes
    before a deadline or after it is then the test's to say, not a busy machine's, and a test
    may use deadlines of seconds without waiting for them."""

    STEP = 0.01  # how far ``let_pass`` moves it at once: the deadlines tested are further apart
    SETTLE = 20  # rounds of the event loop after each step, for what fell due in it to run

    def __init__(self, loop_time: Callable[[], float]) -> None:
        self._real = loop_time
        self._offset = 0.0  # running: how far it is from the loop's own clock
        self._stopped_at: float | None = None

    def __call__(self) -> float:
        stopped = self._stopped_at
        return self._real() + self._offset if stopped is None else stopped

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stopped inside; running on afterwards from where it was (never back)."""
        self._stopped_at = self()
        try:
            yield
        finally:
            self._offset = self._stopped_at - self._real()
            self._stopped_at = None

    async def let_pass(self, seconds: float) -> None:
        """``seconds`` go by on the stopped clock, a step at a time: what falls due in a
        step (a timeout, a deadline, a sleep's end) runs before the next step."""
        if self._stopped_at is None:
            raise RuntimeError("let_pass moves a stopped clock: use it inside stopped()")
        now, end = self._stopped_at, self._stopped_at + seconds
        while now < end:
            if self._stopped_at is None:  # running again: the rest goes by as time does
                await asyncio.sleep(end - self())
                return
            now = self._stopped_at = min(self._stopped_at + self.STEP, end)
            for _ in range(self.SETTLE):
                await asyncio.sleep(0)
