"""The bot end to end: the emulator signs slash commands and posts them to the web app's
/interactions (hikari + lightbulb for real) on Postgres; the person follows the button in a
browser-like client, signs up and confirms."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from adapters.sql.tables import user_links
from entrypoints.emulator import TestUser
from tests.bot_support import (
    LINK_BUTTON,
    WAIT_SECONDS,
    BotReply,
    run_command,
    running_gateway_bot,
    signed_request,
)
from tests.integration.postgres import PostgresServer
from tests.integration.stack import Browser, Stack, sign_up


async def run(
    stack: Stack, user: TestUser, command: str, where: str = "guild", via: str = "http"
) -> BotReply:
    return await run_command(stack.emulator_url, user.id, command, where=where, via=via)


async def linked_discord_ids(stack: Stack) -> list[int]:
    async with stack.db.engine.connect() as conn:
        return list((await conn.execute(select(user_links.c.discord_id))).scalars())


async def test_link_button_opens_a_confirm_page_that_works_once(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("dora", global_name="Dora")

    reply = await run(stack, user, "link")

    assert reply.flags == 64  # ephemeral
    assert len(reply.buttons) == 1
    assert reply.button["style"] == LINK_BUTTON
    url = reply.button["url"]
    assert url.startswith(f"{stack.app_url}/link/")
    assert user.id not in url

    await sign_up(browser, "dora_tf", "dora@example.com", verify=False)
    shown = await browser.go("GET", urlsplit(url).path)
    assert "Dora" in shown.text  # the confirm page says which Discord account
    done = await browser.confirm_link(url, user.id)
    assert done.status_code == 200, done.text
    assert "/whoami shows the link" in done.text
    assert await linked_discord_ids(stack) == [int(user.id)]

    again = await browser.go("GET", urlsplit(url).path)
    assert again.status_code == 410
    assert "already been used" in again.text


@pytest.mark.parametrize("where", ["guild", "dm"])
@pytest.mark.parametrize("via", ["http", "gateway"])
async def test_the_whole_journey(stack: Stack, browser: Browser, where: str, via: str) -> None:
    """HTTP interactions go to the web app; gateway ones to a GatewayBot on the same database.
    A gateway bot's application has no Interactions Endpoint URL: with one, Discord sends
    every interaction there and none over the gateway."""
    async with contextlib.AsyncExitStack() as running:
        if via == "gateway":
            stack.emulator.interactions_url = None
            await running.enter_async_context(running_gateway_bot(stack.container, stack.emulator))
        await journey(stack, browser, where, via)


async def journey(stack: Stack, browser: Browser, where: str, via: str) -> None:
    user = stack.emulator.add_user("erin", global_name="Erin")

    before = await run(stack, user, "whoami", where, via)
    assert "not linked" in before.content

    link = await run(stack, user, "link", where, via)
    await sign_up(browser, "erin_tf", "erin@example.com", verify=False)
    await browser.confirm_link(link.button["url"], user.id)

    whoami = await run(stack, user, "whoami", where, via)
    assert whoami.ephemeral
    assert r"**erin\_tf**" in whoami.content

    already = await run(stack, user, "link", where, via)
    assert already.ephemeral
    assert "already linked" in already.content
    assert r"erin\_tf" in already.content
    assert "/link/" not in already.button["url"]

    unlinked = await run(stack, user, "unlink", where, via)
    assert unlinked.ephemeral
    assert "no longer linked" in unlinked.content
    assert await linked_discord_ids(stack) == []

    after = await run(stack, user, "whoami", where, via)
    assert "not linked" in after.content


async def test_signatures_ping_and_stale_timestamps(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30, base_url=stack.app_url) as client:
        unsigned = await client.post("/interactions", json={"type": 1})
        assert unsigned.status_code == 401

        body, headers = signed_request(stack.emulator, {"type": 1})
        forged = {**headers, "x-signature-ed25519": "ab" * 64}
        assert (await client.post("/interactions", content=body, headers=forged)).status_code == 401

        pong = await client.post("/interactions", content=body, headers=headers)
        assert pong.status_code == 200
        assert pong.json() == {"type": 1}

        old = int(time.time()) - 10 * 60
        body, headers = signed_request(stack.emulator, {"type": 1}, timestamp=old)
        stale = await client.post("/interactions", content=body, headers=headers)
        assert stale.status_code == 401
        assert "timestamp" in stale.json()["detail"]

    async with httpx.AsyncClient(timeout=30, base_url=stack.emulator_url) as client:
        checked = (await client.post("/_emulator/ping")).json()
        assert (checked["status"], checked["body"], checked["bad_signature_status"]) == (
            200,
            {"type": 1},
            401,
        )
        assert checked["accepted"] is True


async def test_database_stopped_gives_an_ephemeral_error(
    stack: Stack, postgres: PostgresServer
) -> None:
    user = stack.emulator.add_user("fay")
    assert "not linked" in (await run(stack, user, "whoami")).content
    postgres.stop_server()
    try:
        for command in ("whoami", "link", "unlink"):
            reply = await run(stack, user, command)  # accepted within the emulator's deadline
            assert reply.ephemeral
            assert "Something went wrong" in reply.content
    finally:
        postgres.start_server()
    deadline = time.monotonic() + WAIT_SECONDS
    # The pool reconnects once Postgres accepts connections again.
    while "not linked" not in (reply := await run(stack, user, "whoami")).content:
        assert time.monotonic() < deadline, reply.content
        await asyncio.sleep(0.1)
