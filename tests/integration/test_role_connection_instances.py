"""Discord Linked Roles with two instances on one Postgres, each its own container (engine, pool,
worker and listening connection), as in separate processes, and one Discord (the in-memory fake
with its rules). Workers poll once an hour here: a push that happens was announced by NOTIFY
(or by the listener's wake-up when it starts listening, which the tests wait out)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from dependency_injector import providers
from sqlalchemy import func, select

from adapters.queue_listener import BellListener
from adapters.sql import SqlDatabase
from adapters.sql.notifications import (
    ROLE_CONNECTION_LISTENER_APPLICATION_NAME,
    PostgresQueueListener,
)
from adapters.sql.tables import role_connection_tokens
from domain import errors
from domain.model import DiscordId
from domain.use_cases import RoleSyncReport
from domain.use_cases.role_connections import CLAIM_LEASE
from entrypoints.role_connection_worker import RoleConnectionWorker
from tests.bot_support import wait_until
from tests.fakes.queue_listener import CountingListener
from tests.fakes.role_connections import (
    InMemoryDiscordWithRoles,
    connected,
    linked,
    refresh_pass,
    role_harness,
)
from tests.harness import PASSWORD, Harness
from tests.integration.postgres import PostgresServer, listener_pids

DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement
AN_HOUR = 3600.0


@dataclass
class Instance:
    h: Harness
    worker: RoleConnectionWorker
    listener: CountingListener


@contextlib.asynccontextmanager
async def instance(database_url: str, first: Instance | None = None) -> AsyncIterator[Instance]:
    """An instance; the second one shares the first one's clock and Discord."""
    h = role_harness(
        storage="sql", database_url=database_url, role_connections_poll_seconds=AN_HOUR
    )
    container = h.container
    if first is not None:
        container.clock.override(first.h.clock)
        h.clock = first.h.clock
        container.discord_oauth.override(first.h.discord)
        container.discord_role_connections.override(first.h.discord)
        h.discord = first.h.discord
    real = container.role_connection_listener()
    assert isinstance(real, BellListener)  # this process's commits, and on Postgres
    assert isinstance(real.across, PostgresQueueListener)  # every instance's
    listener = CountingListener(real)
    container.role_connection_listener.override(providers.Object(listener))
    worker = RoleConnectionWorker(container)
    try:
        yield Instance(h, worker, listener)
    finally:
        await worker.stop()
        await container.sql_db().dispose()
        container.unwire()


def discord(i: Instance) -> InMemoryDiscordWithRoles:
    assert isinstance(i.h.discord, InMemoryDiscordWithRoles)
    return i.h.discord


async def token_rows(database: SqlDatabase) -> int:
    async with database.engine.connect() as conn:
        found = await conn.execute(select(func.count()).select_from(role_connection_tokens))
        return int(found.scalar_one())


async def test_an_unlink_on_one_instance_is_pushed_at_once_by_another(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """Only the first instance runs a worker: the second one's unlinks (the bot's, the account
    page's) reach Discord through it, woken by NOTIFY, not an hour later at its poll."""
    async with instance(postgres.url) as a, instance(postgres.url, a) as b:
        a.worker.start()
        await wait_until(lambda: a.listener.wakes >= 1 and a.worker.idle, DEADLINE)
        # One listening connection, named for operators.
        assert len(await listener_pids(pg_db, ROLE_CONNECTION_LISTENER_APPLICATION_NAME)) == 1
        by_bot = DiscordId(7301)
        await connected(b.h, by_bot.value, "alice")
        page_account = await connected(b.h, 7302, "bob")
        assert await token_rows(pg_db) == 2
        wakes = a.listener.wakes

        await b.h.container.unlink_discord().execute(by_bot)
        await wait_until(lambda: linked(discord(a).connections[by_bot]) == ("0", "0"), DEADLINE)
        await b.h.container.unlink_account().execute(
            session_token=await b.h.session_for(page_account), current_password=PASSWORD
        )
        await wait_until(
            lambda: linked(discord(a).connections[DiscordId(7302)]) == ("0", "0"), DEADLINE
        )
        await wait_until(lambda: a.worker.idle, DEADLINE)

        assert a.listener.wakes >= wakes + 2  # each unlink woke the other instance's worker
        assert await token_rows(pg_db) == 0  # pushed "not linked", then deleted


async def test_a_late_push_whose_not_linked_fails_keeps_the_tokens_for_a_later_pass(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """Instance A's push of "linked" stalls past its lease; the member unlinks and instance B
    takes the row over, pushes "not linked" and deletes the tokens; A's push lands last. A's
    "not linked" with the tokens in hand, the only ones left, is refused (Discord down): A
    keeps them as a due row, and B's next pass tells Discord and deletes them. Before, they
    were dropped, and Discord showed the unlinked member "linked" for good."""
    async with instance(postgres.url) as a, instance(postgres.url, a) as b:
        member = DiscordId(7311)
        await connected(a.h, member.value, "carol")
        a.h.clock.advance(timedelta(days=1))  # linked_days changed: due
        taken_over: list[RoleSyncReport] = []

        async def refused() -> None:  # A's "not linked" with the tokens in hand
            raise errors.DiscordUnavailable()

        async def stall_while_b_takes_over() -> None:  # inside A's push of "linked"
            await b.h.container.unlink_discord().execute(member)
            a.h.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
            taken_over.append(await refresh_pass(b.h))
            discord(a).during_push = refused

        discord(a).during_push = stall_while_b_takes_over
        first = await refresh_pass(a.h)

        assert taken_over == [RoleSyncReport(cleared=1)]
        assert first == RoleSyncReport(gone=1)
        late = linked(discord(a).connections[member])
        assert late is not None
        assert late[0] == "1"  # A's "linked", late
        assert await token_rows(pg_db) == 1  # kept to say it later

        a.h.clock.advance(timedelta(minutes=1))
        assert (await refresh_pass(b.h)).cleared == 1
        assert linked(discord(a).connections[member]) == ("0", "0")
        assert await token_rows(pg_db) == 0
