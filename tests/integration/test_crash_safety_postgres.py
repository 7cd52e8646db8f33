from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import accounts, audit_events, sessions, user_links
from tests.crash import InjectedCrash, crash_on_link
from tests.harness import Harness, sql_harness
from tests.integration.postgres import PostgresServer


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
