"""The repository contracts, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.queue_listener import QueueBell
from adapters.sql import SqlDatabase
from adapters.sql.postgres_directory import PostgresLinkDirectory
from domain.ports import UnitOfWorkFactory
from tests.bot_support import WAIT_SECONDS
from tests.contracts.repositories import RepositoryContract


class TestSqliteRepositories(RepositoryContract):
    @pytest.fixture
    def uow_factory(self, sqlite_db: SqlDatabase) -> UnitOfWorkFactory:
        return sqlite_db.unit_of_work

    @pytest.fixture
    def bell(self, sqlite_db: SqlDatabase) -> QueueBell:
        return sqlite_db.bell


class TestPostgresRepositories(RepositoryContract):
    @pytest.fixture
    def uow_factory(self, pg_db: SqlDatabase) -> UnitOfWorkFactory:
        return pg_db.unit_of_work

    @pytest.fixture
    def bell(self, pg_db: SqlDatabase) -> QueueBell:
        return pg_db.bell


def own_directory(
    pg_db: SqlDatabase,
    max_size: int,
    *,
    acquire_timeout: float = 30,
    connect_args: dict[str, Any] | None = None,
    **options: Any,
) -> PostgresLinkDirectory:
    """A directory of its own on the test database, to close or wear out freely."""
    assert isinstance(pg_db.directory, PostgresLinkDirectory)
    return PostgresLinkDirectory(
        str(pg_db.engine.url.render_as_string(hide_password=False)),
        max_size=max_size,
        acquire_timeout=acquire_timeout,
        connect_args=connect_args or {},
        **options,
    )


def idle(directory: Any) -> list[Any]:
    """The directory's idle connections, the one it uses next last."""
    return [conn for _, conn in directory._idle]


async def test_a_lookup_is_one_statement_outside_any_transaction(pg_db: SqlDatabase) -> None:
    """The API's hot path: no BEGIN/ROLLBACK around the query (one round trip)."""
    from domain.model import DiscordId
    from tests.contracts.repositories import account, link

    owner = account()
    async with pg_db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.links.add(link(4242, owner.id))
        await uow.commit()
    # What the server is sent, seen by asyncpg itself on the directory's connection: no
    # BEGIN/ROLLBACK around the query and no ping before it (one round trip).
    sent: list[str] = []
    directory = pg_db.directory
    assert isinstance(directory, PostgresLinkDirectory)
    assert await directory.link_by_discord_id(DiscordId(1)) is None  # opens its connection
    (conn,) = idle(directory)  # the one each of these calls, one at a time, uses
    conn.add_query_logger(lambda r: sent.append(r.query))
    for _ in range(2):  # the first time, asyncpg also learns the array type (once)
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
        sent.clear()
        found = await directory.link_by_discord_id(DiscordId(4242))
        several = await directory.link_rows_by_discord_ids([4242, 1])
    await asyncio.sleep(0)
    assert found is not None
    assert found.account_id == owner.id
    assert found.linked_at.tzinfo is not None
    assert [x[0] for x in several] == [4242]
    assert several[0][1:3] == (str(owner.id.value), found.linked_at)
    assert len(sent) == 2, sent  # one statement each, nothing else
    assert all("FROM user_links" in sql for sql in sent)


async def test_lookups_get_the_connections_in_the_order_they_asked(pg_db: SqlDatabase) -> None:
    """Asyncpg's pool gives a freed connection to whoever asks next: a lookup woken for it
    could find it taken by one that had just arrived, and wait again at the end of the line
    (under load, a few lookups waited half a second). Turns are taken first come first served:
    one arriving at the very moment a connection is freed waits behind those already waiting."""
    from domain.model import DiscordId

    directory = own_directory(pg_db, 1)
    served: list[str] = []
    go = asyncio.Event()

    async def lookup(name: str, *, after: asyncio.Event | None = None) -> None:
        if after is not None:
            await after.wait()
        await directory.link_by_discord_id(DiscordId(1))
        served.append(name)

    try:
        turns = directory._turns
        await turns.acquire()  # the only connection is in use
        waiting = asyncio.ensure_future(lookup("waiting"))
        newcomer = asyncio.ensure_future(lookup("newcomer", after=go))
        for _ in range(3):
            await asyncio.sleep(0)
        # The newcomer asks in the same instant the connection is freed, before the one
        # waiting for it has run again.
        go.set()
        turns.release()
        await asyncio.gather(waiting, newcomer)
        assert served == ["waiting", "newcomer"]
    finally:
        await directory.close()


