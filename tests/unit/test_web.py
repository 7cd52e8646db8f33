"""The web app through Litestar's test client, with in-memory adapters and the fake Discord."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AuditKind, DiscordId, DiscordProfile
from domain.policies import sign_in_destination
from domain.use_cases import TicketIssued
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.web import create_app
from entrypoints.web.api import require_api_key
from entrypoints.web.errors import redact_path
from tests.harness import PASSWORD, Harness
from tests.web_support import Client, csrf_token, post_form, query, sign_up


async def _discord_login(client: Client, h: Harness, discord_id: int, next_path: str = "") -> str:
    started = await client.get(
        "/auth/discord/login" + (f"?next={next_path}" if next_path else ""), follow_redirects=False
    )
    assert started.status_code == 302
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text
    return str(done.headers["location"])


async def test_pages_carry_security_headers(client: Client) -> None:
    for path in ("/", "/signin", "/no-such-page"):
        answer = await client.get(path)
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"


async def test_the_style_and_icon_are_kept_by_the_browser_and_pages_are_not(
    client: Client,
) -> None:
    """A walk through the pages: every page load fetched the style sheet and the icon again
    (each answer "no-store", as the pages'), two more lines in the access log per page, and
    each came with a CSRF cookie of its own. They hold no one's secret: kept an hour, with no
    cookie (a cache that kept one would hand it to everyone). Pages still are never kept."""
    for path in ("/static/style.css", "/static/favicon.svg"):
        answer = await client.get(path)
        assert answer.status_code == 200
        kept = {part.strip() for part in answer.headers["cache-control"].split(",")}
        assert kept == {"public", "max-age=3600"}
        assert "set-cookie" not in answer.headers
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    for path in ("/", "/signin", "/signup", "/password/reset", "/no-such-page"):
        assert (await client.get(path)).headers["cache-control"] == "no-store"


async def test_api_answers_carry_the_api_security_headers(client: Client, h: Harness) -> None:
    key = (await h.container.create_api_key().execute("bot")).token
    refused = await client.get("/api/v1/links/123")
    missing = await client.get("/api/v1/links/123", headers={"Authorization": f"Bearer {key}"})
    assert (refused.status_code, missing.status_code) == (401, 404)
    for answer in (refused, missing):
        policy = answer.headers["content-security-policy"]
        assert policy == "default-src 'none'; frame-ancestors 'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        # A page's policies (forms, referrers, windows) mean nothing for JSON.
        assert "referrer-policy" not in answer.headers
        assert "cross-origin-opener-policy" not in answer.headers
        assert "strict-transport-security" not in answer.headers  # plain http here


async def test_sign_up_sets_a_safe_session_cookie_and_shows_the_account(client: Client) -> None:
    answer = await post_form(
        client,
        "/signup",
        "/signup",
        {"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    assert answer.status_code == 200
    cookie = next(
        h for h in answer.history[0].headers.get_list("set-cookie") if h.startswith("tfl_session=")
    )
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # the public URL is http here
    assert "alice" in (await client.get("/account")).text


async def test_state_changing_forms_need_the_csrf_token(client: Client) -> None:
    await client.get("/signup")
    answer = await client.post(
        "/signup", data={"username": "alice", "email": "a@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert "form expired" in answer.text


async def test_discord_names_are_shown_isolated_from_the_text_around_them(
    client: Client, h: Harness
) -> None:
    """A name stored before bidirectional controls were removed (or any name mixing
    directions) must not reorder the page around it: each is in its own <bdi>, the control
    shown as a mark (``domain.names``)."""
    h.discord_user(5002, username="dora", email="dora@example.com", global_name="\u202eadmin")
    await _discord_login(client, h, 5002, next_path="/account")
    page = (await client.get("/account")).text
    assert "<strong><bdi>\ufffdadmin</bdi></strong>" in page
    assert "<bdi>@dora</bdi> ·" in page


async def test_bad_sign_in_re_renders_with_a_clear_message(client: Client) -> None:
    await sign_up(client)
    await post_form(client, "/account", "/signout", {})
    answer = await post_form(
        client, "/signin", "/signin", {"login": "alice", "password": "wrong password"}
    )
    assert answer.status_code == 401
    assert "not right" in answer.text


async def test_sign_in_with_discord_creates_the_account_and_lands_on_next(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    h.discord_user(5001, username="dora", email="dora@example.com")
    location = await _discord_login(client, h, 5001, next_path="/account")
    assert location == "/account"
    page = await client.get("/account")
    assert "dora" in page.text
    assert "Unlink Discord" in page.text
    assert len(db.tables.links) == 1


async def test_open_redirects_in_next_end_on_root(client: Client, h: Harness) -> None:
    h.discord_user(5002, email="x@example.com")
    assert await _discord_login(client, h, 5002, next_path="//evil.example") == "/"


async def test_callback_in_another_browser_is_refused(h: Harness) -> None:
    h.discord_user(5003, email="y@example.com")
    app = create_app(h.container)
    async with AsyncTestClient(app=app) as starter, AsyncTestClient(app=app) as other:
        started = await starter.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], h.discord_user(5003).id)
        answer = await other.get(
            f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        )
    assert answer.status_code == 400
    assert "different browser" in answer.text
    assert "Start again" in answer.text


async def test_access_denied_gives_a_friendly_page(client: Client, h: Harness) -> None:
    started = await client.get("/auth/discord/login", follow_redirects=False)
    state = query(started.headers["location"])["state"]
    answer = await client.get(f"/auth/discord/callback?error=access_denied&state={state}")
    assert answer.status_code == 400
    assert "did not grant access" in answer.text


async def _continue_with_discord(client: Client, h: Harness, path: str, as_discord: int) -> Any:
    """Press "Continue with Discord" on a /link page, then be ``as_discord`` at Discord."""
    confirm = await client.get(path)
    started = await client.post(
        path, data={"_csrf_token": csrf_token(confirm.text)}, follow_redirects=False
    )
    assert started.status_code == 302, started.text
    location = started.headers["location"]
    assert "scope=identify&" in location
    assert "prompt=consent" in location  # pick the Discord account that ran /link
    approval = h.discord.approve(location, DiscordId(as_discord))
    return await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")


async def _discord_cdn_serves(url: str, *, user_id: str, avatar_hash: str) -> bool:
    """Whether Discord's CDN (the emulator's, as strict about sizes) serves this URL."""
    state = EmulatorState("1", "s", set())
    state.add_user("someone", user_id=user_id, avatar=avatar_hash)
    parts = urlsplit(url.replace("&amp;", "&"))
    async with AsyncTestClient(app=create_emulator_app(state)) as cdn:
        answer = await cdn.get(f"{parts.path}?{parts.query}")
    return answer.status_code == 200 and answer.headers["content-type"] == "image/png"


async def test_link_ticket_page_asks_to_sign_in_then_proves_the_discord_side(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    discord = h.discord_user(5004, username="tick", global_name="Tick", avatar="a_1f2e")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"

    anonymous = await client.get(path)
    assert "First sign in to the TaskFlow account" in anonymous.text
    assert f"/signin?next={path}" in anonymous.text
    signin = await client.get(f"/signin?next={path}")
    assert "/auth/discord/login" not in signin.text  # a Discord sign-in cannot link a ticket

    await sign_up(client, "alice", next_path=path)
    confirm = await client.get(path)
    assert "@tick" in confirm.text
    assert "Discord id 5004" in confirm.text
    [avatar] = re.findall(r'<img src="([^"]+)"', confirm.text)
    assert avatar.startswith("https://cdn.discordapp.com/avatars/5004/a_1f2e.png?")
    assert await _discord_cdn_serves(avatar, user_id="5004", avatar_hash="a_1f2e")
    assert "Continue only if you ran <code>/link</code> yourself" in confirm.text
    assert "alice" in confirm.text
    assert db.tables.links == {}  # nothing happens before Discord confirms

    linked = await _continue_with_discord(client, h, path, as_discord=5004)
    assert linked.status_code == 200
    assert "/whoami shows the link" in linked.text
    assert db.tables.links[discord.id].account_id in db.tables.accounts

    again = await client.get(path)
    assert again.status_code == 410
    assert "Run /link again in Discord" in again.text


async def _link_button_round_trip(
    client: Client, h: Harness, discord: DiscordProfile, fetch_site: str = "same-origin"
) -> tuple[str, Any]:
    """alice signs up from the page of ``discord``'s /link button and starts its round trip
    (a request that says ``Sec-Fetch-Site: fetch_site``); the button's page, and the 302 to
    Discord."""
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"
    await sign_up(client, "alice", next_path=path)
    confirm = await client.get(path)
    started = await client.post(
        path,
        data={"_csrf_token": csrf_token(confirm.text)},
        headers={"Sec-Fetch-Site": fetch_site, "Sec-Fetch-Dest": "document"},
        follow_redirects=False,
    )
    assert started.status_code == 302, started.text
    return path, started


async def test_other_sites_pointing_at_the_sign_in_start_leave_this_sites_round_trip_working(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """The attack: while alice is on Discord's consent screen for her /link button, a page of
    another site she has open (one click: a window it opened and points at
    ``/auth/discord/login`` again and again) started round trips in her browser. Each gave the
    browser a binding value, and only the newest five were kept: her own, the oldest, was
    pushed out, and back from Discord she was told she had started in another browser. Such
    navigations now start nothing (a page to continue from), and hers finishes."""
    alice_d = h.discord_user(5060, username="alice_d")
    _, started = await _link_button_round_trip(client, h, alice_d, "same-origin")
    approval = h.discord.approve(started.headers["location"], alice_d.id)
    pending = len(db.tables.pending_logins)

    for _ in range(12):  # another site's window, pointed here again and again
        pushed = await client.get(
            "/auth/discord/login",
            headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "document"},
            follow_redirects=False,
        )
        assert pushed.status_code == 200
        assert "Continue to Discord" in pushed.text
        assert not [c for c in pushed.headers.get_list("set-cookie") if c.startswith("tfl_oauth")]
    assert len(db.tables.pending_logins) == pending  # no round trip started

    linked = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert linked.status_code == 302, linked.text
    assert linked.headers["location"] == "/account?notice=linked_from_discord"
    assert alice_d.id in db.tables.links


async def test_every_round_trip_is_bound_by_the_one_binding_cookie(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """Round trips that other sites' requests started kept their values in a cookie of their
    own (``tfl_oauth_other``), so that they could not push out those of this site's pages.
    Such requests start none any more (a page to continue from; a form fails CSRF), so one
    cookie binds them all, whatever ``Sec-Fetch-Site`` a request that passed CSRF says."""
    alice_d = h.discord_user(5061, username="alice_d2")
    _, started = await _link_button_round_trip(client, h, alice_d, "same-site")
    cookies = [c.split("=", 1)[0] for c in started.headers.get_list("set-cookie")]
    assert cookies == ["tfl_oauth"]
    approval = h.discord.approve(started.headers["location"], alice_d.id)
    linked = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert linked.headers["location"] == "/account?notice=linked_from_discord"
    assert alice_d.id in db.tables.links


def _continue_link(page: str) -> str:
    """Where the page's "Continue to Discord" link leads."""
    found = re.search(r'href="([^"]*)">Continue to Discord</a>', page)
    assert found, "the page has no Continue to Discord link"
    return html.unescape(found.group(1))


