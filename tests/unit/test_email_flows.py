"""Email flows on the in-memory adapters: what is queued, what the outbox receives (recipient,
exactly one link, its expiry), and what following the links does."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from datetime import timedelta

import pytest

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import (
    AccountId,
    AuditKind,
    DeliveryStatus,
    DiscordId,
    EmailKind,
    EmailPurpose,
    SignInMethod,
)
from domain.ports import EmailMessage
from domain.use_cases import AuthOutcome, BrowserCookies, DeliveryReport, Stopping, TicketIssued
from domain.use_cases.accounts import SignedIn
from domain.use_cases.email_delivery import CLAIM_LEASE, MAX_ATTEMPTS, RETRY_DELAYS
from domain.use_cases.email_verification import EmailChanged
from domain.use_cases.password_reset import PasswordReset
from tests.harness import PASSWORD, Harness

NEW_PASSWORD = "a brand new passphrase"


def _live_again(h: Harness, token: str) -> None:
    """A spent /link ticket live again, as one a /link issued beside the link it ended."""
    tickets = h.container.memory_db().tables.link_tickets
    digest = h.container.tokens().digest(token)
    tickets[digest] = replace(tickets[digest], consumed_at=None)


def _expiry_line(message: EmailMessage) -> str:
    return next(line for line in message.text.splitlines() if "expires at" in line)


class FailingSender:
    """An SMTP server that is down for the first ``failures`` sends (the port's contract:
    ``EmailNotSent``); then it delivers to the harness's outbox."""

    def __init__(
        self, h: Harness, failures: int, error: type[errors.EmailNotSent] = errors.EmailNotSent
    ) -> None:
        self.outbox, self.failures, self.calls = h.outbox, failures, 0
        self.error = error

    async def send(self, message: EmailMessage) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        await self.outbox.send(message)


# -- verification ---------------------------------------------------------------------------


async def test_sign_up_emails_one_confirmation_link_that_works_once(h: Harness) -> None:
    signed_up = await h.sign_up("alice", "Alice@Example.com")
    assert h.emails_to("alice@example.com") == []  # queued, not sent inside the request

    report = await h.deliver()
    assert len(report.sent) == 1
    [message] = h.emails_to("alice@example.com")
    assert message.to == "alice@example.com"
    assert "Confirm your email" in message.subject
    token = h.link_token(message, "/verify-email/")
    assert message.text.count("http") == 1  # one link, nothing else to click
    assert (h.clock.now() + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M UTC") in _expiry_line(
        message
    )

    with pytest.raises(errors.NotSignedIn):  # only the account's owner confirms it
        await h.container.verify_email().execute(token, None)
    verified = await h.container.verify_email().execute(token, signed_up.account.id)
    assert verified.email_verified
    assert (await h.account(signed_up.account.id)).email_verified
    with pytest.raises(errors.SecretConsumed):
        await h.container.verify_email().execute(token, signed_up.account.id)


async def test_a_confirmation_link_expires_after_24_hours(h: Harness) -> None:
    bob = await h.sign_up("bob", "bob@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("bob@example.com"), "/verify-email/")
    h.clock.advance(timedelta(hours=24))
    with pytest.raises(errors.SecretExpired, match="24 hours"):
        await h.container.verify_email().execute(token, bob.account.id)
    with pytest.raises(errors.SecretExpired):  # the refusal did not spend it either
        await h.container.show_email_link().execute(token, EmailPurpose.VERIFY)


async def test_a_reset_link_cannot_confirm_an_email_and_is_not_spent_by_trying(h: Harness) -> None:
    carol = await h.sign_up("carol", "carol@example.com")
    await h.container.request_password_reset().execute("carol@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("carol@example.com"), "/password/reset/")
    with pytest.raises(errors.SecretUnknown):
        await h.container.verify_email().execute(reset, carol.account.id)
    await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)


async def test_a_reset_form_sent_twice_signs_its_person_in(h: Harness) -> None:
    """A double click on "Save password" of a reset link: the browser keeps the second answer,
    which said "already been used ... sign in with that password" while the first one's
    session (its cookie lost with that answer) lived on, held by nobody. The second, with the
    same password, now gets the first one's session."""
    await h.sign_up("cleo", "cleo@example.com")
    await h.container.request_password_reset().execute("cleo@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("cleo@example.com"), "/password/reset/")

    def save() -> Awaitable[PasswordReset]:
        return h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)

    both = await asyncio.gather(save(), save())
    assert sorted(d.sent_twice for d in both) == [False, True]
    assert both[0].signed_in.session_token == both[1].signed_in.session_token
    listed = await h.container.list_sessions().execute(both[0].signed_in.session_token)
    assert len(listed.sessions) == 1
    await h.deliver()
    changed = [m for m in h.emails_to("cleo@example.com") if "password was changed" in m.subject]
    assert len(changed) == 1  # reset once
    await h.container.sign_in().execute(login="cleo", password=NEW_PASSWORD)


async def test_a_reset_form_sent_twice_as_its_link_expires_outlives_the_purge(
    h: Harness,
) -> None:
    """The reset link used in its last seconds, the form's second request a few seconds
    later: the purge (every serving process's) that came between them deleted the expired
    link, and the second request, which reads it to be answered the first one's session,
    was told the link is unknown, its person signed out. The purge keeps a spent link the
    minute a form sent twice has."""
    await h.sign_up("cleo", "cleo@example.com")
    await h.container.request_password_reset().execute("cleo@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("cleo@example.com"), "/password/reset/")
    h.clock.advance(timedelta(minutes=59, seconds=55))  # the link works for an hour
    first = await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)
    h.clock.advance(timedelta(seconds=10))
    await h.container.purge_expired().execute()
    again = await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)
    assert again.sent_twice
    assert again.signed_in.session_token == first.signed_in.session_token
    h.clock.advance(timedelta(minutes=1))
    assert (await h.container.purge_expired().execute()).email_tokens == 1


async def test_a_used_reset_link_alone_gets_no_session(h: Harness) -> None:
    """The second request of a double click is answered the first one's session only with
    the very password the first saved, within a minute: the used link alone (a mailbox read
    later) gets nothing, nor does another password."""
    await h.sign_up("cleo", "cleo@example.com")
    await h.container.request_password_reset().execute("cleo@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("cleo@example.com"), "/password/reset/")
    first = await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)
    for other in (PASSWORD, "another fresh passphrase"):
        with pytest.raises(errors.SecretConsumed, match="sign in with that password"):
            await h.container.reset_password().execute(token=reset, new_password=other)
    again = await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)
    assert again.sent_twice
    assert again.signed_in.session_token == first.signed_in.session_token
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.SecretConsumed):
        await h.container.reset_password().execute(token=reset, new_password=NEW_PASSWORD)