async def test_a_lookup_that_gets_no_turn_in_time_is_a_storage_error(pg_db: SqlDatabase) -> None:
    """A free turn is taken at once; waiting for one is bounded by the pool's timeout (a
    setting, here two seconds: it also bounds opening the first connection, which a busy
    machine may make slow), after which the lookup fails as storage unavailable (a 503)."""
    from domain import errors
    from domain.model import DiscordId

    directory = own_directory(pg_db, 1, acquire_timeout=2.0)
    try:
        assert await directory.link_by_discord_id(DiscordId(1)) is None  # a free turn
        turns = directory._turns
        await turns.acquire()  # every turn taken, and never given back in time
        try:
            with pytest.raises(errors.StorageError):
                await directory.link_by_discord_id(DiscordId(1))
        finally:
            turns.release()
        assert await directory.link_by_discord_id(DiscordId(1)) is None  # free again
    finally:
        await directory.close()


async def test_a_lookup_the_server_does_not_answer_in_time_is_not_tried_again(
    pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout is a slow or frozen server, not a closed connection: one attempt (a second
    would double the wait), and the pool's other connections are kept."""
    from sqlalchemy import text

    from domain import errors

    # A deadline the set-up statements meet however busy the machine; the one meant to be
    # cut off waits for a lock this test holds, and never answers in time.
    directory = own_directory(pg_db, 2, connect_args={"command_timeout": 2.0})
    key = uuid.uuid4().int % 2**63
    attempts: list[str] = []
    expired: list[object] = []
    fetch_on = PostgresLinkDirectory._fetch_on_a_connection
    expire = PostgresLinkDirectory._expire

    async def counted_fetch_on(self: PostgresLinkDirectory, *args: Any) -> list[Any]:
        attempts.append("read")
        return await fetch_on(self, *args)

    def counted_expire(self: PostgresLinkDirectory) -> None:
        expired.append(self)
        expire(self)

    monkeypatch.setattr(PostgresLinkDirectory, "_fetch_on_a_connection", counted_fetch_on)
    monkeypatch.setattr(PostgresLinkDirectory, "_expire", counted_expire)
    try:
        both = "SELECT pg_sleep(0)::text || $1::text"  # at once: a connection each
        await asyncio.gather(directory._fetch(both, "a"), directory._fetch(both, "b"))
        kept, used = idle(directory)
        attempts.clear()
        async with pg_db.engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                with pytest.raises(errors.StorageError):
                    await directory._fetch(f"SELECT pg_advisory_xact_lock({key})::text || $1", "x")
            finally:
                await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await holder.commit()
        assert attempts == ["read"]
        assert expired == []
        assert idle(directory) == [kept]  # the other connection is kept, the cut one is not
        assert used.is_closed()
        assert not kept.is_closed()
    finally:
        await directory.close()


async def test_the_directorys_connections_are_reused_and_dropped_when_unusable(
    pg_db: SqlDatabase,
) -> None:
    """With a turn there is a connection: the last one given back, or a new one. A statement
    the server refuses leaves its connection usable; one cut off (the call cancelled) or any
    connection in use when the directory closes is closed, never reused."""
    from domain import errors

    directory = own_directory(pg_db, 2)
    try:
        for _ in range(3):
            await directory._fetch("SELECT $1::text", "x")
        (first,) = idle(directory)  # one call at a time: one connection
        with pytest.raises(errors.StorageFault):  # division by zero: refused, not broken
            await directory._fetch("SELECT 1 / 0 WHERE $1::text IS NOT NULL", "x")
        assert idle(directory) == [first]

        cut = asyncio.ensure_future(directory._fetch("SELECT pg_sleep(30)::text || $1", "x"))
        await asyncio.sleep(0)  # it runs: takes a turn and the idle connection, and waits
        assert idle(directory) == []
        cut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cut
        assert first.is_closed()
        assert idle(directory) == []
        await directory._fetch("SELECT $1::text", "x")  # a new connection for the next call
        (second,) = idle(directory)
        assert second is not first

        busy = asyncio.ensure_future(directory._fetch("SELECT pg_sleep(0.3)::text || $1", "x"))
        await asyncio.sleep(0)
        assert idle(directory) == []
        await directory.close()
        await busy  # finishes its statement, then its connection is closed, not kept
        assert second.is_closed()
        assert idle(directory) == []
    finally:
        await directory.close()


async def test_a_lookup_that_waited_through_close_does_not_leave_a_connection_open(
    pg_db: SqlDatabase,
) -> None:
    """close() while a lookup waits for its turn: the lookup is still answered, and the
    connection it used is closed after it, not kept past the close."""
    from domain.model import DiscordId

    directory = own_directory(pg_db, 1)
    try:
        turns = directory._turns
        await turns.acquire()  # the only turn, taken
        waiting = asyncio.ensure_future(directory.link_by_discord_id(DiscordId(1)))
        await asyncio.sleep(0)
        await directory.close()
        turns.release()
        assert await waiting is None
        assert idle(directory) == []
    finally:
        await directory.close()


async def test_a_connection_the_server_drops_during_a_statement_is_retried_on_a_new_one(
    pg_db: SqlDatabase,
) -> None:
    """A backend terminated while it runs the statement (a restart, a failover, a pooler
    cutting it): asyncpg says "closed in the middle of operation", a Postgres error in its
    class tree, and still a broken connection: the idle ones are dropped and the read is
    tried once more, on a fresh connection (not a 500)."""
    from sqlalchemy import text

    directory = own_directory(pg_db, 2)
    marker = f"cut-{uuid.uuid4().hex}"
    key = uuid.uuid4().int % 2**63  # an advisory lock of this test's own
    cut = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE :marker AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    try:
        await directory._fetch("SELECT $1::text", "x")
        (first,) = idle(directory)
        async with pg_db.engine.connect() as holder, pg_db.engine.connect() as admin:
            # The read waits for a lock held here until its backend is terminated: it is
            # under way on the server when it is cut, however slow the machine.
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            await holder.commit()  # a session's lock: held until unlocked
            read = asyncio.ensure_future(
                directory._fetch(
                    f"SELECT pg_advisory_xact_lock({key})::text || $1::text /* {marker} */", "y"
                )
            )
            try:
                terminated = False
                deadline = time.monotonic() + WAIT_SECONDS
                while not read.done() and time.monotonic() < deadline:
                    found = await admin.execute(cut, {"marker": f"%{marker}%"})
                    terminated = bool(found.scalars().all())
                    await admin.rollback()  # pg_stat_activity is read once per transaction
                    if terminated:
                        break
                    await asyncio.sleep(0.01)
                assert terminated
                assert not read.done()  # the second try waits for the lock in turn
            finally:
                await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await holder.commit()
        assert [tuple(r) for r in await read] == [("y",)]  # answered, by the second try
        assert first.is_closed()
        assert first not in idle(directory)
    finally:
        await directory.close()


async def test_a_connection_unused_too_long_is_replaced_before_it_is_used(
    pg_db: SqlDatabase,
) -> None:
    """A connection idle for longer than max_idle_seconds may have been forgotten by a
    firewall on the way: it is closed, with those idle longer still, and a new one used."""

    kept = own_directory(pg_db, 2)
    aged = own_directory(pg_db, 2, max_idle_seconds=0)
    try:
        for directory in (kept, aged):
            both = "SELECT pg_sleep(0.05)::text || $1::text"  # at once: a connection each
            await asyncio.gather(directory._fetch(both, "a"), directory._fetch(both, "b"))
        before = idle(kept)
        await kept._fetch("SELECT $1::text", "x")
        assert idle(kept) == before  # the same two, reused

        older, newer = idle(aged)
        await aged._fetch("SELECT $1::text", "x")
        (fresh,) = idle(aged)
        assert fresh not in (older, newer)
        assert older.is_closed()
        assert newer.is_closed()
    finally:
        await kept.close()
        await aged.close()


async def test_the_directory_survives_a_restarted_database(
    pg_db: SqlDatabase, postgres: Any
) -> None:
    """Without a ping before each use, a pooled connection the server closed fails its next
    statement: the directory then retries once on a fresh connection (a restart costs no
    lookup), and the writes' pool is renewed by SQLAlchemy after one failure."""
    from sqlalchemy import text

    from domain.model import DiscordId

    assert await pg_db.directory.link_by_discord_id(DiscordId(1)) is None  # a pooled connection
    async with pg_db.engine.connect() as admin:
        await admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert await pg_db.directory.link_by_discord_id(DiscordId(1)) is None
    assert await pg_db.directory.api_key_by_digest("0" * 64) is None


async def test_the_lookups_read_the_database_urls_query_as_the_engine_does(
    pg_db: SqlDatabase, postgres: Any
) -> None:
    """``?ssl=…`` is how asyncpg (through SQLAlchemy) is told about TLS, and the engine takes
    it. The lookups' own connections read the URL as a DSN, where asyncpg sends an ``ssl``
    parameter to the server as a setting: the server refused every connection, and every
    lookup of the JSON API failed while the rest of the service worked. (``disable``: the
    test server speaks no TLS.)"""
    await _engine_and_lookups_connect(f"{postgres.url}?ssl=disable")


async def _engine_and_lookups_connect(url: str) -> None:
    from domain.model import DiscordId

    database = SqlDatabase(url, statement_timeout=5)
    try:
        assert await database.ping()
        assert await database.directory.link_by_discord_id(DiscordId(1)) is None
    finally:
        await database.dispose()


async def test_a_url_that_turns_the_engines_statement_cache_off_works_throughout(
    pg_db: SqlDatabase,  # the schema, migrated
    postgres: Any,
) -> None:
    """``?prepared_statement_cache_size=0`` is SQLAlchemy's own setting (its engine's cache
    of prepared statements, which PgBouncer's users turn off): the settings take it, the
    engine and the lookups' connections both connect with it."""
    from entrypoints.settings import load_settings
    from tests.harness import TEST_SECRET_KEY

    url = f"{postgres.url}?prepared_statement_cache_size=0&ssl=disable"
    load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, database_url=url)
    await _engine_and_lookups_connect(url)


