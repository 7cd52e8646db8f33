"""The "login with Discord" table of DESIGN.md, one test per row, through the use cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryLinkProposals, MemorySessions
from domain import errors
from domain.model import AuditKind
from domain.use_cases import AuthOutcome, BrowserCookies
from domain.use_cases._shared import (
    AFTER_DISCORD_SIGN_IN,
    PROPOSAL_AFTER_DISCORD_SIGN_IN,
    session_token_after,
)
from tests.harness import PASSWORD, Browser, Harness


async def test_row1_linked_discord_id_signs_in_to_that_account(h: Harness) -> None:
    account = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(1001, email="someone-else@example.com")
    await h.discord_link(account.id, discord)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.SIGNED_IN
    assert done.account_id == account.id
    assert done.session_token


async def test_a_discord_sign_in_is_in_the_audit_trail_of_that_discord_id(h: Harness) -> None:
    """`taskflow-link audit --discord-id ID` is how an operator reads what a Discord account
    did: its sign-ins were recorded with the account only, so they were missing there (a
    stolen Discord account's sign-ins were the events one looks for)."""
    account = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(1001, email="someone-else@example.com")
    await h.discord_link(account.id, discord)
    await h.discord_login(discord)
    created = h.discord_user(1005, email="new@example.com", verified=True)
    new = await h.discord_login(created)
    assert new.outcome is AuthOutcome.CREATED

    read = h.container.read_audit_trail()
    for who, account_id in ((discord, account.id), (created, new.account_id)):
        signed_in = [
            e for e in await read.execute(discord_id=who.id) if e.kind is AuditKind.SIGNED_IN
        ]
        assert [(e.account_id, e.detail) for e in signed_in] == [
            (account_id, {"method": "discord"})
        ]


async def test_row2_verified_email_matching_one_verified_account_links_then_signs_in(
    h: Harness, db: MemoryDatabase
) -> None:
    account = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    discord = h.discord_user(1002, email="alice@example.com", verified=True)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN
    assert done.account_id == account.id
    link = db.tables.links[discord.id]
    assert link.account_id == account.id
    assert [e.detail.get("via") for e in db.tables.audit if e.kind is AuditKind.LINKED] == ["email"]


async def test_row3_matching_account_with_unverified_email_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    await h.sign_up("alice", "alice@example.com", verified=False)
    discord = h.discord_user(1003, email="alice@example.com", verified=True)

    with pytest.raises(errors.EmailBelongsToAccount) as refused:
        await h.discord_login(discord)

    assert "sign in with your password and link discord" in refused.value.message.lower()
    assert db.tables.links == {}
    assert len(db.tables.accounts) == 1
    assert len(db.tables.sessions) == 1  # only the sign-up's own session; nobody signed in


async def test_row4_email_shared_by_several_accounts_is_refused_as_ambiguous(
    h: Harness, db: MemoryDatabase
) -> None:
    await h.legacy_account("alice", "shared@example.com", verified=True)
    await h.legacy_account("alice2", "Shared@Example.com", verified=True)
    discord = h.discord_user(1004, email="shared@example.com", verified=True)

    with pytest.raises(errors.AmbiguousEmail):
        await h.discord_login(discord)

    assert db.tables.links == {}
    assert len(db.tables.accounts) == 2


async def test_an_account_marked_shared_stays_ambiguous_when_it_is_the_last_one(
    h: Harness, db: MemoryDatabase
) -> None:
    """The README's promise: accounts that shared an address before addresses were unique
    are never matched by it, also once the others moved away."""
    alice = await h.legacy_account("alice", "shared@example.com", verified=True)
    other = await h.legacy_account("alice2", "Shared@Example.com", verified=True)
    async with h.uow() as uow:
        await uow.accounts.update(replace(other, email="moved@example.com", email_shared=False))
        await uow.commit()
    async with h.uow() as uow:
        assert [a.id for a in await uow.accounts.find_by_email("shared@example.com")] == [alice.id]
    discord = h.discord_user(1005, email="shared@example.com", verified=True)

    with pytest.raises(errors.AmbiguousEmail):
        await h.discord_login(discord)

    assert db.tables.links == {}


@pytest.mark.parametrize("discord_email", [None, "alice@example.com"])
async def test_row5_unverified_or_missing_discord_email_never_matches(
    h: Harness, db: MemoryDatabase, discord_email: str | None
) -> None:
    account = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    discord = h.discord_user(1005, email=discord_email or "alice@example.com", verified=False)
    if discord_email is None:
        # Discord without an email at all: nothing to match, so a new account is created.
        discord = h.discord_user(1005, email=None, verified=False)
        done = await h.discord_login(discord)
        assert done.outcome is AuthOutcome.CREATED
        assert done.account_id != account.id
        return

    with pytest.raises(errors.EmailBelongsToAccount):
        await h.discord_login(discord)
    assert db.tables.links == {}


async def test_row6_no_account_with_that_email_creates_links_and_signs_in(
    h: Harness, db: MemoryDatabase
) -> None:
    discord = h.discord_user(1006, username="newbie", email="New@Example.com", verified=True)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.CREATED
    account = db.tables.accounts[done.account_id]
    assert account.username == "newbie"
    assert account.email == "new@example.com"
    assert account.email_verified is True
    assert account.password_hash is None  # Discord is its only way in
    assert db.tables.links[discord.id].account_id == account.id
    assert done.session_token


async def test_created_account_takes_no_address_discord_did_not_verify(
    h: Harness, db: MemoryDatabase
) -> None:
    """Nobody proved owning it: kept unconfirmed, it gave the account to whoever reads that
    mailbox (a reset) and kept its owner from signing up with it (helper-54's review)."""
    discord = h.discord_user(1007, email="maybe@example.com", verified=False)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.CREATED
    created = db.tables.accounts[done.account_id]
    assert (created.email, created.email_verified) == (None, False)


async def test_email_matching_is_case_insensitive(h: Harness) -> None:
    account = (await h.sign_up("alice", "Alice@Example.COM", verified=True)).account
    discord = h.discord_user(1008, email="  aLiCe@example.com ", verified=True)

    done = await h.discord_login(discord)

    assert done.account_id == account.id
    assert done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN


async def test_a_discord_email_beyond_ascii_is_never_vouched_for(
    h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's review: lower-casing turns the Kelvin sign into "k", so a Discord
    account verified for "\u212aim@example.com" (another mailbox, to a mail server that tells
    them apart) was linked to kim@example.com's account and signed in to it; with no such
    account, it made one whose kim@example.com counted as confirmed, so Kim's password reset
    did not unlink that Discord account."""
    kim = (await h.sign_up("kim", "kim@example.com", verified=True)).account
    kelvin = h.discord_user(1020, email="\u212aim@example.com", verified=True)
    with pytest.raises(errors.EmailBelongsToAccount):  # the safe path: sign in, then link
        await h.discord_login(kelvin)
    assert db.tables.links == {}
    assert kim.id not in {link.account_id for link in db.tables.links.values()}

    elsewhere = h.discord_user(1021, email="\u212aate@example.org", verified=True)
    done = await h.discord_login(elsewhere)
    assert done.outcome is AuthOutcome.CREATED
    assert db.tables.accounts[done.account_id].email is None  # not vouched for: not taken


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.com.",  # the DNS root's spelling of example.com: bob@example.com's mail
        "bob@example..com",
        "bob@@example.com",
        "@example.com",
        "bob@",
        "bob smith@example.com",
        "=?us-ascii?q?bob?=@example.com",  # read as bob@example.com
        "bob@xn--example-2z6c.com",  # exa, a zero-width space, mple
    ],
)
async def test_a_discord_email_that_no_form_would_take_is_never_vouched_for(
    h: Harness, db: MemoryDatabase, address: str
) -> None:
    """An address Discord calls verified gets the checks a typed one gets
    (``validate_email``): "bob@example.com." was stored, confirmed, on a new account, a
    second account for bob@example.com's mailbox (as migration 0018 says, and removes), and
    one that no password reset form took (it refuses the address)."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    discord = h.discord_user(1030, email=address, verified=True)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.CREATED
    created = db.tables.accounts[done.account_id]
    assert (created.email, created.email_verified) == (None, False)


async def test_username_clash_gets_a_suffix_and_never_matches_the_existing_account(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    await h.legacy_account("alice2", None, verified=False)
    discord = h.discord_user(1009, username="Alice", email="other@example.com", verified=True)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.CREATED
    assert done.account_id != alice.id
    assert db.tables.accounts[done.account_id].username == "alice3"
    assert db.tables.links[discord.id].account_id == done.account_id


async def test_email_match_onto_account_linked_to_another_discord_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    account = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    first = h.discord_user(1010, email="x@example.com")
    await h.discord_link(account.id, first)
    second = h.discord_user(1011, email="alice@example.com", verified=True)

    with pytest.raises(errors.AccountLinkedToOtherDiscord):
        await h.discord_login(second)

    assert db.tables.links[first.id].account_id == account.id
    assert second.id not in db.tables.links
    refused = [e for e in db.tables.audit if e.kind is AuditKind.LOGIN_REFUSED]
    assert [(e.discord_id, e.detail["reason"]) for e in refused] == [
        (second.id, "account_linked_to_other_discord")
    ]


@pytest.mark.parametrize("how", ["bot", "account page"])
async def test_a_discord_account_its_owner_unlinked_is_not_linked_back_by_email(
    h: Harness, db: MemoryDatabase, how: str
) -> None:
    """The owner unlinks a Discord account someone else holds (stolen): its next Discord
    sign-in with the owner's verified address must not link it back and sign it in. Only a
    proof of the account (its password, or a link emailed to it) links it again."""
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    discord = h.discord_user(1013, email="alice@example.com", verified=True)
    await h.discord_link(alice.id, discord)
    if how == "bot":
        await h.container.unlink_discord().execute(discord.id)
    else:
        await h.container.unlink_account().execute(
            session_token=await h.session_for(alice.id), current_password=PASSWORD
        )
    assert db.tables.accounts[alice.id].discord_unlinked_at == h.clock.now()
    sessions = len(db.tables.sessions)

    done = await h.discord_login(discord)

    assert done.outcome is AuthOutcome.CONFIRM_NEEDED
    assert done.session_token is None
    assert discord.id not in db.tables.links
    assert len(db.tables.sessions) == sessions  # nobody signed in
    assert done.proposal_token is not None
    with pytest.raises(errors.InvalidCredentials):  # the thief does not know the password
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=done.proposal_token), password="not it"
        )
    assert discord.id not in db.tables.links
    confirmed = await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=done.proposal_token), password=PASSWORD
    )  # the owner, linking it back on purpose
    assert confirmed.account_id == alice.id
    assert db.tables.links[discord.id].account_id == alice.id