async def test_asking_for_a_new_confirmation_link_is_rate_limited(h: Harness) -> None:
    signed_up = await h.sign_up("dan", "dan@example.com")  # the first email
    resend = h.container.resend_verification
    with pytest.raises(errors.TooManyRequests, match="one a minute"):
        await resend().execute(signed_up.account.id)
    for _ in range(4):
        h.clock.advance(timedelta(minutes=1, seconds=1))
        assert await resend().execute(signed_up.account.id) == "dan@example.com"
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.TooManyRequests):  # five an hour
        await resend().execute(signed_up.account.id)
    h.clock.advance(timedelta(hours=1))
    await resend().execute(signed_up.account.id)

    await h.deliver()
    tokens = [h.link_token(m, "/verify-email/") for m in h.emails_to("dan@example.com")]
    assert len(set(tokens)) == 6
    await h.container.verify_email().execute(tokens[0], signed_up.account.id)  # any works
    with pytest.raises(errors.InvalidInput, match="already confirmed"):
        await resend().execute(signed_up.account.id)


async def test_changing_the_email_makes_it_unconfirmed_and_old_links_stop_working(
    h: Harness,
) -> None:
    signed_up = await h.sign_up("erin", "erin@example.com", verified=True)
    await h.container.request_password_reset().execute("erin@example.com")
    await h.deliver()
    old_reset = h.link_token(h.last_email("erin@example.com"), "/password/reset/")

    with pytest.raises(errors.InvalidCredentials):
        await h.container.change_email().execute(
            session_token=await h.session_for(signed_up.account.id),
            new_email="erin@new.example",
            current_password="x",
        )
    changed = await h.container.change_email().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_email="Erin@New.Example",
        current_password=PASSWORD,
    )
    assert (changed.account.email, changed.account.email_verified) == ("erin@new.example", False)
    with pytest.raises(errors.SecretConsumed):  # spent when the address changed
        await h.container.reset_password().execute(token=old_reset, new_password=NEW_PASSWORD)

    await h.deliver()
    notice = h.last_email("erin@example.com")  # the old, confirmed address is told
    assert notice.subject == "Your TaskFlow email address was changed"
    assert "erin@new.example" in notice.text
    assert "http" not in notice.text.replace(h.container.public_base_url(), "")
    confirm = h.link_token(h.last_email("erin@new.example"), "/verify-email/")
    assert (await h.container.verify_email().execute(confirm, changed.account.id)).email_verified

    # Back to the first address: the links sent to it before stay spent.
    h.clock.advance(timedelta(hours=2))
    await h.container.change_email().execute(
        session_token=await h.session_for(changed.account.id),
        new_email="erin@example.com",
        current_password=PASSWORD,
    )
    with pytest.raises(errors.SecretConsumed):
        await h.container.reset_password().execute(token=old_reset, new_password=NEW_PASSWORD)


async def test_an_email_form_sent_twice_keeps_its_person_signed_in(h: Harness) -> None:
    """A double click on "Change email" (with the password: each request checks it): the
    first renewed the session under a token its browser never received (it had left that
    request for the second), and the second said "... already: the form was sent twice. Sign
    in again": its person was signed out. The second now gets the first one's token."""
    signed_up = await h.sign_up("jo", "jo@example.com")
    session = await h.session_for(signed_up.account.id)

    def change_it() -> Awaitable[EmailChanged]:
        return h.container.change_email().execute(
            session_token=session, new_email="jo@new.example", current_password=PASSWORD
        )

    both = await asyncio.gather(change_it(), change_it())
    assert sorted(d.sent_twice for d in both) == [False, True]
    assert both[0].session_token == both[1].session_token != session
    assert await h.container.current_session().execute(both[0].session_token) is not None
    assert await h.container.current_session().execute(session) is None
    assert (await h.account(signed_up.account.id)).email == "jo@new.example"
    await h.deliver()
    assert len(h.emails_to("jo@new.example")) == 1  # one change, one confirmation


async def test_an_email_form_sent_again_after_the_first_answer_gets_its_session(
    h: Harness,
) -> None:
    """The second request of a double click, come once the first had answered: the old token
    had ended, and it was sent to sign in. With the same address and the right password,
    within a minute, it gets the first one's token; another address, a wrong password or
    none (a copy of the old cookie), or later on, get nothing."""
    signed_up = await h.sign_up("jo", "jo@example.com")
    old = await h.session_for(signed_up.account.id)
    change_email = h.container.change_email()
    first = await change_email.execute(
        session_token=old, new_email="jo@new.example", current_password=PASSWORD
    )
    assert not first.sent_twice
    for address, password in (
        ("jo@other.example", PASSWORD),  # not the same form
        ("jo@new.example", "not the password"),
        ("jo@new.example", None),
    ):
        with pytest.raises(errors.NotSignedIn):
            await change_email.execute(
                session_token=old, new_email=address, current_password=password
            )
    second = await change_email.execute(
        session_token=old, new_email="JO@new.example", current_password=PASSWORD
    )
    assert second.sent_twice
    assert second.session_token == first.session_token
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.NotSignedIn):
        await change_email.execute(
            session_token=old, new_email="jo@new.example", current_password=PASSWORD
        )


async def test_an_email_form_sent_twice_without_the_password_still_signs_out(
    h: Harness,
) -> None:
    """Changed on a recent proof (no password in the form): the second request brings
    nothing a copy of the old cookie lacks, so it gets no session (told what happened, when
    it raced the first far enough to pass the proof)."""
    signed_up = await h.sign_up("jo", "jo@example.com")
    session = await h.session_for(signed_up.account.id)  # signed in just now: proved

    def change_it() -> Awaitable[EmailChanged]:
        return h.container.change_email().execute(
            session_token=session, new_email="jo@new.example", current_password=None
        )

    done = await asyncio.gather(change_it(), change_it(), return_exceptions=True)
    [refused] = [d for d in done if isinstance(d, BaseException)]
    assert isinstance(refused, errors.NotSignedIn | errors.Conflict)
    with pytest.raises(errors.NotSignedIn):
        await change_it()