async def test_sqlite_reads_do_not_wait_for_a_writer(sqlite_url: str) -> None:
    """The embedded default under load: a read takes no write lock, so it goes on beside a
    writer. With no busy timeout at all, a read that needed the lock would fail at once."""
    from adapters.sql import migrate
    from domain import errors
    from domain.model import DiscordId

    database = SqlDatabase(sqlite_url, sqlite_busy_timeout_ms=0)
    try:
        await migrate.upgrade(database)
        async with database.engine.connect() as writer:
            await writer.begin()  # BEGIN IMMEDIATE: the write lock, held
            assert await database.directory.link_by_discord_id(DiscordId(1)) is None
            async with database.unit_of_work(read_only=True) as uow:
                assert await uow.links.get_by_discord_id(DiscordId(1)) is None
            with pytest.raises(errors.StorageError):  # a writer does need the lock
                async with database.unit_of_work() as uow:
                    await uow.links.get_by_discord_id(DiscordId(1))
            await writer.rollback()
    finally:
        await database.dispose()


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most systems give a process: files 0644
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
async def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The file holds the accounts' emails and password hashes, the audit trail's client
    addresses and the sealed Discord tokens. SQLite would create it with the umask (0644); its
    -wal and -shm files take the database file's mode."""
    from adapters.sql import migrate

    file = tmp_path / "taskflow-link.db"
    database = SqlDatabase(f"sqlite+aiosqlite:///{file}")
    try:
        await migrate.upgrade(database)
        async with database.engine.connect():  # the -wal and -shm files exist while open
            for made in (
                file,
                tmp_path / "taskflow-link.db-wal",
                tmp_path / "taskflow-link.db-shm",
            ):
                assert stat.S_IMODE(made.stat().st_mode) == 0o600, made.name
    finally:
        await database.dispose()