async def test_refusal_is_audited(h: Harness, db: MemoryDatabase) -> None:
    await h.sign_up("alice", "alice@example.com", verified=False)
    discord = h.discord_user(1012, email="alice@example.com", verified=True)

    with pytest.raises(errors.EmailBelongsToAccount):
        await h.discord_login(discord)

    refused = [e for e in db.tables.audit if e.kind is AuditKind.LOGIN_REFUSED]
    assert [(e.discord_id, e.detail["reason"]) for e in refused] == [
        (discord.id, "email_belongs_to_account")
    ]


async def test_login_asks_for_identify_and_email_and_keeps_the_grant(h: Harness) -> None:
    """The token is read once and dropped, but not revoked: revoking ends the whole grant,
    and Discord would show its consent screen again at every sign-in."""
    browser = Browser()
    started = await h.start_login(browser)
    assert "scope=identify+email" in started.authorize_url
    assert "code_challenge_method=S256" in started.authorize_url
    assert "prompt=none" in started.authorize_url  # returning people skip the consent screen
    discord = h.discord_user(1013, email="t@example.com")
    approval = h.discord.approve(started.authorize_url, discord.id)

    await h.complete(browser, state=approval.state, code=approval.code)

    assert h.discord.issued_tokens
    assert not h.discord.revoked


