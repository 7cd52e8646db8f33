"""Sign in with Discord linking by a confirmed address, on Postgres, beside a change of the
account that holds it. The sign-in decided "link" on an unlocked read of the account and
linked without looking again: an email change committing in between left the Discord
account linked to an account that no longer held its address. It now locks the account
(after its round trip, as a sign-in of a linked account does; an email change, an unlink or a
deletion lock it first too) and decides again on what it finds: the same decision links,
another one is tried again from the top."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlAccounts, SqlLinks
from domain import errors
from domain.model import AccountId, DiscordId, Link
from domain.use_cases import AuthCompleted, AuthOutcome
from tests.harness import PASSWORD, Browser, Harness
from tests.integration.lock_order import contention_noted, first_call_held, waiting_harness
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock

ADDRESS = "alice@example.com"


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres) as harness:
        yield harness


async def _alice(h: Harness) -> AccountId:
    """An account holding ``ADDRESS`` confirmed, signed in (by its password, just now)."""
    return (await h.sign_up("alice", ADDRESS, verified=True)).account.id


def _sign_in(h: Harness, discord_id: int) -> asyncio.Future[AuthCompleted]:
    profile = h.discord_user(discord_id, username=f"d{discord_id}", email=ADDRESS)
    return asyncio.ensure_future(h.discord_login(profile, Browser()))


async def _change_alices_email(h: Harness, alice: AccountId) -> None:
    await h.container.change_email().execute(
        session_token=await h.session_for(alice),
        new_email="alice@elsewhere.example",
        current_password=PASSWORD,
    )


async def _link_of(h: Harness, discord_id: int) -> Link | None:
    async with h.uow(read_only=True) as uow:
        return await uow.links.get_by_discord_id(DiscordId(discord_id))


def _first_call_on(
    monkeypatch: pytest.MonkeyPatch, repo: type[Any], name: str, alice: AccountId
) -> tuple[asyncio.Event, asyncio.Event]:
    """The first call of ``repo.name`` for alice's account held after it ran (see
    ``first_call_held``)."""

    def for_alice(_repo: Any, account_id: AccountId) -> bool:
        return account_id == alice

    return first_call_held(monkeypatch, repo, name, when=for_alice)


async def test_an_email_change_committed_after_the_sign_ins_read_is_not_linked_past(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held once it read who holds the address (and their links), the sign-in waits while
    the account's owner moves it to another address; let go, it must not link that account."""
    alice = await _alice(h)
    # The sign-in's read, first.
    decided, go = _first_call_on(monkeypatch, SqlLinks, "get_by_account", alice)
    sign_in = _sign_in(h, 9701)
    await decided.wait()
    await _change_alices_email(h, alice)  # committed while the sign-in holds nothing of it
    go.set()
    done = await sign_in
    assert done.account_id != alice
    assert done.outcome is AuthOutcome.CREATED  # the address nobody's now: decided again
    link = await _link_of(h, 9701)
    assert link is not None
    assert link.account_id == done.account_id
    moved = await h.account(alice)
    assert moved.email == "alice@elsewhere.example"
    async with h.uow(read_only=True) as uow:
        assert await uow.links.get_by_account(alice) is None


async def test_an_email_change_waits_for_the_sign_in_that_locked_the_account(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held once it locked the account, the sign-in links it (the address still that
    account's): the email change waits for it, then moves the address; no deadlock."""
    alice = await _alice(h)
    contended = contention_noted(monkeypatch)
    # The sign-in's lock, first.
    locked, go = _first_call_on(monkeypatch, SqlAccounts, "lock", alice)
    sign_in = _sign_in(h, 9702)
    held = asyncio.ensure_future(locked.wait())
    either: list[asyncio.Future[Any]] = [held, sign_in]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    assert locked.is_set()  # before, it linked without locking the account
    change = asyncio.ensure_future(_change_alices_email(h, alice))
    await until_it_waits_for_a_lock(pg_db, change)
    assert not change.done()
    go.set()
    done = await sign_in
    await change
    await held
    assert done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN
    assert done.account_id == alice
    link = await _link_of(h, 9702)
    assert link is not None
    assert link.account_id == alice
    assert (await h.account(alice)).email == "alice@elsewhere.example"
    assert contended == []  # neither rolled back for the other


async def test_a_second_discord_account_with_the_address_is_refused_not_linked(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Discord accounts with the same verified address (Discord's, an old account's)
    sign in at once: the one held after its read finds the account linked to the other once
    it looks again, and is refused as such, never a second link to one account."""
    alice = await _alice(h)
    # The first sign-in's read.
    decided, go = _first_call_on(monkeypatch, SqlLinks, "get_by_account", alice)
    first = _sign_in(h, 9703)
    await decided.wait()
    second = await _sign_in(h, 9704)
    assert second.outcome is AuthOutcome.LINKED_AND_SIGNED_IN
    assert second.account_id == alice
    go.set()
    # Said to someone not signed in: before, the link's own refusal ("Your TaskFlow account
    # is already linked…").
    with pytest.raises(errors.EmailAccountLinkedToOtherDiscord):
        await first
    assert await _link_of(h, 9703) is None
