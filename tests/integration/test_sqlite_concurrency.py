"""The embedded SQLite default under concurrent requests: WAL, a busy timeout and
BEGIN IMMEDIATE make writers queue instead of failing with "database is locked"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from adapters.sql import SqlDatabase
from domain import errors
from domain.use_cases import AuthOutcome, TicketIssued
from tests.harness import Browser, Harness, sql_harness
from tests.integration import email_races


@pytest.fixture
async def h(sqlite_url: str, sqlite_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with sql_harness(sqlite_url) as harness:
        yield harness


async def test_concurrent_first_logins_and_redeems_on_sqlite(h: Harness) -> None:
    profile = h.discord_user(8001, username="lite", email="lite@example.com")
    browsers = [Browser() for _ in range(10)]
    approvals = []
    for browser in browsers:
        started = await h.start_login(browser)
        approvals.append(h.discord.approve(started.authorize_url, profile.id))
    logins = await asyncio.gather(
        *(
            h.complete(b, state=a.state, code=a.code)
            for b, a in zip(browsers, approvals, strict=True)
        )
    )
    assert len({done.account_id for done in logins}) == 1

    alice = (await h.sign_up("alice", "alice@example.com")).account
    issued = await h.container.issue_link_ticket().execute(h.discord_user(8002).user)
    assert isinstance(issued, TicketIssued)
    redeems = await asyncio.gather(
        *(h.confirm_ticket(issued.token, alice.id) for _ in range(10)),
        return_exceptions=True,
    )
    # One links; the others find it linked (back from Discord as the same account, for the
    # same TaskFlow account) or are refused before Discord once it is spent.
    outcomes = [r.outcome for r in redeems if not isinstance(r, BaseException)]
    assert outcomes.count(AuthOutcome.LINKED) == 1
    assert set(outcomes) <= {AuthOutcome.LINKED, AuthOutcome.ALREADY_LINKED}
    assert all(
        isinstance(r, errors.SecretConsumed) for r in redeems if isinstance(r, BaseException)
    )


async def test_link_commands_at_once_leave_exactly_one_button_on_sqlite(h: Harness) -> None:
    """Writers take turns (BEGIN IMMEDIATE): each /link spends the one before it."""
    user = h.discord_user(8003).user
    issue = h.container.issue_link_ticket()
    issued = await asyncio.gather(*(issue.execute(user) for _ in range(10)))
    live = 0
    for ticket in issued:
        assert isinstance(ticket, TicketIssued)
        with contextlib.suppress(errors.SecretConsumed):
            await h.container.show_link_ticket().execute(ticket.token)
            live += 1
    assert live == 1


async def test_sign_ups_with_one_address_are_claims_on_sqlite(h: Harness) -> None:
    await email_races.simultaneous_sign_ups(h, 10)


async def test_sign_ups_and_discord_sign_ins_with_one_address_on_sqlite(h: Harness) -> None:
    await email_races.sign_ups_and_first_discord_sign_ins(h, 5)


async def test_email_changes_to_one_address_on_sqlite(h: Harness) -> None:
    await email_races.simultaneous_email_changes(h, 10)


async def test_confirmations_of_one_address_have_one_owner_on_sqlite(h: Harness) -> None:
    await email_races.simultaneous_confirmations(h, 10)


async def test_proofs_and_claims_of_one_address_at_once_on_sqlite(h: Harness) -> None:
    await email_races.confirmations_beside_discord_sign_ins_and_claims(h, 4)


async def test_declines_confirmations_and_changes_at_once_on_sqlite(h: Harness) -> None:
    await email_races.declines_beside_confirmations_and_changes(h, 6)


async def test_simultaneous_reset_requests_queue_one_email_on_sqlite(h: Harness) -> None:
    await email_races.simultaneous_reset_requests(h, 10)


async def test_simultaneous_confirmation_resends_queue_one_email_on_sqlite(
    h: Harness,
) -> None:
    await email_races.simultaneous_confirmation_resends(h, 10)


async def test_simultaneous_emails_to_one_unconfirmed_address_on_sqlite(h: Harness) -> None:
    await email_races.simultaneous_emails_to_one_unconfirmed_address(h, 10)


async def test_writers_of_one_process_take_turns_without_sqlites_busy_polling(
    sqlite_url: str, sqlite_db: SqlDatabase
) -> None:
    """With no busy timeout at all, SQLite fails a second concurrent writer at once ("database
    is locked"); writers that take turns in the process never meet its lock. Thirty at once
    all commit."""
    from domain.model import DiscordId
    from tests.contracts.repositories import account, link

    database = SqlDatabase(sqlite_url, sqlite_busy_timeout_ms=0, sqlite_writer_wait=120)

    async def write(n: int) -> None:
        async with database.unit_of_work() as uow:
            owner = account(f"user{n}", f"user{n}@example.com")
            await uow.accounts.add(owner)
            await asyncio.sleep(0)  # let the others try to start meanwhile
            await uow.links.add(link(9000 + n, owner.id))
            await uow.commit()

    try:
        await asyncio.gather(*(write(n) for n in range(30)))
        async with database.unit_of_work(read_only=True) as uow:
            found = [await uow.links.get_by_discord_id(DiscordId(9000 + n)) for n in range(30)]
        assert all(found)
    finally:
        await database.dispose()


async def test_a_writer_that_waits_too_long_for_its_turn_gets_a_storage_error(
    sqlite_url: str, sqlite_db: SqlDatabase
) -> None:
    database = SqlDatabase(sqlite_url, sqlite_busy_timeout_ms=50)
    try:
        async with database.unit_of_work():  # holds the turn
            with pytest.raises(errors.StorageError):
                async with database.unit_of_work():
                    pass
        async with database.unit_of_work():  # the turn was given back
            pass
    finally:
        await database.dispose()
