"""Email linking "confirm" beside a sign-out, on Postgres, when two browsers hold each other's
binding values (copied cookies) and each a Discord sign-in's link proposal, their round
trips purged already (the proposals outlive them). The confirmation spent its own proposal
first, then (ending the browser's session, as a sign-in does) the other one's; the sign-out
spends both in the digests' order. With the other's digest first, each held the one the other
waited for: a deadlock, which Postgres broke by rolling one back (the sign-out's a 503). The
confirmation now spends them in that order too: the sign-out waits, then finds both spent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlLinkProposals
from domain.use_cases import AuthOutcome, BrowserCookies
from tests.harness import PASSWORD, Browser, Harness
from tests.integration.lock_order import contention_noted, crossed, first_call_held, waiting_harness
from tests.integration.postgres import PostgresServer


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres, email_linking="confirm") as harness:
        yield harness


async def _proposed(h: Harness, discord_id: int, email: str) -> tuple[str, str]:
    """A browser whose Discord sign-in (its address an account's) waits for the account's
    proof: its proposal's token and its binding value."""
    browser = Browser()
    login = await h.discord_login(h.discord_user(discord_id, email=email), browser)
    assert login.outcome is AuthOutcome.CONFIRM_NEEDED
    assert login.proposal_token is not None
    return login.proposal_token, browser.bindings[0]


async def test_a_link_confirmation_beside_a_sign_out_spending_the_same_proposals(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.sign_up("alice", "alice@example.com")
    await h.sign_up("bob", "bob@example.com")
    alice_offer, alice_binding = await _proposed(h, 9601, "alice@example.com")
    bob_offer, bob_binding = await _proposed(h, 9602, "bob@example.com")
    tokens = h.container.tokens()
    # The browser whose proposal's digest comes second confirms it.
    (_, first_offer, first_binding), (_, second_offer, second_binding) = sorted(
        [
            (tokens.digest(alice_offer), alice_offer, alice_binding),
            (tokens.digest(bob_offer), bob_offer, bob_binding),
        ]
    )
    # Their round trips expired and purged; the proposals live on (30 minutes).
    h.clock.advance(timedelta(minutes=16))
    assert (await h.container.purge_expired().execute()).pending_logins == 2
    confirming = BrowserCookies(
        proposal_token=second_offer, bindings=(second_binding, first_binding)
    )
    signing_out = BrowserCookies(
        proposal_token=first_offer, bindings=(first_binding, second_binding)
    )

    contended = contention_noted(monkeypatch)
    # The confirmation, one proposal spent: it waits there.
    held = first_call_held(monkeypatch, SqlLinkProposals, "consume")
    confirming_it = h.container.confirm_link_with_password().execute(
        browser=confirming, password=PASSWORD
    )
    # A deadlock: the sign-out's a 503.
    confirmed, _ = await crossed(
        pg_db, held, confirming_it, lambda: h.container.sign_out().execute(signing_out)
    )
    assert not confirmed.sent_twice
    assert contended == []  # nor was the confirmation rolled back and tried again
    async with h.uow(read_only=True) as uow:
        for offer in (first_offer, second_offer):
            proposal = await uow.link_proposals.get(tokens.digest(offer))
            assert proposal is not None
            assert proposal.consumed_at is not None