async def test_an_email_taken_by_another_account_cannot_be_chosen(h: Harness) -> None:
    await h.sign_up("fay", "fay@example.com", verified=True)
    other = await h.sign_up("gus", "gus@example.com")
    with pytest.raises(errors.EmailTaken):
        await h.container.change_email().execute(
            session_token=await h.session_for(other.account.id),
            new_email="FAY@example.com",
            current_password=PASSWORD,
        )


async def test_a_confirmation_link_for_a_previous_address_is_refused(h: Harness) -> None:
    signed_up = await h.sign_up("hal", "hal@example.com")
    await h.deliver()
    old_link = h.link_token(h.last_email("hal@example.com"), "/verify-email/")
    await h.container.change_email().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_email="hal@new.example",
        current_password=PASSWORD,
    )
    with pytest.raises(errors.EmailLinkOutdated):  # ended by the change, and said so
        await h.container.verify_email().execute(old_link, signed_up.account.id)
    assert not (await h.account(signed_up.account.id)).email_verified


async def test_a_queued_confirmation_for_a_replaced_address_is_cancelled(h: Harness) -> None:
    signed_up = await h.sign_up("ida", "ida@example.com")
    await h.container.change_email().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_email="ida@new.example",
        current_password=PASSWORD,
    )
    report = await h.deliver()
    assert [e.to for e in report.cancelled] == ["ida@example.com"]
    assert h.emails_to("ida@example.com") == []
    assert len(h.emails_to("ida@new.example")) == 1


# -- Discord-created accounts -------------------------------------------------------------------


async def test_discord_created_accounts_take_only_an_address_discord_verified(
    h: Harness,
) -> None:
    trusted = await h.discord_login(h.discord_user(9001, email="t@example.com", verified=True))
    doubtful = await h.discord_login(h.discord_user(9002, email="d@example.com", verified=False))
    assert (await h.account(trusted.account_id)).email_verified
    assert (await h.account(doubtful.account_id)).email is None
    # Its owner adds the address from the account page (the Discord sign-in is a fresh proof),
    # and confirms it by the emailed link.
    await h.container.change_email().execute(
        session_token=await h.session_for(doubtful.account_id, proved_with=SignInMethod.DISCORD),
        new_email="d@example.com",
        current_password=None,
    )
    await h.deliver()
    token = h.link_token(h.last_email("d@example.com"), "/verify-email/")
    verified = await h.container.verify_email().execute(token, doubtful.account_id)
    assert (verified.email, verified.email_verified) == ("d@example.com", True)


async def test_an_address_discord_did_not_verify_gives_its_reader_no_account(h: Harness) -> None:
    """helper-54's review: Bob's Discord has an address it never verified (a typo). Kept on the
    account Bob's Discord sign-in made, unconfirmed, its mailbox's reader reset the password,
    took the account and unlinked Bob's Discord, its only way in; and the address's owner could
    not sign up with it."""
    bob = h.discord_user(4242, username="bob", email="bob@exarnple.com", verified=False)
    done = await h.discord_login(bob)
    await h.container.request_password_reset().execute("bob@exarnple.com")
    await h.deliver()
    assert h.emails_to("bob@exarnple.com") == []  # no account has that address
    assert (await h.discord_login(bob)).account_id == done.account_id  # Bob still signs in
    owner = await h.sign_up("exarnple", "bob@exarnple.com")  # the address is free
    assert owner.account.id != done.account_id


# -- password reset ---------------------------------------------------------------------------


async def test_reset_request_reveals_nothing_and_only_emails_the_owner(h: Harness) -> None:
    await h.sign_up("jo", "jo@example.com")
    await h.deliver()
    before = len(h.outbox.messages())
    await h.container.request_password_reset().execute("nobody@example.com")
    await h.container.request_password_reset().execute("JO@example.com")
    await h.deliver()
    assert len(h.outbox.messages()) == before + 1
    message = h.last_email("jo@example.com")
    assert message.subject == "Reset your TaskFlow password"
    h.link_token(message, "/password/reset/")
    assert (h.clock.now() + timedelta(hours=1)).strftime("%H:%M UTC") in _expiry_line(message)
    with pytest.raises(errors.InvalidInput):
        await h.container.request_password_reset().execute("not an address")


async def test_reset_sets_the_password_ends_other_sessions_and_works_once(h: Harness) -> None:
    signed_up = await h.sign_up("kim", "kim@example.com")
    other_device = await h.container.sign_in().execute(login="kim", password=PASSWORD)
    await h.container.request_password_reset().execute("kim@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("kim@example.com"), "/password/reset/")

    shown = await h.container.show_email_link().execute(token, EmailPurpose.RESET)
    assert shown.account.username == "kim"
    with pytest.raises(errors.WeakPassword):
        await h.container.reset_password().execute(token=token, new_password="short")
    done = await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    signed_in = done.signed_in
    assert done.unlinked is None

    current = h.container.current_session()
    assert await current.execute(signed_up.session_token) is None
    assert await current.execute(other_device.session_token) is None
    here = await current.execute(signed_in.session_token)
    assert here is not None
    assert here.account.email_verified  # the link proved the mailbox
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login="kim", password=PASSWORD)
    await h.container.sign_in().execute(login="kim", password=NEW_PASSWORD)
    with pytest.raises(errors.SecretConsumed):
        await h.container.reset_password().execute(token=token, new_password="another one!")

    await h.deliver()
    assert h.last_email("kim@example.com").subject == "Your TaskFlow password was changed"


