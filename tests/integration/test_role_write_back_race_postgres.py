"""An add for a linked member on its way to Discord while the member unlinks on an instance
whose setting no longer names the role, on Postgres. The unlink asks to remove only the roles
whose add Discord took (``queue_role_changes``): the add on its way is not among them. The
worker's write-back of the add then sees the member unlinked and asks for the removal itself;
it holds the link first, so an unlink not committed yet is waited for rather than missed (each
transaction not seeing the other's: the role would stay on the unlinked member)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.sql import SqlDatabase
from domain.model import DiscordId, LinkedRole, RoleAction, RoleChangeStatus
from domain.use_cases._shared import queue_role_changes
from tests.harness import Harness, sql_harness
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock

ROLE = LinkedRole(DiscordId(1300000000000000001), DiscordId(1300000000000000099))


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with sql_harness(
        postgres.url,
        discord_linked_roles=str(ROLE),
        discord_bot_token="bot-token",
        db_pool_timeout=120,
        db_statement_timeout_seconds=120,
    ) as harness:
        yield harness


async def test_an_unlink_committing_during_the_adds_write_back_leaves_no_role(
    h: Harness, pg_db: SqlDatabase
) -> None:
    account = (await h.sign_up("dora", "dora@example.com")).account
    profile = h.discord_user(5301)
    await h.discord_link(account.id, profile)
    unlinked, go = asyncio.Event(), asyncio.Event()

    async def unlink_elsewhere() -> None:
        """The unlink of an instance without the role, its commit held back."""
        async with pg_db.unit_of_work() as uow:
            link = await uow.links.get_by_discord_id(profile.id)
            assert link is not None
            assert await uow.links.remove(link)
            await queue_role_changes(
                uow,
                [],
                RoleAction.REMOVE,
                discord_id=profile.id,
                account_id=account.id,
                now=h.clock.now(),
            )
            unlinked.set()
            await go.wait()
            await uow.commit()

    unlinking: list[asyncio.Task[None]] = []

    async def while_the_add_is_with_discord() -> None:
        unlinking.append(asyncio.create_task(unlink_elsewhere()))
        await unlinked.wait()

    h.guild_roles.during_next_call = while_the_add_is_with_discord
    worker = asyncio.create_task(h.container.apply_role_changes().execute())
    await until_it_waits_for_a_lock(pg_db, worker)  # the write-back waits for the unlink
    go.set()
    first = await asyncio.wait_for(worker, 60)
    await asyncio.wait_for(unlinking[0], 60)
    assert [c.action for c in first.done] == [RoleAction.ADD]
    assert h.guild_roles.has(ROLE, profile.id)  # Discord took the add
    async with pg_db.unit_of_work(read_only=True) as uow:
        row = await uow.role_changes.get(profile.id, ROLE)
    assert row is not None
    assert (row.action, row.status) == (RoleAction.REMOVE, RoleChangeStatus.PENDING)

    again = await h.container.apply_role_changes().execute()

    assert [c.action for c in again.done] == [RoleAction.REMOVE]
    assert not h.guild_roles.has(ROLE, profile.id)
