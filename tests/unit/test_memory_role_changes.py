from __future__ import annotations

import pytest

from adapters.memory import MemoryDatabase
from domain.ports import UnitOfWorkFactory
from tests.contracts.role_changes import RoleChangeContract


class TestMemoryRoleChanges(RoleChangeContract):
    @pytest.fixture
    def uow_factory(self) -> UnitOfWorkFactory:
        return MemoryDatabase().unit_of_work
