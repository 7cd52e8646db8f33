"""The account page's sessions and "confirm it is you", through the web app (Litestar's test
client, in-memory adapters, the fake Discord)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain.model import DiscordId
from domain.use_cases import TicketIssued
from domain.use_cases._passwords import trusted_device
from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness
from tests.web_support import Client, csrf_token, double_click, post_form, sign_up


async def _discord_login(client: Client, h: Harness, discord_id: int) -> None:
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    done = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    assert done.status_code == 200, done.text


async def test_the_account_page_lists_sessions_and_ends_one(h: Harness, client: Client) -> None:
    await sign_up(client)
    async with AsyncTestClient(app=create_app(h.container)) as phone:
        signed_in = await post_form(
            phone, "/signin", "/signin", {"login": "alice", "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        page = await client.get("/account")
        assert page.text.count("/account/sessions/") == 2  # the phone's row and "everywhere"
        assert "this device" in page.text
        action = page.text.split('action="/account/sessions/', 1)[1].split('"', 1)[0]
        ended = await client.post(
            f"/account/sessions/{action}", data={"_csrf_token": csrf_token(page.text)}
        )
        assert "That session is signed out" in ended.text
        assert (await phone.get("/account", follow_redirects=False)).status_code == 302
    assert (await client.get("/account")).status_code == 200


async def test_sign_out_everywhere(h: Harness, client: Client) -> None:
    await sign_up(client)
    trusted = client.cookies.get("tfl_device")
    assert trusted
    answer = await post_form(client, "/account", "/account/sessions/end-all", {})
    assert "You are signed out everywhere" in answer.text
    assert (await client.get("/account", follow_redirects=False)).status_code == 302
    # Every device token ended, this browser's too: it got a new one, and stays trusted.
    renewed = client.cookies.get("tfl_device")
    assert renewed not in (None, trusted)
    [alice] = await h.all_accounts_with_email("alice@example.com")
    assert trusted_device(h.container.tokens(), alice, renewed)
    assert not trusted_device(h.container.tokens(), alice, trusted)


@pytest.mark.parametrize(
    ("action", "data", "done"),
    [
        (
            "/account/password",
            {"current_password": PASSWORD, "new_password": "a brand new secret phrase"},
            "Your password is saved",
        ),
        ("/account/sessions/end-all", {}, "You are signed out everywhere"),
    ],
)
async def test_a_reset_link_sent_before_ends_with_a_new_password_or_signing_out_everywhere(
    h: Harness, client: Client, action: str, data: dict[str, str], done: str
) -> None:
    """Someone read a reset link (a mailbox opened once, a forwarded email); the owner,
    worried, changes the password or signs out everywhere: the link must not take the
    account back from them (helper-54's review)."""
    await sign_up(client)
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    leaked = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    answer = await post_form(client, "/account", action, data)
    assert done in answer.text
    async with AsyncTestClient(app=create_app(h.container)) as someone:
        page = f"/password/reset/{leaked}"
        assert (await someone.get(page)).status_code == 410
        # The link's page has no form now: its CSRF token comes from another page.
        taken = await post_form(
            someone, "/password/reset", page, {"new_password": "taken over 4 good"}
        )
        assert taken.status_code == 410
        assert (await someone.get("/account", follow_redirects=False)).status_code == 302


async def _signed_up_linked_and_proof_stale(
    h: Harness, client: Client, db: MemoryDatabase, discord_id: int
) -> None:
    """Signed up (the account alice), Discord linked, the sign-in's proof 11 minutes old."""
    await sign_up(client)
    h.discord_user(discord_id, username="alice_d")
    alice = next(iter(db.tables.accounts.values()))
    await h.discord_link(alice.id, h.discord.users[DiscordId(discord_id)])
    h.clock.advance(timedelta(minutes=11))


async def test_a_stale_proof_sends_sensitive_forms_to_confirm_it_is_you(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    await _signed_up_linked_and_proof_stale(h, client, db, 7100)

    page = await client.get("/account")
    assert 'id="unlink_password"' in page.text  # the form asks for the password now
    refused = await client.post(
        "/account/discord/unlink",
        data={"_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    assert refused.status_code == 303
    assert refused.headers["location"] == "/account/confirm"
    assert DiscordId(7100) in db.tables.links

    wrong = await post_form(client, "/account/confirm", "/account/confirm", {"password": "no"})
    assert wrong.status_code == 401
    assert "not right" in wrong.text
    confirmed = await post_form(
        client, "/account/confirm", "/account/confirm", {"password": PASSWORD}
    )
    assert "for the next 10 minutes" in confirmed.text
    assert 'id="unlink_password"' not in confirmed.text
    unlinked = await post_form(client, "/account", "/account/discord/unlink", {})
    assert "Discord is unlinked" in unlinked.text


async def test_a_double_clicked_confirm_keeps_its_person_signed_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A double click on "Confirm" signed its person out: the browser left the first request
    for the second, so the new token the first one renewed the session under never reached
    it, and the second came with the old one, ended. The second now gets the first one's
    token, and says what happened."""
    await sign_up(client, "alice")
    h.clock.advance(timedelta(minutes=30))
    page = await client.get("/account/confirm")
    form = {"password": PASSWORD, "_csrf_token": csrf_token(page.text)}
    first, second = await double_click(client, "/account/confirm", form)
    assert first.headers["location"] == "/account?notice=confirmed"
    renewed = first.cookies["tfl_session"]
    assert second.headers["location"] == "/account?notice=confirmed_twice"
    assert second.cookies["tfl_session"] == renewed
    account = await client.get(second.headers["location"])
    assert "sent twice and counted once" in account.text
    assert 'id="unlink_password"' not in account.text  # proved: no password asked
    assert len(db.tables.sessions) == 1


async def test_a_double_clicked_password_change_keeps_its_person_signed_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A double click on "Save password": the browser left the first request for the second,
    so the new token the first renewed the session under never reached it, and the second
    came with the old one, ended: it was sent to sign in. It now gets the first one's token."""
    await sign_up(client, "alice")
    page = await client.get("/account")
    new = "a brand new password"
    form = {
        "current_password": PASSWORD,
        "new_password": new,
        "_csrf_token": csrf_token(page.text),
    }
    first, second = await double_click(client, "/account/password", form)
    assert first.headers["location"] == "/account?notice=password"
    renewed = first.cookies["tfl_session"]
    assert second.headers["location"] == "/account?notice=password_twice"
    assert second.cookies["tfl_session"] == renewed
    account = await client.get(second.headers["location"])
    assert "sent twice and counted once" in account.text
    assert len(db.tables.sessions) == 1


async def test_a_discord_only_account_confirms_with_discord(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    h.discord_user(7101, username="dora", email="dora@example.com")
    await _discord_login(client, h, 7101)
    h.clock.advance(timedelta(minutes=11))

    page = await client.get("/account")
    assert "confirm it is you</a> with Discord" in page.text
    assert 'name="new_password"' not in page.text
    confirm = await client.get("/account/confirm")
    assert "@dora" in confirm.text
    started = await client.post(
        "/account/confirm/discord",
        data={"_csrf_token": csrf_token(confirm.text)},
        follow_redirects=False,
    )
    assert started.status_code == 302
    approval = h.discord.approve(started.headers["location"], DiscordId(7101))
    done = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    assert "for the next 10 minutes" in done.text
    saved = await post_form(client, "/account", "/account/password", {"new_password": PASSWORD})
    assert "Your password is saved" in saved.text
    assert next(iter(db.tables.accounts.values())).has_password


async def test_a_copy_of_the_session_cookie_gets_nothing_from_its_owners_proof(
    h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's review: the proof of identity was kept on the session, which a copy of
    its cookie shares. A thief waited for the owner to confirm the password, then changed
    the email (and could reset the password from there); the owner's password change, which
    ends the other sessions, did not end this same one. Each proof and each change of the
    password or email now gives the session a new token."""
    app = create_app(h.container)
    async with AsyncTestClient(app=app) as owner, AsyncTestClient(app=app) as thief:
        await sign_up(owner)
        stolen = owner.cookies["tfl_session"]
        thief.cookies.set("tfl_session", stolen)
        h.clock.advance(timedelta(minutes=11))
        assert "Your account" in (await thief.get("/account")).text  # the copy works

        confirmed = await post_form(
            owner, "/account/confirm", "/account/confirm", {"password": PASSWORD}
        )
        assert "for the next 10 minutes" in confirmed.text
        assert owner.cookies["tfl_session"] != stolen
        taken = await thief.get("/account", follow_redirects=False)
        assert taken.status_code == 302  # signed out: to the sign-in page
        assert taken.headers["location"].startswith("/signin")
        refused = await thief.post(
            "/account/email", data={"email": "mallory@evil.example"}, follow_redirects=False
        )
        assert refused.status_code in (303, 403)
        assert await h.all_accounts_with_email("mallory@evil.example") == []

        # Copied again after the proof: the owner's password change ends it too.
        thief.cookies.set("tfl_session", owner.cookies["tfl_session"])
        changed = await post_form(
            owner,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "another correct horse 77"},
        )
        assert "Your password is saved" in changed.text
        assert (await thief.get("/account", follow_redirects=False)).status_code == 302
        # And the email change: the owner goes on, the copy made just before does not.
        thief.cookies.set("tfl_session", owner.cookies["tfl_session"])
        moved = await post_form(owner, "/account", "/account/email", {"email": "al@new.example"})
        assert moved.status_code == 200, moved.text
        assert "Your account" in (await owner.get("/account")).text
        assert (await thief.get("/account", follow_redirects=False)).status_code == 302
    assert [a.email for a in db.tables.accounts.values()] == ["al@new.example"]


async def test_a_stolen_old_cookie_cannot_sign_its_owner_out_after_a_password_change(
    h: Harness,
) -> None:
    """Signing out with a cookie ends the sessions a form renewed it into, for a form sent
    twice whose answer was lost. A thief keeping a copy of the cookie signed its owner out of
    the session kept after the password change the theft was changed against, by signing
    out with the copy, or by signing in with it to an account of the thief's own. Past the
    double click's window (``SENT_TWICE_WITHIN``) it ends nothing of the owner's."""
    await h.sign_up("mallory", "mallory@example.com")
    app = create_app(h.container)
    async with AsyncTestClient(app=app) as owner:
        await sign_up(owner)
        stolen = owner.cookies["tfl_session"]
        h.clock.advance(timedelta(minutes=11))
        changed = await post_form(
            owner,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "another correct horse 77"},
        )
        assert "Your password is saved" in changed.text
        h.clock.advance(timedelta(minutes=2))

        async with AsyncTestClient(app=app) as thief:
            thief.cookies.set("tfl_session", stolen)
            page = await thief.get("/signin")
            out = await thief.post("/signout", data={"_csrf_token": csrf_token(page.text)})
            assert out.status_code == 200
        assert "Your account" in (await owner.get("/account")).text

        async with AsyncTestClient(app=app) as thief:
            thief.cookies.set("tfl_session", stolen)
            page = await thief.get("/signin")
            form = {"login": "mallory", "password": PASSWORD, "_csrf_token": csrf_token(page.text)}
            signed_in = await thief.post("/signin", data=form, follow_redirects=False)
            assert signed_in.status_code in (302, 303)
            assert signed_in.headers["location"] == "/account"
        assert "Your account" in (await owner.get("/account")).text


async def test_confirming_is_rate_limited(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=3)) as client:
        await sign_up(client)  # one of the three
        statuses = []
        for _ in range(4):
            answer = await post_form(
                client, "/account/confirm", "/account/confirm", {"password": "guess"}
            )
            statuses.append(answer.status_code)
    assert statuses[0] == 401
    assert 429 in statuses


async def test_the_sign_up_page_lands_on_the_account_page_with_its_welcome(client: Client) -> None:
    """The page's form sends its hidden ``next`` (``/account`` when not told another one)."""
    data = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    page = await client.get("/signup")
    assert 'name="next" value="/account"' in page.text
    signed_up = await client.post(
        "/signup",
        data={**data, "next": "/account", "_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    assert signed_up.headers["location"] == "/account?notice=welcome"


async def test_a_double_clicked_sign_up_signs_its_person_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A double click on "Create account": the browser left the first request for the
    second, which said "This username is taken": not signed in, although the first made the
    account. The second now gets the first one's session; the same form from another browser
    (its own CSRF cookie) is still "taken"."""
    data = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    page = await client.get("/signup")
    form = {**data, "next": "/account", "_csrf_token": csrf_token(page.text)}
    before = dict(client.cookies)
    first = await client.post("/signup", data=form, follow_redirects=False)
    assert first.headers["location"] == "/account?notice=welcome"
    session = first.cookies["tfl_session"]
    client.cookies.clear()  # the browser never received the first answer
    for name, value in before.items():
        client.cookies.set(name, value)

    second = await client.post("/signup", data=form, follow_redirects=False)
    assert second.headers["location"] == first.headers["location"]
    assert second.cookies["tfl_session"] == session
    account = await client.get("/account")
    assert account.url.path == "/account"  # signed in, not sent to sign in
    assert len(db.tables.sessions) == 1

    async with AsyncTestClient(app=create_app(h.container)) as stranger:
        taken = await post_form(stranger, "/signup", "/signup", {**data, "next": "/account"})
        assert taken.status_code == 409
        assert "tfl_session" not in stranger.cookies
    assert len(db.tables.sessions) == 1


@pytest.mark.parametrize("form", ["unlink", "link"])
async def test_a_wrong_current_password_on_the_account_pages_discord_forms_shows_the_page_again(
    h: Harness, client: Client, db: MemoryDatabase, form: str
) -> None:
    """A review with a screen reader: a wrong password in the account page's Discord forms
    answered a "Wrong password" page of its own, its error tied to no field, whose "Try
    again" opened the account page to find the field again. It is the account page again, the
    error on that form's password field (invalid, described by the error, focused), as the
    password and email forms answer, still signed in (no "Please sign in")."""
    action, field_id, linked = f"/account/discord/{form}", f"{form}_password", form == "unlink"
    if linked:
        await _signed_up_linked_and_proof_stale(h, client, db, 7102)
    else:
        await sign_up(client)
        h.clock.advance(timedelta(minutes=11))

    wrong = await post_form(client, "/account", action, {"current_password": "not it 7x"})
    assert wrong.status_code == 401
    assert "<h1>Your account</h1>" in wrong.text
    assert "Your current password is not right." in wrong.text
    assert "not it 7x" not in wrong.text
    fields = dict(re.findall(r'<input id="([a-z_]+)"([^>]*)>', wrong.text))
    assert 'aria-invalid="true" aria-describedby="error" autofocus' in fields[field_id]
    assert [f for f, attributes in fields.items() if "aria-invalid" in attributes] == [field_id]
    assert f'action="{action}"' in wrong.text  # its form, still working
    assert "Please sign in" not in wrong.text
    # Still signed in: the header offers the account, not signing in.
    assert 'href="/signin' not in wrong.text
    assert (DiscordId(7102) in db.tables.links) is linked


async def test_a_wrong_current_password_on_a_link_button_page_offers_it_again(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    await sign_up(client)
    h.clock.advance(timedelta(minutes=11))  # the page asks for the password now
    discord = h.discord_user(7103, username="alice_d")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"

    wrong = await post_form(client, path, path, {"current_password": "not it 7x"})
    assert wrong.status_code == 401
    # The page again, the error on its password field (a page of its own, "Wrong password",
    # had no field to tie it to, and its "Try again" opened this page, to find the field).
    assert "<h1>Link a Discord account</h1>" in wrong.text
    assert "Your current password is not right." in wrong.text
    field = re.search(r'<input id="current_password"[^>]*>', wrong.text)
    assert field is not None, wrong.text
    assert 'aria-invalid="true" aria-describedby="error" autofocus' in field.group(0)
    assert f'action="{path}"' in wrong.text  # the button still works
    assert 'href="/signin' not in wrong.text  # still signed in
    assert "not it 7x" not in wrong.text
    assert db.tables.links == {}


async def test_a_link_button_page_whose_proof_lapsed_while_open_asks_the_password(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The page was shown within 10 minutes of signing in (no password field); "Continue
    with Discord" came later. The proof is needed again: the same page asks for the password,
    the button still working. It went to the account page's "Confirm it is you", which then
    ended on the account page: the /link page was gone, to be found again in Discord."""
    await sign_up(client)
    h.clock.advance(timedelta(minutes=9))
    discord = h.discord_user(7104, username="alice_d")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    path = f"/link/{issued.token}"
    shown = await client.get(path)
    assert 'name="current_password"' not in shown.text  # proved less than 10 minutes ago
    h.clock.advance(timedelta(minutes=2))

    lapsed = await client.post(
        path, data={"_csrf_token": csrf_token(shown.text)}, follow_redirects=False
    )

    assert lapsed.status_code == 303
    assert lapsed.headers["location"] == f"{path}?proof=again"
    again = await client.get(lapsed.headers["location"])
    assert 'name="current_password"' in again.text
    assert "more than 10 minutes ago: type it again" in again.text
    started = await client.post(
        path,
        data={"_csrf_token": csrf_token(again.text), "current_password": PASSWORD},
        follow_redirects=False,
    )
    assert started.status_code == 302
    assert "prompt=consent" in started.headers["location"]
    assert db.tables.links == {}


_LABEL = re.compile(r'<label for="([^"]+)">(.*?)</label>', re.DOTALL)


def _field_names(page: str) -> dict[str, str]:
    """Each labelled field's name as a screen reader reads it (its label's words, those shown
    only to screen readers too), by the field's id."""
    return {
        field: " ".join(html.unescape(re.sub(r"<[^>]+>", "", words)).split())
        for field, words in _LABEL.findall(page)
    }


async def test_the_account_pages_password_fields_say_which_form_each_is_for(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A review with a screen reader: past the proof's 10 minutes, the account page's Discord,
    password and email forms each ask for the password, and a screen reader's list of fields
    read "Current password" three times, nothing telling which form each was in. Each still
    starts with the words shown ("Current password")."""
    await sign_up(client)
    h.clock.advance(timedelta(minutes=11))
    unlinked = _field_names((await client.get("/account")).text)
    h.discord_user(7110, username="alice_d")
    alice = next(iter(db.tables.accounts.values()))
    await h.discord_link(alice.id, h.discord.users[DiscordId(7110)])
    h.clock.advance(timedelta(minutes=11))
    linked = _field_names((await client.get("/account")).text)

    for names, discord_field in ((unlinked, "link_password"), (linked, "unlink_password")):
        asked = [discord_field, "current_password", "email_password"]
        assert set(asked) <= set(names), names
        assert all(names[field].startswith("Current password") for field in asked), names
        assert len(set(names.values())) == len(names), names
    assert unlinked["link_password"] != linked["unlink_password"]


_HEADER_ACCOUNT_LINK = re.compile(r'<header>.*?<a href="/account">(.*?)</a>', re.DOTALL)


async def test_the_headers_link_to_the_account_says_what_it_is(client: Client) -> None:
    """A review with a screen reader: the header's link to the account page was named by the
    username alone ("alice"), nothing saying where it led. Its name says so (the words shown
    only to screen readers), the username still what is shown."""
    await sign_up(client)
    page = (await client.get("/account")).text
    found = _HEADER_ACCOUNT_LINK.search(page)
    assert found is not None, page
    read = " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())
    shown = re.sub(r'<span class="visually-hidden">.*?</span>', "", found.group(1))
    assert read == "Your account: alice"
    assert shown == "alice"
