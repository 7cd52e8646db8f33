from __future__ import annotations

import pytest

from adapters.memory import MemoryDatabase
from tests.crash import InjectedCrash, crash_on_link
from tests.harness import Harness


async def test_crash_between_account_and_link_leaves_nothing(
    h: Harness, db: MemoryDatabase
) -> None:
    profile = h.discord_user(7001, email="crash@example.com")
    crash_on_link(h.container)

    with pytest.raises(InjectedCrash):
        await h.discord_login(profile)

    assert db.tables.accounts == {}
    assert db.tables.links == {}
    assert db.tables.sessions == {}