_SAME_ORIGIN = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate"}


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_sign_in_another_site_starts_is_a_page_to_continue_from(
    client: Client, h: Harness, db: MemoryDatabase, site: str
) -> None:
    """An attacker's review: any site could send a browser through ``/auth/discord/login``
    (a link, a redirect, a window it opens), and Discord sends a returning person straight
    back: the browser was signed in as its Discord account's TaskFlow account (the session
    it had ended), or a new account was made. Another site's navigation now gets a page of
    this site, with the usual headers (never framed, never stored), and no round trip; its
    link, followed from this page, starts the sign-in, ``next`` and ``switch`` kept."""
    h.discord_user(5061, username="ned", email="ned@example.com")
    page = await client.get(
        "/auth/discord/login?next=/account%3Ftab%3D1&switch=true",
        headers={"sec-fetch-site": site, "sec-fetch-mode": "navigate", "sec-fetch-user": "?1"},
        follow_redirects=False,
    )
    assert page.status_code == 200
    assert db.tables.pending_logins == {}
    assert not [c for c in page.headers.get_list("set-cookie") if c.startswith("tfl_oauth")]
    assert "another site" in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    href = _continue_link(page.text)
    assert href == "/auth/discord/login?next=%2Faccount%3Ftab%3D1&switch=true"

    started = await client.get(href, headers=_SAME_ORIGIN, follow_redirects=False)
    assert started.status_code == 302
    assert query(started.headers["location"])["prompt"] == "consent"  # switch kept
    approval = h.discord.approve(started.headers["location"], DiscordId(5061))
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account?tab=1"


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/link/abc", "/account"),  # a path with a one-time secret, as the sign-in refuses
        ("", "/account"),
    ],
)
async def test_the_page_to_continue_from_keeps_only_a_destination_the_sign_in_keeps(
    client: Client, asked: str, kept: str
) -> None:
    page = await client.get(
        "/auth/discord/login",
        params={"next": asked} if asked else {},
        headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"},
    )
    assert page.status_code == 200
    assert query(_continue_link(page.text)) == {"next": kept}