async def test_a_reset_link_expires_after_an_hour(h: Harness) -> None:
    await h.sign_up("lee", "lee@example.com")
    await h.container.request_password_reset().execute("lee@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("lee@example.com"), "/password/reset/")
    h.clock.advance(timedelta(hours=1))
    with pytest.raises(errors.SecretExpired, match="1 hour"):
        await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    await h.container.sign_in().execute(login="lee", password=PASSWORD)


async def test_using_one_reset_link_spends_the_older_ones(h: Harness) -> None:
    await h.sign_up("max", "max@example.com")
    await h.container.request_password_reset().execute("max@example.com")
    h.clock.advance(timedelta(minutes=2))
    await h.container.request_password_reset().execute("max@example.com")
    await h.deliver()
    first, second = [
        h.link_token(m, "/password/reset/")
        for m in h.emails_to("max@example.com")
        if "/password/reset/" in m.text
    ]
    await h.container.reset_password().execute(token=second, new_password=NEW_PASSWORD)
    with pytest.raises(errors.SecretConsumed):
        await h.container.reset_password().execute(token=first, new_password="yet another one")


async def _end_reset_links(h: Harness, how: str, account_id: AccountId) -> None:
    """What ends an account's reset links: a new password, or signing out everywhere."""
    session = await h.session_for(account_id)
    if how == "password change":
        await h.container.set_password().execute(
            session_token=session, new_password=NEW_PASSWORD, current_password=PASSWORD
        )
    else:
        await h.container.end_all_sessions().execute(BrowserCookies(session_token=session))


@pytest.mark.parametrize("how", ["password change", "sign out everywhere"])
async def test_a_password_change_or_signing_out_everywhere_ends_the_reset_links_sent(
    h: Harness, how: str
) -> None:
    """A reset link read by someone else (a mailbox opened once, a forwarded email) would
    undo the owner's new password and sign them out (helper-54's review)."""
    signed_up = await h.sign_up("pia", "pia@example.com", verified=True)
    await h.container.request_password_reset().execute("pia@example.com")
    await h.deliver()
    leaked = h.link_token(h.last_email("pia@example.com"), "/password/reset/")
    await _end_reset_links(h, how, signed_up.account.id)
    with pytest.raises(errors.SecretConsumed):
        await h.container.reset_password().execute(token=leaked, new_password="taken over 4 good")
    password = NEW_PASSWORD if how == "password change" else PASSWORD
    await h.container.sign_in().execute(login="pia", password=password)


@pytest.mark.parametrize("how", ["password change", "sign out everywhere", "password reset"])
async def test_a_reset_email_still_queued_is_not_sent_after_what_ends_reset_links(
    h: Harness, how: str
) -> None:
    """Its link is made when it is sent: sent after the change, it would work. It is
    cancelled; a reset asked for afterwards is sent, and works."""
    signed_up = await h.sign_up("quin", "quin@example.com", verified=True)
    if how == "password reset":
        await h.container.request_password_reset().execute("quin@example.com")
        await h.deliver()
        token = h.link_token(h.last_email("quin@example.com"), "/password/reset/")
        h.clock.advance(timedelta(minutes=2))  # past the one-a-minute limit
        await h.container.request_password_reset().execute("quin@example.com")
        await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    else:
        await h.container.request_password_reset().execute("quin@example.com")
        await _end_reset_links(h, how, signed_up.account.id)
    before = len([m for m in h.emails_to("quin@example.com") if "/password/reset/" in m.text])
    report = await h.deliver()
    assert [e.kind for e in report.cancelled] == [EmailKind.RESET_PASSWORD]
    resets = [m for m in h.emails_to("quin@example.com") if "/password/reset/" in m.text]
    assert len(resets) == before
    h.clock.advance(timedelta(minutes=2))
    await h.container.request_password_reset().execute("quin@example.com")
    assert not (await h.deliver()).cancelled
    token = h.link_token(h.last_email("quin@example.com"), "/password/reset/")
    await h.container.reset_password().execute(token=token, new_password="and one more for luck")


async def test_reset_requests_are_silently_limited(h: Harness) -> None:
    await h.sign_up("ned", "ned@example.com")
    for _ in range(3):
        await h.container.request_password_reset().execute("ned@example.com")
    await h.deliver()
    resets = [m for m in h.emails_to("ned@example.com") if "/password/reset/" in m.text]
    assert len(resets) == 1


# -- the limit per address nobody has proved ------------------------------------------------

VICTIM = "victim@example.com"


async def _squat(h: Harness, rounds: range) -> list[SignedIn]:
    """Rounds of the flood a review found: sign up with a stranger's address (a confirmation
    email to it), then change the account's address away (no password needed right after
    signing up), which frees the address for the next round's new account."""
    squatters = []
    for i in rounds:
        squatter = await h.sign_up(f"squatter{i}", VICTIM)
        await h.deliver()  # at once, as the worker the commit woke does (a change cancels it)
        await h.container.change_email().execute(
            session_token=squatter.session_token,
            new_email=f"squatter{i}@evil.example",
            current_password=None,
        )
        squatters.append(squatter)
    return squatters


async def _asks_for_a_link_and_confirms(h: Harness, owner: SignedIn) -> None:
    """The owner of VICTIM asks for a confirmation link: it is sent, and it confirms."""
    assert await h.container.resend_verification().execute(owner.account.id) == VICTIM
    await h.deliver()
    token = h.link_token(h.last_email(VICTIM), "/verify-email/")
    assert (await h.container.verify_email().execute(token, owner.account.id)).email_verified


def _withheld(db: MemoryDatabase) -> list[dict[str, str]]:
    return [dict(e.detail) for e in db.tables.audit if e.kind is AuditKind.EMAIL_WITHHELD]


async def test_signing_up_again_and_again_with_a_strangers_address_sends_it_few_emails(
    h: Harness, db: MemoryDatabase
) -> None:
    """Per-account limits let anyone send a stranger a confirmation email per new account,
    without bound; per address, at most five an hour and ten a day go (RECIPIENT_LIMITS)."""
    squatters = await _squat(h, range(8))
    assert len(h.emails_to(VICTIM)) == 5
    assert _withheld(db) == [{"kind": "verify_email"}] * 3
    assert [s.confirmation_sent for s in squatters] == [True] * 5 + [False] * 3
    # The sign-ups and the changes went on: each squatter's own address got its link.
    await h.deliver()
    assert len(h.emails_to("squatter7@evil.example")) == 1
    assert await h.all_accounts_with_email(VICTIM) == []

    h.clock.advance(timedelta(hours=1, seconds=1))  # five more today, then none
    await _squat(h, range(8, 14))
    h.clock.advance(timedelta(hours=1, seconds=1))
    await _squat(h, range(14, 15))
    assert len(h.emails_to(VICTIM)) == 10

    h.clock.advance(timedelta(hours=22, seconds=1))  # a day after the first hour's five
    await _squat(h, range(15, 16))
    assert len(h.emails_to(VICTIM)) == 11


async def test_a_person_who_asks_for_new_links_a_few_times_gets_each(h: Harness) -> None:
    """Fixing a typo, then asking for a new link now and then: within the account's own
    limits, the address's never refuses one."""
    person = await h.sign_up("pat", "pat@exmaple.com")
    await h.container.change_email().execute(
        session_token=person.session_token, new_email="pat@example.com", current_password=None
    )
    for _ in range(3):
        h.clock.advance(timedelta(minutes=1, seconds=1))
        assert await h.container.resend_verification().execute(person.account.id) == (
            "pat@example.com"
        )
    await h.deliver()
    assert len(h.emails_to("pat@example.com")) == 4


async def test_past_the_address_limit_its_owner_still_changes_to_it_and_is_told_on_asking(
    h: Harness, db: MemoryDatabase
) -> None:
    """The address's owner, after a flood: their email change is made (a refusal would say
    something about the address), without the email, and asking for a link is a 429 that
    says why; an hour later they get one."""
    await _squat(h, range(5))
    owner = await h.sign_up("victor", "victor@exmaple.com")  # a typo, fixed at once
    changed = await h.container.change_email().execute(
        session_token=owner.session_token, new_email=VICTIM, current_password=None
    )
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == 5  # the squatters'
    assert changed.account.email == VICTIM
    assert changed.confirmation_sent is False
    assert _withheld(db) == [{"kind": "verify_email"}]
    status = await h.container.show_email_status().execute(owner.account.id)
    assert status.latest_verification is None  # the account page offers to ask again

    h.clock.advance(timedelta(minutes=2))
    with pytest.raises(errors.TooManyRequests, match="in the last hour"):
        await h.container.resend_verification().execute(owner.account.id)
    h.clock.advance(timedelta(hours=1))
    await _asks_for_a_link_and_confirms(h, owner)


async def test_reset_links_to_an_unconfirmed_address_count_towards_its_limit(
    h: Harness, db: MemoryDatabase
) -> None:
    """A reset link goes to an account's address even unconfirmed (it confirms it): the
    squatter's account asks for them too. Past the address's limit they are withheld as
    silently as past the account's (the page answers the same for every address)."""
    await h.sign_up("rex", VICTIM)
    for _ in range(3):
        for _ in range(5):
            h.clock.advance(timedelta(minutes=1, seconds=1))  # the account's limit allows each
            await h.container.request_password_reset().execute(VICTIM)
        h.clock.advance(timedelta(hours=1))
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == 11  # the confirmation and ten reset links (a day's)
    assert _withheld(db) == [{"kind": "reset_password"}] * 5
    requested = [e for e in db.tables.audit if e.kind is AuditKind.PASSWORD_RESET_REQUESTED]
    assert len(requested) == 10


async def test_a_strangers_reset_requests_do_not_keep_an_owner_from_confirming(
    h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's review: reset requests need nothing but the address, and the reset links
    they sent to an unconfirmed address spent its limit, confirmations included: ten
    requests a day, and its owner's "send me a confirmation link" was a 429 all day. Each
    kind counts against its own limit."""
    owner = await h.sign_up("vera", VICTIM)
    for _ in range(6):
        h.clock.advance(timedelta(minutes=1, seconds=1))
        await h.container.request_password_reset().execute(VICTIM)
    await _asks_for_a_link_and_confirms(h, owner)


async def test_confirmation_links_a_squatter_asks_for_do_not_withhold_the_owners_reset(
    h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's review: whoever sets up an account with someone else's address asks for
    confirmation links to it (the account's own five an hour), and they spent the limit of
    the reset link that gives the address's owner the account back (and unlinks the
    squatter's Discord): the owner's request was silently withheld."""
    squatter = await h.sign_up("sid", VICTIM)
    for _ in range(4):
        h.clock.advance(timedelta(minutes=1, seconds=1))
        await h.container.resend_verification().execute(squatter.account.id)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    await h.container.request_password_reset().execute(VICTIM)
    await h.deliver()
    assert _withheld(db) == []
    token = h.link_token(h.last_email(VICTIM), "/password/reset/")
    reset = await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    assert reset.signed_in.account.id == squatter.account.id
    assert reset.signed_in.account.email_verified


async def test_reset_links_to_a_confirmed_address_have_only_the_accounts_limit(
    h: Harness,
) -> None:
    """A confirmed address is one account's, its owner proved it: the account's own limit
    (five an hour) protects it, and a per-address one would let a stranger's requests use up
    the owner's resets for the day."""
    await h.sign_up("olga", "olga@example.com", verified=True)
    for _ in range(3):
        for _ in range(5):
            h.clock.advance(timedelta(minutes=1, seconds=1))
            await h.container.request_password_reset().execute("olga@example.com")
        h.clock.advance(timedelta(hours=1))
    await h.deliver()
    resets = [m for m in h.emails_to("olga@example.com") if "/password/reset/" in m.text]
    assert len(resets) == 15


async def test_a_discord_created_account_sets_its_first_password_by_reset(h: Harness) -> None:
    created = await h.discord_login(h.discord_user(9100, username="olga", email="o@example.com"))
    assert not (await h.account(created.account_id)).has_password
    await h.container.request_password_reset().execute("o@example.com")
    await h.deliver()
    message = h.last_email("o@example.com")
    assert message.subject == "Set your TaskFlow password"
    token = h.link_token(message, "/password/reset/")
    await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    assert (await h.account(created.account_id)).has_password
    await h.container.sign_in().execute(login="o@example.com", password=NEW_PASSWORD)
    # Discord still signs in too: the link was not touched.
    again = await h.discord_login(h.discord_user(9100))
    assert again.account_id == created.account_id


# -- security notices -------------------------------------------------------------------------


async def test_linking_unlinking_and_password_changes_send_notices(h: Harness) -> None:
    signed_up = await h.sign_up("pia", "pia@example.com", verified=True)
    profile = h.discord_user(9200, username="pia_d")
    await h.discord_link(signed_up.account.id, profile)
    await h.container.unlink_discord().execute(DiscordId(9200))
    await h.container.set_password().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    await h.deliver()
    subjects = [m.subject for m in h.emails_to("pia@example.com")][1:]  # after the confirmation
    assert subjects == [
        "A Discord account was linked to your TaskFlow account",
        "A Discord account was unlinked from your TaskFlow account",
        "Your TaskFlow password was changed",
    ]
    assert "@pia_d" in h.emails_to("pia@example.com")[1].text


async def test_linking_by_ticket_and_by_verified_email_send_notices(h: Harness) -> None:
    by_ticket = await h.sign_up("quin", "quin@example.com", verified=True)
    issued = await h.container.issue_link_ticket().execute(h.discord_user(9300).user)
    await h.confirm_ticket(issued.token, by_ticket.account.id)  # type: ignore[union-attr]
    await h.sign_up("rae", "rae@example.com", verified=True)
    await h.discord_login(h.discord_user(9301, email="rae@example.com"))
    await h.deliver()
    for address in ("quin@example.com", "rae@example.com"):
        assert h.last_email(address).subject.startswith("A Discord account was linked")


async def test_no_notices_to_an_unconfirmed_address_or_for_a_new_discord_account(
    h: Harness,
) -> None:
    unconfirmed = await h.sign_up("sam", "sam@example.com")
    await h.discord_link(unconfirmed.account.id, h.discord_user(9400))
    await h.discord_login(h.discord_user(9401, email="new@example.com"))
    await h.deliver()
    assert [m.subject for m in h.emails_to("sam@example.com")] == [
        "Confirm your email address for TaskFlow"
    ]
    assert h.emails_to("new@example.com") == []


# -- delivery ---------------------------------------------------------------------------------


async def test_a_failed_send_is_retried_later_and_its_link_never_works(
    h: Harness, db: MemoryDatabase
) -> None:
    sender = FailingSender(h, failures=1)
    h.container.email_sender.override(sender)
    signed_up = await h.sign_up("tia", "tia@example.com")  # the request itself succeeds

    report = await h.deliver()
    [retrying] = report.retrying
    assert (retrying.attempts, retrying.last_error) == (1, "email_not_sent")
    assert retrying.next_attempt_at == h.clock.now() + RETRY_DELAYS[0]
    assert len(db.tables.email_tokens) == 1  # kept: the server may have taken the message
    status = await h.container.show_email_status().execute(signed_up.account.id)
    assert status.latest_verification is not None
    assert status.latest_verification.attempts == 1

    assert (await h.deliver()).sent == []  # not due yet
    h.clock.advance(RETRY_DELAYS[0])
    assert len((await h.deliver()).sent) == 1
    token = h.link_token(h.last_email("tia@example.com"), "/verify-email/")
    verified = await h.container.verify_email().execute(token, signed_up.account.id)
    assert verified.email_verified


async def test_delivery_gives_up_after_the_last_retry(h: Harness) -> None:
    h.container.email_sender.override(FailingSender(h, failures=100))
    signed_up = await h.sign_up("uma", "uma@example.com")
    for delay in (timedelta(0), *RETRY_DELAYS):
        h.clock.advance(delay)
        await h.deliver()
    status = await h.container.show_email_status().execute(signed_up.account.id)
    assert status.latest_verification is not None
    assert status.latest_verification.status is DeliveryStatus.FAILED
    assert status.latest_verification.attempts == MAX_ATTEMPTS
    h.clock.advance(timedelta(days=1))
    assert (await h.deliver()).failed == []  # nothing more is tried
    # The person can ask again once the address is right.
    await h.container.resend_verification().execute(signed_up.account.id)


async def test_an_address_the_server_refuses_for_good_is_given_up_at_once(h: Harness) -> None:
    """A 5xx "no such mailbox" holds on the next try too: trying again four times issued four
    more links, and asked the server again to deliver where it cannot (which costs the
    sender's reputation). What can be fixed is requeued by the operator or asked again."""
    sender = FailingSender(h, failures=1, error=errors.EmailRefused)
    h.container.email_sender.override(sender)
    signed_up = await h.sign_up("ned", "ned@example.com")
    assert [e.last_error for e in (await h.deliver()).failed] == ["email_refused"]
    status = await h.container.show_email_status().execute(signed_up.account.id)
    assert status.latest_verification is not None
    assert status.latest_verification.status is DeliveryStatus.FAILED
    assert status.latest_verification.attempts == 1
    h.clock.advance(RETRY_DELAYS[-1] * 2)
    assert not (await h.deliver()).busy  # nothing more is tried
    assert sender.calls == 1
    assert await h.container.requeue_failed_emails().execute() == 1  # the address was fixed
    assert len((await h.deliver()).sent) == 1


async def _give_up(h: Harness, address: str) -> None:
    """Sign up with ``address`` while the mail server is down, until delivery gives up."""
    h.container.email_sender.override(FailingSender(h, failures=MAX_ATTEMPTS))
    await h.sign_up(address.split("@", maxsplit=1)[0], address)
    for delay in (timedelta(0), *RETRY_DELAYS):
        h.clock.advance(delay)
        await h.deliver()
    h.container.email_sender.reset_override()  # the server is fixed


async def test_given_up_emails_are_requeued_with_fresh_attempts_then_sent(h: Harness) -> None:
    await _give_up(h, "zoe@example.com")
    await _give_up(h, "abe@example.com")
    assert (await h.deliver()).sent == []  # given up: nothing is tried any more

    assert await h.container.requeue_failed_emails().execute() == 2
    sent = (await h.deliver()).sent
    assert sorted(e.to for e in sent) == ["abe@example.com", "zoe@example.com"]
    assert all(e.attempts == 1 for e in sent)  # counted afresh
    token = h.link_token(h.last_email("zoe@example.com"), "/verify-email/")
    zoe = (await h.all_accounts_with_email("zoe@example.com"))[0]
    assert (await h.container.verify_email().execute(token, zoe.id)).email_verified
    assert await h.container.requeue_failed_emails().execute() == 0  # nothing left to retry


async def test_one_given_up_email_is_requeued_by_its_id(h: Harness) -> None:
    await _give_up(h, "zoe@example.com")
    await _give_up(h, "abe@example.com")
    abe = (await h.all_accounts_with_email("abe@example.com"))[0]
    async with h.uow() as uow:
        email = await uow.outgoing_emails.latest(abe.id, EmailKind.VERIFY_EMAIL)
    assert email is not None

    assert await h.container.requeue_failed_emails().execute(email.id) == 1
    assert [e.to for e in (await h.deliver()).sent] == ["abe@example.com"]
    assert h.emails_to("zoe@example.com") == []
    with pytest.raises(errors.NotFound):  # sent now: not given up any more
        await h.container.requeue_failed_emails().execute(email.id)
    with pytest.raises(errors.NotFound):
        await h.container.requeue_failed_emails().execute(uuid.uuid4())


async def test_a_requeued_email_that_is_no_longer_wanted_is_cancelled(h: Harness) -> None:
    await _give_up(h, "zoe@example.com")
    zoe = (await h.all_accounts_with_email("zoe@example.com"))[0]
    await h.container.change_email().execute(
        session_token=h.sessions[zoe.id], new_email="zoe@new.example", current_password=PASSWORD
    )
    assert await h.container.requeue_failed_emails().execute() == 1
    report = await h.deliver()
    assert [e.to for e in report.cancelled] == ["zoe@example.com"]  # not the current address
    assert h.emails_to("zoe@example.com") == []


async def test_concurrent_deliveries_send_each_email_once(h: Harness) -> None:
    for name in ("vic", "wes", "xia"):
        await h.sign_up(name, f"{name}@example.com")
    reports = await asyncio.gather(*(h.deliver() for _ in range(4)))
    assert sum(len(r.sent) for r in reports) == 3
    assert len(h.outbox.messages()) == 3


async def test_an_email_whose_lease_ran_out_mid_batch_is_left_to_its_new_sender(
    h: Harness,
) -> None:
    """A batch is claimed at once but sent one email at a time: when the batch takes longer
    than the lease (each send within it), another worker may take the rest meanwhile, and
    those must not go twice."""
    for name in ("vic", "wes", "xia"):
        await h.sign_up(name, f"{name}@example.com")

    class SlowSender:
        """Each send takes 100 s; during the second, another worker has a go."""

        def __init__(self) -> None:
            self.outbox, self.sends = h.outbox, 0
            self.other_worker: DeliveryReport | None = None

        async def send(self, message: EmailMessage) -> None:
            self.sends += 1
            h.clock.advance(timedelta(seconds=100))
            if self.sends == 2:
                self.other_worker = await h.deliver()
            await self.outbox.send(message)

    assert timedelta(seconds=100) < CLAIM_LEASE < timedelta(seconds=200)
    sender = SlowSender()
    h.container.email_sender.override(sender)
    first_worker = await h.deliver()
    assert sender.other_worker is not None
    assert [e.to for e in first_worker.sent] == ["vic@example.com", "wes@example.com"]
    assert [e.to for e in sender.other_worker.sent] == ["xia@example.com"]
    assert sorted(m.message.to for m in h.outbox.messages()) == [
        "vic@example.com",
        "wes@example.com",
        "xia@example.com",
    ]


async def test_a_sender_stalled_past_its_lease_cannot_undo_the_one_that_took_over(
    h: Harness,
) -> None:
    """Sender A stalls on an email past its lease (a paused process, clocks apart); sender B
    takes it over and sends it. A's attempt then fails: its retry was written over B's
    "sent", and the email went out a third time (an attacker's review of the same flaw in
    the webhook outbox)."""
    await h.sign_up("vic", "vic@example.com")
    outbox = h.outbox  # (before another sender is put in front of it)

    class StallingSender:
        def __init__(self) -> None:
            self.other_worker: DeliveryReport | None = None

        async def send(self, message: EmailMessage) -> None:
            if self.other_worker is None:
                self.other_worker = DeliveryReport()  # (B's own send goes through)
                h.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
                self.other_worker = await h.deliver()
                raise errors.EmailNotSent("smtp_timeout")  # A's attempt finally fails
            await outbox.send(message)

    sender = StallingSender()
    h.container.email_sender.override(sender)
    first_worker = await h.deliver()
    assert sender.other_worker is not None
    assert [e.to for e in sender.other_worker.sent] == ["vic@example.com"]
    assert [e.to for e in first_worker.taken_over] == ["vic@example.com"]
    assert first_worker.retrying == []
    h.clock.advance(timedelta(hours=1))
    assert await h.deliver() == DeliveryReport()  # nothing due again
    assert [m.message.to for m in outbox.messages()] == ["vic@example.com"]


async def test_the_queue_records_what_was_sent(h: Harness) -> None:
    signed_up = await h.sign_up("yan", "yan@example.com")
    await h.deliver()
    async with h.uow() as uow:
        sent = await uow.outgoing_emails.latest(signed_up.account.id, EmailKind.VERIFY_EMAIL)
    assert sent is not None
    assert (sent.status, sent.attempts, sent.finished_at) == (
        DeliveryStatus.SENT,
        1,
        h.clock.now(),
    )


async def test_an_unexpected_sender_error_counts_as_a_failed_attempt(h: Harness) -> None:
    class BrokenSender:
        async def send(self, message: EmailMessage) -> None:
            raise RuntimeError("a bug in an adapter")

    h.container.email_sender.override(BrokenSender())
    await h.sign_up("zoe", "zoe@example.com")
    await h.sign_up("zed", "zed@example.com")
    report = await h.deliver()
    assert [e.last_error for e in report.retrying] == ["unexpected_error"] * 2


async def test_an_unexpected_sender_error_is_logged_without_the_address_body_or_link(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure no code names (a bug, a library's surprise) was recorded as
    ``unexpected_error`` with no traceback anywhere. The worker logs it now, with its type,
    its chain's types and its traceback's frames, but never its message (a library's may
    quote the recipient, the body, the link and its token), nor the address or the body."""
    from entrypoints.email_worker import EmailWorker

    said: list[str] = []

    class BrokenSender:
        async def send(self, message: EmailMessage) -> None:
            said.append(f"cannot send {message.text!r} to {message.to}")
            try:
                raise OSError(said[-1])
            except OSError as cause:
                raise RuntimeError(said[-1]) from cause

    h.container.email_sender.override(BrokenSender())
    await h.sign_up("zoe", "zoe@example.com")  # a confirmation: a link with a token
    caplog.set_level(logging.INFO, logger="taskflow_link.email")
    report = await EmailWorker(h.container).run_once()
    h.container.email_sender.reset_override()

    assert report is not None
    assert [e.last_error for e in report.retrying] == ["unexpected_error"]
    (email,) = report.retrying
    failure = [r.getMessage() for r in caplog.records if "unexpectedly" in r.getMessage()]
    assert len(failure) == 1, caplog.text
    assert str(email.id) in failure[0]
    assert "RuntimeError from OSError" in failure[0]
    assert "BrokenSender.send" in failure[0] or "in send" in failure[0]  # the frames
    assert "/" in said[0]  # the body's link was in the message
    for secret in ("zoe@example.com", "zoe@", said[0], "cannot send", "token", "http"):
        assert secret not in caplog.text, secret


async def test_a_reset_on_an_unconfirmed_address_removes_the_discord_link(h: Harness) -> None:
    """Pre-account takeover: someone signs up with the victim's address (never confirmed)
    and links their own Discord. The victim's reset must not leave them a way in."""
    squatter = await h.sign_up("squat", "victim@example.com")
    intruder = h.discord_user(9500, email="intruder@example.com")
    issued = await h.container.issue_link_ticket().execute(intruder.user)
    assert isinstance(issued, TicketIssued)
    await h.discord_link(squatter.account.id, intruder)
    _live_again(h, issued.token)  # a /link issued beside the link
    await h.container.request_password_reset().execute("victim@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("victim@example.com"), "/password/reset/")
    done = await h.container.reset_password().execute(token=token, new_password=NEW_PASSWORD)
    assert done.unlinked is not None
    assert done.unlinked.discord_id == DiscordId(9500)
    assert await h.container.link_of_account().execute(squatter.account.id) is None
    with pytest.raises(errors.SecretConsumed):  # nor a /link button of the intruder's
        await h.confirm_ticket(issued.token, squatter.account.id)
    again = await h.discord_login(h.discord_user(9500))  # the intruder's Discord: a new account
    assert again.account_id != squatter.account.id
    # And the account remembers it: no Discord account is linked to it by its address alone.
    by_email = await h.discord_login(h.discord_user(9501, email="victim@example.com"))
    assert by_email.outcome is AuthOutcome.CONFIRM_NEEDED


async def test_changing_the_email_is_rate_limited(h: Harness) -> None:
    signed_up = await h.sign_up("ava", "ava@example.com")  # one confirmation queued
    for i in range(4):  # fixing a typo at once is fine; five confirmations an hour in all
        await h.container.change_email().execute(
            session_token=await h.session_for(signed_up.account.id),
            new_email=f"ava{i}@example.com",
            current_password=PASSWORD,
        )
    with pytest.raises(errors.TooManyRequests):
        await h.container.change_email().execute(
            session_token=await h.session_for(signed_up.account.id),
            new_email="ava@new.example",
            current_password=PASSWORD,
        )
    h.clock.advance(timedelta(hours=1, seconds=1))
    await h.container.change_email().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_email="ava@new.example",
        current_password=PASSWORD,
    )


async def test_changes_refused_for_an_address_in_use_count_towards_the_limit(
    h: Harness, db: MemoryDatabase
) -> None:
    """helper-54's review: "another account uses this address" queued no email, so it counted
    nothing, and one signed-in account could test any number of addresses for an account."""
    for i in range(6):
        await h.sign_up(f"taken{i}", f"taken{i}@example.com", verified=True)
    signed_up = await h.sign_up("mal", "mal@example.com")  # one confirmation queued

    async def change_to(address: str) -> None:
        await h.container.change_email().execute(
            session_token=await h.session_for(signed_up.account.id),
            new_email=address,
            current_password=PASSWORD,
        )

    for i in range(4):  # with the sign-up's confirmation, five in the hour
        with pytest.raises(errors.EmailTaken):
            await change_to(f"taken{i}@example.com")
    with pytest.raises(errors.TooManyRequests):  # as for any change past the limit
        await change_to("taken4@example.com")
    with pytest.raises(errors.TooManyRequests):  # a free address too
        await change_to("mal@new.example")
    refused = [e for e in db.tables.audit if e.kind is AuditKind.EMAIL_CHANGE_REFUSED]
    assert [(e.account_id, e.detail) for e in refused] == [
        (signed_up.account.id, {"reason": "email_taken"})
    ] * 4
    h.clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(errors.EmailTaken):
        await change_to("taken5@example.com")


@pytest.mark.parametrize(
    "address",
    ["x\x00@b.com", "a,b@c.d", "Name <a@b.c>", "a\r\n@b.c", "\u202emoc.b@a", "a@b\u200b.com"],
)
async def test_addresses_that_could_smuggle_headers_or_show_as_another_are_refused(
    h: Harness, address: str
) -> None:
    with pytest.raises(errors.InvalidInput):
        await h.sign_up("bad", address)
    with pytest.raises(errors.InvalidInput):
        await h.container.request_password_reset().execute(address)
    good = await h.sign_up("good", "good@example.com")
    with pytest.raises(errors.InvalidInput):
        await h.container.change_email().execute(
            session_token=good.session_token, new_email=address, current_password=PASSWORD
        )
    assert (await h.account(good.account.id)).email == "good@example.com"


@pytest.mark.parametrize("how", ["password change", "sign out everywhere", "nothing"])
async def test_a_reset_email_queued_before_epochs_were_recorded_goes_only_if_none_moved(
    h: Harness, how: str
) -> None:
    """A reset email the previous version queued records no device epoch: taken as the
    account's current one, it went out after a new password or "sign out everywhere" (a retry
    or 'email retry' hours later too), with a fresh link (helper-61's review)."""
    signed_up = await h.sign_up("vic", "vic@example.com", verified=True)
    await h.container.request_password_reset().execute("vic@example.com")
    table = h.container.memory_db().tables.outgoing_emails
    for key, email in list(table.items()):
        if email.kind is EmailKind.RESET_PASSWORD:  # as the previous version queued it
            detail = {k: v for k, v in email.detail.items() if k != "device_epoch"}
            table[key] = replace(email, detail=detail)
    session = await h.session_for(signed_up.account.id)
    if how == "password change":
        await h.container.set_password().execute(
            session_token=session, new_password=NEW_PASSWORD, current_password=PASSWORD
        )
    elif how == "sign out everywhere":
        await h.container.end_all_sessions().execute(BrowserCookies(session_token=session))
    report = await h.deliver()
    resets = report.sent if how == "nothing" else report.cancelled
    assert [e.kind for e in resets if e.kind is EmailKind.RESET_PASSWORD] == [
        EmailKind.RESET_PASSWORD
    ]


async def test_a_worker_says_once_that_the_database_is_not_usable(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker polls every few seconds: an instance started before `db upgrade` (or during
    an outage) logged the same line at each pass, burying the rest of the log. Said once per
    streak (again when it changes kind), and once more when it works again."""
    from entrypoints.email_worker import EmailWorker

    failures: list[errors.StorageError] = [
        errors.StorageNotReady("relation outgoing_emails does not exist"),
        errors.StorageNotReady("relation outgoing_emails does not exist"),
        errors.StorageError(),
        errors.StorageError(),
    ]
    real = h.container.deliver_emails()

    class Broken:
        async def execute(self, *, stopping: Stopping | None = None) -> DeliveryReport:
            if failures:
                raise failures.pop(0)
            return await real.execute(stopping=stopping)

    h.container.deliver_emails.override(Broken())
    worker = EmailWorker(h.container)
    caplog.set_level(logging.INFO, logger="taskflow_link.email")
    for _ in range(6):
        await worker.run_once()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("db upgrade" in line for line in lines) == 1
    assert sum("unreachable (database)" in line for line in lines) == 1
    assert sum("works again" in line for line in lines) == 1
    h.container.deliver_emails.reset_override()
