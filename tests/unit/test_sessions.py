"""Sessions end when they must (unlink, email change, reset), the account page can end them,
and sensitive changes need a recent proof of identity ("sudo mode")."""

from __future__ import annotations

import ast
import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

import domain
from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import SignInMethod
from domain.ports import IssuedSecret, TokenIssuer
from domain.use_cases import BrowserCookies, SignOut
from domain.use_cases._shared import (
    AFTER_DISCORD_SIGN_IN,
    PROPOSAL_AFTER_DISCORD_SIGN_IN,
    RENEWED_FROM_THE_COOKIE,
    SENT_TWICE_WITHIN,
)
from domain.use_cases.password_reset import PasswordReset
from tests.harness import PASSWORD, Browser, Harness

NEW_PASSWORD = "a brand new password"


async def _live(h: Harness, token: str) -> bool:
    return await h.container.current_session().execute(token) is not None


# -- unlinking ends the sessions Discord opened ------------------------------------------------


async def test_unlinking_from_the_web_ends_every_other_session(h: Harness) -> None:
    """The attack this closes: someone whose Discord got linked to alice's account signed in
    with it; alice unlinks, and that browser must not stay signed in as her."""
    alice = await h.sign_up("alice", "alice@example.com")
    intruder = h.discord_user(7001)
    await h.discord_link(alice.account.id, intruder)
    intruders_session = (await h.discord_login(intruder)).session_token
    assert intruders_session is not None
    assert await _live(h, intruders_session)

    await h.container.unlink_account().execute(
        session_token=alice.session_token, current_password=None
    )

    assert not await _live(h, intruders_session)
    assert await _live(h, alice.session_token)  # the one that asked stays


@pytest.mark.parametrize("via", ["bot", "api"])
async def test_unlinking_from_discord_or_the_api_ends_every_session(h: Harness, via: str) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    discord = h.discord_user(7002)
    await h.discord_link(alice.account.id, discord)
    by_discord = (await h.discord_login(discord)).session_token
    assert by_discord is not None

    await h.container.unlink_discord().execute(discord.id)  # /unlink and DELETE /api/v1/links

    assert not await _live(h, by_discord)
    assert not await _live(h, alice.session_token)