async def test_a_forwarded_link_button_does_not_link_the_senders_discord(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """The attack: mallory runs /link and sends the button to alice ("claim your role"). Alice,
    signed in to TaskFlow, presses it. Discord says she is alice, not mallory: nothing is
    linked, and mallory's "Sign in with Discord" cannot enter alice's account."""
    mallory = h.discord_user(5050, username="mallory", email="mallory@example.com")
    alice_discord = h.discord_user(5051, username="alice_d")
    issued = await h.container.issue_link_ticket().execute(mallory.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"
    await sign_up(client, "alice", next_path=path)
    alice = next(a for a in db.tables.accounts.values() if a.username == "alice")

    refused = await _continue_with_discord(client, h, path, as_discord=alice_discord.id.value)

    assert refused.status_code == 409
    assert "made for the Discord account \u2068@mallory\u2069" in refused.text
    assert "signed in to Discord as \u2068@alice_d\u2069" in refused.text
    assert "running /link yourself" in refused.text
    assert db.tables.links == {}
    event = next(e for e in db.tables.audit if e.kind is AuditKind.LINK_REFUSED)
    assert event.account_id == alice.id
    assert event.detail["ticket_discord_id"] == "5050"
    assert (await client.get(path)).status_code == 410  # the ticket is spent
    # Mallory signs in with Discord: a new account of her own, never alice's.
    async with AsyncTestClient(app=create_app(h.container)) as attacker:
        await _discord_login(attacker, h, 5050)
        assert "alice" not in (await attacker.get("/account")).text
    assert db.tables.links[mallory.id].account_id != alice.id


async def test_a_button_that_ends_during_its_discord_round_trip_says_to_run_link_again(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """The button expires (or a newer /link replaces it) while the person is at Discord: the
    page back from Discord says to run /link again, as the button's own page does. It said
    "Start again from the sign-in page", where nothing gets a new button."""
    discord = h.discord_user(5007, username="slow")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"
    await sign_up(client, "alice", next_path=path)
    h.clock.advance(timedelta(minutes=6))
    confirm = await client.get(path)
    started = await client.post(
        path, data={"_csrf_token": csrf_token(confirm.text)}, follow_redirects=False
    )
    approval = h.discord.approve(started.headers["location"], discord.id)
    h.clock.advance(timedelta(minutes=4))  # the button's 10 minutes end at Discord

    answer = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")

    assert answer.status_code == 410
    assert "This link has expired" in answer.text
    assert "Run /link again in Discord to get a new link." in answer.text
    assert "sign-in page" not in answer.text
    assert db.tables.links == {}


async def test_cancelling_at_discord_from_a_link_button_says_the_button_still_works(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """Cancel on Discord's consent screen (the wrong Discord account was signed in, say): the
    button is not spent, and the page says to press it again. It said "Start again from the
    sign-in page" to someone signed in, where no sign-in helps."""
    discord = h.discord_user(5008, username="shy")
    path, started = await _link_button_round_trip(client, h, discord)
    state = query(started.headers["location"])["state"]

    answer = await client.get(f"/auth/discord/callback?error=access_denied&state={state}")

    assert answer.status_code == 400
    assert "Discord did not grant access, so nothing was linked." in answer.text
    assert "press it again in Discord" in answer.text
    assert "sign-in page" not in answer.text
    assert (await client.get(path)).status_code == 200  # the button still works
    assert db.tables.links == {}


@pytest.mark.parametrize("fault", ["discord_down", "code_refused", "signed_out"])
async def test_a_link_button_round_trip_that_discord_fails_says_the_button_still_works(
    client: Client, h: Harness, db: MemoryDatabase, fault: str
) -> None:
    """Discord out of reach (or refusing the code) on the way back from a /link button: its
    ticket is not spent, so the way on is the same button. The page said "Start again from
    your account page", where nothing resumes a /link button."""
    discord = h.discord_user(5010, username="unlucky")
    path, started = await _link_button_round_trip(client, h, discord)
    approval = h.discord.approve(started.headers["location"], discord.id)
    code = approval.code
    if fault == "discord_down":
        h.discord.outage = errors.DiscordUnavailable()
    elif fault == "code_refused":
        code = f"not-{code}"
    else:  # signed out in another tab meanwhile: "sign in, then try again" (what, where?)
        await post_form(client, "/account", "/signout", {})

    answer = await client.get(f"/auth/discord/callback?code={code}&state={approval.state}")

    assert answer.status_code in (400, 401, 502)
    assert "press it again in Discord" in answer.text
    assert "Start again from your account page" not in answer.text
    h.discord.outage = None
    if fault == "signed_out":
        assert "Sign in to the account you started from" in answer.text
        await post_form(client, "/signin", "/signin", {"login": "alice", "password": PASSWORD})
    assert (await client.get(path)).status_code == 200  # the button still works
    assert db.tables.links == {}


async def test_a_link_button_an_account_linked_elsewhere_cannot_use_is_refused_before_a_proof(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """An account already linked to another Discord account presses a /link button: the
    refusal ("unlink first") comes at once. It came only after a proof of identity: for an
    account that signs in with Discord, a detour through "Confirm it is you" (a Discord round
    trip) that ended on the account page, the button pressed again, and then refused."""
    h.discord_user(5022, username="own", email="own@example.com")
    other = h.discord_user(5023, username="other")
    await _discord_login(client, h, 5022)
    h.clock.advance(timedelta(minutes=11))  # the sign-in's proof has lapsed
    issued = await h.container.issue_link_ticket().execute(other.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"
    page = await client.get(path)

    answer = await client.post(path, data={"_csrf_token": csrf_token(page.text)})

    assert answer.status_code == 409
    assert "already linked to a different Discord account" in answer.text
    assert answer.url.path == path
    assert (await client.get(path)).status_code == 200  # nothing spent
    assert {link.discord_id.value for link in db.tables.links.values()} == {5022}


async def test_a_button_a_newer_link_replaced_says_so(client: Client, h: Harness) -> None:
    user = h.discord_user(5006, username="twice").user
    older = await h.container.issue_link_ticket().execute(user)
    newer = await h.container.issue_link_ticket().execute(user)
    assert isinstance(older, TicketIssued)
    assert isinstance(newer, TicketIssued)

    replaced = await client.get(f"/link/{older.token}")

    assert replaced.status_code == 410
    assert "This link is used up" in replaced.text
    assert "a newer /link" in replaced.text
    assert "Run /link again in Discord" in replaced.text
    assert (await client.get(f"/link/{newer.token}")).status_code == 200


async def test_link_confirm_without_csrf_is_refused(client: Client, h: Harness) -> None:
    issued = await h.container.issue_link_ticket().execute(h.discord_user(5005).user)
    assert isinstance(issued, TicketIssued)
    await sign_up(client)
    answer = await client.post(f"/link/{issued.token}", data={})
    assert answer.status_code == 403


async def test_link_and_unlink_from_the_account_page(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    await sign_up(client)
    discord = h.discord_user(5006, username="linker")
    started = await post_form(client, "/account", "/account/discord/link", {})
    assert started.status_code == 302 or started.history
    location = (started.history[0] if started.history else started).headers["location"]
    assert "scope=identify&" in location
    approval = h.discord.approve(location, discord.id)
    done = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    assert "Discord is linked" in done.text
    assert discord.id in db.tables.links

    unlinked = await post_form(client, "/account", "/account/discord/unlink", {})
    assert "Discord is unlinked" in unlinked.text
    assert db.tables.links == {}


async def test_unlink_refused_when_discord_is_the_only_way_in(client: Client, h: Harness) -> None:
    h.discord_user(5007, email="only@example.com")
    await _discord_login(client, h, 5007)
    answer = await post_form(client, "/account", "/account/discord/unlink", {})
    assert answer.status_code == 409
    assert "Set a password" in answer.text


async def test_api_needs_a_valid_key_and_answers_with_strings(client: Client, h: Harness) -> None:
    assert (await client.get("/api/v1/links/123")).status_code == 401
    wrong = await client.get("/api/v1/links/123", headers={"Authorization": "Bearer tfl_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "http_401"
    key = (await h.container.create_api_key().execute("bot", ["links:read", "links:write"])).token
    auth = {"Authorization": f"Bearer {key}"}

    unknown = await client.get("/api/v1/links/123", headers=auth)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert (await client.get("/api/v1/links/abc", headers=auth)).status_code == 400

    alice = (await h.sign_up("alice", "alice@example.com")).account
    big = h.discord_user(2**63 - 1)
    await h.discord_link(alice.id, big)
    found = await client.get(f"/api/v1/links/{2**63 - 1}", headers=auth)
    assert found.status_code == 200
    body = found.json()
    assert body["discord_id"] == str(2**63 - 1)
    assert body["taskflow_user_id"] == str(alice.id)
    stored = await h.container.directory().link_by_discord_id(DiscordId(2**63 - 1))
    assert stored is not None
    # RFC 3339 in UTC, as isoformat() wrote it before msgspec did.
    assert body["linked_at"] == stored.linked_at.isoformat().replace("+00:00", "Z")
    assert body["linked_at"].endswith("Z")
    by_account = await client.get(f"/api/v1/accounts/{alice.id}/link", headers=auth)
    assert by_account.json()["discord_id"] == str(2**63 - 1)

    removed = await client.delete(f"/api/v1/links/{2**63 - 1}", headers=auth)
    assert removed.status_code == 200
    assert (await client.get(f"/api/v1/links/{2**63 - 1}", headers=auth)).status_code == 404


async def test_health_readiness_and_openapi(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/api/v1/links/{discord_id}" in schema["paths"]
    assert "/account" not in schema["paths"]


async def test_the_schema_is_served_as_documents_and_no_page_needs_a_script(
    client: Client,
) -> None:
    """Litestar's viewers (ReDoc at /schema, Swagger UI, Elements, RapiDoc) are pages of
    scripts from other sites' CDNs, which the pages' Content-Security-Policy (no scripts)
    blocks: each showed a blank page. Allowing them would run another site's script, at an
    unpinned version, with this origin's cookies. The schema is served as JSON (also at
    /schema itself) and YAML, for any OpenAPI tool."""
    document = (await client.get("/schema/openapi.json")).json()
    at_root = await client.get("/schema")
    assert at_root.status_code == 200
    assert at_root.headers["content-type"].startswith("application/")
    assert at_root.json() == document
    yaml = await client.get("/schema/openapi.yaml")
    assert yaml.status_code == 200
    assert "/api/v1/links/{discord_id}" in yaml.text
    for viewer in ("/schema/redoc", "/schema/swagger", "/schema/elements", "/schema/rapidoc"):
        assert (await client.get(viewer)).status_code == 404, viewer
    assert (await client.get("/schema/oauth2-redirect.html")).status_code == 404


async def test_someone_elses_wrong_passwords_do_not_lock_out_a_browser_that_signed_in_before(
    h: Harness,
) -> None:
    await h.sign_up("alice", "alice@example.com")
    alice = {"login": "alice", "password": PASSWORD}
    wrong = {"login": "alice", "password": "wrong password"}
    async with (
        AsyncTestClient(app=create_app(h.container)) as mine,
        AsyncTestClient(app=create_app(h.container)) as theirs,
    ):
        signed_in = await post_form(mine, "/signin", "/signin", alice)
        (device,) = [
            c for c in signed_in.history[0].headers.get_list("set-cookie") if "tfl_device=" in c
        ]
        assert "HttpOnly" in device
        assert "Max-Age=31536000" in device
        await post_form(mine, "/account", "/signout", {})
        assert "tfl_device" in mine.cookies  # kept at sign-out: it is the browser's
        for _ in range(5):
            assert (await post_form(theirs, "/signin", "/signin", wrong)).status_code == 401
        refused = await post_form(theirs, "/signin", "/signin", alice)
        assert refused.status_code == 429
        assert "Too many wrong passwords for this account" in refused.text
        back = await post_form(mine, "/signin", "/signin", alice)
        assert back.url.path == "/account"
        assert "alice" in back.text


async def test_the_browser_that_changed_the_password_stays_trusted(h: Harness) -> None:
    """A new password ends every device token, the changing browser's too: it gets a new one,
    else the attack it changed the password under would lock it out again (an attacker's
    review)."""
    await h.sign_up("alice", "alice@example.com")
    new = "a brand new passphrase 7"
    async with (
        AsyncTestClient(app=create_app(h.container)) as mine,
        AsyncTestClient(app=create_app(h.container)) as theirs,
    ):
        await post_form(mine, "/signin", "/signin", {"login": "alice", "password": PASSWORD})
        old_device = mine.cookies["tfl_device"]
        changed = await post_form(
            mine,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": new},
        )
        assert "Your password is saved" in changed.text
        assert mine.cookies["tfl_device"] != old_device
        await post_form(mine, "/account", "/signout", {})
        wrong = {"login": "alice", "password": "wrong password"}
        for _ in range(5):
            assert (await post_form(theirs, "/signin", "/signin", wrong)).status_code == 401
        assert (await post_form(theirs, "/signin", "/signin", wrong)).status_code == 429
        back = await post_form(mine, "/signin", "/signin", {"login": "alice", "password": new})
        assert back.url.path == "/account"


@pytest.mark.parametrize("length", [100, 101, 1024])
async def test_long_passwords_work_in_every_password_form(h: Harness, length: int) -> None:
    """Up to 1024 characters, as the README says (past 100, zxcvbn used to raise: a 500)."""
    strong = ("q7#Kd9!zLm" * 103)[:length]
    first, second, third = strong, "x" + strong[1:], "y" + strong[1:]
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=100)) as c:
        data = {"username": "alice", "email": "alice@example.com", "password": first}
        signed_up = await post_form(c, "/signup", "/signup", data)
        assert signed_up.url.path == "/account", signed_up.text
        changed = await post_form(
            c, "/account", "/account/password", {"current_password": first, "new_password": second}
        )
        assert "Your password is saved" in changed.text
        await post_form(c, "/account", "/signout", {})
        back = await post_form(c, "/signin", "/signin", {"login": "alice", "password": second})
        assert back.url.path == "/account"
        weak = await post_form(
            c,
            "/account",
            "/account/password",
            {"current_password": second, "new_password": "a" * length},
        )
        assert weak.status_code == 400
        assert "too easy to guess" in weak.text
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    async with AsyncTestClient(app=create_app(h.container)) as c:
        page = f"/password/reset/{token}"
        reset = await post_form(c, page, page, {"new_password": third})
        assert "Your new password is saved" in reset.text


@pytest.mark.parametrize("confirmed", [True, False])
async def test_a_password_reset_says_what_became_of_the_linked_discord(
    h: Harness, confirmed: bool
) -> None:
    """A confirmed address keeps its Discord link through a reset: the person is told it can
    still sign in, beside its Unlink button (helper-54's review: "signed out everywhere else"
    let an intruder who linked their own Discord look gone). An unconfirmed one loses it."""
    alice = (await h.sign_up("alice", "alice@example.com", verified=confirmed)).account
    await h.discord_link(alice.id, h.discord_user(7001, username="mallory"))
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    async with AsyncTestClient(app=create_app(h.container)) as c:
        page = f"/password/reset/{token}"
        reset = await post_form(c, page, page, {"new_password": "a brand new passphrase"})
    assert reset.url.path == "/account"
    if confirmed:
        assert "The Discord account linked below can still sign in" in reset.text
        assert "@mallory" in reset.text
        assert "Unlink Discord" in reset.text
    else:
        assert "The Discord account that was linked is unlinked" in reset.text
        assert "@mallory" not in reset.text


_SIGN_OUTS = ("sign out", "sign out everywhere", "end this session")


async def _sign_in_or_out(client: Client, h: Harness, how: str) -> Any:
    """Sign in, or out (from the browser signed in before), the way ``how`` says; the
    answer, redirects followed."""
    if how == "sign up":
        data = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
        return await post_form(client, "/signup", "/signup", data)
    if how == "sign in":
        return await post_form(
            client, "/signin", "/signin", {"login": "alice", "password": PASSWORD}
        )
    if how == "password reset":
        await h.container.request_password_reset().execute("alice@example.com")
        await h.deliver()
        token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
        page = f"/password/reset/{token}"
        return await post_form(client, page, page, {"new_password": "a brand new passphrase"})
    if how == "Discord sign-in":
        started = await client.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], h.discord_user(5100).id)
        return await client.get(
            f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        )
    if how == "sign out":
        return await post_form(client, "/account", "/signout", {})
    if how == "sign out everywhere":
        return await post_form(client, "/account", "/account/sessions/end-all", {})
    assert how == "end this session"
    # The account page has no button for its own session: another browser's list would.
    sessions = await h.container.list_sessions().execute(client.cookies["tfl_session"])
    action = f"/account/sessions/{sessions.current.id}/end"
    return await post_form(client, "/account", action, {})


@pytest.mark.parametrize(
    "how", ["sign in", "sign up", "password reset", "Discord sign-in", *_SIGN_OUTS]
)
async def test_signing_in_or_out_gives_the_browser_a_new_csrf_token(
    client: Client, h: Harness, how: str
) -> None:
    """Whoever read the CSRF token at a shared computer (on a page, in the cookie) holds
    none for the next person's session (helper-54's review): the answer that signs in or out
    expires the cookie, the next page sets a new one, and its forms work."""
    if how != "sign up":
        await h.sign_up("alice", "alice@example.com", verified=True)
    if how in _SIGN_OUTS:
        await _sign_in_or_out(client, h, "sign in")
    page = await client.get("/account" if how in _SIGN_OUTS else "/signin")
    old = client.cookies["tfl_csrf"]
    assert csrf_token(page.text) == old
    answer = await _sign_in_or_out(client, h, how)
    assert answer.status_code == 200, answer.text
    expired = [
        c
        for step in answer.history
        for c in step.headers.get_list("set-cookie")
        if c.startswith("tfl_csrf=")
    ]
    assert expired
    for cookie in expired:  # the middleware's cookie: same name, path and flags
        assert "max-age=0" in cookie.lower()
        assert "path=/" in cookie.lower()
        assert "httponly" in cookie.lower()
    new = client.cookies["tfl_csrf"]  # set by the page the browser landed on
    assert new != old
    page = await client.get("/password/reset")
    assert csrf_token(page.text) == new
    stale = await client.post(
        "/password/reset", data={"email": "zed@example.com", "_csrf_token": old}
    )
    assert stale.status_code == 403
    fresh = await client.post(
        "/password/reset", data={"email": "zed@example.com", "_csrf_token": new}
    )
    assert fresh.status_code == 200
    assert "Check your email" in fresh.text


async def test_sign_in_is_rate_limited(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=3)) as client:
        statuses = []
        for _ in range(5):
            page = await client.get("/signin")  # not limited
            assert page.status_code == 200
            answer = await client.post(
                "/signin",
                data={"login": "x", "password": "y", "_csrf_token": csrf_token(page.text)},
                follow_redirects=False,
            )
            statuses.append(answer.status_code)
    assert statuses == [401, 401, 401, 429, 429]


async def _alice_signs_in(client: AsyncTestClient[Any]) -> None:
    """Alice's right password signs her in: the sign-in budget was not spent."""
    page = await client.get("/signin")
    answer = await client.post(
        "/signin",
        data={"login": "alice", "password": PASSWORD, "_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 302  # signed in
    assert answer.headers["location"] == "/account"


def _navigation(site: str, *, clicked: bool = False) -> dict[str, str]:
    """What a browser says of a page it opens as a whole tab, from ``site`` (its
    ``Sec-Fetch-Site``), with the mark of a click or not."""
    headers = {"sec-fetch-site": site, "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
    return {**headers, "sec-fetch-user": "?1"} if clicked else headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a browser that sends no Fetch Metadata
        _navigation("cross-site"),
    ],
)
async def test_forms_another_site_posts_do_not_spend_the_sign_in_budget(
    h: Harness, headers: dict[str, str]
) -> None:
    """An attacker's review: the limit counted a form posted from another site's page (no
    CSRF token) before CSRF refused it: its visitors, and their whole network, could not
    sign in. CSRF now refuses it first."""
    await h.sign_up("alice", "alice@example.com")
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        for _ in range(3):
            forged = await client.post(
                "/signin",
                data={"login": "alice", "password": "wrong"},
                headers={"origin": "https://elsewhere.example", **headers},
            )
            assert forged.status_code == 403
        await _alice_signs_in(client)


# What a browser says of a request another site's page makes it send.
_FOR_ANOTHER_SITE = {
    "image": {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "no-cors",
        "sec-fetch-dest": "image",
    },
    "frame": {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "iframe",
    },
    "script": {
        "sec-fetch-site": "same-site",
        "sec-fetch-mode": "no-cors",
        "sec-fetch-dest": "empty",
    },
}


@pytest.mark.parametrize("how", sorted(_FOR_ANOTHER_SITE))
async def test_another_sites_page_cannot_spend_its_visitors_sign_in_budget(
    h: Harness, how: str
) -> None:
    """An attacker's review: a page of another site spent its visitor's budget, and their
    whole network's, with requests the visitor's browser sent for it (twenty
    ``<img src=".../auth/discord/login">``, or forms posted without a CSRF token, which
    the limit counted before CSRF refused them): nobody there could sign in while it was
    open. Such requests are refused (or, without a token, refused by CSRF) uncounted;
    following a link from another site still works."""
    await h.sign_up("alice", "alice@example.com")
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        for _ in range(3):
            embedded = await client.get(
                "/auth/discord/login", headers=_FOR_ANOTHER_SITE[how], follow_redirects=False
            )
            assert embedded.status_code == 403
            forged = await client.post(
                "/signin",
                data={"login": "alice", "password": "wrong"},
                headers={"origin": "https://elsewhere.example", **_FOR_ANOTHER_SITE[how]},
            )
            assert forged.status_code == 403
        await _alice_signs_in(client)
        followed = await client.get(
            "/auth/discord/login", headers=_navigation("cross-site"), follow_redirects=False
        )
        assert followed.status_code == 200  # a link from another site: a page, not counted
        again = await client.get("/auth/discord/login", follow_redirects=False)
        assert again.status_code == 302  # the second of this site's own
        third = await client.get("/auth/discord/login", follow_redirects=False)
        assert third.status_code == 429


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_pages_other_sites_open_spend_no_sign_in_budget(h: Harness, site: str) -> None:
    """An attacker's review: after one click, another site's page re-pointed the window it had
    opened at ``/auth/discord/login`` again and again (up to 17 counted in Chromium, each
    carrying the click's ``Sec-Fetch-User: ?1``): its visitor's whole network could not sign
    in for a minute. Such a page opened now starts nothing (a page to continue from) and
    counts nothing: this site's forms, its buttons and addresses typed keep the budget."""
    await h.sign_up("alice", "alice@example.com")
    opened = _navigation(site, clicked=True)
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        statuses = [
            (
                await client.get(
                    f"/auth/discord/login?next=/n{n}", headers=opened, follow_redirects=False
                )
            ).status_code
            for n in range(4)
        ]
        assert statuses == [200, 200, 200, 200]  # each a page to continue from
        await _alice_signs_in(client)  # this site's own form: the first of its budget
        typed = await client.get(
            "/auth/discord/login",
            headers={**opened, "sec-fetch-site": "none"},
            follow_redirects=False,
        )
        assert typed.status_code == 302  # the second
        assert (await client.get("/auth/discord/login", follow_redirects=False)).status_code == 429


async def test_a_head_of_the_sign_in_start_starts_nothing(h: Harness, db: MemoryDatabase) -> None:
    """HEAD runs as the GET it stands for, and a HEAD of ``/auth/discord/login`` (an uptime
    monitor's, a link checker's) started a Discord sign-in as the GET does: a pending sign-in
    stored, a binding cookie, the sign-in budget of its address spent. HEAD has no side
    effects (RFC 9110): it answers the status and headers of the page to continue from that
    another site's link gets, starts nothing and counts nothing."""
    await h.sign_up("alice", "alice@example.com")
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        page = await client.get(
            "/auth/discord/login?switch=true", headers=_navigation("cross-site")
        )
        pending = len(db.tables.pending_logins)
        for _ in range(3):
            head = await client.head("/auth/discord/login?switch=true", follow_redirects=False)
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(page.content))
            assert head.headers["content-type"] == page.headers["content-type"]
            assert not [c for c in head.headers.get_list("set-cookie") if "tfl_oauth" in c]
            assert "ratelimit-remaining" not in head.headers
        assert len(db.tables.pending_logins) == pending
        await _alice_signs_in(client)  # the first of the budget
        started = await client.get("/auth/discord/login", follow_redirects=False)
        assert started.status_code == 302  # the second
        assert len(db.tables.pending_logins) == pending + 1


async def test_a_form_that_says_it_came_from_another_site_gets_no_second_budget(
    h: Harness,
) -> None:
    """Only a page opened (a GET) from another site goes uncounted: a client that is no
    browser writes its own ``Sec-Fetch-Site``, and with it uncounted password tries (or a
    second budget of them, as there was) would multiply what one address may guess."""
    await h.sign_up("alice", "alice@example.com")
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        statuses = []
        for site in ("none", "cross-site", "same-site"):
            page = await client.get("/signin")
            answer = await client.post(
                "/signin",
                data={"login": "alice", "password": "wrong", "_csrf_token": csrf_token(page.text)},
                headers=_navigation(site),
                follow_redirects=False,
            )
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 429]


# What a browser says of a page it loads ahead of time, in case someone opens it.
_LOADED_AHEAD = {
    # Chromium, for another site's speculation rules (a cross-site prefetch is "none").
    "prefetch": {
        "sec-purpose": "prefetch",
        "sec-fetch-site": "none",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    },
    "prerender": {
        "sec-purpose": "prefetch;prerender",
        "sec-fetch-site": "none",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    },
    "older": {"purpose": "prefetch"},
}


@pytest.mark.parametrize("how", sorted(_LOADED_AHEAD))
async def test_pages_loaded_ahead_of_time_do_not_spend_the_sign_in_budget(
    h: Harness, how: str
) -> None:
    """An attacker's review: another site's page asks the browser to prefetch twenty
    ``/auth/discord/login?next=/n…`` (speculation rules: no click, up to dozens at once);
    Chromium sends each cross-site prefetch as a document nobody's page asked for
    (``Sec-Fetch-Site: none``), which the check on another site's requests let through: one
    visit spent the visitor's budget, and their whole network's (reproduced in Chromium).
    Such loads are refused uncounted; opening the page still works."""
    await h.sign_up("alice", "alice@example.com")
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=2)) as client:
        for n in range(3):
            ahead = await client.get(
                f"/auth/discord/login?next=/n{n}",
                headers=_LOADED_AHEAD[how],
                follow_redirects=False,
            )
            assert ahead.status_code == 403
        opened = await client.get(
            "/auth/discord/login?next=/n0",
            headers=_navigation("cross-site", clicked=True),
            follow_redirects=False,
        )
        assert opened.status_code == 200  # opened from another site: a page, uncounted
        await _alice_signs_in(client)  # the prefetches spent none of this site's budget


async def test_https_cookies_are_host_prefixed_and_secure_and_hsts_is_sent() -> None:
    from entrypoints.container import build_container
    from tests.harness import make_settings

    h = Harness.build(
        build_container(make_settings(public_url="https://link.example.com", development=True))
    )
    async with AsyncTestClient(
        app=create_app(h.container), base_url="https://testserver.local"
    ) as c:
        answer = await post_form(
            c,
            "/signup",
            "/signup",
            {"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        )
        cookies = answer.history[0].headers.get_list("set-cookie")
        session = next(x for x in cookies if x.startswith("__Host-tfl_session="))
        assert "Secure" in session
        assert "Path=/" in session
        assert "Domain" not in session
        csrf = next(x for x in cookies if x.startswith("__Host-tfl_csrf="))
        assert "Secure" in csrf  # expired at the sign-up: the same cookie as the middleware's
        assert "Path=/" in csrf
        assert "Max-Age=0" in csrf
        device = next(x for x in cookies if x.startswith("__Host-tfl_device="))
        assert "Secure" in device
        assert "HttpOnly" in device
        assert "max-age" in answer.headers["strict-transport-security"]
        api = await c.get("/api/v1/links/1")
        assert api.status_code == 401
        assert "max-age" in api.headers["strict-transport-security"]
        assert "__Host-tfl_csrf" in c.cookies
        started = await c.get("/auth/discord/login", follow_redirects=False)
        binding = started.headers["set-cookie"]
        assert binding.startswith("__Host-tfl_oauth=")
        assert "Secure" in binding
        # A cookie without the prefix (plantable from elsewhere) is not read on https.
        token = c.cookies["__Host-tfl_session"]
        c.cookies.clear()
        c.cookies.set("tfl_session", token)
        assert (await c.get("/account", follow_redirects=False)).status_code == 302


async def test_access_log_never_contains_tickets_codes_or_states(
    client: Client, h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await h.container.issue_link_ticket().execute(h.discord_user(5100).user)
    assert isinstance(issued, TicketIssued)
    h.discord_user(5101, email="log@example.com")
    with caplog.at_level("INFO", logger="taskflow_link"):
        await client.get(f"/link/{issued.token}")
        started = await client.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], DiscordId(5101))
        await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("taskflow_link"))
    assert "/link/<token>" in logged
    assert "GET /auth/discord/callback 302" in logged
    for secret in (issued.token, approval.code, approval.state):
        assert secret not in logged


@pytest.mark.parametrize(
    "path",
    [
        "/link/SECRET",
        "/./link/SECRET",
        "//link/SECRET",
        "/static/../password/reset/SECRET",
        "/auth/discord/confirm-link/SECRET",
        "/verify-email/SECRET",
    ],
)
def test_a_secret_path_is_redacted_however_it_is_spelled(path: str) -> None:
    assert "SECRET" not in redact_path(path)
    assert redact_path("/account/sessions") == "/account/sessions"


async def test_a_line_break_in_a_path_cannot_forge_an_access_log_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="taskflow_link.access"):
        await client.get("/nothing%0A2026-01-01 INFO taskflow_link.access forged%00")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.access"]
    assert "\n" not in line
    assert "\x00" not in line
    assert "/nothing\\n2026-01-01 INFO taskflow_link.access forged\\x00 404" in line


def test_every_api_route_checks_the_key_before_anything_else(h: Harness) -> None:
    """The key check is the API's before_request hook, and the closest layer's hook wins: a
    route that set its own (or a response cache, served before the hook) would drop it."""
    app = create_app(h.container)
    api = [
        handler
        for route in app.routes
        if route.path.startswith("/api/")
        for handler in getattr(route, "route_handlers", [])
    ]
    assert len(api) >= 7  # four routes and their OPTIONS
    for handler in api:
        assert handler.resolve_before_request() is require_api_key, handler
        assert not handler.cache, handler


async def test_bulk_lookup_answers_links_and_missing_in_the_order_asked(
    client: Client, h: Harness
) -> None:
    key = (await h.container.create_api_key().execute("bulk")).token
    auth = {"Authorization": f"Bearer {key}"}
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    await h.discord_link(alice.id, h.discord_user(6001))
    await h.discord_link(bob.id, h.discord_user(6002))

    answer = await client.post(
        "/api/v1/links/lookup",
        json={"discord_ids": ["6002", "7000", 6001, "6002"]},
        headers=auth,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [link["discord_id"] for link in body["links"]] == ["6002", "6001"]
    assert body["links"][1]["taskflow_user_id"] == str(alice.id)
    assert body["missing"] == ["7000"]

    for bad, needle in (
        ({"discord_ids": []}, "discord_ids (body): Expected `array` of length >= 1"),
        ({"discord_ids": [str(i) for i in range(1, 1002)]}, "of length <= 1000"),
        ({"discord_ids": ["abc"]}, "discord_ids[0] (body): a Discord id is 1 to 20 digits (0-9)"),
        ({"discord_ids": [0]}, "Expected `int` >= 1"),
        ({"discord_ids": [True]}, "got `bool`"),
        ({"ids": ["1"]}, "missing required field `discord_ids`"),
    ):
        refused = await client.post("/api/v1/links/lookup", json=bad, headers=auth)
        assert refused.status_code == 400, refused.text
        assert needle in refused.text
    thousand = {"discord_ids": [str(i) for i in range(1, 1001)]}
    assert (
        await client.post("/api/v1/links/lookup", json=thousand, headers=auth)
    ).status_code == 200
    unauthenticated = await client.post("/api/v1/links/lookup", json=thousand)
    assert unauthenticated.status_code == 401


async def test_a_bulk_id_written_with_a_fraction_or_an_exponent_is_read_exactly(
    client: Client, h: Harness
) -> None:
    """A JSON number with a fraction or an exponent is a float to a JSON parser: Litestar's
    conversion took one with a whole value as that integer, after it was rounded to a float's
    53 bits, so 9007199254740993.0 answered the link of 9007199254740992, another person's.
    Whole ones are integers to JSON Schema (the API's schema accepts them): read exactly."""
    key = (await h.container.create_api_key().execute("bulk")).token
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    await h.discord_link(alice.id, h.discord_user(9007199254740992))
    await h.discord_link(bob.id, h.discord_user(6001))
    answer = await client.post(
        "/api/v1/links/lookup",
        content=b'{"discord_ids": [9007199254740993.0, 9.007199254740993e15, 6.001E3, 6001e0]}',
        headers=auth,
    )
    assert answer.status_code == 200, answer.text
    assert [link["discord_id"] for link in answer.json()["links"]] == ["6001"]
    assert answer.json()["missing"] == ["9007199254740993"]
    # Past Python's largest Decimal exponent (10^18), Decimal() itself refuses the number (a
    # 500 it was): refused as any other number that is no id.
    beyond = ("1e1000000000000000000", "-1E+1000000000000000000", "0.5e-9999999999999999999")
    for number in ("6001.5", "1e400", "1e999999999", "9223372036854775808.0", *beyond):
        refused = await client.post(
            "/api/v1/links/lookup",
            content=b'{"discord_ids": ["1", ' + number.encode() + b"]}",
            headers=auth,
        )
        assert refused.status_code == 400, (number, refused.text)
        assert refused.json()["error"]["message"].startswith(
            "The request was not valid: discord_ids[1] (body): "
        ), refused.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"discord_ids": ["\xff"]}', ""),  # a string that is not UTF-8
        (b'{"discord_ids": ["1"], "\xc0\x80": 1}', ""),  # an overlong UTF-8 key
        (b'{"discord_ids": [' + b"[" * 1000 + b"]" * 1000 + b"]}", ""),  # 2 KB of nesting
        (b'{"discord_ids": ', "input data was truncated"),
        (b'{"discord_ids": ["1"]} x', "trailing characters"),
        (b"discord_ids=1", "invalid character"),
    ],
)
async def test_a_bulk_body_msgspec_cannot_read_is_a_400_saying_why(
    client: Client, h: Harness, body: bytes, says: str
) -> None:
    """Litestar turns msgspec's DecodeError into a 400, but not the first three (an attacker's
    review: any key holder got a 500 and a logged traceback per request). The README's table:
    a 400's message names what is wrong; a body that is not JSON got only "The request was
    not valid." (Litestar raises a ClientException for it, not the ValidationException the
    message's code looked for)."""
    key = (await h.container.create_api_key().execute("bulk")).token
    answer = await client.post(
        "/api/v1/links/lookup",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "http_400"
    message = answer.json()["error"]["message"]
    assert message.startswith("The request was not valid: JSON is malformed: "), message
    assert says in message


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_a_bulk_body_sent_as_another_type_than_json_is_a_415(
    client: Client, h: Harness, content_type: str
) -> None:
    """A body labelled a form or text was read as JSON all the same (what `curl -d` sends
    without `-H 'Content-Type: application/json'`): refused, saying which type to send."""
    key = (await h.container.create_api_key().execute("bulk")).token
    auth = {"Authorization": f"Bearer {key}"}
    body = b'{"discord_ids": ["1"]}'
    refused = await client.post(
        "/api/v1/links/lookup", content=body, headers={**auth, "Content-Type": content_type}
    )
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"] == {
        "code": "http_415",
        "message": "Send the body as JSON, with 'Content-Type: application/json'.",
    }
    for taken in ("application/json", "application/json; charset=utf-8", "application/x+json"):
        answer = await client.post(
            "/api/v1/links/lookup", content=body, headers={**auth, "Content-Type": taken}
        )
        assert answer.status_code == 200, (taken, answer.text)