@pytest.mark.usefixtures("usual_umask")
async def test_an_existing_sqlite_database_keeps_its_mode_with_a_warning_if_others_may_read_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.sql import migrate

    file = tmp_path / "taskflow-link.db"
    file.touch(mode=0o644)
    database = SqlDatabase(f"sqlite+aiosqlite:///{file}")
    try:
        with caplog.at_level(logging.WARNING, logger="taskflow_link.database"):
            await migrate.upgrade(database)
            await migrate.upgrade(database)
    finally:
        await database.dispose()
    assert stat.S_IMODE(file.stat().st_mode) == 0o644  # the operator's to change
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.database"]
    assert len(warnings) == 1  # once, not at every connection
    assert f"{file} can be read or written by other users (mode 644)" in warnings[0]
    assert "chmod 600" in warnings[0]


async def test_an_in_memory_sqlite_database_creates_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.sql import migrate

    monkeypatch.chdir(tmp_path)
    for url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
        database = SqlDatabase(url)
        try:
            await migrate.upgrade(database)
        finally:
            await database.dispose()
    assert not os.listdir(tmp_path)


async def test_a_claim_on_postgres_skips_emails_another_claim_holds(pg_db: SqlDatabase) -> None:
    """SKIP LOCKED: while one worker's claim is still open, another worker takes the other
    emails at once; it neither waits for the first nor gets its email."""
    import asyncio
    import uuid

    from domain.model import EmailKind, OutgoingEmail
    from tests.contracts.repositories import LATER, NOW

    emails = [
        OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, f"{n}@b.c", None, NOW, NOW)
        for n in range(3)
    ]
    async with pg_db.unit_of_work() as uow:
        for email in emails:
            await uow.outgoing_emails.add(email)
        await uow.commit()

    async def other_worker() -> list[uuid.UUID]:
        async with pg_db.unit_of_work() as uow:
            batch = await uow.outgoing_emails.claim_due(NOW, LATER, 10)
            await uow.commit()
        return [e.id for e in batch]

    async with pg_db.unit_of_work() as first_worker:
        [held] = await first_worker.outgoing_emails.claim_due(NOW, LATER, 1)  # row locked
        # A deadline, not a measurement: a claim that waited for the lock would wait for ever,
        # since the first worker commits only after this.
        taken = await asyncio.wait_for(other_worker(), timeout=60)
        await first_worker.commit()
    assert held.id == emails[0].id
    assert taken == [emails[1].id, emails[2].id]


