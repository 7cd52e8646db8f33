"""The role queue's contract, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio

import pytest

from adapters.sql import SqlDatabase
from domain.model import DiscordId, RoleAction, RoleChangeStatus
from domain.ports import UnitOfWork, UnitOfWorkFactory
from tests.contracts.repositories import LATER, NOW, write
from tests.contracts.role_changes import ROLE, RoleChangeContract, change


class TestSqliteRoleChanges(RoleChangeContract):
    @pytest.fixture
    def uow_factory(self, sqlite_db: SqlDatabase) -> UnitOfWorkFactory:
        return sqlite_db.unit_of_work


class TestPostgresRoleChanges(RoleChangeContract):
    @pytest.fixture
    def uow_factory(self, pg_db: SqlDatabase) -> UnitOfWorkFactory:
        return pg_db.unit_of_work

    async def test_refusing_a_roles_queue_never_waits_for_a_row_another_holds(
        self, pg_db: SqlDatabase
    ) -> None:
        """A request (a link) or a claim under way holds its row's lock: the refusal leaves
        that row, it does not wait for it (waiting, it could meet `roles sync`'s statement,
        which locks many rows of the role, in a deadlock)."""

        async def queue(uow: UnitOfWork) -> None:
            for n in (1, 2, 3):
                await uow.role_changes.request(change(n))

        await write(pg_db.unit_of_work, queue)
        async with pg_db.unit_of_work() as linking:  # asked for again, not committed yet
            await linking.role_changes.request(change(2, RoleAction.REMOVE, requested_at=LATER))
            async with pg_db.unit_of_work() as worker:
                refused = await asyncio.wait_for(
                    worker.role_changes.refuse_queued(ROLE, NOW, "missing_permissions"), 10
                )
                await worker.commit()
            await linking.commit()
        assert [c.discord_id.value for c in refused] == [1, 3]
        async with pg_db.unit_of_work() as uow:
            row = await uow.role_changes.get(DiscordId(2), ROLE)
        assert row is not None
        assert (row.status, row.action) == (RoleChangeStatus.PENDING, RoleAction.REMOVE)
