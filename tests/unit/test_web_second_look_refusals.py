"""A second look at the latest merges (helper-192), kept as regression tests:

- a sign-in refused for a reason of its own (here "an account with this email exists") is
  told again only to the browser that started it: another browser, even one holding a
  binding of its own flow, is told "used already" at the callback and at the waiting page,
  never the refusal (no account enumeration through someone else's state);
- ending another session from the account page leaves the email-linking offer waiting in
  this browser: "Link and sign in" with the password still links and signs in."""

from __future__ import annotations

import html

from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import DiscordId
from entrypoints.container import build_container
from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness, make_settings
from tests.web_support import post_form


async def test_a_refusal_is_not_told_to_another_browser(h: Harness) -> None:
    await h.sign_up("bob", "bob@example.com", verified=False)
    h.discord_user(9101, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as owner:
        started = await owner.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], DiscordId(9101))
        callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        first = await owner.get(callback, follow_redirects=False)
        assert errors.EmailBelongsToAccount.message in html.unescape(first.text), first.text
        again = await owner.get(callback, follow_redirects=False)
        assert errors.EmailBelongsToAccount.message in html.unescape(again.text)
        async with AsyncTestClient(app=create_app(h.container)) as other:
            await other.get("/auth/discord/login", follow_redirects=False)  # its own binding
            for path in (callback, f"/auth/discord/confirming?state={approval.state}"):
                refused = await other.get(path, follow_redirects=False)
                assert refused.status_code == 410, refused.text
                assert errors.EmailBelongsToAccount.message not in html.unescape(refused.text)


async def test_ending_another_session_leaves_the_offer_waiting_here() -> None:
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    db: MemoryDatabase = h.container.memory_db()
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.sign_up("carol", "carol@example.com")
    h.discord_user(9102, username="bob_d", email="bob@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as elsewhere:
        await post_form(elsewhere, "/signin", "/signin", {"login": "carol", "password": PASSWORD})
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await post_form(client, "/signin", "/signin", {"login": "carol", "password": PASSWORD})
        started = await client.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], DiscordId(9102))
        callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        first = await client.get(callback, follow_redirects=False)
        assert first.headers["location"] == "/auth/discord/confirm-link", first.text
        own = h.container.tokens().digest(client.cookies["tfl_session"])
        carol = db.tables.sessions[own].account_id
        other = next(
            s.id for d, s in db.tables.sessions.items() if d != own and s.account_id == carol
        )
        ended = await post_form(client, "/account", f"/account/sessions/{other}/end", {})
        assert ended.url.path == "/account", ended.text
        assert own in db.tables.sessions
        done = await post_form(
            client,
            "/auth/discord/confirm-link",
            "/auth/discord/confirm-link",
            {"password": PASSWORD},
        )
        assert done.url.path == "/account", done.text
    assert db.tables.links
    h.container.unwire()