async def test_a_statements_error_never_shows_its_values(sqlite_db: SqlDatabase) -> None:
    """A statement's error is logged with its cause (a failed worker pass, a 500): SQLAlchemy
    put its bound values in its text, an email address and a token's digest among them
    (helper-83's review)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as failed:
        async with sqlite_db.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO no_such_table VALUES (:address)"),
                {"address": "someone@example.com"},
            )
    assert "someone@example.com" not in str(failed.value)
    assert "parameters hidden" in str(failed.value)


async def test_a_newer_releases_rows_do_not_break_the_queues_of_this_one_on_sqlite(
    sqlite_db: SqlDatabase,
) -> None:
    await _a_newer_releases_rows(sqlite_db)


async def test_a_newer_releases_rows_do_not_break_the_queues_of_this_one_on_postgres(
    pg_db: SqlDatabase,
) -> None:
    await _a_newer_releases_rows(pg_db)


async def _a_newer_releases_rows(database: SqlDatabase) -> None:
    """A newer release may queue an email of a kind, or a webhook event of a type, this
    version does not know (during a rolling upgrade, or left behind by a rollback). Each
    claim read its row back and failed: every pass of this version's workers broke on it,
    a traceback at each poll, and while it was due nothing went out from them at all (the
    webhook claim takes every endpoint in one transaction), for good after a rollback. The
    email is left to an instance that knows its kind; the webhook event, whose body the
    newer release wrote whole, is delivered as written, in its endpoint's order."""
    import uuid
    from datetime import timedelta

    from sqlalchemy import insert

    from adapters.sql.tables import outgoing_emails, webhook_deliveries, webhook_events
    from domain.model import EmailKind, OutgoingEmail
    from tests.contracts.repositories import HOOK_A, LATER, NOW, webhook

    earlier = NOW - timedelta(minutes=1)
    newer_event = uuid.uuid4()
    async with database.engine.begin() as conn:
        await conn.execute(
            insert(outgoing_emails).values(
                id=uuid.uuid4(),
                kind="account_deleted",
                recipient="z@b.c",
                account_id=None,
                created_at=earlier,
                status="pending",
                next_attempt_at=earlier,
                attempts=0,
                detail={},
            )
        )
        await conn.execute(
            insert(webhook_events).values(
                id=newer_event, type="account.deleted", occurred_at=earlier, payload='{"a":1}'
            )
        )
        await conn.execute(
            insert(webhook_deliveries).values(
                id=uuid.uuid4(),
                event_id=newer_event,
                endpoint=HOOK_A.key,
                host=HOOK_A.host,
                created_at=earlier,
                next_attempt_at=earlier,
                state="pending",
                attempts=0,
            )
        )
    known = OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, "a@b.c", None, NOW, NOW)
    event, deliveries = webhook()
    async with database.unit_of_work() as uow:
        await uow.outgoing_emails.add(known)
        await uow.webhooks.add(event, deliveries)
        await uow.commit()
    async with database.unit_of_work() as uow:
        emails = await uow.outgoing_emails.claim_due(NOW, LATER, 10)
        hooks = await uow.webhooks.claim_due(NOW, LATER, 10, [HOOK_A.key])
        await uow.commit()
    assert [e.id for e in emails] == [known.id]
    assert [(d.event.id, d.event.type, d.event.payload) for d in hooks] == [
        (newer_event, "account.deleted", '{"a":1}'),
        (event.id, event.type, event.payload),
    ]