async def test_a_bulk_lookup_without_a_body_is_told_so(client: Client, h: Harness) -> None:
    """Litestar names a body it did not get by the KeyError it caught: the message was "The
    request was not valid: data (body): 'data'" (an attacker's review)."""
    key = (await h.container.create_api_key().execute("bulk")).token
    for headers in ({"Content-Type": "application/json"}, {}):
        answer = await client.post(
            "/api/v1/links/lookup",
            content=b"",
            headers={"Authorization": f"Bearer {key}", **headers},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == {
            "code": "http_400",
            "message": "The request was not valid: the body is empty: send a JSON object "
            "(/schema/openapi.json shows which)",
        }


async def test_an_id_with_a_line_break_at_its_end_is_refused(client: Client, h: Harness) -> None:
    """Python's "$" matches before a last line break, and int() ignores it: "123\n" passed
    the pattern the schema documents (which it does not match) as 123."""
    key = (await h.container.create_api_key().execute("reader")).token
    auth = {"Authorization": f"Bearer {key}"}
    path = await client.get("/api/v1/links/123%0A", headers=auth)
    assert path.status_code == 400, path.text
    bulk = await client.post("/api/v1/links/lookup", json={"discord_ids": ["123\n"]}, headers=auth)
    assert bulk.status_code == 400, bulk.text
    account = await client.get(
        "/api/v1/accounts/5f0c2b6e-8d1a-4c39-9f4e-2a7b3c1d0e9f%0A/link", headers=auth
    )
    assert account.status_code == 400, account.text
    # Refused as the pattern refuses any other id (the README's table: http_400, the part
    # named), not as "invalid_input" with the line break echoed (an attacker's review).
    for answer, part in ((path, "discord_id (path)"), (account, "account_id (path)")):
        error = answer.json()["error"]
        assert error["code"] == "http_400"
        assert error["message"].startswith(f"The request was not valid: {part}: "), error
        assert "\n" not in error["message"]


async def test_a_head_of_discords_callback_spends_nothing(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """A HEAD of the page back from Discord ran as its GET: it spent the state and signed
    in, in an answer nobody reads (a download manager's or a link checker's HEAD, sent with
    the browser's cookies before its GET), and the browser's own load was then told "used
    already". HEAD has no side effects: nothing spent, no cookie, the state left to the GET."""
    h.discord_user(5010, email="head@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(5010))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    head = await client.head(callback, follow_redirects=False)
    assert head.status_code == 200
    assert head.content == b""
    assert "set-cookie" not in head.headers
    assert head.headers["cache-control"] == "no-store"
    assert all(p.consumed_at is None for p in db.tables.pending_logins.values())
    done = await client.get(callback, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account"


@pytest.mark.parametrize(
    "fetch",
    [
        # A sibling subdomain's <img>: SameSite=Lax cookies go with a same-site subresource.
        {"sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"},
        {"sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "script"},
        {"sec-fetch-site": "same-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe"},
        {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"},
        {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"},
        # Chromium before Sec-Fetch-Dest (79 and older): its mode says what it is.
        {"sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors"},
        # A sibling subdomain's speculation rules: a navigational prefetch (or a prerender),
        # a document with the same-site cookies, before (and whether or not) anyone goes.
        {
            "sec-fetch-site": "same-site",
            "sec-fetch-mode": "navigate",
            "sec-fetch-dest": "document",
            "sec-purpose": "prefetch",
        },
        {
            "sec-fetch-site": "same-site",
            "sec-fetch-mode": "navigate",
            "sec-fetch-dest": "document",
            "sec-purpose": "prefetch;prerender",
        },
        {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document", "purpose": "prefetch"},
        # Browsers before Fetch Metadata, as the sign-in limit knows them: Firefox's prefetch
        # and Safari's preview (a page loaded for its thumbnail, with the cookies).
        {"x-moz": "prefetch"},
        {"x-purpose": "preview"},
        {"sec-purpose": "prerender"},
    ],
)
async def test_discords_callback_loaded_as_no_page_spends_nothing(
    client: Client, h: Harness, db: MemoryDatabase, fetch: dict[str, str]
) -> None:
    """An attacker's review: a sibling subdomain's page that knows a state (a callback URL
    seen in a log, say) could load ``/auth/discord/callback?state=…&error=…`` as an image,
    with the browser's cookies (SameSite=Lax lets a same-site subresource have them), and
    spend it: its person's own load then said "used already". Only a page load (a document,
    as Fetch Metadata says; a browser that sends none is taken as one) may spend it."""
    h.discord_user(5012, email="img@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(5012))
    for callback in (
        f"/auth/discord/callback?state={approval.state}&error=access_denied",
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
    ):
        refused = await client.get(callback, headers=fetch, follow_redirects=False)
        assert refused.status_code == 403, refused.text
        assert "set-cookie" not in refused.headers
    assert all(p.consumed_at is None for p in db.tables.pending_logins.values())
    navigated = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
    done = await client.get(
        callback, headers={**navigated, "sec-fetch-dest": "document"}, follow_redirects=False
    )
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account"


async def test_a_reload_of_an_expired_sign_in_says_it_expired(client: Client, h: Harness) -> None:
    """The refusal of an expired state spent it, so the page reloaded said "used already"
    (the page back from Discord reloaded, or opened again from history) instead of what
    happened: the person took more than 10 minutes at Discord."""
    h.discord_user(5011, email="late@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(5011))
    h.clock.advance(timedelta(minutes=10))  # the boundary: expired
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    for _ in range(2):
        answer = await client.get(callback, follow_redirects=False)
        assert answer.status_code == 410, answer.text
        assert "more than 10 minutes at Discord" in answer.text


@pytest.mark.parametrize(
    "next_path",
    [
        "/auth/discord/login",
        "/auth/discord/login?switch=true",
        "/auth//discord/./login",
        "/auth/discord/%6Cogin/",
        "/auth/discord/callback?state=x&error=access_denied",
        "/auth/discord/confirming?state=x",
        "/signin?next=/auth/discord/login",
    ],
)
async def test_a_password_sign_in_never_returns_to_a_round_trip_start(
    client: Client, next_path: str
) -> None:
    """An attacker's review: ``/signin?next=/auth/discord/login`` sent its person, right
    after their password sign-in, through a Discord round trip (this site's own redirect, so
    no page to continue from): Discord sends a returning person straight back, so the
    session just made ended for the Discord account left signed in in the browser (on a
    shared computer, someone else's). Such a destination becomes the default."""
    await sign_up(client)
    await post_form(client, "/account", "/signout", {})
    page = await client.get(f"/signin?next={quote(next_path)}")
    assert '/auth/discord/login?next=/account"' in page.text  # its Discord button too
    answer = await client.post(
        "/signin",
        data={
            "login": "alice",
            "password": PASSWORD,
            "next": next_path,
            "_csrf_token": csrf_token(page.text),
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/account"
    # Signed in, the sign-in page goes on to where it was asked to: not there either.
    again = await client.get(f"/signin?next={quote(next_path)}", follow_redirects=False)
    assert again.headers["location"] == "/account"
    # Nor does a Discord sign-in, nor a sign-up.
    assert sign_in_destination(next_path) == "/account"
    await post_form(client, "/account", "/signout", {})
    signup = await post_form(
        client,
        f"/signup?next={quote(next_path)}",
        "/signup",
        {"username": "bob", "email": "bob@example.com", "password": PASSWORD, "next": next_path},
    )
    assert urlsplit(str(signup.url)).path == "/account"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"discord_ids": ["1"], "discord_ids": ["2"]}', '"discord_ids"'),
        # The same name however it is escaped: JSON compares names after unescaping.
        (b'{"discord_ids": ["1"], "discord_\\u0069ds": ["2"]}', '"discord_ids"'),
        # In any object, at any depth (refused, not left to the schema to miss).
        (b'{"discord_ids": ["1"], "x": {"a": 1, "a": 2}}', '"a"'),
    ],
)
async def test_a_json_body_with_a_repeated_key_is_a_400_naming_it(
    client: Client, h: Harness, body: bytes, key: str
) -> None:
    """A key given twice in one object was read last-key-wins: {"discord_ids": [A],
    "discord_ids": [B]} looked up B, where a proxy, a log or a WAF that reads the first one
    saw A. Refused, the message naming the key; once each is still read."""
    token = (await h.container.create_api_key().execute("bulk")).token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = await client.post("/api/v1/links/lookup", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "code": "http_400",
        "message": f"The request was not valid: JSON is malformed: the key {key} appears "
        "more than once in one object",
    }
    once = b'{"discord_ids": ["1", "2"], "x": {"a": 1, "b": {"a": 2}}}'
    taken = await client.post("/api/v1/links/lookup", content=once, headers=headers)
    assert taken.status_code == 200, taken.text
