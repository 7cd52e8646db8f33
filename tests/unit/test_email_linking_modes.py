"""TASKFLOW_LINK_EMAIL_LINKING (verified, confirm, off) and TASKFLOW_LINK_DISCORD_SIGNUP: the
policy row by row, and the "confirm" flow (password or emailed link) through the use cases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import (
    LINK_PROPOSAL_TTL,
    Account,
    AccountId,
    AuditKind,
    DiscordId,
    DiscordProfile,
    EmailKind,
    EmailLinking,
    Link,
    SignInMethod,
)
from domain.policies import (
    ConfirmBeforeLinking,
    CreateAccount,
    LinkAndSignIn,
    Refuse,
    SignInLinkedAccount,
    decide_login,
)
from domain.use_cases import AuthOutcome, BrowserCookies, TicketIssued
from entrypoints.container import build_container
from tests.harness import PASSWORD, Browser, Harness, make_settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _profile(*, verified: bool = True) -> DiscordProfile:
    return DiscordProfile(DiscordId(1), "dee", None, None, "dee@example.com", verified)


def _account(*, verified: bool) -> Account:
    return Account(AccountId.new(), "dee", "dee@example.com", verified, "hash", NOW)


# -- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "discord_verified", "account_verified", "expected"),
    [
        (EmailLinking.VERIFIED, True, True, LinkAndSignIn),
        (EmailLinking.VERIFIED, True, False, Refuse),
        (EmailLinking.VERIFIED, False, True, Refuse),
        (EmailLinking.CONFIRM, True, True, ConfirmBeforeLinking),
        (EmailLinking.CONFIRM, True, False, ConfirmBeforeLinking),  # the proof will show
        (EmailLinking.CONFIRM, False, True, Refuse),  # an unverified Discord email never
        (EmailLinking.OFF, True, True, Refuse),
        (EmailLinking.OFF, False, False, Refuse),
    ],
)
def test_one_account_with_the_email_under_each_mode(
    mode: EmailLinking, discord_verified: bool, account_verified: bool, expected: type
) -> None:
    account = _account(verified=account_verified)
    decision = decide_login(
        _profile(verified=discord_verified), None, [account], email_linking=mode
    )
    assert isinstance(decision, expected)
    if isinstance(decision, Refuse):
        assert decision.error is errors.EmailBelongsToAccount
    elif not isinstance(decision, CreateAccount):
        assert decision.account_id == account.id


@pytest.mark.parametrize(
    ("mode", "discord_verified", "expected"),
    [
        (EmailLinking.VERIFIED, True, ConfirmBeforeLinking),  # not LinkAndSignIn any more
        (EmailLinking.VERIFIED, False, Refuse),
        (EmailLinking.CONFIRM, True, ConfirmBeforeLinking),
        (EmailLinking.OFF, True, Refuse),
    ],
)
def test_an_account_that_unlinked_discord_is_never_linked_by_email_alone(
    mode: EmailLinking, discord_verified: bool, expected: type
) -> None:
    account = replace(_account(verified=True), discord_unlinked_at=NOW)
    decision = decide_login(
        _profile(verified=discord_verified), None, [account], email_linking=mode
    )
    assert isinstance(decision, expected)


@pytest.mark.parametrize(
    ("mode", "discord_verified", "account_verified", "refusal"),
    [
        (EmailLinking.VERIFIED, True, True, errors.EmailAccountLinkedToOtherDiscord),
        (EmailLinking.CONFIRM, True, False, errors.EmailAccountLinkedToOtherDiscord),
        # Whoever would not be offered the link learns nothing more than before.
        (EmailLinking.VERIFIED, True, False, errors.EmailBelongsToAccount),
        (EmailLinking.VERIFIED, False, True, errors.EmailBelongsToAccount),
        (EmailLinking.OFF, True, True, errors.EmailBelongsToAccount),
    ],
)
def test_the_one_account_with_the_email_linked_to_another_discord_is_refused_up_front(
    mode: EmailLinking, discord_verified: bool, account_verified: bool, refusal: type
) -> None:
    """The link table refuses an account that has another Discord account: deciding it only
    when linking left the refusal unaudited and, under "confirm", asked for a proof (or
    emailed a link) that could never link."""
    account = _account(verified=account_verified)
    decision = decide_login(
        _profile(verified=discord_verified),
        None,
        [account],
        email_linking=mode,
        linked_matches=[account.id],
    )
    assert decision == Refuse(refusal)


@pytest.mark.parametrize("mode", list(EmailLinking))
def test_a_linked_discord_account_signs_in_and_nobody_new_is_matched(mode: EmailLinking) -> None:
    account = _account(verified=True)
    link = Link(DiscordId(1), account.id, NOW, "dee")
    assert isinstance(decide_login(_profile(), link, [], email_linking=mode), SignInLinkedAccount)
    assert isinstance(decide_login(_profile(), None, [], email_linking=mode), CreateAccount)


@pytest.mark.parametrize("mode", list(EmailLinking))
def test_a_new_account_takes_only_the_address_discord_vouches_for(mode: EmailLinking) -> None:
    vouched = decide_login(_profile(verified=True), None, [], email_linking=mode)
    assert vouched == CreateAccount("dee", "dee@example.com", email_verified=True)
    unverified = decide_login(_profile(verified=False), None, [], email_linking=mode)
    assert unverified == CreateAccount("dee", None, email_verified=False)


def test_without_discord_sign_up_a_stranger_is_refused_but_the_linked_sign_in() -> None:
    account = _account(verified=True)
    refused = decide_login(_profile(), None, [], signup=False)
    assert refused == Refuse(errors.SignupDisabled)
    link = Link(DiscordId(1), account.id, NOW, "dee")
    assert isinstance(decide_login(_profile(), link, [], signup=False), SignInLinkedAccount)


# -- the use cases -------------------------------------------------------------------------------


@pytest.fixture
def confirm() -> Iterator[Harness]:
    harness = Harness.build(build_container(make_settings(email_linking="confirm")))
    yield harness
    harness.container.unwire()


async def _confirm_needed(h: Harness, discord_id: int, address: str) -> tuple[str, Browser]:
    browser = Browser()
    done = await h.discord_login(h.discord_user(discord_id, email=address), browser)
    assert done.outcome is AuthOutcome.CONFIRM_NEEDED
    assert done.session_token is None  # not signed in yet
    assert done.proposal_token is not None
    return done.proposal_token, browser


async def test_confirm_mode_links_after_the_accounts_password(confirm: Harness) -> None:
    h = confirm
    alice = (await h.sign_up("alice", "alice@example.com")).account  # even unconfirmed
    proposal, _ = await _confirm_needed(h, 8001, "alice@example.com")
    assert await h.container.link_of_account().execute(alice.id) is None

    shown = await h.container.show_link_proposal().execute(proposal)
    assert shown.account.username == "alice"
    assert shown.proposal.discord.id == DiscordId(8001)
    with pytest.raises(errors.InvalidCredentials):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password="not it"
        )
    assert await h.container.link_of_account().execute(alice.id) is None

    done = await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
    )
    assert done.account_id == alice.id
    link = await h.container.link_of_account().execute(alice.id)
    assert link is not None
    assert link.discord_id == DiscordId(8001)
    signed_in = await h.container.current_session().execute(done.session_token)
    assert signed_in is not None
    assert signed_in.session.method is SignInMethod.PASSWORD
    # The form sent twice (a double click): the second, with the password, within a minute,
    # is answered the first one's session, whose cookie its browser never received.
    with pytest.raises(errors.SecretConsumed):  # the cookie alone: nothing
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password="not it"
        )
    again = await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
    )
    assert again.sent_twice
    assert again.session_token == done.session_token
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.SecretConsumed):  # later on: spent
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
        )


async def test_a_wrong_password_confirming_a_discord_link_is_audited_as_a_failed_sign_in(
    confirm: Harness,
) -> None:
    """The password that confirms a Discord link signs in with it, so a wrong one is a failed
    sign-in, audited as one (`sign_in_failed`, with the account, the Discord account and the
    client). Whoever holds a Discord account with the account's address (the one its owner
    unlinked because someone else holds it: the proof exists for them) guessed the account's
    password here leaving no trace in the audit trail, while the sign-in form's guesses do."""
    h = confirm
    alice = (await h.sign_up("alice", "alice@example.com")).account
    proposal, _ = await _confirm_needed(h, 8001, "alice@example.com")
    read = h.container.read_audit_trail()
    before = len(await read.execute(account_id=alice.id))
    with pytest.raises(errors.InvalidCredentials):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal),
            password="not it",
            client_address="203.0.113.9",
        )
    [failed] = list(await read.execute(account_id=alice.id))[before:]
    assert failed.kind is AuditKind.SIGN_IN_FAILED
    assert failed.discord_id == DiscordId(8001)
    assert failed.detail == {"via": "link_confirm", "client": "203.0.113.9"}
    assert "not it" not in repr(failed)


