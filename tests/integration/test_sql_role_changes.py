"""The role queue's contract, on SQLite and on Postgres."""

from __future__ import annotations

import pytest

from adapters.sql import SqlDatabase
from domain.ports import UnitOfWorkFactory
from tests.contracts.role_changes import RoleChangeContract


class TestSqliteRoleChanges(RoleChangeContract):
    @pytest.fixture
    def uow_factory(self, sqlite_db: SqlDatabase) -> UnitOfWorkFactory:
        return sqlite_db.unit_of_work


class TestPostgresRoleChanges(RoleChangeContract):
    @pytest.fixture
    def uow_factory(self, pg_db: SqlDatabase) -> UnitOfWorkFactory:
        return pg_db.unit_of_work
