"""A "Sign in with Discord" that linked by the confirmed email (DESIGN.md's row 2), whose first
answer never reached the browser (its notice, which names the account, went with it), loaded
again more than a minute later: the session is not handed over any more (a double click's
window), but the page says, to the same browser (its binding cookie) and naming nobody, that
the sign-in linked the Discord account to the TaskFlow account with that confirmed address.
Before: only "used already", and the person never learned of the link on the page (the email
to the address says it too). Another browser learns nothing. Through the web app."""

from __future__ import annotations

from datetime import timedelta

from litestar.testing import AsyncTestClient

from domain import errors
from domain.model import DiscordId
from entrypoints.web import create_app
from tests.harness import Harness
from tests.unit.test_web_discord_confirm_twice import USED, _cookies_back
from tests.web_support import Client

SIGN_IN_USED = "This sign-in was already used"  # the page's title
LINKED_WORDS = "linked your Discord account to the TaskFlow account"
NAMES = ("alice", "example.com")  # the account's name, its address, the Discord account's


async def _linked_by_email(h: Harness, client: Client) -> str:
    """An account with a confirmed address, and a Discord account with the same address
    signing in (it links): the callback's URL, whose first answer the browser never got."""
    await h.sign_up("alice", "alice@example.com", verified=True)
    alices = h.discord_user(8401, username="alice_d", email="alice@example.com", verified=True)
    h.clock.advance(timedelta(minutes=5))  # an account made before this sign-in
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(alices.id.value))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.headers["location"] == "/account?notice=linked_by_email"
    _cookies_back(client, before)  # the first answer never reached the browser
    return callback


async def test_a_reload_after_the_minute_still_says_it_linked_by_email(
    h: Harness, client: Client
) -> None:
    callback = await _linked_by_email(h, client)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 410, again.text
    assert "tfl_session" not in again.cookies  # nothing handed over after the minute
    assert SIGN_IN_USED in again.text
    assert LINKED_WORDS in again.text
    assert not any(name in again.text for name in NAMES)
    assert 'href="/auth/discord/login?next=' in again.text  # its way to sign in again


async def test_another_browser_learns_nothing_of_the_link(h: Harness, client: Client) -> None:
    callback = await _linked_by_email(h, client)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    async with AsyncTestClient(app=create_app(h.container)) as thief:
        refused = await thief.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
    assert "linked" not in refused.text
    assert "email" not in refused.text


async def test_within_the_minute_the_session_and_its_notice_are_handed_over(
    h: Harness, client: Client
) -> None:
    """As before: a double click within the minute lands on the notice, signed in."""
    callback = await _linked_by_email(h, client)
    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.headers["location"] == "/account?notice=linked_by_email"
    assert "tfl_session" in again.cookies


async def test_a_sign_in_that_linked_nothing_says_used_already_as_before(
    h: Harness, client: Client
) -> None:
    """The words are the link's only: a sign-in to an account linked before says 'used
    already' after the minute, as it did."""
    callback = await _linked_by_email(h, client)
    await client.get(callback, follow_redirects=False)  # signed in
    client.cookies.clear()  # another browser, later
    h.clock.advance(timedelta(minutes=5))
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(8401))
    later = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    before = dict(client.cookies)
    assert (await client.get(later, follow_redirects=False)).status_code == 302
    _cookies_back(client, before)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    refused = await client.get(later, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
    assert LINKED_WORDS not in refused.text
    assert errors.DiscordSignInUsed.message not in refused.text
