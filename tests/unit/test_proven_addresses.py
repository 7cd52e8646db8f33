"""Proven ownership of an address wins over unproven claims to it (in-memory adapters).

Any number of accounts may hold an address nobody confirmed; the account that proves it (its
confirmation link, a password reset link) takes it from the others, whose links to it stop
working and who keep everything else. A confirmed address is never taken, and only a proof
takes anything. Sign in with Discord takes nothing: it links or refuses as DESIGN.md's table
says (Discord's verified email is no proof that takes an address from an account). The limits
on emails to an unconfirmed address are counted per client as well, so whoever typed someone
else's address cannot hold back the owner's confirmation with the emails they asked for."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from httpx import Response
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryAccounts
from domain import errors
from domain.model import Account, AccountId, AuditKind, DiscordId, EmailKind
from domain.use_cases import AuthOutcome
from entrypoints.container import build_container
from entrypoints.web import create_app
from tests.bot_support import wait_until
from tests.harness import PASSWORD, Harness, make_settings
from tests.web_support import Client, post_form, sign_up

VICTIM = "victim@example.com"
SQUATTER = "client:198.51.100.7"
OWNER = "client:203.0.113.9"


def _taken(db: MemoryDatabase) -> list[tuple[AccountId | None, dict[str, str]]]:
    return [
        (e.account_id, dict(e.detail)) for e in db.tables.audit if e.kind is AuditKind.EMAIL_TAKEN
    ]


async def _sign_up(h: Harness, username: str, address: str, client: str | None = None) -> AccountId:
    done = await h.container.sign_up().execute(
        username=username, email=address, password=PASSWORD, client=client
    )
    h.sessions[done.account.id] = done.session_token
    return done.account.id


def _verify_links(h: Harness, address: str) -> list[str]:
    return [
        h.link_token(m, "/verify-email/")
        for m in h.emails_to(address)
        if "/verify-email/" in m.text
    ]


async def test_a_sign_up_with_an_address_someone_else_typed_is_made_and_its_link_takes_it(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory = await _sign_up(h, "mallory", VICTIM)
    await h.deliver()
    [mallorys_link] = _verify_links(h, VICTIM)
    # Refused before this version: "An account with this email already exists".
    victim = await _sign_up(h, "victim", VICTIM)
    assert [a.id for a in await h.all_accounts_with_email(VICTIM)] == [mallory, victim]

    await h.mark_email_verified(victim)  # the newest link to the address: the victim's

    owner = await h.account(victim)
    assert (owner.email, owner.email_verified) == (VICTIM, True)
    claimant = await h.account(mallory)
    assert (claimant.email, claimant.email_verified) == (None, False)
    assert _taken(db) == [(mallory, {"by": str(victim.value), "proof": "link"})]
    with pytest.raises(errors.EmailLinkOutdated):  # mallory's link no longer confirms it
        await h.container.verify_email().execute(mallorys_link, mallory)
    assert (await h.account(mallory)).email is None
    # Mallory keeps the account and its way in (the username and password); the address signs
    # in to its owner's account.
    assert (await h.container.sign_in().execute(login="mallory", password=PASSWORD)).account.id == (
        mallory
    )
    assert (await h.container.sign_in().execute(login=VICTIM, password=PASSWORD)).account.id == (
        victim
    )
    # And can no longer claim it: it is confirmed.
    with pytest.raises(errors.EmailTaken):
        await h.container.change_email().execute(
            session_token=await h.session_for(mallory), new_email=VICTIM, current_password=PASSWORD
        )
    with pytest.raises(errors.EmailTaken):
        await _sign_up(h, "mallory2", VICTIM)


async def test_an_email_change_to_a_claimed_address_is_made_and_confirming_it_takes_it(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory = await _sign_up(h, "mallory", VICTIM)
    victim = await _sign_up(h, "victim", "typo@example.com")
    await h.container.change_email().execute(
        session_token=await h.session_for(victim), new_email=VICTIM, current_password=PASSWORD
    )
    await h.mark_email_verified(victim)
    assert (await h.account(victim)).email_verified
    assert (await h.account(mallory)).email is None
    assert _taken(db) == [(mallory, {"by": str(victim.value), "proof": "link"})]


async def test_an_address_two_accounts_claim_signs_in_by_username_until_one_proves_it(
    h: Harness,
) -> None:
    first = await _sign_up(h, "first", VICTIM)
    second = await _sign_up(h, "second", VICTIM)
    with pytest.raises(errors.InvalidCredentials):  # which one? never guessed
        await h.container.sign_in().execute(login=VICTIM, password=PASSWORD)
    signed_in = await h.container.sign_in().execute(login="second", password=PASSWORD)
    assert signed_in.account.id == second
    await h.mark_email_verified(second)
    by_email = await h.container.sign_in().execute(login=VICTIM, password=PASSWORD)
    assert by_email.account.id == second
    assert (await h.account(first)).email is None


async def test_a_password_reset_link_proves_the_address_and_takes_it(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory = await _sign_up(h, "mallory", VICTIM)
    victim = await _sign_up(h, "victim", VICTIM)
    await h.container.request_password_reset().execute(VICTIM)
    await h.deliver()
    resets = [m for m in h.emails_to(VICTIM) if "/password/reset/" in m.text]
    assert len(resets) == 2  # one for each account with the address
    by_account = {}
    async with h.uow() as uow:
        for message in resets:
            token = h.link_token(message, "/password/reset/")
            stored = await uow.email_tokens.get(h.container.tokens().digest(token))
            assert stored is not None
            by_account[stored.account_id] = token
    await h.container.reset_password().execute(
        token=by_account[victim], new_password="the victim's new passphrase"
    )
    assert (await h.account(victim)).email_verified
    assert (await h.account(mallory)).email is None
    assert _taken(db) == [(mallory, {"by": str(victim.value), "proof": "reset"})]
    with pytest.raises(errors.SecretRefused):  # mallory's account's link to it is spent
        await h.container.reset_password().execute(
            token=by_account[mallory], new_password="a password for mallory's account"
        )
    assert (await h.account(mallory)).email is None


async def test_only_a_proof_takes_an_address_and_never_a_confirmed_one(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory = await _sign_up(h, "mallory", VICTIM)
    # Discord did not verify it: nothing taken (refused, as DESIGN.md's table says).
    with pytest.raises(errors.EmailBelongsToAccount):
        await h.discord_login(h.discord_user(7200, email=VICTIM, verified=False))
    # Another claim is not a proof either: both hold it.
    await _sign_up(h, "eve", VICTIM)
    assert (await h.account(mallory)).email == VICTIM
    assert _taken(db) == []
    # Confirmed, it is never taken: not by a sign-up or an email change (and Discord's
    # verified email links to it, as the table's row 2 says).
    alice = await _sign_up(h, "alice", "alice@example.com")
    await h.mark_email_verified(alice)
    with pytest.raises(errors.EmailTaken):
        await _sign_up(h, "alice2", "ALICE@example.com")
    with pytest.raises(errors.EmailTaken):
        await h.container.change_email().execute(
            session_token=await h.session_for(mallory),
            new_email="alice@example.com",
            current_password=PASSWORD,
        )
    done = await h.discord_login(h.discord_user(7201, email="alice@example.com", verified=True))
    assert done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN  # the rules for a confirmed one
    assert done.account_id == alice
    assert (await h.account(alice)).email == "alice@example.com"
    assert _taken(db) == []


# -- Sign in with Discord takes nothing (DESIGN.md's table) ---------------------------------------


@pytest.mark.parametrize("mode", ["verified", "off"])
async def test_a_discord_verified_email_takes_nothing_from_an_account_that_only_claims_it(
    mode: str,
) -> None:
    """DESIGN.md's row 3: exactly one account has the address, never confirmed: refused with
    the way to link it ("sign in with your password and link Discord from your account
    page"), never linked into it (a pre-account takeover) and never given to a new account
    (the address is not taken: Discord's verified email is no proof here)."""
    h = Harness.build(build_container(make_settings(email_linking=mode)))
    try:
        mallory = await _sign_up(h, "mallory", VICTIM)
        with pytest.raises(errors.EmailBelongsToAccount) as refused:
            await h.discord_login(h.discord_user(7100, email=VICTIM, verified=True))
        assert refused.value.message == (
            "An account with this email exists. Sign in with your password and link Discord "
            "from your account page (forgot it? reset it with this email). Not your account? "
            "If we emailed you a link to confirm this address for an account you did not "
            'create, open it and press "This is not my account"; or sign up with this email '
            "and confirm it by the link we send. Then sign in with Discord again."
        )
        db: MemoryDatabase = h.container.memory_db()
        assert [a.id for a in db.tables.accounts.values()] == [mallory]
        assert (await h.account(mallory)).email == VICTIM
        assert db.tables.links == {}
        assert _taken(db) == []
    finally:
        h.container.unwire()


@pytest.mark.parametrize(
    ("mode", "confirmed", "discord_verified"),
    [("verified", False, True), ("verified", True, False), ("off", True, True)],
)
async def test_the_refusal_for_an_address_an_account_holds_says_the_same_every_time(
    mode: str, confirmed: bool, discord_verified: bool
) -> None:
    """The way in that the refusal tells someone with no account (a decline from the
    confirmation email, a sign-up confirmed by its link) is said whatever the account holding
    the address is: confirmed or not, whatever Discord verified, whatever the mode; and it
    names no account. So it tells no more than "an account has this email", as before."""
    h = Harness.build(build_container(make_settings(email_linking=mode)))
    try:
        mallory = await _sign_up(h, "mallory", VICTIM)
        if confirmed:
            await h.mark_email_verified(mallory)
        profile = h.discord_user(7150, email=VICTIM, verified=discord_verified)
        with pytest.raises(errors.EmailBelongsToAccount) as refused:
            await h.discord_login(profile)
        said = refused.value.message
        assert said == errors.EmailBelongsToAccount.message
        assert '"This is not my account"' in said
        assert "sign up with this email and confirm it" in said
        assert "mallory" not in said
        assert VICTIM not in said
    finally:
        h.container.unwire()


async def test_confirm_mode_still_asks_for_the_claiming_accounts_password() -> None:
    """``confirm`` as before: the one account with the address is proved by its password
    (no link is emailed to an address it never confirmed); nothing is created or taken."""
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    try:
        mallory = await _sign_up(h, "mallory", VICTIM)
        done = await h.discord_login(h.discord_user(7150, email=VICTIM, verified=True))
        assert (done.outcome, done.account_id) == (AuthOutcome.CONFIRM_NEEDED, mallory)
        assert done.proposal_token is not None
        with pytest.raises(errors.InvalidInput, match="not confirmed"):
            await h.container.email_link_confirmation().execute(done.proposal_token)
        db: MemoryDatabase = h.container.memory_db()
        assert len(db.tables.accounts) == 1
        assert (await h.account(mallory)).email == VICTIM
        assert _taken(db) == []
    finally:
        h.container.unwire()


async def test_several_claims_of_a_discord_verified_email_are_ambiguous(
    h: Harness, db: MemoryDatabase
) -> None:
    """DESIGN.md: "more than one account has that email: refuse, ambiguous, never guess"."""
    mallory = await _sign_up(h, "mallory", VICTIM)
    other = await _sign_up(h, "other", VICTIM)
    with pytest.raises(errors.AmbiguousEmail):
        await h.discord_login(h.discord_user(7101, email=VICTIM, verified=True))
    for account_id in (mallory, other):
        assert (await h.account(account_id)).email == VICTIM
    assert len(db.tables.accounts) == 2
    assert db.tables.links == {}
    assert _taken(db) == []


async def test_without_discord_sign_up_a_claim_is_refused_as_the_table_says() -> None:
    h = Harness.build(build_container(make_settings(discord_signup=False)))
    try:
        mallory = await _sign_up(h, "mallory", VICTIM)
        with pytest.raises(errors.EmailBelongsToAccount):
            await h.discord_login(h.discord_user(7300, email=VICTIM, verified=True))
        assert (await h.account(mallory)).email == VICTIM
    finally:
        h.container.unwire()


async def test_a_claim_made_while_a_discord_sign_in_creates_its_account_is_not_left_beside_it(
    h: Harness, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided "no account has that email, create one", a first Discord sign-in finds the
    address claimed by a sign-up that committed meanwhile (a read-committed database shows
    it to the later statements): it decides again and refuses, as the table says, rather
    than make an account with the address confirmed beside the claim (the unique index
    covers confirmed addresses only, so nothing else stops it)."""
    claim = Account(
        id=AccountId.new(),
        username="mallory",
        email=VICTIM,
        email_verified=False,
        password_hash=None,
        created_at=h.clock.now(),
    )
    real = MemoryAccounts.usernames_starting_with

    async def with_a_claim_committed_meanwhile(self: MemoryAccounts, prefix: str) -> set[str]:
        if claim.id not in db.tables.accounts:
            db.tables.accounts[claim.id] = claim  # committed
            self._t.accounts[claim.id] = claim  # and seen by this transaction from now on
        return await real(self, prefix)

    monkeypatch.setattr(MemoryAccounts, "usernames_starting_with", with_a_claim_committed_meanwhile)
    with pytest.raises(errors.EmailBelongsToAccount):
        await h.discord_login(h.discord_user(7350, email=VICTIM, verified=True))
    assert [a.id for a in await h.all_accounts_with_email(VICTIM)] == [claim.id]
    assert db.tables.links == {}


async def test_the_owners_way_past_a_squatter_sign_up_confirm_then_sign_in_with_discord(
    h: Harness, db: MemoryDatabase
) -> None:
    """Mallory typed the victim's address at sign-up and never confirmed it. The victim's
    Discord account has it verified: Sign in with Discord is refused (DESIGN.md's row 3),
    which tells her what to do. She signs up by typing the address (allowed: nobody confirmed
    it), confirms it by the emailed link (which takes it from mallory), and then Sign in with
    Discord finds exactly one account with it, confirmed, and links it (row 2)."""
    mallory = await _sign_up(h, "mallory", VICTIM, client=SQUATTER)
    await h.deliver()  # mallory's confirmation link, sent before the victim's
    owner = h.discord_user(7500, username="victim_d", email=VICTIM, verified=True)
    app = create_app(h.container)
    async with AsyncTestClient(app=app) as browser:
        refused = await _web_discord_sign_in(browser, h, owner.id)
        assert refused.status_code == 409
        assert "An account with this email exists. Sign in with your password and link " in (
            html.unescape(refused.text)
        )

        signed_up = await post_form(
            browser,
            "/signup",
            "/signup",
            {"username": "victim", "email": VICTIM, "password": PASSWORD},
        )
        assert signed_up.status_code == 200, signed_up.text
        [victim] = [a.id for a in await h.all_accounts_with_email(VICTIM) if a.id != mallory]
        await wait_until(lambda: len(_verify_links(h, VICTIM)) == 2)  # the web's worker
        link = "/verify-email/" + _verify_links(h, VICTIM)[-1]  # hers, after mallory's
        confirmed = await post_form(browser, link, link, {})
        assert confirmed.status_code == 200
        assert "Email confirmed" in confirmed.text
        assert (await h.account(mallory)).email is None
        assert _taken(db) == [(mallory, {"by": str(victim.value), "proof": "link"})]
        assert (await post_form(browser, "/account", "/signout", {})).status_code == 200

        linked = await _web_discord_sign_in(browser, h, owner.id)
        assert linked.status_code == 200
        assert "Discord is linked to your account." in linked.text
        assert "confirmed for this TaskFlow account, victim:" in html.unescape(linked.text)
        assert db.tables.links[owner.id].account_id == victim
        account = await h.account(victim)
        assert (account.username, account.email, account.email_verified) == (
            "victim",
            VICTIM,
            True,
        )
    assert len(db.tables.accounts) == 2  # no account made by Discord sign-in


async def _web_discord_sign_in(browser: Client, h: Harness, discord_id: DiscordId) -> Response:
    started = await browser.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], discord_id)
    return await browser.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")


# -- the limits on emails to an unconfirmed address ----------------------------------------------


def _withheld(db: MemoryDatabase) -> int:
    return sum(1 for e in db.tables.audit if e.kind is AuditKind.EMAIL_WITHHELD)


async def test_a_squatters_confirmation_emails_do_not_hold_back_the_owners(
    h: Harness, db: MemoryDatabase
) -> None:
    """Before, the address's five an hour (and ten a day) were everyone's: whoever signed up
    with it five times (or asked for new links) left its owner's sign-up without a link."""
    for i in range(6):
        await _sign_up(h, f"squat{i}", VICTIM, client=SQUATTER)
    assert _withheld(db) == 1  # the squatter's sixth: past its own share
    owner = await h.container.sign_up().execute(
        username="owner", email=VICTIM, password=PASSWORD, client=OWNER
    )
    assert owner.confirmation_sent
    h.sessions[owner.account.id] = owner.session_token
    await h.mark_email_verified(owner.account.id)
    assert [a.id for a in await h.all_accounts_with_email(VICTIM)] == [owner.account.id]


async def test_every_clients_emails_to_an_address_still_have_a_bound(
    h: Harness, db: MemoryDatabase
) -> None:
    """The mailbox is still not flooded: ten an hour (thirty a day) from all clients."""
    for i in range(10):
        client = f"client:198.51.100.{i // 5}"
        done = await h.container.sign_up().execute(
            username=f"squat{i}", email=VICTIM, password=PASSWORD, client=client
        )
        assert done.confirmation_sent
    late = await h.container.sign_up().execute(
        username="late", email=VICTIM, password=PASSWORD, client=OWNER
    )
    assert not late.confirmation_sent
    queued = [e for e in db.tables.outgoing_emails.values() if e.kind is EmailKind.VERIFY_EMAIL]
    assert len(queued) == 10
    assert {e.client for e in queued} == {"client:198.51.100.0", "client:198.51.100.1"}


async def test_a_strangers_reset_requests_do_not_hold_back_the_owners(
    h: Harness, db: MemoryDatabase
) -> None:
    """Reset links go to every account with the address. A stranger's request used the
    address's five an hour on the squatter's accounts, and the owner's request then sent
    none to the owner's account; now the owner's client has a share of its own."""
    for i in range(6):
        await _sign_up(h, f"squat{i}", VICTIM, client=SQUATTER)
    victim = await _sign_up(h, "victim", VICTIM, client=OWNER)
    await h.container.request_password_reset().execute(VICTIM, client=SQUATTER)
    await h.container.request_password_reset().execute(VICTIM, client=OWNER)
    resets = [e for e in db.tables.outgoing_emails.values() if e.kind is EmailKind.RESET_PASSWORD]
    assert len(resets) == 7  # five in the stranger's share, the two left in the owner's
    assert victim in {e.account_id for e in resets}


async def test_a_reset_of_an_account_beside_a_confirmed_one_confirms_nothing(
    h: Harness, db: MemoryDatabase
) -> None:
    """Left beside a confirmed account (imported accounts sharing an address, or an older
    instance during an upgrade), a claim's reset link still sets its password, but the
    address is the confirmed account's: nothing is taken, nothing more is confirmed."""
    alice = await h.legacy_account("alice", VICTIM, verified=True)
    bob = await h.legacy_account("bob", VICTIM, verified=False)
    await h.container.request_password_reset().execute(VICTIM)
    await h.deliver()
    async with h.uow() as uow:
        for message in h.emails_to(VICTIM):
            token = h.link_token(message, "/password/reset/")
            stored = await uow.email_tokens.get(h.container.tokens().digest(token))
            if stored is not None and stored.account_id == bob.id:
                bobs = token
    done = await h.container.reset_password().execute(
        token=bobs, new_password="bob's new passphrase"
    )
    assert done.signed_in.account.id == bob.id
    assert not (await h.account(bob.id)).email_verified
    assert (await h.account(alice.id)).email_verified
    assert _taken(db) == []


async def test_the_web_pages_name_the_client_that_asked_for_each_email(
    h: Harness, db: MemoryDatabase, client: Client
) -> None:
    """Sign-up, "Send me a confirmation link", an email change and a reset request: each
    email to an unconfirmed address is counted for the client that asked (the test client's
    host, as the rate limit names its budget)."""
    await sign_up(client, "gus")
    h.clock.advance(timedelta(minutes=2))
    assert (await post_form(client, "/account", "/account/email/verify", {})).status_code == 200
    changed = await post_form(
        client, "/account", "/account/email", {"email": VICTIM, "current_password": PASSWORD}
    )
    assert changed.status_code == 200
    asked = await post_form(client, "/password/reset", "/password/reset", {"email": VICTIM})
    assert asked.status_code == 200
    kinds = [(e.kind, e.client) for e in db.tables.outgoing_emails.values()]
    assert kinds == [
        (EmailKind.VERIFY_EMAIL, "client:testclient"),
        (EmailKind.VERIFY_EMAIL, "client:testclient"),
        (EmailKind.VERIFY_EMAIL, "client:testclient"),
        (EmailKind.RESET_PASSWORD, "client:testclient"),
    ]


async def test_a_link_of_an_account_beside_a_confirmed_one_is_refused_as_taken(
    h: Harness,
) -> None:
    """A claim left beside a confirmed account (an older instance during an upgrade) cannot
    confirm the address: it is the confirmed account's, and the link says so."""
    bob = await _sign_up(h, "bob", VICTIM)
    await h.deliver()
    [bobs_link] = _verify_links(h, VICTIM)
    await h.legacy_account("alice", VICTIM, verified=True)  # shared: beside bob's claim
    with pytest.raises(errors.EmailTaken):
        await h.container.verify_email().execute(bobs_link, bob)
    assert not (await h.account(bob)).email_verified