async def test_changing_the_email_ends_the_other_sessions(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    phone = await h.container.sign_in().execute(login="alice", password=PASSWORD)

    changed = await h.container.change_email().execute(
        session_token=alice.session_token,
        new_email="alice@new.example",
        current_password=PASSWORD,
    )

    assert not await _live(h, phone.session_token)
    # This one goes on under a new token: a copy of its old cookie ends with the others.
    assert not await _live(h, alice.session_token)
    assert await _live(h, changed.session_token)


# -- the account page's list ---------------------------------------------------------------------


async def test_a_sign_in_whose_check_overlapped_a_password_reset_gets_no_session(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who knows alice's old password signs in while she resets it. The old
    password was checked (outside any transaction: hashing is slow) before the reset
    committed; the session would start after the reset ended every session, and would
    outlive it, with a fresh proof of identity (10 minutes to change the email without a
    password). It does not start. (A password change on another instance overlaps alike.)"""
    alice = await h.sign_up("alice", "alice@example.com")
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    hasher = h.container.password_hasher()
    real_verify = hasher.verify
    resets: list[PasswordReset] = []

    async def verify_then_reset(password_hash: str, password: str) -> bool:
        right = await real_verify(password_hash, password)
        if not resets:  # the check's verify (then the new hash's, which is not right)
            resets.append(
                await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)
            )
        return right

    monkeypatch.setattr(hasher, "verify", verify_then_reset)
    with pytest.raises(errors.InvalidCredentials, match="changed a moment ago"):
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
    monkeypatch.undo()
    (done,) = resets
    async with h.uow() as uow:  # the reset's own session, and no other
        (left,) = await uow.sessions.list_for_account(alice.account.id)
    assert left.digest == h.container.tokens().digest(done.signed_in.session_token)
    await h.container.sign_in().execute(login="alice", password=NEW_PASSWORD)


async def test_sessions_are_listed_and_each_can_be_ended(h: Harness, db: MemoryDatabase) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    discord = h.discord_user(7003)
    await h.discord_link(alice.account.id, discord)
    h.clock.advance(timedelta(minutes=1))
    laptop = (await h.discord_login(discord)).session_token
    assert laptop is not None

    listed = await h.container.list_sessions().execute(alice.session_token)
    assert [s.method for s in listed.sessions] == [SignInMethod.DISCORD, SignInMethod.PASSWORD]
    assert listed.current.digest == h.container.tokens().digest(alice.session_token)
    assert all(s.digest not in repr(s.id) for s in listed.sessions)

    other = listed.sessions[0]
    assert not await h.container.end_session().execute(
        BrowserCookies(session_token=alice.session_token), str(other.id)
    )
    assert not await _live(h, laptop)
    with pytest.raises(errors.NotFound):  # already ended
        await h.container.end_session().execute(
            BrowserCookies(session_token=alice.session_token), str(other.id)
        )
    with pytest.raises(errors.NotFound):
        await h.container.end_session().execute(
            BrowserCookies(session_token=alice.session_token), "not-a-uuid"
        )
    assert await h.container.end_session().execute(
        BrowserCookies(session_token=alice.session_token), str(listed.current.id)
    )
    assert not await _live(h, alice.session_token)


async def test_no_one_can_end_another_accounts_session(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    bob = await h.sign_up("bob", "bob@example.com")
    bobs = (await h.container.list_sessions().execute(bob.session_token)).current

    with pytest.raises(errors.NotFound):
        await h.container.end_session().execute(
            BrowserCookies(session_token=alice.session_token), str(bobs.id)
        )
    assert await _live(h, bob.session_token)


async def test_signing_out_everywhere_ends_every_session(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    phone = await h.container.sign_in().execute(login="alice", password=PASSWORD)
    bob = await h.sign_up("bob", "bob@example.com")

    assert (
        await h.container.end_all_sessions().execute(
            BrowserCookies(session_token=alice.session_token)
        )
    ).ended == 2

    assert not await _live(h, alice.session_token)
    assert not await _live(h, phone.session_token)
    assert await _live(h, bob.session_token)


async def test_last_use_is_written_at_most_every_five_minutes(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    commits = db.commits
    h.clock.advance(timedelta(minutes=4))
    seen = await h.container.current_session().execute(alice.session_token)
    assert seen is not None
    assert db.commits == commits  # nothing written
    h.clock.advance(timedelta(minutes=2))
    seen = await h.container.current_session().execute(alice.session_token)
    assert seen is not None
    assert seen.session.last_seen_at == h.clock.now()
    assert db.commits == commits + 1


# -- re-authentication ------------------------------------------------------------------------


async def test_a_discord_only_account_needs_a_fresh_discord_proof(h: Harness) -> None:
    """The issue's lock-out: with only the session of an account Discord created, nobody may
    set a first password, change the email or unlink after 10 minutes, until a Discord round
    trip as the linked account proves it again."""
    owner = h.discord_user(7010, email="owner@example.com")
    created = await h.discord_login(owner)
    assert created.session_token is not None
    session = created.session_token
    h.clock.advance(timedelta(minutes=10))

    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.set_password().execute(
            session_token=session, new_password=NEW_PASSWORD, current_password=None
        )
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.change_email().execute(
            session_token=session, new_email="thief@example.com", current_password=None
        )
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.change_email().execute(  # a password field cannot stand in
            session_token=session, new_email="thief@example.com", current_password="guess"
        )

    browser = Browser(session=session)
    started = await h.container.start_discord_reauth().execute(
        session_token=session, browser_tokens=()
    )
    browser.bindings = started.browser_tokens
    approval = h.discord.approve(started.authorize_url, owner.id)
    confirmed = await h.complete(browser, state=approval.state, code=approval.code)
    # The session goes on under a new token; the old one proves nothing (it is no more).
    assert confirmed.session_token is not None
    assert confirmed.session_token == browser.session != session
    with pytest.raises(errors.NotSignedIn):
        await h.container.set_password().execute(
            session_token=session, new_password=NEW_PASSWORD, current_password=None
        )
    await h.container.set_password().execute(
        session_token=browser.session, new_password=NEW_PASSWORD, current_password=None
    )
    assert (await h.account(created.account_id)).has_password


async def test_a_discord_proof_must_come_from_the_linked_discord_account(h: Harness) -> None:
    owner = h.discord_user(7011, email="owner@example.com")
    created = await h.discord_login(owner)
    session = created.session_token
    assert session is not None
    h.clock.advance(timedelta(minutes=11))
    someone_else = h.discord_user(7012)

    started = await h.container.start_discord_reauth().execute(
        session_token=session, browser_tokens=()
    )
    approval = h.discord.approve(started.authorize_url, someone_else.id)
    with pytest.raises(errors.WrongDiscordAccount) as refused:
        await h.complete(
            Browser(bindings=started.browser_tokens, session=session),
            state=approval.state,
            code=approval.code,
        )
    assert "@user7011" in refused.value.message
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.set_password().execute(
            session_token=session, new_password=NEW_PASSWORD, current_password=None
        )


async def test_a_password_account_proves_with_its_password(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    discord = h.discord_user(7013)
    await h.discord_link(alice.account.id, discord)
    h.clock.advance(timedelta(minutes=10))
    via_discord = (await h.discord_login(discord)).session_token  # not a proof for this account
    assert via_discord is not None

    for session in (alice.session_token, via_discord):
        with pytest.raises(errors.ReauthenticationRequired):
            await h.container.unlink_account().execute(session_token=session, current_password=None)
    with pytest.raises(errors.InvalidCredentials):
        await h.container.unlink_account().execute(
            session_token=via_discord, current_password="wrong password"
        )
    with pytest.raises(errors.InvalidCredentials):
        await h.container.confirm_password().execute(session_token=via_discord, password="nope")

    confirmed = await h.container.confirm_password().execute(
        session_token=via_discord, password=PASSWORD
    )
    with pytest.raises(errors.NotSignedIn):  # the old token: its proof went to the new one
        await h.container.unlink_account().execute(session_token=via_discord, current_password=None)
    await h.container.unlink_account().execute(
        session_token=confirmed.session_token, current_password=None
    )
    assert await h.container.link_of_account().execute(alice.account.id) is None


async def test_a_proof_lasts_ten_minutes(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    h.clock.advance(timedelta(minutes=30))
    session = (
        await h.container.confirm_password().execute(
            session_token=alice.session_token, password=PASSWORD
        )
    ).session_token
    h.clock.advance(timedelta(minutes=9, seconds=59))
    seen = await h.container.current_session().execute(session)
    assert seen is not None
    assert seen.recently_proved
    h.clock.advance(timedelta(seconds=1))
    seen = await h.container.current_session().execute(session)
    assert seen is not None
    assert not seen.recently_proved
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.change_email().execute(
            session_token=session, new_email="a@new.example", current_password=None
        )


async def test_a_confirmation_sent_twice_keeps_the_session(h: Harness) -> None:
    """A double click on "Confirm" signed its person out: both requests came with the old
    token, the first renewed the session, and its answer (the new token) never reached the
    browser, which had left it for the second; the second found the old token ended. The
    second, with the right password, now gets the first one's token."""
    alice = await h.sign_up("alice", "alice@example.com")
    h.clock.advance(timedelta(minutes=30))
    confirm = h.container.confirm_password()
    both = await asyncio.gather(
        confirm.execute(session_token=alice.session_token, password=PASSWORD),
        confirm.execute(session_token=alice.session_token, password=PASSWORD),
    )
    assert sorted(c.sent_twice for c in both) == [False, True]
    assert both[0].session_token == both[1].session_token != alice.session_token
    seen = await h.container.current_session().execute(both[0].session_token)
    assert seen is not None
    assert seen.recently_proved
    assert not await _live(h, alice.session_token)
    listed = await h.container.list_sessions().execute(both[0].session_token)
    assert len(listed.sessions) == 1

    with pytest.raises(errors.InvalidCredentials):  # the old token alone proves nothing
        await confirm.execute(session_token=alice.session_token, password="wrong password")
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.NotSignedIn):  # nor later on, password or not
        await confirm.execute(session_token=alice.session_token, password=PASSWORD)
    again = await confirm.execute(session_token=both[0].session_token, password=PASSWORD)
    assert not again.sent_twice
    assert not await _live(h, both[0].session_token)
    assert await _live(h, again.session_token)


async def test_reauthentication_needs_the_session_that_started_it(h: Harness) -> None:
    owner = h.discord_user(7014, email="owner@example.com")
    created = await h.discord_login(owner)
    assert created.session_token is not None
    started = await h.container.start_discord_reauth().execute(
        session_token=created.session_token, browser_tokens=()
    )
    approval = h.discord.approve(started.authorize_url, owner.id)
    other = await h.sign_up("mallory", "mallory@example.com")
    with pytest.raises(errors.NotSignedIn):
        await h.complete(
            Browser(bindings=started.browser_tokens, session=other.session_token),
            state=approval.state,
            code=approval.code,
        )


async def test_confirming_with_discord_needs_a_linked_account(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    with pytest.raises(errors.NotLinked):
        await h.container.start_discord_reauth().execute(
            session_token=alice.session_token, browser_tokens=()
        )


async def _session_of(h: Harness, token: str) -> tuple[SignInMethod | str | None, bool]:
    seen = await h.container.current_session().execute(token)
    assert seen is not None
    return seen.session.proved_with, seen.recently_proved


async def test_a_password_account_is_not_confirmed_with_discord(h: Harness) -> None:
    """Discord is no proof for an account with a password (see ``identity_recently_proved``):
    a round trip (a form the confirm page shows only without a password, sent from a stale
    page or by hand) told the person "for the next 10 minutes you can change your password"
    and wrote a Discord proof over the session's password proof, so the account page then
    asked for the password again."""
    alice = await h.sign_up("alice", "alice@example.com")
    discord = h.discord_user(7015)
    await h.discord_link(alice.account.id, discord)
    session = await h.session_for(alice.account.id, proved_with=SignInMethod.PASSWORD)

    with pytest.raises(errors.InvalidInput) as refused:
        await h.container.start_discord_reauth().execute(session_token=session, browser_tokens=())
    assert "password" in refused.value.message
    assert await _session_of(h, session) == (SignInMethod.PASSWORD, True)


async def test_a_discord_proof_that_returns_after_a_first_password_was_set_is_refused(
    h: Harness,
) -> None:
    """The round trip started while the account had no password; the person set one in
    another tab (the same session) before Discord answered: the proof that choosing the
    password made stays, and no Discord proof is written over it."""
    owner = h.discord_user(7016, email="owner@example.com")
    created = await h.discord_login(owner)
    assert created.session_token is not None
    browser = Browser(session=created.session_token)
    started = await h.container.start_discord_reauth().execute(
        session_token=browser.session, browser_tokens=()
    )
    browser.bindings = started.browser_tokens
    approval = h.discord.approve(started.authorize_url, owner.id)
    chosen = await h.container.set_password().execute(
        session_token=browser.session, new_password=NEW_PASSWORD, current_password=None
    )
    browser.session = chosen.session_token

    with pytest.raises(errors.InvalidInput):
        await h.complete(browser, state=approval.state, code=approval.code)
    assert browser.session == chosen.session_token
    assert await _session_of(h, chosen.session_token) == (SignInMethod.PASSWORD, True)


# -- signing out after a form sent twice lost its answer -------------------------------------------


async def _renewed_with_the_answer_lost(h: Harness, form: str) -> tuple[str, str]:
    """A session whose form renewed it under a token derived from the cookie's, the answer
    (the new cookie) lost: the browser left that request (a double click, a reload) and kept
    the old cookie. The old token and the one the session lives on under, renewed now, half
    an hour after the session began."""
    if form == "discord":
        created = await h.discord_login(h.discord_user(7020, email="owner@example.com"))
        assert created.session_token is not None
        old = created.session_token
        h.clock.advance(timedelta(minutes=30))
        browser = Browser(session=old)
        started = await h.container.start_discord_reauth().execute(
            session_token=old, browser_tokens=()
        )
        browser.bindings = started.browser_tokens
        approval = h.discord.approve(started.authorize_url, h.discord_user(7020).id)
        done = await h.complete(browser, state=approval.state, code=approval.code)
        assert done.session_token is not None
        return old, done.session_token
    signed_up = await h.sign_up("alice", "alice@example.com")
    old = signed_up.session_token
    h.clock.advance(timedelta(minutes=30))
    if form == "confirm":
        confirmed = await h.container.confirm_password().execute(
            session_token=old, password=PASSWORD
        )
        return old, confirmed.session_token
    if form == "password":
        saved = await h.container.set_password().execute(
            session_token=old, new_password=NEW_PASSWORD, current_password=PASSWORD
        )
        return old, saved.session_token
    changed = await h.container.change_email().execute(
        session_token=old, new_email="alice@new.example", current_password=PASSWORD
    )
    return old, changed.session_token


@pytest.mark.parametrize("form", ["confirm", "password", "email", "discord"])
async def test_signing_out_with_the_old_cookie_ends_what_a_lost_answer_made(
    h: Harness, form: str
) -> None:
    """A form sent twice whose first answer was lost left the browser with the old, ended
    cookie and the session living on, proved, under a token nobody holds. Signing out with
    that cookie (the only one the person has) ended nothing: now it ends that session too."""
    old, renewed = await _renewed_with_the_answer_lost(h, form)
    assert not await _live(h, old)
    assert await _live(h, renewed)

    await h.container.sign_out().execute(BrowserCookies(session_token=old))

    assert not await _live(h, renewed)


@pytest.mark.parametrize("form", ["confirm", "password", "email", "discord"])
async def test_an_old_cookie_ends_no_successor_past_the_double_click_window(
    h: Harness, form: str
) -> None:
    """The successor is ended only while the form could have been sent twice: within
    ``SENT_TWICE_WITHIN`` of the renewal (its ``proved_at``: a renewed session keeps its
    ``created_at``), the edge included, as ``made_just_now`` answers the second request.
    Past it, the successor is held by the browser that got it, and a copy of the old cookie
    (a thief's: the very one a password change was made against) must not sign it out."""
    old, renewed = await _renewed_with_the_answer_lost(h, form)
    seen = await h.container.current_session().execute(renewed)
    assert seen is not None
    assert seen.session.proved_at == h.clock.now()  # renewed now...
    assert seen.session.created_at < h.clock.now()  # ...a session made before

    h.clock.advance(SENT_TWICE_WITHIN + timedelta(microseconds=1))
    await h.container.sign_out().execute(BrowserCookies(session_token=old))
    assert await _live(h, renewed)


@pytest.mark.parametrize("form", ["confirm", "password", "email", "discord"])
async def test_an_old_cookie_ends_its_successor_at_the_edge_of_the_window(
    h: Harness, form: str
) -> None:
    old, renewed = await _renewed_with_the_answer_lost(h, form)
    h.clock.advance(SENT_TWICE_WITHIN)
    await h.container.sign_out().execute(BrowserCookies(session_token=old))
    assert not await _live(h, renewed)


async def test_signing_out_keeps_the_session_a_request_answers(h: Harness) -> None:
    old, renewed = await _renewed_with_the_answer_lost(h, "confirm")
    bob = await h.sign_up("bob", "bob@example.com")

    await h.container.sign_out().execute(BrowserCookies(session_token=old), keeping=renewed)
    assert await _live(h, renewed)
    await h.container.sign_out().execute(
        BrowserCookies(session_token=bob.session_token)
    )  # no successor: just this one
    assert not await _live(h, bob.session_token)
    assert await _live(h, renewed)


def test_every_renewal_from_the_cookie_is_one_signing_out_ends() -> None:
    """A form that derives a session's new token from the cookie's (``session_token_after``
    with ``session_token``) names a purpose of ``RENEWED_FROM_THE_COOKIE``: otherwise its
    answer lost, signing out with the old cookie would leave its session on."""
    import domain.use_cases._shared as shared

    known = {name for name in dir(shared) if getattr(shared, name) in RENEWED_FROM_THE_COOKIE}
    found: set[str] = set()
    for path in sorted(Path(domain.__file__).parent.rglob("*.py")):
        if path.name == "_shared.py":  # ``successors_of``: each of them
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "session_token_after"
                and len(node.args) == 3
                and isinstance(node.args[1], ast.Name)
                and node.args[1].id == "session_token"
            ):
                purpose = node.args[2]
                found.add(purpose.id if isinstance(purpose, ast.Name) else ast.unparse(purpose))
    assert found  # the forms were seen
    assert found <= known


class _CountingTokens:
    """The issuer, counting the HMACs worked out (``derive``, ``digest``)."""

    def __init__(self, inner: TokenIssuer) -> None:
        self._inner = inner
        self.derived: list[str] = []  # the purposes
        self.digests = 0

    def issue(self) -> IssuedSecret:
        return self._inner.issue()

    def digest(self, token: str) -> str:
        self.digests += 1
        return self._inner.digest(token)

    def derive(self, token: str, purpose: str) -> str:
        self.derived.append(purpose)
        return self._inner.derive(token, purpose)


async def test_signing_out_works_out_each_binding_digest_once(h: Harness) -> None:
    """A sign-out with binding values derives, for each one, the token of what a Discord
    sign-in bound to it made (a session, a proposal) once: the early return for a browser
    holding nothing of ours derives nothing, where it worked out the sessions' digests of
    every binding value only to see whether there were any, before ``sign_out_browser``
    worked them out again. Junk is refused before any HMAC."""
    tokens: TokenIssuer = h.container.tokens()
    counting = _CountingTokens(tokens)
    sign_out = SignOut(h.uow, counting, h.clock)
    bindings = (tokens.issue().token, tokens.issue().token)

    await sign_out.execute(BrowserCookies(bindings=bindings))
    assert sorted(counting.derived) == sorted(
        [AFTER_DISCORD_SIGN_IN, PROPOSAL_AFTER_DISCORD_SIGN_IN] * len(bindings)
    )
    # One for each token derived, and the binding value's own (its round trip, marked).
    assert counting.digests == 3 * len(bindings)

    counting.derived.clear()
    counting.digests = 0
    await sign_out.execute(BrowserCookies("not one of ours", "nor this", ("short",)))
    assert (counting.derived, counting.digests) == ([], 0)
