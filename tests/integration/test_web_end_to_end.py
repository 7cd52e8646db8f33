"""The web app and the Discord emulator, each under uvicorn, on Postgres, over real HTTP:
a browser-like client follows the redirects and keeps the cookies."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from adapters.sql.tables import accounts, user_links
from domain.use_cases import TicketIssued
from domain.use_cases._shared import SENT_TWICE_WITHIN
from tests.bot_support import WAIT_SECONDS
from tests.integration.mailbox import link_path
from tests.integration.postgres import PostgresServer
from tests.integration.stack import (
    SHORT_DISCORD_TIMEOUT,
    Browser,
    Stack,
    confirm_email,
    consent_form,
    count,
    sign_up,
)

# -- the login table, end to end ---------------------------------------------------------------


async def test_row1_linked_discord_signs_in(stack: Stack, browser: Browser) -> None:
    user = stack.emulator.add_user("linked", email="linked@example.com", verified=True)
    first = await browser.sign_in_with_discord(user.id)
    assert first.url.path == "/account"
    other = Browser(stack)
    again = await other.sign_in_with_discord(user.id)
    await other.close()
    assert again.url.path == "/account"
    assert "linked" in again.text
    assert await count(stack.db, accounts) == 1


async def test_row2_verified_email_links_to_the_verified_account(
    stack: Stack, browser: Browser
) -> None:
    await sign_up(browser, "alice", "alice@example.com", verify=True)
    user = stack.emulator.add_user("alice_d", email="ALICE@example.com", verified=True)
    fresh = Browser(stack)
    page = await fresh.sign_in_with_discord(user.id)
    await fresh.close()
    assert page.url.path == "/account"
    assert ">alice<" in page.text
    assert "Unlink Discord" in page.text
    assert await count(stack.db, accounts) == 1


async def test_row3_unverified_account_email_is_refused(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    user = stack.emulator.add_user("alice_d", email="alice@example.com", verified=True)
    fresh = Browser(stack)
    page = await fresh.sign_in_with_discord(user.id)
    await fresh.close()
    assert page.status_code == 409
    assert "sign in with your password and link discord" in page.text.lower()
    assert await count(stack.db, user_links) == 0


async def test_row3s_owner_signs_up_with_the_address_confirms_it_then_signs_in_with_discord(
    stack: Stack, browser: Browser
) -> None:
    """The way past an account that only typed the address in: the owner signs up by typing
    it too (nobody confirmed it), confirms it by the emailed link (which takes it from the
    other account), and then Sign in with Discord finds exactly one account with the address,
    confirmed: row 2, linked."""
    await sign_up(browser, "mallory", "owner@example.com", verify=False)
    user = stack.emulator.add_user("owner_d", email="owner@example.com", verified=True)
    owner = Browser(stack)
    refused = await owner.sign_in_with_discord(user.id)
    assert refused.status_code == 409
    assert "sign in with your password and link discord" in refused.text.lower()
    await sign_up(owner, "owner", "owner@example.com", verify=False)
    await confirm_email(owner, "owner@example.com", count=2)  # hers, after mallory's
    await owner.close()
    fresh = Browser(stack)
    page = await fresh.sign_in_with_discord(user.id)
    await fresh.close()
    assert page.url.path == "/account"
    assert ">owner<" in page.text
    assert "Unlink Discord" in page.text
    assert await count(stack.db, accounts) == 2
    assert await count(stack.db, user_links) == 1
    async with stack.db.unit_of_work() as uow:
        [holder] = await uow.accounts.find_by_email("owner@example.com")
        assert (holder.username, holder.email_verified) == ("owner", True)
        mallory = await uow.accounts.get_by_username("mallory")
        assert mallory is not None
        assert mallory.email is None


async def test_row4_ambiguous_email_is_refused(stack: Stack, browser: Browser) -> None:
    async with stack.db.unit_of_work() as uow:
        from tests.contracts.repositories import account

        # Imported before addresses were unique (migration 0003 marks them shared).
        await uow.accounts.add(replace(account("dup1", "dup@example.com"), email_shared=True))
        await uow.accounts.add(replace(account("dup2", "DUP@example.com"), email_shared=True))
        await uow.commit()
    user = stack.emulator.add_user("dup", email="dup@example.com", verified=True)
    page = await browser.sign_in_with_discord(user.id)
    assert page.status_code == 409
    assert "More than one account" in page.text


async def test_row5_unverified_discord_email_is_refused(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "alice", "alice@example.com", verify=True)
    user = stack.emulator.add_user("mallory", email="alice@example.com", verified=False)
    fresh = Browser(stack)
    page = await fresh.sign_in_with_discord(user.id)
    await fresh.close()
    assert page.status_code == 409
    assert await count(stack.db, user_links) == 0


async def test_row6_new_person_gets_an_account(stack: Stack, browser: Browser) -> None:
    user = stack.emulator.add_user("newbie", email="new@example.com", verified=True)
    page = await browser.sign_in_with_discord(user.id)
    assert page.url.path == "/account"
    assert "newbie" in page.text
    assert (await count(stack.db, accounts), await count(stack.db, user_links)) == (1, 1)
    assert not stack.emulator.revoked  # the grant is kept (the token itself is not stored)


async def test_discord_names_longer_than_their_columns_are_cut_not_a_500(
    stack: Stack, browser: Browser
) -> None:
    """The issue: a Discord name longer than its column gave 503 "cannot reach its database".
    Whatever sends it may not be Discord: names are cut and stripped at the boundary."""
    long_name = "Ω" * 500 + "\x00\x1b[31m"
    user = stack.emulator.add_user("long_one", global_name=long_name, email="l@example.com")
    page = await browser.sign_in_with_discord(user.id)
    assert page.status_code == 200, page.text
    assert page.url.path == "/account"
    async with stack.db.engine.connect() as conn:
        stored = (await conn.execute(select(user_links.c.discord_global_name))).scalar_one()
    assert stored == "Ω" * 64


async def test_a_returning_user_skips_discords_consent_screen(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("regular", email="regular@example.com", verified=True)
    first = await browser.sign_in_with_discord(user.id)  # the consent screen, once
    assert first.url.path == "/account"
    await browser.submit("/account", "/signout", {})

    again = await browser.go("GET", "/auth/discord/login")
    assert again.url.path == "/account"  # straight back from Discord: no screen
    assert "regular" in again.text
    assert "wants to access your Discord account" not in again.text

    switch = await browser.go("GET", "/auth/discord/login?switch=true")
    assert switch.url.path == "/oauth2/authorize"  # asked again, with its account choice
    assert "wants to access your Discord account" in switch.text


# -- flows and attacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", [{"email_linking": "confirm"}], indirect=True)
async def test_email_linking_confirm_by_the_emailed_link_where_discord_signed_in(
    stack: Stack, browser: Browser
) -> None:
    """Email linking "confirm" on Postgres, the email through SMTP: the emailed link opened in
    a browser with no Discord sign-in waiting says to open it where that sign-in is, "or sign
    in with Discord again"; done there, the link links (it answered "sent for a Discord
    sign-in in another browser" once that browser had signed in with Discord)."""
    await sign_up(browser, "bob", "bob@example.com", verify=True)
    user = stack.emulator.add_user("bob_d", email="bob@example.com", verified=True)
    started, phone = Browser(stack), Browser(stack)
    try:
        page = await started.sign_in_with_discord(user.id)
        assert page.url.path == "/auth/discord/confirm-link"
        sent = await started.submit(page.url.path, "/auth/discord/confirm-link/email", {})
        assert "We are emailing bob@example.com a link" in sent.text
        path = link_path(
            await stack.mailbox.wait_for("bob@example.com", 2), "/auth/discord/confirm-link/"
        )

        refused = await phone.submit(path, path, {})
        assert refused.status_code == 404
        assert "or sign in with Discord again" in refused.text
        assert await count(stack.db, user_links) == 0

        waiting = await phone.sign_in_with_discord(user.id)
        assert waiting.url.path == "/auth/discord/confirm-link"
        done = await phone.submit(path, path, {})
        assert done.url.path == "/account", done.text
        assert ">bob<" in done.text
        assert "@bob_d" in done.text
        assert await count(stack.db, user_links) == 1
    finally:
        await started.close()
        await phone.close()