@pytest.fixture(params=["sqlite_db", "pg_db"])
def either_db(request: pytest.FixtureRequest) -> SqlDatabase:
    found: SqlDatabase = request.getfixturevalue(request.param)
    return found


async def test_a_newer_releases_audit_kinds_sign_in_methods_and_losses_are_read(
    either_db: SqlDatabase,
) -> None:
    """Rows a newer release wrote (a rolling upgrade, a rollback) with values this version's
    enums do not know, in columns that no CHECK constraint bounds: an audit event's kind, a
    session's sign-in method and proof, a link's reason for a lost Linked Roles connection.
    Each was read back into the enum and raised: `taskflow-link audit` failed with a
    traceback on the first such event, and every request of a session (or every lookup of a
    link) so written failed with a 500. The audit kind and the sign-in method are kept as
    their text; a proof of an unknown kind proves nothing here; an unknown loss is a loss."""
    from sqlalchemy import insert

    from adapters.sql.tables import accounts, audit_events, sessions, user_links
    from domain.model import AccountId, AuditEvent, AuditKind
    from tests.contracts.repositories import LATER, NOW

    owner = AccountId.new()
    session_id = uuid.uuid4()
    async with either_db.engine.begin() as conn:
        await conn.execute(
            insert(accounts).values(id=owner.value, username="newer", created_at=NOW)
        )
        await conn.execute(
            insert(audit_events).values(
                id=uuid.uuid4(),
                kind="account_deleted",
                at=NOW,
                account_id=owner.value,
                detail={"by": "operator"},
            )
        )
        await conn.execute(
            insert(sessions).values(
                token_hash="n" * 64,
                account_id=owner.value,
                created_at=NOW,
                expires_at=LATER,
                id=session_id,
                method="passkey",
                proved_at=NOW,
                proved_with="passkey",
            )
        )
        await conn.execute(
            insert(user_links).values(
                discord_id=4242,
                taskflow_user_id=owner.value,
                linked_at=NOW,
                discord_username="newer",
                role_connection_lost_at=NOW,
                role_connection_lost_why="banned",
            )
        )
    known = AuditEvent(AuditKind.SIGNED_IN, NOW, owner)
    async with either_db.unit_of_work() as uow:
        await uow.audit.record(known)
        await uow.commit()

    async with either_db.unit_of_work(read_only=True) as uow:
        found = await uow.audit.search(account_id=owner)
        trail = await uow.audit.for_account(owner)
        session = await uow.sessions.get("n" * 64)
        listed = await uow.sessions.list_for_account(owner)
        link = await uow.links.get_by_account(owner)
    assert sorted(str(e.kind) for e in found) == ["account_deleted", "signed_in"]
    assert [str(e.kind) for e in trail] == [str(e.kind) for e in found][::-1]
    [newer] = [e for e in found if e.kind == "account_deleted"]
    assert newer.detail == {"by": "operator"}
    assert session is not None
    assert (session.method, session.proved_with, session.proved_at) == ("passkey", "passkey", NOW)
    assert [s.id for s in listed] == [session_id]
    assert link is not None
    assert (link.role_connection_lost_at, link.role_connection_lost_why) == (NOW, None)

    # Renewing such a session keeps its method, and a proof written over it is this version's.
    from domain.model import SignInMethod

    async with either_db.unit_of_work() as uow:
        assert await uow.sessions.renew("n" * 64, "m" * 64, LATER, SignInMethod.PASSWORD)
        await uow.commit()
    async with either_db.unit_of_work(read_only=True) as uow:
        renewed = await uow.sessions.get("m" * 64)
    assert renewed is not None
    assert (renewed.method, renewed.proved_with) == ("passkey", SignInMethod.PASSWORD)
