"""Email linking "confirm" through the web pages: the password path and the emailed link,
which works only in the browser that signed in with Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from httpx import Response
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryUnitOfWork
from domain import errors
from domain.model import AuditKind, DiscordId
from domain.ports import EmailMessage
from entrypoints.container import build_container
from entrypoints.web import create_app
from tests.bot_support import wait_until
from tests.harness import PASSWORD, Harness, make_settings
from tests.unit.test_web_discord_confirm_twice import (
    _cookies_back,
    _discord_held,
    _first_load,
    _refreshes_to,
)
from tests.web_support import Client, csrf_token, post_form

PAGE = "/auth/discord/confirm-link"


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness.build(build_container(make_settings(email_linking="confirm")))
    yield harness
    harness.container.unwire()


async def _discord_sign_in(client: Client, h: Harness, discord_id: int) -> Response:
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    return await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")


async def _emailed_link(client: Client, h: Harness, page: Response) -> str:
    """Bob asks for the emailed link on the page waiting for his proof: the link's path."""
    await client.post(
        "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(page.text)}
    )
    return await h.emailed_link("bob@example.com", "/auth/discord/confirm-link/")


async def test_an_unconfirmed_address_gets_no_emailed_link(h: Harness) -> None:
    await h.sign_up("mallory", "victim@example.com")
    h.discord_user(9003, username="victim_d", email="victim@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9003)
        assert "The password of mallory" in page.text
        assert "Email me a link" not in page.text
        refused = await client.post(
            "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(page.text)}
        )
        assert refused.status_code == 400


async def test_the_password_links_and_signs_in(h: Harness) -> None:
    await h.sign_up("alice", "alice@example.com", verified=True)
    h.discord_user(9001, username="alice_d", email="alice@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9001)
        assert page.url.path == "/auth/discord/confirm-link"
        assert "@alice_d" in page.text
        assert "The password of alice" in page.text
        assert (await client.get("/account", follow_redirects=False)).status_code == 302

        wrong = await post_form(client, page.url.path, page.url.path, {"password": "wrong"})
        assert wrong.status_code == 401
        # Audited as the sign-in form's wrong passwords are, with the client's address.
        failed = [
            e
            for e in await h.container.read_audit_trail().execute(discord_id=DiscordId(9001))
            if e.kind is AuditKind.SIGN_IN_FAILED
        ]
        assert [e.detail["client"] for e in failed] == ["testclient"]
        done = await post_form(client, page.url.path, page.url.path, {"password": PASSWORD})
        assert done.url.path == "/account"
        assert "@alice_d" in done.text  # linked, and signed in
        assert "tfl_link_proposal" not in client.cookies
        assert "tfl_device" in client.cookies  # trusted, as after a password sign-in


async def _password_sign_in(client: Client, login: str) -> None:
    answer = await post_form(client, "/signin", "/signin", {"login": login, "password": PASSWORD})
    assert answer.url.path == "/account", answer.text


@pytest.mark.parametrize("ends", ["/signout", "/account/sessions/end-all", "/signin"])
async def test_the_offer_waiting_in_this_browser_ends_with_its_session(
    h: Harness, ends: str
) -> None:
    """An attacker's review: the offer waiting for a proof (its cookie, 30 minutes) outlived
    signing out: at a shared computer, the next person saw it (the Discord and TaskFlow
    usernames) and could have a link emailed. It now ends wherever a session ends in this
    browser: signing out (here, or everywhere), and signing in (the session it had ends)."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        page = await _discord_sign_in(client, h, 9002)
        assert page.url.path == "/auth/discord/confirm-link"
        assert "@bob_d" in page.text
        if ends == "/signin":
            await _password_sign_in(client, "carol")
        else:
            await post_form(client, "/account", ends, {})
        assert "tfl_link_proposal" not in client.cookies
        offer = await client.get("/auth/discord/confirm-link")
        assert offer.status_code != 200
        assert "bob" not in offer.text
        form = await client.get("/signin")  # a page with a CSRF token (the refusal has none)
        emailed = await client.post(
            "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(form.text)}
        )
        assert emailed.status_code != 200  # nothing to email a link for


@pytest.mark.parametrize(
    "ends", ["this session", "everywhere", "sign in", "sign up", "password reset"]
)
async def test_a_database_failing_while_a_session_ends_leaves_nothing_half_done(
    h: Harness, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch, ends: str
) -> None:
    """Ending this browser's session (its own row on the account page, "sign out
    everywhere", or signing in, up or with a reset link, which replaces it) and spending the
    offer waiting in it were two transactions: the database failing between them answered a
    503 with one done (the session ended, or a new one made that no browser holds, the
    password reset) and the offer alive. One transaction now: the failure leaves everything
    as it was, and the form sent again does it all."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        assert (await _discord_sign_in(client, h, 9002)).url.path == PAGE
        token = client.cookies["tfl_session"]
        page, form = "/account", {}
        if ends == "everywhere":
            action = "/account/sessions/end-all"
        elif ends == "sign in":
            page = action = "/signin"
            form = {"login": "carol", "password": PASSWORD}
        elif ends == "sign up":
            page = action = "/signup"
            form = {"username": "dave", "email": "dave@example.com", "password": PASSWORD}
        elif ends == "password reset":
            await h.container.request_password_reset().execute("carol@example.com")
            await h.deliver()
            link = h.link_token(h.last_email("carol@example.com"), "/password/reset/")
            page = action = f"/password/reset/{link}"
            form = {"new_password": "a brand new passphrase"}
        else:
            current = (await h.container.list_sessions().execute(token)).current
            action = f"/account/sessions/{current.id}/end"
        await client.get(page)
        sessions, offers = dict(db.tables.sessions), dict(db.tables.link_proposals)
        commit = MemoryUnitOfWork.commit

        async def failing_when_the_offer_ends(self: MemoryUnitOfWork) -> None:
            if self.work.link_proposals != self._db.tables.link_proposals:
                raise errors.StorageError()  # the database went away
            await commit(self)

        monkeypatch.setattr(MemoryUnitOfWork, "commit", failing_when_the_offer_ends)
        failed = await post_form(client, page, action, form)
        assert failed.status_code == 503
        monkeypatch.undo()
        assert db.tables.sessions == sessions
        assert db.tables.link_proposals == offers
        assert "@bob_d" in (await client.get(PAGE)).text  # the offer, still there
        done = await post_form(client, page, action, form)
        assert done.url.path == (
            "/signin" if ends in ("this session", "everywhere") else "/account"
        )
        assert await h.container.current_session().execute(token) is None
        assert "tfl_link_proposal" not in client.cookies
        assert all(p.consumed_at is not None for p in db.tables.link_proposals.values())


@pytest.mark.parametrize("proof", ["password", "emailed link"])
async def test_a_database_failing_while_a_link_signs_in_leaves_nothing_half_done(
    h: Harness, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch, proof: str
) -> None:
    """The offer confirmed (with the password, or the emailed link) links and signs in, and
    the session this browser had ends: two transactions, and the database failing between
    them answered a 503 with the accounts linked and a session made that no browser holds,
    the old one alive. One transaction now: nothing of it happens, and the form sent again
    does it all."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        offered = await _discord_sign_in(client, h, 9002)
        token = client.cookies["tfl_session"]
        page, form = PAGE, {"password": PASSWORD}
        if proof == "emailed link":
            page, form = await _emailed_link(client, h, offered), {}
        await client.get(page)
        tables = (dict(db.tables.sessions), dict(db.tables.links), dict(db.tables.link_proposals))
        commit = MemoryUnitOfWork.commit

        async def failing_when_a_session_ends(self: MemoryUnitOfWork) -> None:
            if set(self._db.tables.sessions) - set(self.work.sessions):
                raise errors.StorageError()  # the database went away
            await commit(self)

        monkeypatch.setattr(MemoryUnitOfWork, "commit", failing_when_a_session_ends)
        failed = await post_form(client, page, page, form)
        assert failed.status_code == 503
        monkeypatch.undo()
        assert (
            dict(db.tables.sessions),
            dict(db.tables.links),
            dict(db.tables.link_proposals),
        ) == tables
        assert await h.container.current_session().execute(token) is not None
        done = await post_form(client, page, page, form)
        assert done.url.path == "/account"
        assert "@bob_d" in done.text  # linked, and signed in as bob
        assert await h.container.current_session().execute(token) is None


async def test_a_database_failing_while_discord_signs_in_leaves_nothing_half_done(
    h: Harness, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Sign in with Discord" made its session, then the handler ended the one this browser
    had and the offer waiting in it: two transactions, and the database failing between them
    answered a 503 with a session made that no browser holds, the old one and the offer
    alive. One transaction now: nothing of it happens, and signing in again does it all."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    carol = (await h.sign_up("carol", "carol@example.com")).account
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    await h.discord_link(carol.id, h.discord_user(9003, username="carol_d"))
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        assert (await _discord_sign_in(client, h, 9002)).url.path == PAGE
        token = client.cookies["tfl_session"]
        tables = (dict(db.tables.sessions), dict(db.tables.link_proposals))
        commit = MemoryUnitOfWork.commit

        async def failing_when_a_session_ends(self: MemoryUnitOfWork) -> None:
            if set(self._db.tables.sessions) - set(self.work.sessions):
                raise errors.StorageError()  # the database went away
            await commit(self)

        monkeypatch.setattr(MemoryUnitOfWork, "commit", failing_when_a_session_ends)
        failed = await _discord_sign_in(client, h, 9003)
        assert failed.status_code == 503
        monkeypatch.undo()
        assert (dict(db.tables.sessions), dict(db.tables.link_proposals)) == tables
        assert await h.container.current_session().execute(token) is not None
        done = await _discord_sign_in(client, h, 9003)
        assert done.url.path == "/account"
        assert await h.container.current_session().execute(token) is None
        assert "tfl_link_proposal" not in client.cookies
        assert all(p.consumed_at is not None for p in db.tables.link_proposals.values())


async def test_the_emailed_link_links_in_the_browser_that_signed_in(
    h: Harness, db: MemoryDatabase
) -> None:
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9002)
        sent = await client.post(
            "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(page.text)}
        )
        assert "We are emailing bob@example.com a link" in sent.text
        # The app's own email worker sends it (and bob's earlier confirmation email): a pass
        # of the test's own could find them claimed by it and not sent yet.
        path = await h.emailed_link("bob@example.com", "/auth/discord/confirm-link/")

        async with AsyncTestClient(app=create_app(h.container)) as elsewhere:
            shown = await elsewhere.get(path)
            assert "Link and sign in" in shown.text
            refused = await elsewhere.post(path, data={"_csrf_token": csrf_token(shown.text)})
            assert refused.status_code == 404
            assert "browser where you signed in with Discord" in refused.text
        assert db.tables.links == {}

        shown = await client.get(path)
        done = await client.post(path, data={"_csrf_token": csrf_token(shown.text)})
        assert done.url.path == "/account"
        assert "@bob_d" in done.text
    assert DiscordId(9002) in db.tables.links


async def test_the_emailed_link_works_after_signing_in_with_discord_again_in_that_browser(
    h: Harness, db: MemoryDatabase
) -> None:
    """ "Email me a link", then, before it came, "Sign in with Discord" again (as the same
    Discord account, in the same browser): the first email's link said it "was sent for a
    Discord sign-in in another browser", and this browser's sign-in waited for a second
    email. The browser proves the Discord account the email names, and the link the
    mailbox: it links."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9002)
        path = await _emailed_link(client, h, page)

        again = await _discord_sign_in(client, h, 9002)
        assert again.url.path == "/auth/discord/confirm-link"
        shown = await client.get(path)
        done = await client.post(path, data={"_csrf_token": csrf_token(shown.text)})
        assert done.status_code == 200, done.text
        assert done.url.path == "/account"
        assert "@bob_d" in done.text
    assert (
        db.tables.links[DiscordId(9002)].account_id
        == (await h.all_accounts_with_email("bob@example.com"))[0].id
    )


async def test_the_emailed_link_links_only_the_discord_account_it_names(h: Harness) -> None:
    """A newer Discord sign-in in this browser as another Discord account (with the same
    address, as Discord may give it to a new account once the first gave it up) does not take
    the link the email named the first one in."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    h.discord_user(9004, username="bob_new", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9002)
        path = await _emailed_link(client, h, page)

        await _discord_sign_in(client, h, 9004)
        shown = await client.get(path)
        refused = await client.post(path, data={"_csrf_token": csrf_token(shown.text)})
        assert refused.status_code == 404
        assert "as another Discord account" in refused.text
    assert (
        await h.container.link_of_account().execute(
            (await h.all_accounts_with_email("bob@example.com"))[0].id
        )
        is None
    )


async def test_the_emailed_link_works_as_long_as_the_sign_in_it_confirms_and_says_so(
    h: Harness,
) -> None:
    """Asked for 20 minutes after the Discord sign-in, the link was said to work "within 30
    minutes" (the page) and until 30 minutes after it was sent (the email); the Discord
    sign-in it confirms ended 10 minutes later, and with it the link ("This confirmation
    took longer than 30 minutes")."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    signed_in_at = h.clock.now()
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9002)
        h.clock.advance(timedelta(minutes=20))
        sent = await client.post(
            "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(page.text)}
        )
        ends = (signed_in_at + timedelta(minutes=30)).strftime("%H:%M UTC")
        assert f"before {ends}" in sent.text
        assert "30 minutes" not in sent.text
        path = "/auth/discord/confirm-link/"

        def emailed() -> list[EmailMessage]:
            return [m for m in h.emails_to("bob@example.com") if path in m.text]

        await wait_until(lambda: bool(emailed()))  # the app's email worker sends it
        until = (signed_in_at + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M UTC")
        assert f"until {until}" in emailed()[0].text
        assert "(30 minutes)" not in emailed()[0].text


def _as_before(client: Client, before: dict[str, str]) -> None:
    """The browser's cookies as they were: it never received the answer to a request it left
    for the next one (a double click)."""
    client.cookies.clear()
    for name, value in before.items():
        client.cookies.set(name, value)


async def test_a_double_clicked_link_and_sign_in_with_the_password_signs_in(
    h: Harness, db: MemoryDatabase
) -> None:
    """A double click on "Link and sign in": the first request linked and started a session
    whose cookie the browser (it had left that request for the second) never received; the
    second found the Discord sign-in spent and said "This Discord account was already linked.
    Sign in again." With the password again, it now gets the first one's session; without
    it (a copy of the browser's cookies), nothing."""
    await h.sign_up("alice", "alice@example.com", verified=True)
    h.discord_user(9001, username="alice_d", email="alice@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9001)
        form = {"password": PASSWORD, "_csrf_token": csrf_token(page.text)}
        before, sessions = dict(client.cookies), len(db.tables.sessions)
        first = await client.post(page.url.path, data=form, follow_redirects=False)
        assert first.headers["location"] == "/account?notice=linked"
        session = first.cookies["tfl_session"]
        _as_before(client, before)

        guessed = await client.post(
            page.url.path, data={**form, "password": "not it"}, follow_redirects=False
        )
        assert "already linked" in guessed.text
        assert "tfl_session" not in guessed.cookies
        second = await client.post(page.url.path, data=form, follow_redirects=False)
        assert second.headers["location"] == "/account?notice=linked"
        assert second.cookies["tfl_session"] == session
        account = await client.get("/account")
        assert "@alice_d" in account.text
    assert len(db.tables.sessions) == sessions + 1


async def test_a_double_clicked_emailed_link_signs_in(h: Harness, db: MemoryDatabase) -> None:
    """The emailed link's "Link and sign in" clicked twice: the second found the link used
    ("This link has already been used") and its person was not signed in. It now gets the
    first one's session."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        page = await _discord_sign_in(client, h, 9002)
        path = await _emailed_link(client, h, page)
        shown = await client.get(path)
        form = {"_csrf_token": csrf_token(shown.text)}
        before, sessions = dict(client.cookies), len(db.tables.sessions)
        first = await client.post(path, data=form, follow_redirects=False)
        assert first.headers["location"] == "/account?notice=linked"
        session = first.cookies["tfl_session"]
        # The emailed link without the browser's Discord sign-in (another browser) gets nothing.
        _as_before(client, {k: v for k, v in before.items() if k != "tfl_link_proposal"})
        refused = await client.post(path, data=form, follow_redirects=False)
        assert "tfl_session" not in refused.cookies
        _as_before(client, before)

        second = await client.post(path, data=form, follow_redirects=False)
        assert second.headers["location"] == "/account?notice=linked"
        assert second.cookies["tfl_session"] == session
        assert "@bob_d" in (await client.get("/account")).text
    assert len(db.tables.sessions) == sessions + 1


async def _back_from_discord(client: Client, h: Harness, discord_id: int) -> str:
    """Start "Sign in with Discord" and approve it at Discord: the callback's URL."""
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def test_the_page_back_from_discord_loaded_twice_asks_for_the_proof_again(
    h: Harness, db: MemoryDatabase
) -> None:
    """The first load asked for the account's proof (its answer, with the proposal's cookie,
    left by the browser for the second: a double click on Authorize, a reload). Before, the
    second load said signing in with Discord did not go through. Now the same browser within
    the minute is sent to the same step again, with the same proposal (its token derived from
    the state), nothing made twice; anyone else, or later on, 'used already'."""
    await h.sign_up("alice", "alice@example.com", verified=True)
    h.discord_user(9011, username="alice_d", email="alice@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        callback = await _back_from_discord(client, h, 9011)
        before = dict(client.cookies)
        first = await client.get(callback, follow_redirects=False)
        assert first.headers["location"] == PAGE
        proposal = first.cookies["tfl_link_proposal"]
        _cookies_back(client, before)  # the first answer never reached the browser

        second = await client.get(callback, follow_redirects=False)
        assert second.status_code == 302, second.text
        assert second.headers["location"] == PAGE
        assert second.cookies["tfl_link_proposal"] == proposal
        page = await client.get(PAGE)
        assert "@alice_d" in page.text
        assert "The password of alice" in page.text
        assert len(db.tables.link_proposals) == 1
        assert "tfl_session" not in client.cookies  # nobody signed in yet

        async with AsyncTestClient(app=create_app(h.container)) as elsewhere:
            refused = await elsewhere.get(callback, follow_redirects=False)
            assert refused.status_code == 410
            assert "tfl_link_proposal" not in refused.cookies

        done = await post_form(client, PAGE, PAGE, {"password": PASSWORD})
        assert done.url.path == "/account"
        assert "@alice_d" in done.text  # linked, and signed in
        used = await client.get(callback, follow_redirects=False)  # the proposal spent
        assert used.status_code == 410
        assert "tfl_link_proposal" not in used.cookies
    assert len(db.tables.links) == 1


async def test_the_proof_asked_for_is_not_shown_again_after_the_minute(
    h: Harness, db: MemoryDatabase
) -> None:
    await h.sign_up("alice", "alice@example.com", verified=True)
    h.discord_user(9012, username="alice_d", email="alice@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        callback = await _back_from_discord(client, h, 9012)
        before = dict(client.cookies)
        assert (await client.get(callback, follow_redirects=False)).headers["location"] == PAGE
        _cookies_back(client, before)
        h.clock.advance(timedelta(minutes=1, seconds=1))
        refused = await client.get(callback, follow_redirects=False)
        assert refused.status_code == 410
        assert "used already" in refused.text
        assert "tfl_link_proposal" not in refused.cookies


async def test_the_waiting_page_leads_to_the_proof_asked_for(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second load came while the first still asked Discord ('Finishing your
    sign-in…'): once the first asked for the account's proof, the waiting page leads there,
    with the proposal."""
    await h.sign_up("alice", "alice@example.com", verified=True)
    h.discord_user(9013, username="alice_d", email="alice@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        callback = await _back_from_discord(client, h, 9013)
        before = dict(client.cookies)
        with _discord_held(h, monkeypatch) as discord:
            first = _first_load(client, callback)
            await discord.asked()
            waiting = await client.get(callback, follow_redirects=False)
            assert "Finishing your sign-in" in waiting.text
            discord.answer()
            proposal = (await first).cookies["tfl_link_proposal"]
        _cookies_back(client, before)
        done = await client.get(_refreshes_to(waiting.text), follow_redirects=False)
        assert done.status_code == 302, done.text
        assert done.headers["location"] == PAGE
        assert done.cookies["tfl_link_proposal"] == proposal
        assert "The password of alice" in (await client.get(PAGE)).text


@pytest.mark.parametrize("ends", ["/signout", "/account/sessions/end-all", "/signin"])
async def test_the_offer_ended_with_its_session_is_not_brought_back_by_the_page_from_discord(
    h: Harness, db: MemoryDatabase, ends: str
) -> None:
    """An attacker's review: the offer ends where a session ends in this browser (its cookie
    expired), yet its Discord sign-in's callback loaded again within the minute (the next
    person at a shared computer going back in the history) set that cookie again: its token
    is derived from the state, and the proposal was left waiting. The offer is now spent
    there too: that load says 'used already', and sets no cookie."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9021, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        callback = await _back_from_discord(client, h, 9021)
        first = await client.get(callback, follow_redirects=False)
        assert first.headers["location"] == PAGE
        if ends == "/signin":
            await _password_sign_in(client, "carol")
        else:
            await post_form(client, "/account", ends, {})
        assert "tfl_link_proposal" not in client.cookies

        again = await client.get(callback, follow_redirects=False)
        assert again.status_code == 410, again.text
        assert "tfl_link_proposal" not in again.cookies
        assert "bob" not in (await client.get(PAGE)).text
    assert not db.tables.links


@pytest.mark.parametrize("ends", ["/signout", "/signin"])
async def test_an_offer_whose_answer_was_lost_ends_with_this_browsers_session(
    h: Harness, db: MemoryDatabase, ends: str
) -> None:
    """An attacker's second look: the Discord sign-in asked for the account's proof first,
    and its answer (with the offer's cookie) never reached the browser (the tab closed under
    it), which stayed signed in as carol. Signing out spent only the offer its cookie named,
    none, so its callback loaded again within the minute (the next person at a shared
    computer going back in the history) set the offer's cookie and showed the Discord and
    TaskFlow usernames. The offers of this browser's sign-ins (its binding cookie) end too."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9022, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _password_sign_in(client, "carol")
        callback = await _back_from_discord(client, h, 9022)
        before = dict(client.cookies)
        first = await client.get(callback, follow_redirects=False)
        assert first.headers["location"] == PAGE
        _cookies_back(client, before)  # the answer lost: no offer's cookie
        if ends == "/signin":
            await _password_sign_in(client, "carol")
        else:
            await post_form(client, "/account", ends, {})

        again = await client.get(callback, follow_redirects=False)
        assert again.status_code == 410, again.text
        assert "tfl_link_proposal" not in again.cookies
        assert "bob" not in (await client.get(PAGE)).text
    assert not db.tables.links
