"""Linked Roles' verification URL started signed in (no sign-in: the round trip connects, and
may link, the account the browser is signed in to), its page back from Discord loaded again:

- after the first load went through: the account page that load led to (the connection told
  as following in a moment: this load does not know how the first push went), nothing handed
  over (before: "used already", as if it had failed);
- while the first load is still under way: the page that asks again in a moment, as the other
  flows' (before: "used already" with "Start again"), which goes on once that load is done;
- from another browser, or this browser signed out or signed in as another account: "used
  already", as before, telling nothing.

Through the web app (Litestar's test client, in-memory adapters, the fake Discord)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import DiscordId
from entrypoints.web import create_app
from tests.fakes.role_connections import role_harness
from tests.harness import Harness
from tests.unit.test_web_discord_confirm_twice import (
    USED,
    _discord_held,
    _first_load,
    _refreshes_to,
)
from tests.web_support import csrf_token, post_form, sign_up

Client = AsyncTestClient[Any]

FINISHING = "Finishing your connection"
VERIFICATION_URL = 'href="/discord/linked-role"'


@pytest.fixture
def r() -> Harness:
    return role_harness()


@pytest.fixture
async def roles(r: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(r.container)) as test_client:
        yield test_client


def _db(h: Harness) -> MemoryDatabase:
    database: MemoryDatabase = h.container.memory_db()
    return database


async def _linking(client: Client, r: Harness, discord_id: int, name: str = "carol") -> str:
    """Signed up (so recently proved), not linked: the verification URL's form, approved at
    Discord as ``discord_id`` (it links, then connects). The callback's URL."""
    await sign_up(client, name)
    r.discord_user(discord_id)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    approval = r.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def _connecting(client: Client, r: Harness, discord_id: int) -> str:
    """Signed in to an account linked to ``discord_id``: the verification URL approved at
    Discord (it only connects). The callback's URL."""
    linked = await client.get(await _linking(client, r, discord_id), follow_redirects=False)
    assert linked.status_code == 302, linked.text
    r.clock.advance(timedelta(seconds=5))  # a while later: that connection is not this one
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def test_a_reload_after_the_connection_went_through_shows_it(
    roles: Client, r: Harness
) -> None:
    callback = await _connecting(roles, r, 7601)
    first = await roles.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    assert first.headers["location"] == "/account?notice=role_connected"
    sessions = dict(_db(r).tables.sessions)

    again = await roles.get(callback, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.headers["location"] == first.headers["location"]  # not linked by this one
    assert "tfl_session" not in again.cookies  # nothing handed over, nothing ended
    assert dict(_db(r).tables.sessions) == sessions
    page = await roles.get(again.headers["location"])
    assert page.url.path == "/account"  # still signed in
    assert "carol" in page.text


async def test_a_reload_after_it_linked_and_connected_says_it_linked(
    roles: Client, r: Harness
) -> None:
    callback = await _linking(roles, r, 7602)
    first = await roles.get(callback, follow_redirects=False)
    assert first.headers["location"] == "/account?notice=role_connected&linked=1"
    again = await roles.get(callback, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.headers["location"] == first.headers["location"]
    assert "tfl_session" not in again.cookies


async def test_a_reload_from_another_browser_learns_nothing(roles: Client, r: Harness) -> None:
    callback = await _connecting(roles, r, 7603)
    assert (await roles.get(callback, follow_redirects=False)).status_code == 302
    async with AsyncTestClient(app=create_app(r.container)) as thief:
        refused = await thief.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
    assert "role_connect" not in refused.text


async def test_a_reload_after_signing_out_learns_nothing(roles: Client, r: Harness) -> None:
    """The binding cookie outlives a sign-out (the next person at a shared computer): 'used
    already', not the account page's way."""
    callback = await _connecting(roles, r, 7604)
    assert (await roles.get(callback, follow_redirects=False)).status_code == 302
    await post_form(roles, "/account", "/signout", {})
    refused = await roles.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
    # Signed in as another account in the same browser: the same.
    await sign_up(roles, "dave")
    refused = await roles.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text


async def test_a_reload_while_the_first_load_asks_discord_waits_for_it(
    roles: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 'used already' with 'Start again'. Now the page that asks again in a moment,
    which shows the connection once the first load is done."""
    callback = await _connecting(roles, r, 7605)
    with _discord_held(r, monkeypatch) as discord:
        first = _first_load(roles, callback)
        await discord.asked()
        second = await roles.get(callback, follow_redirects=False)
        assert second.status_code == 200, second.text
        assert FINISHING in second.text
        assert "Start again" not in second.text
        again = _refreshes_to(second.text)
        still = await roles.get(again, follow_redirects=False)  # the refresh, still waiting
        assert still.status_code == 200, still.text
        assert FINISHING in still.text
        discord.answer()
        assert (await first).status_code == 302
    done = await roles.get(again, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account?notice=role_connected"
    assert "tfl_session" not in done.cookies


async def test_a_reload_while_the_first_load_fails_tells_the_failure(
    roles: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    callback = await _connecting(roles, r, 7606)
    with _discord_held(r, monkeypatch) as discord:
        first = _first_load(roles, callback)
        await discord.asked()
        second = await roles.get(callback, follow_redirects=False)
        assert FINISHING in second.text
        again = _refreshes_to(second.text)
        discord.fail(errors.DiscordUnavailable())
        assert (await first).status_code != 302
    failed = await roles.get(again, follow_redirects=False)
    assert failed.status_code != 302, failed.text
    assert FINISHING not in failed.text
    assert errors.LinkedRoleVerificationFailed.message in failed.text
    assert VERIFICATION_URL in failed.text


async def test_the_waiting_page_from_another_browser_learns_nothing(
    roles: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    callback = await _connecting(roles, r, 7607)
    with _discord_held(r, monkeypatch) as discord:
        first = _first_load(roles, callback)
        await discord.asked()
        async with AsyncTestClient(app=create_app(r.container)) as thief:
            refused = await thief.get(callback, follow_redirects=False)
        discord.answer()
        await first
    assert refused.status_code == 410, refused.text
    assert FINISHING not in refused.text


async def test_started_signed_out_a_reload_after_the_minute_with_its_session_goes_on(
    roles: Client, r: Harness
) -> None:
    """Started signed out (it signs in), the browser holding the session its first load made:
    after the minute (no hand-over any more), the account page again, as a plain sign-in's
    reload goes on to its destination (before: 'used already'); nothing handed over."""
    linked = await roles.get(await _linking(roles, r, 7608), follow_redirects=False)
    assert linked.status_code == 302, linked.text
    await post_form(roles, "/account", "/signout", {})
    r.clock.advance(timedelta(seconds=5))
    started = await roles.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7608))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    first = await roles.get(callback, follow_redirects=False)
    assert first.headers["location"] == "/account?notice=role_connected"
    assert "tfl_session" in first.cookies
    r.clock.advance(timedelta(minutes=1, seconds=1))
    again = await roles.get(callback, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.headers["location"] == first.headers["location"]
    assert "tfl_session" not in again.cookies
    await post_form(roles, "/account", "/signout", {})
    refused = await roles.get(callback, follow_redirects=False)  # signed out: nothing
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
