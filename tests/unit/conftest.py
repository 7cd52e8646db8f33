from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.memory import MemoryDatabase
from tests.harness import Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness.build()
    yield harness
    harness.container.unwire()


@pytest.fixture
def db(h: Harness) -> MemoryDatabase:
    database: MemoryDatabase = h.container.memory_db()
    return database