async def test_confirm_mode_offers_no_proof_for_an_account_linked_to_another_discord(
    confirm: Harness, db: MemoryDatabase
) -> None:
    """The proof could never link (one Discord account per account): it was asked for, and
    a link emailed to the account's owner on request, before the link was refused."""
    h = confirm
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    await h.discord_link(alice.id, h.discord_user(8101, email="elsewhere@example.com"))
    with pytest.raises(errors.AccountLinkedToOtherDiscord):
        await h.discord_login(h.discord_user(8102, email="alice@example.com"))
    assert not db.tables.link_proposals
    link = await h.container.link_of_account().execute(alice.id)
    assert link is not None
    assert link.discord_id == DiscordId(8101)


async def test_a_trusted_browser_confirms_with_the_password_while_strangers_guess(
    confirm: Harness,
) -> None:
    """Confirming a link with the password is a password sign-in: a browser that signed in
    to the account before counts its tries on its own throttle, so strangers' wrong guesses
    (which keep the account's throttle waiting) do not stop it, and it leaves trusted."""
    from domain.use_cases._passwords import trusted_device

    h = confirm
    alice = (await h.sign_up("alice", "alice@example.com")).account
    earlier = await h.container.sign_in().execute(login="alice", password=PASSWORD)
    proposal, _ = await _confirm_needed(h, 8005, "alice@example.com")
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.sign_in().execute(login="alice", password="a stranger's guess")
    with pytest.raises(errors.TooManyRequests):  # the account's throttle is waiting
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
        )
    done = await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=proposal),
        password=PASSWORD,
        device_token=earlier.device_token,
    )
    assert done.account_id == alice.id
    assert await h.container.link_of_account().execute(alice.id) is not None
    assert done.device_token is not None
    stored = await h.account(alice.id)
    assert trusted_device(h.container.tokens(), stored, done.device_token)