async def test_signing_in_as_another_discord_account_asks_discord_again(h: Harness) -> None:
    started = await h.start_login(Browser(), ask_again=True)
    assert "prompt=consent" in started.authorize_url


async def test_each_sign_in_gets_a_fresh_session(h: Harness, db: MemoryDatabase) -> None:
    discord = h.discord_user(1014, email="t@example.com")
    first = await h.discord_login(discord)
    second = await h.discord_login(discord)
    assert first.session_token != second.session_token
    assert len(db.tables.sessions) == 2
    # Only digests are stored, never the tokens themselves.
    assert first.session_token not in db.tables.sessions


@pytest.mark.parametrize(
    ("next_path", "destination"),
    [
        ("/link/SECRET", "/account"),
        ("/./link/SECRET", "/account"),
        ("/%6Cink/SECRET", "/account"),
        ("/%2e/link/SECRET", "/account"),
        ("/static/../password/reset/SECRET", "/account"),
        ("/account/..//verify-email/SECRET", "/account"),
        ("/%2Fpassword/reset/SECRET", "/account"),
        ("/auth/discord/confirm-link/SECRET", "/account"),  # the emailed link's
        ("/auth/discord/%63onfirm-link/SECRET", "/account"),
        # Sent on by the page it reaches (a sign-in page's next=), or kept in the database
        ("/signin?next=/link/SECRET", "/account"),
        ("/signup?next=%2Flink%2FSECRET", "/account"),
        ("/signin?next=%252F%252Flink%252FSECRET", "/account"),
        ("/account?x=/password/reset/SECRET", "/account"),
        (f"/account?x=%{'25' * 6}2Flink%{'25' * 6}2FSECRET", "/account"),  # encoded 7 times
        ("/account?tab=sessions", "/account?tab=sessions"),
        ("/signin?next=%2Faccount%3Ftab%3Dsessions", "/signin?next=%2Faccount%3Ftab%3Dsessions"),
        ("/a/b/../c", "/a/b/../c"),  # goes nowhere secret: kept as it was
    ],
)
async def test_a_sign_in_never_stores_a_secret_path_however_it_is_spelled(
    h: Harness, db: MemoryDatabase, next_path: str, destination: str
) -> None:
    """A pending login's destination is kept in the database: a path with a one-time secret
    (a /link ticket, an email link) must not be, whatever spelling the browser or the server
    would turn into it."""
    browser = Browser()
    await h.start_login(browser, next_path)
    (pending,) = db.tables.pending_logins.values()
    assert pending.destination == destination
    assert "SECRET" not in repr(pending)


