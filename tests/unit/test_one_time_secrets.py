"""OAuth states and /link tickets: single use, 10-minute expiry, bound to the browser."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from adapters.memory import MemoryDatabase
from adapters.tokens import SecretsTokenIssuer
from domain import errors
from domain.model import DiscordUser
from domain.use_cases import AuthOutcome, TicketIssued
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from tests.harness import Browser, Harness


async def _started_login(h: Harness, browser: Browser) -> tuple[str, str]:
    discord = h.discord_user(3001, email="p@example.com")
    started = await h.start_login(browser)
    approval = h.discord.approve(started.authorize_url, discord.id)
    return approval.state, approval.code


async def test_state_replay_is_refused(h: Harness) -> None:
    browser = Browser()
    state, code = await _started_login(h, browser)
    first = await h.complete(browser, state=state, code=code)
    # The same browser at once (its first answer lost): the session its first load made.
    again = await h.complete(browser, state=state, code=code)
    assert again.session_token == first.session_token
    with pytest.raises(errors.SecretConsumed):  # anyone else
        await h.complete(Browser(), state=state, code=code)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    # Later on, the browser still signed in with that session: on to the destination, and
    # nothing handed over (its own cookie stands).
    later = await h.complete(browser, state=state, code=code)
    assert later.outcome is AuthOutcome.STILL_SIGNED_IN
    assert later.session_token is None
    with pytest.raises(errors.SecretConsumed):  # later on, the same browser signed out
        await h.complete(replace(browser, session=None), state=state, code=code)


async def test_state_is_spent_even_when_discord_fails(h: Harness, db: MemoryDatabase) -> None:
    browser = Browser()
    state, code = await _started_login(h, browser)
    h.discord.outage = errors.DiscordUnavailable()

    with pytest.raises(errors.DiscordUnavailable):
        await h.complete(browser, state=state, code=code)
    h.discord.outage = None
    with pytest.raises(errors.DiscordSignInFailed):  # spent, and said what became of it
        await h.complete(browser, state=state, code=code)
    with pytest.raises(errors.SecretConsumed):
        await h.complete(Browser(), state=state, code=code)
    assert db.tables.accounts == {}
    assert db.tables.links == {}


async def test_unknown_state_is_refused(h: Harness) -> None:
    with pytest.raises(errors.SecretUnknown):
        await h.complete(Browser(), state="A" * 43, code="c")
    with pytest.raises(errors.SecretUnknown):
        await h.complete(Browser(), state=None, code="c")
    with pytest.raises(errors.SecretUnknown):
        await h.complete(Browser(), state="x" * 10_000, code="c")


async def test_state_one_second_before_expiry_works(h: Harness) -> None:
    browser = Browser()
    state, code = await _started_login(h, browser)
    h.clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    assert (await h.complete(browser, state=state, code=code)).session_token


async def test_state_exactly_at_expiry_is_refused(h: Harness) -> None:
    browser = Browser()
    state, code = await _started_login(h, browser)
    h.clock.advance(timedelta(minutes=10))
    with pytest.raises(errors.SecretExpired):
        await h.complete(browser, state=state, code=code)


async def test_callback_in_another_browser_is_refused(h: Harness, db: MemoryDatabase) -> None:
    state, code = await _started_login(h, Browser())
    with pytest.raises(errors.WrongBrowser):
        await h.complete(Browser(), state=state, code=code)  # no binding cookie
    state, code = await _started_login(h, Browser())
    with pytest.raises(errors.WrongBrowser):
        await h.complete(Browser(bindings=("B" * 43,)), state=state, code=code)
    assert db.tables.sessions == {}


async def test_a_callback_url_tried_in_another_browser_is_refused_not_spent(
    h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's review: a callback URL tried in another browser (leaked, or opened in
    the wrong one) was refused and spent, so its owner's sign-in failed too. The binding
    refuses every other browser all the same, every time: the browser that started it
    finishes, once."""
    owner = Browser()
    state, code = await _started_login(h, owner)
    for elsewhere in (Browser(), Browser(bindings=("B" * 43,)), Browser()):
        with pytest.raises(errors.WrongBrowser):
            await h.complete(elsewhere, state=state, code=code)
    assert db.tables.sessions == {}
    assert all(p.consumed_at is None for p in db.tables.pending_logins.values())

    made = (await h.complete(owner, state=state, code=code)).session_token
    assert made
    # Still single use: the owner loading it again at once is handed the same session.
    assert (await h.complete(owner, state=state, code=code)).session_token == made
    assert len(db.tables.sessions) == 1
    with pytest.raises(errors.SecretConsumed):
        await h.complete(Browser(), state=state, code=code)


