"""The purge beside a transaction that holds rows it deletes, on Postgres. "Sign out
everywhere" (``remove_for_account``), a Discord sign-in's load (``PendingLoginRepository.lock``
with the browser's other round trips) and a sign-out's mark take their rows in one order (the
digests', the states'); the purge deleted its batch in the table's order. With two rows of
the same account (or browser) among the expired ones, each held one and waited for the other:
Postgres aborted one (a deadlock, a 503 for the person, or a failed purge pass). The purge now
leaves a row another transaction holds for its next pass (SKIP LOCKED): it waits for
nobody."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import pending_login, sessions
from domain.model import Session
from domain.use_cases import NO_WEBHOOKS, PurgeExpired
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from tests.contracts.repositories import NOW, account, pending
from tests.fakes.clock import ManualClock
from tests.integration.waiting import until_it_waits_for_a_lock

FIRST, SECOND = "a" * 64, "b" * 64  # in the digests' (and states') order


async def _count(pg_db: SqlDatabase, table: Any) -> int:
    async with pg_db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _purge(pg_db: SqlDatabase) -> PurgeExpired:
    later = ManualClock(NOW + KEPT_PAST_EXPIRY + timedelta(hours=1))
    return PurgeExpired(pg_db.unit_of_work, later, NO_WEBHOOKS)


async def test_a_purge_beside_sign_out_everywhere_of_an_account_with_expired_sessions(
    pg_db: SqlDatabase,
) -> None:
    owner = account()
    async with pg_db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        # Written in the other order than the digests': the table's order is the later first.
        for digest in (SECOND, FIRST):
            await uow.sessions.add(Session(digest, owner.id, NOW, NOW))
        await uow.commit()
    async with pg_db.unit_of_work() as everywhere:
        await everywhere.sessions.remove(FIRST)  # the first of the account's, in its order
        purge = asyncio.create_task(_purge(pg_db).execute())
        await until_it_waits_for_a_lock(pg_db, purge)
        await everywhere.sessions.remove_for_account(owner.id)  # and the others
        await everywhere.commit()
    await purge  # neither aborted (a deadlock: StorageContention)
    assert await _count(pg_db, sessions) == 0


async def test_a_purge_beside_a_discord_sign_in_holding_its_browsers_round_trips(
    pg_db: SqlDatabase,
) -> None:
    browser = "c" * 64
    async with pg_db.unit_of_work() as uow:
        for state in (SECOND, FIRST):  # the browser's two round trips, long expired
            await uow.pending_logins.add(pending(state, browser_digest=browser, expires_at=NOW))
        await uow.commit()
    async with pg_db.unit_of_work() as load:
        await load.pending_logins.lock(FIRST)
        purge = asyncio.create_task(_purge(pg_db).execute())
        await until_it_waits_for_a_lock(pg_db, purge)
        await load.pending_logins.lock(FIRST, {browser})  # and the browser's others
        await load.commit()
    await purge  # neither aborted (a deadlock: StorageContention)
    assert await _count(pg_db, pending_login) == 1  # the one held: the next pass's