async def test_a_first_sign_in_that_meets_its_own_link_made_meanwhile_signs_in(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callbacks of one new Discord account's first sign-in (two tabs, a double submit):
    on Postgres, one read no link, then found the account the other had just created by its
    address, linked by then, and was refused as "linked to another Discord account" (6 of 20
    in a race test). Here the first read misses the link, as under READ COMMITTED."""
    from adapters.memory.store import MemoryLinks

    discord = h.discord_user(1010, email="racer@example.com", verified=True)
    first = await h.discord_login(discord)
    assert first.outcome is AuthOutcome.CREATED
    read = MemoryLinks.get_by_discord_id
    missed: list[bool] = []

    async def stale_once(self: MemoryLinks, discord_id: object) -> object:
        if not missed:
            missed.append(True)
            return None  # read before the other callback's commit
        return await read(self, discord_id)  # type: ignore[arg-type]

    monkeypatch.setattr(MemoryLinks, "get_by_discord_id", stale_once)
    second = await h.discord_login(discord)
    assert missed == [True]
    assert second.outcome is AuthOutcome.SIGNED_IN
    assert second.account_id == first.account_id


async def test_a_discord_sign_in_looks_for_nothing_under_its_own_binding_value(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing in, it ends what the browser's other Discord sign-ins made unheld (their
    proposals, their sessions), and looks for nothing under the binding value of its own
    round trip: its session is the one it starts, and it made no proposal (it would have
    answered CONFIRM_NEEDED instead of signing in, and its state is spent once). It spent
    a proposal there all the same, one write for nothing."""
    account = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(1001, email="someone-else@example.com")
    await h.discord_link(account.id, discord)
    browser = Browser()
    for _ in range(2):  # two other tabs, their round trips left
        await h.start_login(browser)
    started = await h.start_login(browser)
    own, *others = browser.bindings
    consumed: list[str] = []
    read: list[str] = []
    proposals_consume = MemoryLinkProposals.consume
    sessions_get = MemorySessions.get

    async def consume(self: MemoryLinkProposals, digest: str, now: datetime) -> object:
        consumed.append(digest)
        return await proposals_consume(self, digest, now)

    async def get(self: MemorySessions, digest: str) -> object:
        read.append(digest)
        return await sessions_get(self, digest)

    monkeypatch.setattr(MemoryLinkProposals, "consume", consume)
    monkeypatch.setattr(MemorySessions, "get", get)
    approval = h.discord.approve(started.authorize_url, discord.id)
    done = await h.complete(browser, state=approval.state, code=approval.code)

    assert done.outcome is AuthOutcome.SIGNED_IN
    tokens = h.container.tokens()
    proposals = {
        b: session_token_after(tokens, b, PROPOSAL_AFTER_DISCORD_SIGN_IN).digest
        for b in browser.bindings
    }
    made = {b: session_token_after(tokens, b, AFTER_DISCORD_SIGN_IN).digest for b in others}
    assert sorted(consumed) == sorted(proposals[b] for b in others)
    assert set(made.values()) <= set(read)
    own_session = session_token_after(tokens, own, AFTER_DISCORD_SIGN_IN).digest
    assert own_session not in read