async def test_two_tabs_in_one_browser_share_the_binding(h: Harness) -> None:
    browser = Browser()
    discord = h.discord_user(3002, email="tabs@example.com")
    first = await h.start_login(browser)
    second = await h.start_login(browser)
    a1 = h.discord.approve(first.authorize_url, discord.id)
    a2 = h.discord.approve(second.authorize_url, discord.id)
    assert (await h.complete(browser, state=a2.state, code=a2.code)).session_token
    assert (await h.complete(browser, state=a1.state, code=a1.code)).session_token


async def test_access_denied_is_refused_and_spends_the_state(h: Harness) -> None:
    browser = Browser()
    started = await h.start_login(browser)
    state = h.discord.approve(started.authorize_url, h.discord_user(3003).id).state
    with pytest.raises(errors.DiscordDenied):
        await h.complete(browser, state=state, code=None, error="access_denied")
    # Loaded again by its browser: the same reason told again (not only "did not go through").
    with pytest.raises(errors.DiscordDenied):
        await h.complete(browser, state=state, code="x")
    with pytest.raises(errors.SecretConsumed):
        await h.complete(Browser(), state=state, code="x")


async def test_the_pkce_verifier_is_derived_with_the_server_key(h: Harness) -> None:
    """Nothing stores the verifier: the callback derives it again from the state. With another
    key the verifier differs, and Discord refuses the code (bound to the first challenge)."""
    browser = Browser()
    state, code = await _started_login(h, browser)
    with (
        h.container.tokens.override(SecretsTokenIssuer("another-secret-key-" + "y" * 32)),
        pytest.raises(errors.DiscordDenied),
    ):
        await h.complete(browser, state=state, code=code)


async def test_pending_login_keeps_only_digests(h: Harness, db: MemoryDatabase) -> None:
    browser = Browser()
    state, _ = await _started_login(h, browser)
    stored = repr(db.tables.pending_logins)
    assert state not in stored
    assert browser.bindings
    assert all(binding not in stored for binding in browser.bindings)
    verifier = h.container.tokens().derive(state, "pkce-verifier")
    assert verifier not in stored


async def _ticket(h: Harness) -> str:
    issued = await h.container.issue_link_ticket().execute(
        DiscordUser(h.discord_user(3101).id, "ticketed")
    )
    assert isinstance(issued, TicketIssued)
    return issued.token


async def test_ticket_replay_is_refused(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    ticket = await _ticket(h)
    await h.confirm_ticket(ticket, alice.id)

    with pytest.raises(errors.SecretConsumed):
        await h.confirm_ticket(ticket, alice.id)
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(ticket)


async def test_ticket_exactly_at_expiry_is_refused(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    ticket = await _ticket(h)
    h.clock.advance(timedelta(minutes=10))
    with pytest.raises(errors.SecretExpired):
        await h.container.show_link_ticket().execute(ticket)
    with pytest.raises(errors.SecretExpired):
        await h.confirm_ticket(ticket, alice.id)
    assert db.tables.links == {}


async def test_unknown_ticket_is_refused(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    with pytest.raises(errors.SecretUnknown):
        await h.container.show_link_ticket().execute("Z" * 43)
    with pytest.raises(errors.SecretUnknown):
        await h.confirm_ticket("../../etc/passwd", alice.id)


async def test_refused_redeem_leaves_the_ticket_usable(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    await h.discord_link(alice.id, h.discord_user(3102))
    ticket = await _ticket(h)

    with pytest.raises(errors.AccountLinkedToOtherDiscord):
        await h.confirm_ticket(ticket, alice.id)
    assert (await h.confirm_ticket(ticket, bob.id)).outcome is AuthOutcome.LINKED


async def test_purge_removes_only_expired_secrets(h: Harness, db: MemoryDatabase) -> None:
    await _ticket(h)
    await h.start_login(Browser())
    await h.sign_up("alice", "alice@example.com")
    h.clock.advance(timedelta(minutes=10) + KEPT_PAST_EXPIRY)  # a round trip's is kept longer
    await h.start_login(Browser())

    report = await h.container.purge_expired().execute()

    assert (report.pending_logins, report.link_tickets, report.sessions) == (1, 1, 0)
    assert len(db.tables.pending_logins) == 1
    h.clock.advance(timedelta(days=15))
    assert (await h.container.purge_expired().execute()).sessions == 1