async def test_a_confirmation_whose_check_overlapped_a_password_reset_links_nothing(
    confirm: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old password was right when checked, but alice reset it before the link and the
    session were written: neither is, and the proposal is not spent."""
    h = confirm
    alice = (await h.sign_up("alice", "alice@example.com")).account
    proposal, _ = await _confirm_needed(h, 8004, "alice@example.com")
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    hasher = h.container.password_hasher()
    real_verify = hasher.verify

    reset_done: list[bool] = []

    async def verify_then_reset(password_hash: str, password: str) -> bool:
        right = await real_verify(password_hash, password)
        if not reset_done:  # the check's verify (then the new hash's, which is not right)
            reset_done.append(True)
            await h.container.reset_password().execute(
                token=reset, new_password="a password chosen after the reset"
            )
        return right

    monkeypatch.setattr(hasher, "verify", verify_then_reset)
    with pytest.raises(errors.InvalidCredentials, match="changed a moment ago"):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
        )
    monkeypatch.undo()
    assert await h.container.link_of_account().execute(alice.id) is None
    shown = await h.container.show_link_proposal().execute(proposal)  # still usable
    assert shown.account.id == alice.id


async def test_confirm_mode_links_after_the_emailed_link_in_the_same_browser(
    confirm: Harness,
) -> None:
    h = confirm
    bob = (await h.sign_up("bob", "bob@example.com", verified=True)).account
    proposal, _ = await _confirm_needed(h, 8002, "bob@example.com")

    emailed = await h.container.email_link_confirmation().execute(proposal)
    assert emailed.address == "bob@example.com"
    await h.deliver()
    message = h.last_email("bob@example.com")
    assert message.subject == "Confirm linking your Discord account to TaskFlow"
    assert "@user8002" in message.text
    token = h.link_token(message, "/auth/discord/confirm-link/")

    other_browser, _ = await _confirm_needed(h, 8003, "bob@example.com")
    with pytest.raises(errors.SecretUnknown):  # no proposal in this browser
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=None), email_token=token
        )
    with pytest.raises(errors.SecretUnknown, match="another browser"):  # not this link's
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=other_browser), email_token=token
        )

    done = await h.container.confirm_link_with_email().execute(
        browser=BrowserCookies(proposal_token=proposal), email_token=token
    )
    assert done.account_id == bob.id
    link = await h.container.link_of_account().execute(bob.id)
    assert link is not None
    assert link.discord_id == DiscordId(8002)
    with pytest.raises(errors.SecretConsumed):
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=other_browser), email_token=token
        )


async def test_a_link_email_for_a_sign_in_that_ended_is_not_sent(confirm: Harness) -> None:
    """Confirmed with the password while the emailed link was still queued (or its sending
    retried past the sign-in's end): the email went out all the same, with a link that could
    only be refused; and a link sent 20 minutes after the sign-in was said to work 30 minutes,
    though the sign-in it confirms ended 10 minutes later."""
    h = confirm
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.deliver()  # the sign-up's confirmation, out of the way
    confirmed, _ = await _confirm_needed(h, 8005, "bob@example.com")
    await h.container.email_link_confirmation().execute(confirmed)
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=confirmed), password=PASSWORD
    )
    report = await h.deliver()
    assert [e.kind for e in report.cancelled] == [EmailKind.CONFIRM_DISCORD_LINK]

    await h.sign_up("cid", "cid@example.com", verified=True)
    await h.deliver()
    waited, _ = await _confirm_needed(h, 8006, "cid@example.com")
    ends = h.clock.now() + LINK_PROPOSAL_TTL
    h.clock.advance(timedelta(minutes=20))
    await h.container.email_link_confirmation().execute(waited)
    await h.deliver()
    token = h.link_token(h.last_email("cid@example.com"), "/auth/discord/confirm-link/")
    async with h.uow() as uow:
        link = await uow.email_tokens.get(h.container.tokens().digest(token))
    assert link is not None
    assert link.expires_at == ends


async def test_an_emailed_link_whose_sign_in_was_confirmed_never_links_again(
    confirm: Harness,
) -> None:
    """A link emailed for a Discord sign-in that was then confirmed with the password (the
    link had gone out already) is done with: after an unlink, a new sign-in of that Discord
    account, waiting for a proof, does not take it as one (its owner unlinked; whoever read
    the email then must ask for a new one, sent to the address as it is now)."""
    h = confirm
    bob = (await h.sign_up("bob", "bob@example.com", verified=True)).account
    first, _ = await _confirm_needed(h, 8007, "bob@example.com")
    await h.container.email_link_confirmation().execute(first)
    await h.deliver()
    token = h.link_token(h.last_email("bob@example.com"), "/auth/discord/confirm-link/")
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=first), password=PASSWORD
    )
    await h.container.unlink_discord().execute(DiscordId(8007))

    again, _ = await _confirm_needed(h, 8007, "bob@example.com")
    with pytest.raises(errors.SecretRefused):
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=again), email_token=token
        )
    assert await h.container.link_of_account().execute(bob.id) is None


async def test_an_emailed_link_is_done_with_once_a_later_sign_in_is_confirmed(
    confirm: Harness,
) -> None:
    """The link emailed for a Discord sign-in, then that Discord account signed in again (a
    new sign-in waiting in the browser) and confirmed it with the password: the link is done
    with too. After an unlink, a third sign-in of that Discord account does not take it as a
    proof (it did: the sign-in it was sent for was still waiting, unconfirmed)."""
    h = confirm
    bob = (await h.sign_up("bob", "bob@example.com", verified=True)).account
    first, _ = await _confirm_needed(h, 8008, "bob@example.com")
    await h.container.email_link_confirmation().execute(first)
    await h.deliver()
    token = h.link_token(h.last_email("bob@example.com"), "/auth/discord/confirm-link/")
    second, _ = await _confirm_needed(h, 8008, "bob@example.com")
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=second), password=PASSWORD
    )
    await h.container.unlink_discord().execute(DiscordId(8008))

    third, _ = await _confirm_needed(h, 8008, "bob@example.com")
    with pytest.raises(errors.SecretRefused):
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=third), email_token=token
        )
    assert await h.container.link_of_account().execute(bob.id) is None


async def test_a_link_email_is_not_sent_once_a_later_sign_in_was_confirmed(
    confirm: Harness,
) -> None:
    """Still queued when a later sign-in of the same Discord account was confirmed with the
    password (and Discord then unlinked): the email is not sent, its link would have linked
    that Discord account again on its next sign-in."""
    h = confirm
    bob = (await h.sign_up("bob", "bob@example.com", verified=True)).account
    await h.deliver()  # the sign-up's confirmation, out of the way
    first, _ = await _confirm_needed(h, 8009, "bob@example.com")
    await h.container.email_link_confirmation().execute(first)
    second, _ = await _confirm_needed(h, 8009, "bob@example.com")
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=second), password=PASSWORD
    )
    await h.container.unlink_discord().execute(DiscordId(8009))

    report = await h.deliver()
    assert EmailKind.CONFIRM_DISCORD_LINK in [e.kind for e in report.cancelled]
    assert EmailKind.CONFIRM_DISCORD_LINK not in [e.kind for e in report.sent]
    assert await h.container.link_of_account().execute(bob.id) is None


async def test_confirm_mode_emails_are_rate_limited_and_proposals_expire(
    confirm: Harness,
) -> None:
    h = confirm
    await h.sign_up("cid", "cid@example.com", verified=True)
    proposal, _ = await _confirm_needed(h, 8004, "cid@example.com")
    await h.container.email_link_confirmation().execute(proposal)
    with pytest.raises(errors.TooManyRequests):
        await h.container.email_link_confirmation().execute(proposal)
    h.clock.advance(timedelta(minutes=30))
    with pytest.raises(errors.SecretExpired):
        await h.container.show_link_proposal().execute(proposal)
    with pytest.raises(errors.SecretExpired):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
        )


async def test_confirm_mode_never_emails_a_link_to_an_unconfirmed_address(
    confirm: Harness, db: MemoryDatabase
) -> None:
    """The pre-account takeover a reviewer found: mallory registers victim@ (never confirmed)
    with her own password. The victim signs in with Discord (victim@ verified there): a link
    emailed to victim@ would have linked the victim's Discord into mallory's account and
    signed the victim in to it. Only the account's password can prove such an account."""
    h = confirm
    mallory = (await h.sign_up("mallory", "victim@example.com")).account
    proposal, _ = await _confirm_needed(h, 8010, "victim@example.com")
    with pytest.raises(errors.InvalidInput, match="not confirmed"):
        await h.container.email_link_confirmation().execute(proposal)
    assert h.emails_to("victim@example.com")[1:] == []  # only mallory's own confirmation
    with pytest.raises(errors.InvalidCredentials):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password="the victim does not know it"
        )
    assert db.tables.links == {}
    assert not (await h.account(mallory.id)).email_verified


async def test_confirm_mode_without_a_password_offers_only_the_email(confirm: Harness) -> None:
    h = confirm
    # An account without a password that no Discord account is linked to (imported; one that
    # Discord sign-in made is linked, and a second Discord account could never link to it).
    await h.legacy_account("dora", "dora@example.com", verified=True)
    proposal, _ = await _confirm_needed(h, 8006, "dora@example.com")
    with pytest.raises(errors.InvalidInput):
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=proposal), password="anything"
        )