async def test_link_and_unlink_from_the_account_page(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    user = stack.emulator.add_user("alice_d")
    start = await browser.submit("/account", "/account/discord/link", {})
    assert "scope=identify&" in str(start.url) or start.url.params["scope"] == "identify"
    page = await browser.consent(start, user.id)
    assert "Discord is linked" in page.text
    page = await browser.submit("/account", "/account/discord/unlink", {})
    assert "Discord is unlinked" in page.text
    assert await count(stack.db, user_links) == 0


async def test_ticket_confirm_needs_csrf_and_a_discord_round_trip(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("ticketed")
    from domain.model import DiscordId, DiscordUser

    issued = await stack.container.issue_link_ticket().execute(
        DiscordUser(DiscordId(int(user.id)), "ticketed")
    )
    assert isinstance(issued, TicketIssued)
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    path = f"/link/{issued.token}"
    shown = await browser.go("GET", path)
    assert "@ticketed" in shown.text
    assert (await browser.go("POST", path, data={})).status_code == 403
    done = await browser.confirm_link(path, user.id)
    assert done.url.path == "/account"
    assert "/whoami shows the link" in done.text
    assert await count(stack.db, user_links) == 1
    replay = await browser.go("GET", path)
    assert replay.status_code == 410


async def test_a_forwarded_link_button_takes_over_nothing(stack: Stack, browser: Browser) -> None:
    """Mallory runs /link in Discord and sends the button to Alice. Alice, signed in to
    TaskFlow, follows it and signs in to Discord as herself: refused, nothing linked, and
    Mallory's own "Sign in with Discord" lands in a new account, not Alice's."""
    mallory = stack.emulator.add_user("mallory", email="mallory@example.com", verified=True)
    alice_d = stack.emulator.add_user("alice_d")
    async with httpx.AsyncClient(base_url=stack.emulator_url, timeout=60) as client:
        answer = await client.post(
            "/_emulator/interactions", json={"user_id": mallory.id, "command": "link"}
        )
    reply = answer.json()["reply"]["data"]
    button = reply["components"][0]["components"][0]["url"]

    await sign_up(browser, "alice", "alice@example.com", verify=False)
    refused = await browser.confirm_link(button, alice_d.id)

    assert refused.status_code == 409
    assert "made for the Discord account \u2068@mallory\u2069" in refused.text
    assert await count(stack.db, user_links) == 0
    assert (await browser.go("GET", urlsplit(button).path)).status_code == 410

    attacker = Browser(stack)
    page = await attacker.sign_in_with_discord(mallory.id)
    await attacker.close()
    assert page.url.path == "/account"
    assert ">alice<" not in page.text
    assert ">mallory<" in page.text


async def _callback_url(browser: Browser, user_id: str) -> str:
    """Start a login, approve it (or be sent straight back, for a returning user), and stop
    before following the callback."""
    login = await browser.client.get(f"{browser.stack.app_url}/auth/discord/login")
    at_discord = await browser.client.get(login.headers["location"])
    if at_discord.status_code == 302:
        assert browser.discord_user == user_id
        return str(at_discord.headers["location"])
    url, form = consent_form(at_discord, user_id, "approve")
    answer = await browser.client.post(url, **form)
    browser.discord_user = user_id
    return str(answer.headers["location"])


async def test_state_replay_other_browser_and_expiry_are_refused(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("replayer", email="r@example.com", verified=True)
    callback = await _callback_url(browser, user.id)
    assert (await browser.go("GET", callback)).url.path == "/account"
    # Loaded again by the same browser within the minute (a double click on Authorize, a
    # reload): handed the session its first load made. Later on, it is a replay: the browser
    # still signed in with that session goes on (handed nothing); signed out, it is refused.
    again = await browser.go("GET", callback)
    assert again.url.path == "/account"
    assert "replayer" in again.text
    stack.clock.advance(SENT_TWICE_WITHIN + timedelta(seconds=1))
    still = await browser.go("GET", callback)
    assert still.url.path == "/account"
    await browser.submit("/account", "/signout", {})
    replay = await browser.go("GET", callback)
    assert replay.status_code == 410
    assert "was used already" in replay.text

    elsewhere = Browser(stack)
    stolen = await _callback_url(browser, user.id)
    refused = await elsewhere.go("GET", stolen)
    assert refused.status_code == 400
    assert "different browser" in refused.text
    # Refused, not spent: the browser that started it finishes, once.
    assert (await browser.go("GET", stolen)).url.path == "/account"
    assert (await elsewhere.go("GET", stolen)).status_code == 410
    await elsewhere.close()

    late = await _callback_url(browser, user.id)
    stack.clock.advance(timedelta(minutes=10))
    expired = await browser.go("GET", late)
    assert expired.status_code == 410
    assert "expired" in expired.text


@pytest.mark.parametrize("stack", [SHORT_DISCORD_TIMEOUT], indirect=True)
async def test_access_denied_and_discord_failures_give_friendly_pages(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("denier", email="d@example.com", verified=True)
    start = await browser.go("GET", "/auth/discord/login")
    denied = await browser.consent(start, user.id, decision="deny")
    assert denied.status_code == 400
    assert "did not grant access" in denied.text

    for mode in ("500", "timeout"):
        stack.emulator.faults["token"] = mode
        page = await browser.sign_in_with_discord(user.id)
        assert page.status_code == 502, mode
        assert "Nothing was changed" in page.text
    stack.emulator.faults.clear()
    assert (await count(stack.db, accounts), await count(stack.db, user_links)) == (0, 0)


@pytest.mark.parametrize("stack", [SHORT_DISCORD_TIMEOUT], indirect=True)
async def test_a_link_button_round_trip_discord_fails_leaves_the_button_working(
    stack: Stack, browser: Browser
) -> None:
    """/link through a signed interaction; Discord's token endpoint fails on the way back
    (an error, then no answer in time): each page says the button still works, and it does."""
    user = stack.emulator.add_user("patient")
    async with httpx.AsyncClient(base_url=stack.emulator_url, timeout=60) as client:
        answer = await client.post(
            "/_emulator/interactions", json={"user_id": user.id, "command": "link"}
        )
    button = answer.json()["reply"]["data"]["components"][0]["components"][0]["url"]
    await sign_up(browser, "patient_tf", "patient@example.com", verify=False)

    for mode in ("500", "timeout"):
        stack.emulator.faults["token"] = mode
        page = await browser.confirm_link(button, user.id)
        assert page.status_code == 502, mode
        assert "your /link button still works" in page.text, mode
        assert "Start again from your account page" not in page.text
    stack.emulator.faults.clear()
    assert await count(stack.db, user_links) == 0

    done = await browser.confirm_link(button, user.id)
    assert done.url.path == "/account"
    assert "/whoami shows the link" in done.text
    assert await count(stack.db, user_links) == 1


async def test_open_redirects_in_next_end_on_root(stack: Stack, browser: Browser) -> None:
    user = stack.emulator.add_user("redirected", email="x@example.com", verified=True)
    for attack in ("//evil.example", "https://evil.example", "/\\evil.example"):
        fresh = Browser(stack)
        start = await fresh.go("GET", "/auth/discord/login", params={"next": attack})
        callback = await fresh.consent(start, user.id)
        await fresh.close()
        assert urlsplit(str(callback.url)).netloc == urlsplit(stack.app_url).netloc
        assert callback.url.path in ("/", "/account")  # "/" then home redirects signed-in people


async def test_api_keys(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30, base_url=stack.app_url) as client:
        assert (await client.get("/api/v1/links/42")).status_code == 401
        bad = await client.get("/api/v1/links/42", headers={"Authorization": "Bearer tfl_x"})
        assert bad.status_code == 401
        key = (await stack.container.create_api_key().execute("e2e")).token
        missing = await client.get("/api/v1/links/42", headers={"Authorization": f"Bearer {key}"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


async def test_readyz_follows_the_database(stack: Stack, postgres: PostgresServer) -> None:
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        assert (await client.get("/readyz")).status_code == 200
        postgres.stop_server()
        try:
            down = await client.get("/readyz")
            assert down.status_code == 503
            # The database is what is wrong, not its migrations.
            assert down.json()["checks"]["database"] != "ok"
            assert down.json()["checks"]["schema"].startswith("unknown"), down.text
            assert (await client.get("/healthz")).status_code == 200
        finally:
            postgres.start_server()
        # Postgres accepts connections a moment after its port opens (crash recovery).
        deadline = time.monotonic() + WAIT_SECONDS
        while (ready := await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            await asyncio.sleep(0.1)
