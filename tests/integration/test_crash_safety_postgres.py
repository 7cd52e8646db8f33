from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import accounts, audit_events, sessions, user_links
from domain import errors
from tests.crash import InjectedCrash, crash_on_link
from tests.harness import Harness, sql_harness
from tests.integration.postgres import PostgresServer

TRIES = 10  # transactions begun to take the lock (each ended early only by a pause here)


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with sql_harness(postgres.url) as harness:
        yield harness


async def test_crash_between_account_and_link_leaves_neither_row(
    h: Harness, pg_db: SqlDatabase
) -> None:
    profile = h.discord_user(7101, email="crash@example.com")
    crash_on_link(h.container)

    with pytest.raises(InjectedCrash):
        await h.discord_login(profile)

    async with pg_db.engine.connect() as conn:
        for table in (accounts, user_links, sessions, audit_events):
            count = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert count == 0, table.name

    h.container.uow.reset_override()
    done = await h.discord_login(profile)  # and the person can simply try again
    assert done.session_token


async def test_an_instance_silent_inside_a_transaction_lets_go_of_its_locks(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """An instance that freezes (a paused VM or container) or loses its network while its
    transaction holds a row lock keeps it: Postgres only notices a dead client through TCP
    keepalives (two hours by Linux's defaults), and meanwhile every other instance's request
    and worker pass that needs the row waits out its statement timeout and fails (the account
    can change nothing; a webhook endpoint's head delivery stops that endpoint's stream).
    Postgres now ends a transaction idle for DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS (the
    service's transactions never wait for anything but the database), which rolls it back.

    The frozen instance's 1 s is what is tested. Its transaction is one statement (the UPDATE
    takes the row lock), but that is several round trips (BEGIN, the statement's preparing,
    its execution), and the server's clock runs between them: a pause of this busy test
    process past 1 s there ends it before it holds the lock, and it is begun again. The other
    instance's statement timeout only bounds each wait for the lock (a guard): generous, so
    that none of its ordinary statements is cut off."""
    async with (
        sql_harness(postgres.url, db_idle_in_transaction_timeout_seconds=1) as frozen,
        sql_harness(postgres.url, db_statement_timeout_seconds=10) as other,
        contextlib.AsyncExitStack() as held,
    ):
        person = (await other.sign_up("stuck", "stuck@example.com")).account
        for _ in range(TRIES):
            attempt = contextlib.AsyncExitStack()
            silent = await attempt.enter_async_context(frozen.uow())
            try:
                await silent.accounts.update(replace(person, email="frozen@example.com"))
            except (errors.StorageError, errors.StorageFault):
                await attempt.aclose()  # ended before it held the lock (a pause here): again
                continue
            await held.enter_async_context(attempt)  # ended with the test
            break
        else:
            pytest.fail(f"{TRIES} transactions were ended before they took the lock")
        # From here the instance says nothing more; the others go on.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # generous: a guard, not a measure
        while True:
            try:
                async with other.uow() as uow:
                    assert await uow.accounts.lock(person.id) is not None
                    break
            except errors.StorageError:  # cut off waiting for the lock: tried again
                assert loop.time() < deadline, "the silent instance still holds the lock"
        # When it wakes up, its transaction is gone: nothing of it is written. (What its
        # driver then says depends on whether it read the server's goodbye first.)
        with pytest.raises((errors.StorageError, errors.StorageFault)):
            await silent.commit()
        async with other.uow() as uow:
            after = await uow.accounts.get(person.id)
        assert after is not None
        assert after.email == "stuck@example.com"