@pytest.mark.parametrize("mode", ["off", "verified"])
async def test_off_never_links_by_email_and_signup_false_creates_nobody(mode: str) -> None:
    h = Harness.build(build_container(make_settings(email_linking=mode, discord_signup=False)))
    db: MemoryDatabase = h.container.memory_db()
    await h.sign_up("erin", "erin@example.com", verified=True)
    matching = h.discord_user(8007, email="erin@example.com")
    if mode == "off":
        with pytest.raises(errors.EmailBelongsToAccount):
            await h.discord_login(matching)
    else:
        assert (await h.discord_login(matching)).outcome is AuthOutcome.LINKED_AND_SIGNED_IN
    accounts = len(db.tables.accounts)
    with pytest.raises(errors.SignupDisabled):
        await h.discord_login(h.discord_user(8008, email="new@example.com"))
    assert len(db.tables.accounts) == accounts


async def test_a_link_confirmed_by_email_ends_the_discord_accounts_link_buttons(
    confirm: Harness,
) -> None:
    h = confirm
    await h.sign_up("alice", "alice@example.com")
    issued = await h.container.issue_link_ticket().execute(h.discord_user(8010).user)
    assert isinstance(issued, TicketIssued)
    proposal, _ = await _confirm_needed(h, 8010, "alice@example.com")
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=proposal), password=PASSWORD
    )
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(issued.token)


@pytest.mark.parametrize("mode", ["verified", "confirm", "off"])
async def test_a_discord_email_with_hidden_characters_matches_and_takes_nothing(mode: str) -> None:
    """Discord's email is what its owner typed there: "le\u3164a@example.com" shows as
    lea@example.com. It counts as no email at all, in the domain whatever the adapter
    passed: no account is matched by it (not even one that stored that very address before
    forms refused it, which would have said "an account has this email" to whoever typed
    it), and the account Discord makes has no address."""
    h = Harness.build(build_container(make_settings(email_linking=mode)))
    legacy = await h.legacy_account("lea", "le\u3164a@example.com", verified=True)
    for discord_id, email in [(8101, "le\u3164a@example.com"), (8102, "l\u2800ia@example.com")]:
        done = await h.discord_login(h.discord_user(discord_id, email=email, verified=True))
        assert done.outcome is AuthOutcome.CREATED
        made = await h.account(done.account_id)
        assert made.id != legacy.id
        assert made.email is None
    assert await h.account(legacy.id) == legacy  # its stored address untouched
