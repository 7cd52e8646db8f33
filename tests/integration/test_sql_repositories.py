"""The repository contracts, on SQLite and on Postgres."""

from __future__ import annotations

import pytest

from adapters.sql import SqlDatabase
from domain.ports import UnitOfWorkFactory
from tests.contracts.repositories import RepositoryContract


class TestSqliteRepositories(RepositoryContract):
    @pytest.fixture
    def uow_factory(self, sqlite_db: SqlDatabase) -> UnitOfWorkFactory:
        return sqlite_db.unit_of_work


class TestPostgresRepositories(RepositoryContract):
    @pytest.fixture
    def uow_factory(self, pg_db: SqlDatabase) -> UnitOfWorkFactory:
        return pg_db.unit_of_work
