"""Alembic migrations on Postgres and SQLite: up, down to empty, up again; models agree."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import DateTime, inspect, text

from adapters.sql import SqlDatabase, migrate
from adapters.sql.tables import UtcDateTime, metadata
from adapters.tokens import SecretsTokenIssuer
from domain import errors
from domain.model import Account, AccountId, DiscordId, normalize_email
from entrypoints.container import build_container, close_resources
from entrypoints.web import create_app
from tests.contracts.repositories import account, link
from tests.harness import TEST_SECRET_KEY, cheap_argon2, make_settings
from tests.servers import serve

# The accounts' columns an insert needs at every revision since 0002, with their types (for the
# tests that fill a database at an older revision).
OLD_ACCOUNTS = sa.table(
    "accounts",
    sa.column("id", sa.Uuid()),
    sa.column("username", sa.String()),
    sa.column("email", sa.String()),
    sa.column("email_normalized", sa.String()),
    sa.column("email_verified", sa.Boolean()),
    sa.column("created_at", UtcDateTime()),
)

# The audit trail's columns the tests that fill an older revision write.
OLD_AUDIT = sa.table(
    "audit_events",
    sa.column("id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("at", UtcDateTime()),
    sa.column("account_id", sa.Uuid()),
    sa.column("discord_id", sa.BigInteger()),
    sa.column("detail", sa.JSON()),
)


async def _filled_at(
    database: SqlDatabase, revision: str, *inserts: tuple[sa.TableClause, Any]
) -> None:
    """Migrate ``database`` to ``revision``, then write each table's rows as that revision
    stored them (columns as the tables had them then)."""
    await migrate.upgrade(database, revision)
    async with database.engine.begin() as conn:
        for table, rows in inserts:
            await conn.execute(sa.insert(table), rows)


async def _tables(database: SqlDatabase) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _round_trip(url: str) -> None:
    database = SqlDatabase(url)
    try:
        assert await _tables(database) == set()
        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == migrate.head_revision()
        assert await _tables(database) == {t.name for t in metadata.sorted_tables} | {
            "alembic_version"
        }
        assert await migrate.pending_differences(database) == []

        await migrate.downgrade(database, "base")
        assert await _tables(database) == {"alembic_version"}
        assert await migrate.current_revision(database) is None

        await migrate.upgrade(database)
        owner = account()
        async with database.unit_of_work() as uow:
            await uow.accounts.add(owner)
            await uow.links.add(link(42, owner.id))
            await uow.commit()
        async with database.unit_of_work() as uow:
            found = await uow.links.get_by_discord_id(DiscordId(42))
            assert found is not None
            assert found.account_id == owner.id
    finally:
        await database.dispose()


async def test_postgres_migrations_up_down_up(empty_pg_url: str) -> None:
    await _round_trip(empty_pg_url)


async def test_sqlite_migrations_up_down_up(sqlite_url: str) -> None:
    await _round_trip(sqlite_url)


async def test_the_guides_user_links_table_still_works_on_postgres(pg_db: SqlDatabase) -> None:
    """Code written against the original guide's table keeps working, raw SQL and all."""
    owner = account()
    async with pg_db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.commit()
    async with pg_db.engine.begin() as conn:
        columns = {
            c["name"]: c
            for c in await conn.run_sync(lambda s: inspect(s).get_columns("user_links"))
        }
        assert str(columns["discord_id"]["type"]) == "BIGINT"
        assert str(columns["taskflow_user_id"]["type"]) == "UUID"
        assert columns["taskflow_user_id"]["nullable"] is False
        assert str(columns["linked_at"]["type"]) == "TIMESTAMP"
        linked_at = columns["linked_at"]["type"]
        assert isinstance(linked_at, DateTime)
        assert linked_at.timezone is False
        assert "now()" in str(columns["linked_at"]["default"])
        # The guide's INSERT (no linked_at) and its get_taskflow_user(discord_id) query, from
        # a session in another time zone: linked_at must still hold UTC.
        await conn.execute(text("SET TIME ZONE 'America/New_York'"))
        await conn.execute(
            text("INSERT INTO user_links (discord_id, taskflow_user_id) VALUES (:d, :u)"),
            {"d": 2**63 - 1, "u": owner.id.value},
        )
        row = (
            await conn.execute(
                text("SELECT taskflow_user_id, linked_at FROM user_links WHERE discord_id = :d"),
                {"d": 2**63 - 1},
            )
        ).one()
    assert row.taskflow_user_id == owner.id.value
    async with pg_db.unit_of_work() as uow:
        found = await uow.links.get_by_discord_id(DiscordId(2**63 - 1))
    assert found is not None
    assert found.linked_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - found.linked_at).total_seconds()) < 60


async def test_database_refuses_what_the_domain_refuses(pg_db: SqlDatabase) -> None:
    owner = account()
    async with pg_db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.commit()
    async with pg_db.engine.connect() as conn:
        for bad in (0, -5):
            with pytest.raises(Exception, match="discord_id_positive"):
                await conn.execute(
                    text("INSERT INTO user_links (discord_id, taskflow_user_id) VALUES (:d, :u)"),
                    {"d": bad, "u": owner.id.value},
                )
            await conn.rollback()
        with pytest.raises(Exception, match="foreign key"):
            await conn.execute(
                text("INSERT INTO user_links (discord_id, taskflow_user_id) VALUES (7, :u)"),
                {"u": uuid.uuid4()},
            )


async def test_an_unreachable_database_is_a_storage_error_not_a_crash() -> None:
    from tests.servers import free_port

    database = SqlDatabase(f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/none")
    try:
        assert await database.ping() is False
        with pytest.raises(errors.StorageError):
            async with database.unit_of_work() as uow:
                await uow.links.get_by_discord_id(DiscordId(1))
    finally:
        await database.dispose()


async def _upgrade_keeps_data(url: str) -> None:
    """0002 -> 0003 on a database in use: accounts that shared an address are kept and marked,
    every other address becomes unique, and sessions keep working with a public id."""
    at_0002 = {  # the columns the tables had at revision 0002, with their types
        "accounts": OLD_ACCOUNTS,
        "sessions": sa.table(
            "sessions",
            sa.column("token_hash", sa.String()),
            sa.column("account_id", sa.Uuid()),
            sa.column("created_at", UtcDateTime()),
            sa.column("expires_at", UtcDateTime()),
        ),
    }
    database = SqlDatabase(url)
    try:
        await migrate.upgrade(database, "0002")
        ids = [uuid.uuid4() for _ in range(3)]
        now = datetime(2026, 1, 1, tzinfo=UTC)
        emails = ["Dup@Example.com", "dup@example.com", "solo@example.com"]
        async with database.engine.begin() as conn:
            await conn.execute(
                sa.insert(at_0002["accounts"]),
                [
                    {
                        "id": account_id,
                        "username": f"user{i}",
                        "email": email,
                        "email_normalized": email.lower(),
                        "email_verified": True,
                        "created_at": now,
                    }
                    for i, (account_id, email) in enumerate(zip(ids, emails, strict=True))
                ],
            )
            await conn.execute(
                sa.insert(at_0002["sessions"]),
                {
                    "token_hash": "s" * 64,
                    "account_id": ids[2],
                    "created_at": now,
                    "expires_at": now,
                },
            )

        await migrate.upgrade(database)

        async with database.unit_of_work() as uow:
            dup = await uow.accounts.find_by_email("dup@example.com")
            assert {a.id.value for a in dup} == set(ids[:2])
            assert all(a.email_shared for a in dup)
            solo = await uow.accounts.get(AccountId(ids[2]))
            assert solo is not None
            assert not solo.email_shared
            session = await uow.sessions.get("s" * 64)
            assert session is not None
            assert session.id is not None
            assert session.proved_at is None  # no proof from before the upgrade counts
        newcomer = account("newcomer", "SOLO@example.com")
        with pytest.raises(errors.Conflict):  # a new duplicate is refused now
            await _add(database, newcomer)
    finally:
        await database.dispose()


async def _add(database: SqlDatabase, row: Account) -> None:
    async with database.unit_of_work() as uow:
        await uow.accounts.add(row)
        await uow.commit()


async def test_upgrading_a_postgres_database_in_use_keeps_its_data(empty_pg_url: str) -> None:
    await _upgrade_keeps_data(empty_pg_url)


async def test_upgrading_a_sqlite_database_in_use_keeps_its_data(sqlite_url: str) -> None:
    await _upgrade_keeps_data(sqlite_url)


async def _unlinks_before_0010_are_remembered(url: str, *, postgres: bool = False) -> None:
    """0009 -> 0010: an account that unlinked Discord before the upgrade (as the audit trail
    tells) is not linked by email alone afterwards, as if it had unlinked since. On Postgres,
    the other accounts' rows are not even rewritten (under the ALTER's lock)."""
    audit = OLD_AUDIT
    database = SqlDatabase(url)
    try:
        await migrate.upgrade(database, "0009")
        unlinked, never = uuid.uuid4(), uuid.uuid4()
        first, last = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
        async with database.engine.begin() as conn:
            await conn.execute(
                sa.insert(OLD_ACCOUNTS),
                [
                    {
                        "id": account_id,
                        "username": name,
                        "email": f"{name}@example.com",
                        "email_normalized": f"{name}@example.com",
                        "email_verified": True,
                        "created_at": first,
                    }
                    for account_id, name in ((unlinked, "unlinked"), (never, "never"))
                ],
            )
            await conn.execute(
                sa.insert(audit),
                [
                    {
                        "id": uuid.uuid4(),
                        "kind": kind,
                        "at": at,
                        "account_id": account_id,
                        "discord_id": 7,
                        "detail": {},
                    }
                    for kind, at, account_id in (
                        ("unlinked", first, unlinked),
                        ("linked", first, unlinked),
                        ("unlinked", last, unlinked),
                        ("linked", last, never),
                    )
                ],
            )

        version = text("SELECT xmin::text FROM accounts WHERE id = :id")
        if postgres:
            async with database.engine.connect() as conn:
                before = (await conn.execute(version, {"id": never})).scalar_one()

        await migrate.upgrade(database)

        if postgres:
            async with database.engine.connect() as conn:
                assert (await conn.execute(version, {"id": never})).scalar_one() == before
        async with database.unit_of_work() as uow:
            remembered = await uow.accounts.get(AccountId(unlinked))
            untouched = await uow.accounts.get(AccountId(never))
        assert remembered is not None
        assert remembered.discord_unlinked_at == last
        assert untouched is not None
        assert untouched.discord_unlinked_at is None
    finally:
        await database.dispose()


async def test_unlinks_before_0010_are_remembered_on_postgres(empty_pg_url: str) -> None:
    await _unlinks_before_0010_are_remembered(empty_pg_url, postgres=True)


async def test_unlinks_before_0010_are_remembered_on_sqlite(sqlite_url: str) -> None:
    await _unlinks_before_0010_are_remembered(sqlite_url)


async def _unverified_discord_addresses_before_0013_are_dropped(url: str) -> None:
    """0012 -> 0013: an address Discord did not verify, kept unconfirmed by the account a Discord
    sign-in made, is taken from it (whoever reads that mailbox could reset the password and
    take the account; its owner could not sign up with it: helper-54's review). An address
    confirmed, typed by the person (an email change) or given at a sign-up with a password
    stays."""
    accounts = sa.table(
        "accounts",
        *(sa.column(c.name, c.type) for c in OLD_ACCOUNTS.c),
        sa.column("password_hash", sa.String()),
    )
    audit = OLD_AUDIT
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # name: (confirmed, has a password, audit events)
    rows: dict[str, tuple[bool, bool, list[tuple[str, dict[str, str]]]]] = {
        "bob": (False, False, [("account_created", {"via": "discord"})]),
        "later": (False, True, [("account_created", {"via": "discord"})]),  # set a password
        "purged": (False, False, []),  # the retention purged its trail: no password tells
        "typed": (False, False, [("account_created", {"via": "discord"}), ("email_changed", {})]),
        "trusted": (True, False, [("account_created", {"via": "discord"})]),
        "signup": (False, True, [("account_created", {"via": "password"})]),
        "old": (False, True, []),
    }
    ids = {name: uuid.uuid4() for name in rows}
    stored_accounts = [
        {
            "id": ids[name],
            "username": name,
            "email": f"{name}@Example.com",
            "email_normalized": f"{name}@example.com",
            "email_verified": confirmed,
            "password_hash": "argon2-hash" if password else None,
            "created_at": now,
        }
        for name, (confirmed, password, _) in rows.items()
    ]
    stored_events = [
        {
            "id": uuid.uuid4(),
            "kind": kind,
            "at": now,
            "account_id": ids[name],
            "discord_id": None,
            "detail": detail,
        }
        for name, (_, _, events) in rows.items()
        for kind, detail in events
    ]
    database = SqlDatabase(url)
    try:
        await _filled_at(database, "0012", (accounts, stored_accounts), (audit, stored_events))

        await migrate.upgrade(database)

        async with database.unit_of_work() as uow:
            after = {name: await uow.accounts.get(AccountId(i)) for name, i in ids.items()}
            taken = {name for name, found in after.items() if found and found.email is None}
            assert taken == {"bob", "later", "purged"}
            # The address is free again: its owner signs up with it.
            await uow.accounts.add(account("bobowner", "bob@example.com"))
            await uow.commit()
    finally:
        await database.dispose()


async def test_unverified_discord_addresses_before_0013_are_dropped_on_postgres(
    empty_pg_url: str,
) -> None:
    await _unverified_discord_addresses_before_0013_are_dropped(empty_pg_url)


async def test_unverified_discord_addresses_before_0013_are_dropped_on_sqlite(
    sqlite_url: str,
) -> None:
    await _unverified_discord_addresses_before_0013_are_dropped(sqlite_url)


async def test_a_value_postgres_refuses_is_a_fault_not_an_outage(pg_db: SqlDatabase) -> None:
    """What the web's guards keep out, if it ever got through: a NUL in a name."""
    with pytest.raises(errors.StorageFault):
        await _add(pg_db, account("nul\x00name", "nul@example.com"))


async def test_concurrent_upgrades_of_a_fresh_postgres_database_all_succeed(
    empty_pg_url: str, tmp_path: Path
) -> None:
    """Several containers starting at once, each running `taskflow-link db upgrade` (separate
    processes, each with its engine): the advisory lock lets one migrate while the others
    wait, then find the database at head and do nothing. Without it, they would all create
    the same tables at once and all but one fail."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": empty_pg_url,
    }
    if "PYTHONPATH" in os.environ:  # where Python finds the code under test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]

    async def upgrade() -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from entrypoints.cli import main; main()",
            "db",
            "upgrade",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 120)  # a deadline only
        return process.returncode, output.decode()

    head = migrate.head_revision()
    results = await asyncio.gather(*(upgrade() for _ in range(4)))
    # One migrated, as its revision read under the lock says; the others found it done.
    assert sorted(results) == [
        (0, f"Nothing to do: the database was at {head} already.\nDatabase at revision {head}.\n")
    ] * 3 + [
        (0, f"Upgraded the database from base (empty) to {head}.\nDatabase at revision {head}.\n")
    ]
    database = SqlDatabase(empty_pg_url)
    try:
        assert await migrate.current_revision(database) == head
        assert await migrate.pending_differences(database) == []
        async with database.engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert [v.version_num for v in versions] == [head]
    finally:
        await database.dispose()


async def test_readiness_knows_the_newest_revision_without_alembic(empty_pg_url: str) -> None:
    """``/readyz`` reads the newest revision from the migration files (Alembic stays out of
    the serving process); it must be Alembic's own head, and tell a database that lags."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from adapters.sql import revisions

    assert revisions.head_revision() == migrate.head_revision()
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert revisions.known_revisions() == {s.revision for s in scripts.walk_revisions()}
    database = SqlDatabase(empty_pg_url)
    try:
        assert not await revisions.is_current(database)  # no schema at all
        assert await revisions.found_revisions(database) is None
        await migrate.upgrade(database)
        assert await revisions.is_current(database)
        assert await revisions.found_revisions(database) == [migrate.head_revision()]
        await migrate.downgrade(database, "-1")
        assert not await revisions.is_current(database)
        assert await revisions.found_revisions(database) == [
            await migrate.current_revision(database)
        ]
        await migrate.downgrade(database, "base")
        assert await revisions.found_revisions(database) == []
    finally:
        await database.dispose()


async def test_readiness_says_why_it_cannot_read_the_schema_revision(empty_pg_url: str) -> None:
    """A database user that may connect but not read ``alembic_version`` (a grant forgotten
    for the service's role): the schema check took the refusal for "no schema at all" and
    told the operator to run `db upgrade`, which has nothing to do; a check that raised said
    a bare "failed". It names the refusal, never the URL or a password."""
    from entrypoints.health import Readiness

    admin = SqlDatabase(empty_pg_url)
    role, password = f"reader_{uuid.uuid4().hex[:8]}", "not-this-one-" + uuid.uuid4().hex
    try:
        await migrate.upgrade(admin)
        async with admin.engine.begin() as conn:
            await conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        url = sa.make_url(empty_pg_url).set(username=role, password=password)
        container = build_container(
            make_settings(storage="sql", database_url=url.render_as_string(hide_password=False))
        )
        readiness = Readiness(
            container.readiness_checks(), timeout=30, needs={"schema": "database"}
        )
        try:
            ready, checks = await readiness.report()
        finally:
            await readiness.close()
            await close_resources(container)
        assert not ready
        assert checks["database"] == "ok"
        assert checks["schema"] == "failed: InsufficientPrivilegeError (SQLSTATE 42501)"
    finally:
        async with admin.engine.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        await admin.dispose()


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_a_database_not_upgraded_is_a_503_saying_to_upgrade_never_a_500(
    engine: str, empty_pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`serve` started before `db upgrade` (or beside an upgrade still running): Postgres'
    "relation does not exist" was a storage fault, a 500 and a traceback per request, and
    SQLite's "no such table" read as "database unreachable". Both are the operator's step to
    take: a 503 for the person, and a log line naming it."""
    url = empty_pg_url if engine == "postgres" else f"sqlite+aiosqlite:///{tmp_path}/new.db"
    container = build_container(
        make_settings(
            storage="sql",
            database_url=url,
            discord_client_id="1200000000000000042",
            discord_client_secret="unused-here",
        )
    )
    key = {"Authorization": "Bearer tfl_" + "A" * 43}
    try:
        with serve(create_app(container)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert "db upgrade" in ready.json()["checks"]["schema"]
                lookup = await client.get("/api/v1/links/123", headers=key)
                assert lookup.status_code == 503, lookup.text
                assert lookup.json()["error"]["code"] == "storage_unavailable"
                assert lookup.headers["retry-after"] == "5"  # "Try again shortly"
                start = await client.get("/auth/discord/login")  # writes a pending login
                assert start.status_code == 503, start.text
    finally:
        await close_resources(container)
    said = [r.getMessage() for r in caplog.records]
    assert any("run `taskflow-link db upgrade`" in line for line in said), said
    missing = "does not exist" if engine == "postgres" else "no such table"
    assert any(missing in line and "[SQL" not in line for line in said), said
    assert not any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)
    assert not any("storage fault" in line or "unreachable" in line for line in said), said


async def _at_0015_with_addresses(
    url: str, addresses: dict[str, str], *, unconfirmed: set[str]
) -> tuple[SqlDatabase, dict[str, uuid.UUID]]:
    """A database at revision 0015 with one account per name holding its address as 0015 stored
    it (the caller disposes of the database)."""
    accounts = sa.table(
        "accounts", *(sa.column(c.name, c.type) for c in OLD_ACCOUNTS.c), sa.column("email_shared")
    )
    ids = {name: uuid.uuid4() for name in addresses}
    stored = [
        {
            "id": ids[name],
            "username": name,
            "email": address,
            "email_normalized": address.lower(),
            "email_verified": name not in unconfirmed,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            "email_shared": False,
        }
        for name, address in addresses.items()
    ]
    database = SqlDatabase(url)
    await _filled_at(database, "0015", (accounts, stored))
    return database, ids


async def _addresses_before_0016_take_the_form_mail_reads(url: str) -> None:
    """0015 -> 0016: an address whose domain is written beyond ASCII is rewritten in the form its
    mail goes to. One that now matches another account's address stays with the one account
    that confirmed it, the others losing it (helper-91's review: marking them all shared took
    the owner's Discord email matching away for good); with no such account (both confirmed
    here) all are marked shared (no Discord sign-in matches it, the unique index leaves it
    out). The others stay unique."""
    addresses = {
        "owner": "bob@example.com",
        # In fullwidth letters: its mail went to bob@example.com.
        "fullwidth": "bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        "umlaut": "Eve@Bücher.de",
        "local": "\uff42ob@example.com",  # beyond ASCII before the "@": as it was
        "ann": "ann@example.com",
        "squatter": "ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # never confirmed
    }
    database, ids = await _at_0015_with_addresses(url, addresses, unconfirmed={"squatter"})
    try:
        await migrate.upgrade(database)

        async with database.unit_of_work() as uow:
            after = {name: await uow.accounts.get(AccountId(i)) for name, i in ids.items()}
            found = {n: (a.email, a.email_shared) for n, a in after.items() if a is not None}
            assert found == {
                "owner": ("bob@example.com", True),
                "fullwidth": ("bob@example.com", True),
                "umlaut": ("eve@xn--bcher-kva.de", False),
                "local": ("\uff42ob@example.com", False),
                "ann": ("ann@example.com", False),
                "squatter": (None, False),
            }
            matches = await uow.accounts.find_by_email("EVE@bücher.de")
            assert [a.id.value for a in matches] == [ids["umlaut"]]
        with pytest.raises(errors.Conflict):  # still one account per address
            await _add(database, account("eve2", "eve@xn--bcher-kva.de"))
    finally:
        await database.dispose()


async def test_addresses_before_0016_take_the_form_mail_reads_on_postgres(
    empty_pg_url: str,
) -> None:
    await _addresses_before_0016_take_the_form_mail_reads(empty_pg_url)


async def test_addresses_before_0016_take_the_form_mail_reads_on_sqlite(sqlite_url: str) -> None:
    await _addresses_before_0016_take_the_form_mail_reads(sqlite_url)


async def _addresses_0016_cannot_store_are_removed(url: str) -> None:
    """0015 -> 0016 with addresses 0015 took whose mapped form is no address: longer than the
    column once each label is an A-label (Postgres refused the rewrite, so the upgrade failed
    and nothing could be deployed, for one sign-up anybody could make), or holding what the
    mapping turns into an "@" or a character no address holds, or (an attacker's review) with
    an empty label or an invisible character the A-label hides, as ``validate_email`` refuses
    them. They are removed, as 0013 removed addresses nobody proved; the others are rewritten
    as before."""
    label = "".join(chr(0x4E00 + 37 * i) for i in range(60))  # 60 CJK letters
    addresses = {
        "long": f"me@{label}.{label}.{label}.cn",  # 188 characters, about 500 as A-labels
        "at": "me@evil.example\uff20gmail.com",  # a fullwidth "@": "me@evil.example@gmail.com"
        "comma": "me@evil.example\uff0cbob\uff20victim.example",  # ","
        # The DNS root's dot: mail to it went to eve@xn--bcher-kva.de, "umlaut"'s mailbox.
        "root": "eve@bücher.de.",
        "hidden": "me@exa\u200bmpl\u00e9.com",  # a zero-width space the A-label hides
        "umlaut": "Eve@Bücher.de",
    }
    assert all(len(address) <= 254 for address in addresses.values())
    database, ids = await _at_0015_with_addresses(url, addresses, unconfirmed={"long"})
    try:
        await migrate.upgrade(database)

        assert await migrate.current_revision(database) == migrate.head_revision()
        async with database.unit_of_work() as uow:
            after = {name: await uow.accounts.get(AccountId(i)) for name, i in ids.items()}
        found = {n: (a.email, a.email_verified) for n, a in after.items() if a is not None}
        assert found == {
            "long": (None, False),
            "at": (None, False),
            "comma": (None, False),
            "root": (None, False),
            "hidden": (None, False),
            "umlaut": ("eve@xn--bcher-kva.de", True),
        }
        async with database.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT email_normalized FROM accounts"))).all()
        assert sorted(row[0] or "" for row in stored) == [""] * 5 + ["eve@xn--bcher-kva.de"]
    finally:
        await database.dispose()


async def test_addresses_0016_cannot_store_are_removed_on_postgres(empty_pg_url: str) -> None:
    await _addresses_0016_cannot_store_are_removed(empty_pg_url)


async def test_addresses_0016_cannot_store_are_removed_on_sqlite(sqlite_url: str) -> None:
    await _addresses_0016_cannot_store_are_removed(sqlite_url)


# An account's address columns as a revision stored them: (email, email_normalized, confirmed,
# shared).
StoredAddress = tuple[str, str | None, bool, bool]


async def _at_0017_with_addresses(
    url: str, addresses: dict[str, StoredAddress]
) -> tuple[SqlDatabase, dict[str, uuid.UUID]]:
    """A database at revision 0017 (0016 ran) with one account per name holding its address
    as written (the caller disposes of the database)."""
    accounts = sa.table(
        "accounts",
        *(sa.column(c.name, c.type) for c in OLD_ACCOUNTS.c),
        sa.column("email_shared", sa.Boolean()),
    )
    ids = {name: uuid.uuid4() for name in addresses}
    stored = [
        {
            "id": ids[name],
            "username": name,
            "email": email,
            "email_normalized": normalized,
            "email_verified": confirmed,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            "email_shared": shared,
        }
        for name, (email, normalized, confirmed, shared) in addresses.items()
    ]
    database = SqlDatabase(url)
    await _filled_at(database, "0017_emails_by_recipient", (accounts, stored))
    return database, ids


async def _stored_accounts(
    database: SqlDatabase, ids: dict[str, uuid.UUID], *, postgres: bool
) -> dict[str, tuple[Any, ...]]:
    """Each account's address columns (and on Postgres its row version, which any write of
    the row moves on)."""
    query = text(
        "SELECT id, email, email_normalized, email_verified, email_shared, xmin::text AS version"
        " FROM accounts"
        if postgres
        else "SELECT id, email, email_normalized, email_verified, email_shared, NULL AS version"
        " FROM accounts"
    )
    async with database.engine.connect() as conn:
        rows = {row.id: row for row in await conn.execute(query)}
    names = {account_id: name for name, account_id in ids.items()}
    return {
        names[uuid.UUID(str(account_id))]: (
            row.email,
            row.email_normalized,
            bool(row.email_verified),
            bool(row.email_shared),
            row.version,
        )
        for account_id, row in rows.items()
    }


async def _run_0018_again(database: SqlDatabase) -> None:
    """Its downgrade does nothing, so going down to 0017 and up again runs it again."""
    await migrate.downgrade(database, "0017_emails_by_recipient")
    assert await migrate.current_revision(database) == "0017_emails_by_recipient"
    await migrate.upgrade(database)


async def _addresses_stored_beside_0016_are_repaired_by_0018(url: str, *, postgres: bool) -> None:
    """0017 -> 0018: during a rolling upgrade, an instance of a version before 0016 kept
    storing addresses as typed after 0016 ran (this version found such an account by neither
    form, another could take the new one, and every later change to the first was a
    conflict). 0018 rewrites them with 0016's rules: the one account that confirmed an
    address keeps it; with several confirmed, all share it; one that is no address is
    removed. The rows that need nothing are not written (their row version stays on
    Postgres), and a second run changes nothing."""
    fullwidth = "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"  # example.com
    addresses: dict[str, StoredAddress] = {
        "owner": ("bob@example.com", "bob@example.com", True, False),
        # As the older version stored them: as typed, matched in lower case.
        "copy": (f"Bob@{fullwidth}", f"bob@{fullwidth}", False, False),
        "window": ("Eve@B\u00fccher.de", "eve@b\u00fccher.de", True, False),
        "ann": ("ann@example.com", "ann@example.com", True, False),
        "ann2": (f"ann@{fullwidth}", f"ann@{fullwidth}", True, False),
        "root": ("zoe@b\u00fccher.de.", "zoe@b\u00fccher.de.", True, False),
        # As this version stores them (or as it matches them): nothing to repair.
        "idn": ("max@xn--bcher-kva.de", "max@xn--bcher-kva.de", True, False),
        "upper": ("Kim@Example.com", "kim@example.com", True, False),
        "local": ("\uff42ob@example.com", "\uff42ob@example.com", False, False),
        "plain": ("sam@example.com", "sam@example.com", True, False),
        "junk": ("me@xn--99999999999.com", "me@xn--99999999999.com", True, False),
        "shared": ("dup@example.com", "dup@example.com", True, True),
        "shared2": ("dup@example.com", "dup@example.com", False, True),
    }
    untouched = {"owner", "idn", "upper", "local", "plain", "junk", "shared", "shared2"}
    database, ids = await _at_0017_with_addresses(url, addresses)
    try:
        before = await _stored_accounts(database, ids, postgres=postgres)
        await migrate.upgrade(database)

        assert await migrate.current_revision(database) == migrate.head_revision()
        after = await _stored_accounts(database, ids, postgres=postgres)
        assert {name: row[:4] for name, row in after.items() if name not in untouched} == {
            "copy": (None, None, False, False),
            "window": ("eve@xn--bcher-kva.de", "eve@xn--bcher-kva.de", True, False),
            "ann": ("ann@example.com", "ann@example.com", True, True),
            "ann2": ("ann@example.com", "ann@example.com", True, True),
            "root": (None, None, False, False),
        }
        assert {name: after[name] for name in untouched} == {
            name: before[name] for name in untouched
        }
        async with database.unit_of_work() as uow:
            matches = await uow.accounts.find_by_email("EVE@b\u00fccher.de")
            assert [a.id.value for a in matches] == [ids["window"]]
        with pytest.raises(errors.Conflict):  # still one account per address
            await _add(database, account("eve2", "eve@xn--bcher-kva.de"))

        await _run_0018_again(database)
        assert await _stored_accounts(database, ids, postgres=postgres) == after
    finally:
        await database.dispose()


async def test_addresses_stored_beside_0016_are_repaired_by_0018_on_postgres(
    empty_pg_url: str,
) -> None:
    await _addresses_stored_beside_0016_are_repaired_by_0018(empty_pg_url, postgres=True)


async def test_addresses_stored_beside_0016_are_repaired_by_0018_on_sqlite(
    sqlite_url: str,
) -> None:
    await _addresses_stored_beside_0016_are_repaired_by_0018(sqlite_url, postgres=False)


async def _addresses_refused_since_are_removed_by_0018(url: str, *, postgres: bool) -> None:
    """0017 -> 0018: the addresses 0016 as first released rewrote instead of removing (an
    empty label: eve@xn--bcher-kva.de. is eve@xn--bcher-kva.de's mailbox to Postfix; a
    zero-width space its A-label hides), and those in ASCII stored before this version
    refused them (0016 read only addresses beyond ASCII), are removed as 0016 removes them;
    a matching form that is not the address's is written anew. Afterwards every row's
    matching form is the one the adapter writes."""
    hidden = "xn--" + "exa\u200bmpl\u00e9".encode("punycode").decode("ascii")
    refused = {
        "root": "eve@xn--bcher-kva.de.",
        "hidden": f"me@{hidden}.com",
        "dot": "bob@example.com.",
        "dots": "bob@example..com",
        "leading": "bob@.example.com",
        "encoded": "=?us-ascii?q?bob?=@example.com",
        "two_at": "me@evil.example@gmail.com",
        "comma": "me@evil.example,bob@victim.example",
        "quoted": '"bob"@example.com',
        "backslash": "bo\\b@example.com",
        "blank": "bob smith@example.com",
        "no_at": "bob.example.com",
        "at_start": "@example.com",
        "at_end": "bob@",
        "tab": "bob@exam\tple.com",
    }
    if not postgres:  # SQLite stores what is longer than the column (0016 first wrote such)
        refused["long"] = "me@" + "a" * 250 + ".com"
    addresses: dict[str, StoredAddress] = {
        name: (address, address, True, False) for name, address in refused.items()
    }
    addresses |= {
        "umlaut": ("eve@xn--bcher-kva.de", "eve@xn--bcher-kva.de", True, False),
        "unmatched": ("Sue@Example.com", None, True, False),
        "blanks": (" pat@example.com ", " pat@example.com ", False, False),
        "stale": ("lee@example.com", "someone@example.com", True, False),
    }
    database, ids = await _at_0017_with_addresses(url, addresses)
    try:
        await migrate.upgrade(database)

        after = await _stored_accounts(database, ids, postgres=postgres)
        assert {name: row[:4] for name, row in after.items()} == {
            **dict.fromkeys(refused, (None, None, False, False)),
            "umlaut": ("eve@xn--bcher-kva.de", "eve@xn--bcher-kva.de", True, False),
            "unmatched": ("sue@example.com", "sue@example.com", True, False),
            "blanks": ("pat@example.com", "pat@example.com", False, False),
            "stale": ("lee@example.com", "lee@example.com", True, False),
        }
        assert all(row[1] == normalize_email(row[0]) for row in after.values())

        await _run_0018_again(database)
        assert await _stored_accounts(database, ids, postgres=postgres) == after
    finally:
        await database.dispose()


async def test_addresses_refused_since_are_removed_by_0018_on_postgres(empty_pg_url: str) -> None:
    await _addresses_refused_since_are_removed_by_0018(empty_pg_url, postgres=True)


async def test_addresses_refused_since_are_removed_by_0018_on_sqlite(sqlite_url: str) -> None:
    await _addresses_refused_since_are_removed_by_0018(sqlite_url, postgres=False)


async def test_an_instance_of_the_older_version_stays_ready_once_the_release_step_migrated(
    tmp_path: Path,
) -> None:
    """A rolling upgrade: the release step (`db upgrade` of the new version) migrates the
    database while the older version's instances still serve, as the migrations allow (each
    says what an older version beside it does). Those instances answered 503 from `/readyz`
    ("not the newest revision") from then on, so an orchestrator took every one of them out
    of service before any new one was up. A revision this version does not know (a newer
    release's) is ready, as the CLI's commands only warn about it; an older one is not."""
    url = f"sqlite+aiosqlite:///{tmp_path}/rolling.db"
    database = SqlDatabase(url)
    try:
        await migrate.upgrade(database)
    finally:
        await database.dispose()
    container = build_container(
        make_settings(
            storage="sql",
            database_url=url,
            discord_client_id="1200000000000000042",
            discord_client_secret="unused-here",
        )
    )

    async def set_revision(revision: str) -> None:
        async with container.sql_db().engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})

    try:
        with serve(create_app(container)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                assert (await client.get("/readyz")).status_code == 200
                await set_revision("0099_a_newer_release")
                newer = await client.get("/readyz")
                assert newer.status_code == 200, newer.text
                assert newer.json()["checks"]["schema"] == "ok"
                await set_revision("0014_link_tickets_by_discord_id")
                older = await client.get("/readyz")
                assert older.status_code == 503
                assert "db upgrade" in older.json()["checks"]["schema"]
    finally:
        await close_resources(container)


async def test_another_programs_migrations_are_not_ready(tmp_path: Path) -> None:
    """A revision this version does not know is a newer release's only in a database with
    taskflow-link's tables: another Alembic application's database is not ready."""
    from adapters.sql import revisions

    database = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path}/theirs.db")
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('ae1027a6acf')"))
            await conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
        assert not await revisions.is_current(database)
        # One that followed the original guide: its `accounts` and the guide's `user_links`.
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE accounts (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("CREATE TABLE user_links (discord_id BIGINT PRIMARY KEY)"))
        assert not await revisions.is_current(database)
    finally:
        await database.dispose()


async def _expired_keys_stay_dead_below_0008(url: str) -> None:
    """0008 -> 0007: versions before scoped keys know no expiry, so a key that had expired
    worked again there (with both scopes). The downgrade revokes it at its expiry; a key
    that has not expired yet is left as it is."""
    keys = sa.table(
        "api_keys",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("key_hash", sa.String()),
        sa.column("created_at", UtcDateTime()),
        sa.column("revoked_at", UtcDateTime()),
        sa.column("expires_at", UtcDateTime()),
    )
    now = datetime.now(UTC).replace(microsecond=0)
    expired_at = datetime(2026, 1, 2, tzinfo=UTC)
    rows = {
        "expired": expired_at,
        "live": now.replace(year=now.year + 1),
        "forever": None,
    }
    database = SqlDatabase(url)
    try:
        stored = [
            {
                "id": uuid.uuid4(),
                "name": name,
                "key_hash": name * 8,
                "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                "revoked_at": None,
                "expires_at": expires,
            }
            for name, expires in rows.items()
        ]
        await _filled_at(database, "0008_scoped_api_keys", (keys, stored))
        await migrate.downgrade(database, "0007_role_connections")
        async with database.engine.connect() as conn:
            found = {
                row.name: row.revoked_at
                for row in await conn.execute(sa.select(keys.c.name, keys.c.revoked_at))
            }
        assert found == {"expired": expired_at, "live": None, "forever": None}
    finally:
        await database.dispose()


async def test_expired_keys_stay_dead_below_0008_on_postgres(empty_pg_url: str) -> None:
    await _expired_keys_stay_dead_below_0008(empty_pg_url)


async def test_expired_keys_stay_dead_below_0008_on_sqlite(sqlite_url: str) -> None:
    await _expired_keys_stay_dead_below_0008(sqlite_url)


async def _audited_details(
    database: SqlDatabase, ids: dict[str, uuid.UUID], *, postgres: bool
) -> dict[str, tuple[Any, ...]]:
    """Each named audit event's detail (and on Postgres its row version, which any write of
    the row moves on)."""
    version: sa.ColumnElement[Any] = sa.literal_column("xmin::text" if postgres else "NULL")
    audit = sa.table("audit_events", sa.column("id", sa.Uuid()), sa.column("detail", sa.JSON()))
    async with database.engine.connect() as conn:
        rows = await conn.execute(sa.select(audit.c.id, audit.c.detail, version.label("v")))
        found = {row.id: (row.detail, row.v) for row in rows}
    return {name: found[event_id] for name, event_id in ids.items()}


async def _plain_login_digests_are_removed_by_0020(url: str, *, postgres: bool) -> None:
    """0019 -> 0020: a failed sign-in audited before the login was keyed named it by its
    plain SHA-256, which a copy of the database gives back to a dictionary (and a login field
    sometimes holds a password typed into the wrong box). 0020 removes that ``login`` from
    those events, keeping the rest of them; the HMAC this version records is left as it is,
    and so is every other event (not even written on Postgres). A second run (after older
    instances wrote more during a rolling upgrade) changes nothing more."""
    tokens = SecretsTokenIssuer(TEST_SECRET_KEY)
    plain = {typed: hashlib.sha256(typed.encode()).hexdigest() for typed in ("alice", "hunter2")}
    keyed = tokens.derive("bob", "sign-in-login")
    at, owner = datetime(2026, 6, 1, tzinfo=UTC), uuid.uuid4()
    events: dict[str, tuple[str, uuid.UUID | None, dict[str, str]]] = {
        "unknown": ("sign_in_failed", None, {"login": plain["alice"], "client": "203.0.113.7"}),
        "known": ("sign_in_failed", owner, {"login": plain["hunter2"], "client": "unknown"}),
        "bare": ("sign_in_failed", None, {"login": plain["alice"]}),
        "keyed": ("sign_in_failed", owner, {"login": keyed, "client": "203.0.113.8"}),
        "no_login": ("sign_in_failed", None, {"client": "203.0.113.9"}),
        "other": ("linked", owner, {"via": "ticket"}),
    }
    ids = {name: uuid.uuid4() for name in events}
    rows = [
        {
            "id": ids[name],
            "kind": kind,
            "at": at,
            "account_id": account_id,
            "discord_id": None,
            "detail": detail,
        }
        for name, (kind, account_id, detail) in events.items()
    ]
    untouched = {"keyed", "no_login", "other"}
    database = SqlDatabase(url)
    try:
        await _filled_at(database, "0019_instance_webhooks", (OLD_AUDIT, rows))
        before = await _audited_details(database, ids, postgres=postgres)
        await migrate.upgrade(database)

        assert await migrate.current_revision(database) == migrate.head_revision()
        after = await _audited_details(database, ids, postgres=postgres)
        assert {name: after[name][0] for name in events} == {
            "unknown": {"client": "203.0.113.7"},
            "known": {"client": "unknown"},
            "bare": {},
            "keyed": {"login": keyed, "client": "203.0.113.8"},
            "no_login": {"client": "203.0.113.9"},
            "other": {"via": "ticket"},
        }
        assert {name: after[name] for name in untouched} == {
            name: before[name] for name in untouched
        }
        for digest in plain.values():
            assert digest not in repr(after)
        async with database.unit_of_work() as uow:  # the repository reads them as before
            found = {e.id: e.detail for e in await uow.audit.for_account(AccountId(owner))}
        assert found[ids["known"]] == {"client": "unknown"}

        # A failed sign-in as this version records it, then 0020 again: it keeps its login.
        container = build_container(make_settings(storage="sql", database_url=url))
        container.password_hasher.override(cheap_argon2())
        try:
            with pytest.raises(errors.InvalidCredentials):
                await container.sign_in().execute(login="Carol", password="wrong password")
        finally:
            await close_resources(container)
        await migrate.downgrade(database, "0019_instance_webhooks")
        await migrate.upgrade(database)
        async with database.unit_of_work() as uow:
            [failed] = [e for e in await uow.audit.search() if e.id not in ids.values()]
        carol = tokens.derive("carol", "sign-in-login")
        assert failed.detail == {"login": carol, "client": "unknown"}
        assert await _audited_details(database, ids, postgres=postgres) == after
    finally:
        await database.dispose()


async def test_plain_login_digests_are_removed_by_0020_on_postgres(empty_pg_url: str) -> None:
    await _plain_login_digests_are_removed_by_0020(empty_pg_url, postgres=True)


async def test_plain_login_digests_are_removed_by_0020_on_sqlite(sqlite_url: str) -> None:
    await _plain_login_digests_are_removed_by_0020(sqlite_url, postgres=False)


# The confirmation links' columns as revision 0022 had them.
OLD_EMAIL_TOKENS = sa.table(
    "email_tokens",
    sa.column("token_hash", sa.String()),
    sa.column("purpose", sa.String()),
    sa.column("account_id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("created_at", UtcDateTime()),
    sa.column("expires_at", UtcDateTime()),
    sa.column("consumed_at", UtcDateTime()),
)


async def _declines_before_0023_are_kept(url: str) -> None:
    """0022 -> 0023: a decline made before the upgrade ("This is not my account") still keeps
    its account from claiming the address, when its link is still stored (the link was spent
    at the very moment the decline was audited, and names the address); a link spent at
    another moment (used, or left by an email change) declines nothing. The downgrade drops
    the declines, and upgrading again finds them anew."""
    database = SqlDatabase(url)
    mallory, olga = uuid.uuid4(), uuid.uuid4()
    declined_at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    used_at = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)

    def token(mark: str, account: uuid.UUID, email: str, spent: datetime) -> dict[str, Any]:
        return {
            "token_hash": mark * 64,
            "purpose": "verify",
            "account_id": account,
            "email": email,
            "created_at": declined_at,
            "expires_at": declined_at,
            "consumed_at": spent,
        }

    try:
        await _filled_at(
            database,
            "0022_unconfirmed_claims",
            (
                OLD_ACCOUNTS,
                [
                    {
                        "id": account_id,
                        "username": name,
                        "email": None,
                        "email_normalized": None,
                        "email_verified": False,
                        "created_at": declined_at,
                    }
                    for account_id, name in ((mallory, "mallory"), (olga, "olga"))
                ],
            ),
            (
                OLD_EMAIL_TOKENS,
                [
                    token("a", mallory, "Victim@Example.com", declined_at),
                    token("b", olga, "olga@example.com", used_at),  # used, not declined
                ],
            ),
            (
                OLD_AUDIT,
                [
                    {
                        "id": uuid.uuid4(),
                        "kind": "email_disowned",
                        "at": declined_at,
                        "account_id": mallory,
                        "discord_id": None,
                        "detail": {"proof": "link"},
                    }
                ],
            ),
        )

        async def declined() -> list[tuple[str, str]]:
            async with database.unit_of_work(read_only=True) as uow:
                return [
                    (name, address)
                    for account_id, name in ((mallory, "mallory"), (olga, "olga"))
                    for address in ("victim@example.com", "olga@example.com")
                    if await uow.declined_addresses.declined(AccountId(account_id), address)
                ]

        await migrate.upgrade(database)
        assert await declined() == [("mallory", "victim@example.com")]
        async with database.unit_of_work() as uow:  # and the table takes new ones
            await uow.declined_addresses.add(AccountId(olga), "olga@example.com", used_at)
            await uow.commit()

        await migrate.downgrade(database, "0022_unconfirmed_claims")
        assert "declined_addresses" not in await _tables(database)
        await migrate.upgrade(database)
        assert await declined() == [("mallory", "victim@example.com")]
    finally:
        await database.dispose()


async def test_declines_before_0023_are_kept_on_postgres(empty_pg_url: str) -> None:
    await _declines_before_0023_are_kept(empty_pg_url)


async def test_declines_before_0023_are_kept_on_sqlite(sqlite_url: str) -> None:
    await _declines_before_0023_are_kept(sqlite_url)


PURGE_INDEXES = {
    "ix_outgoing_emails_finished": "outgoing_emails",
    "ix_webhook_deliveries_finished": "webhook_deliveries",
    "ix_discord_role_changes_finished": "discord_role_changes",
}


async def _purge_indexes(database: SqlDatabase) -> dict[str, str]:
    """The purge's indexes there are, each with its definition as the database keeps it."""
    if database.dialect == "postgresql":
        query = text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_%'")
    else:
        query = text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    async with database.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {name: definition for name, definition in rows if name in PURGE_INDEXES}


async def _purge_indexes_up_and_down(url: str) -> None:
    """0024 -> 0025: the purge's batches of finished emails, webhook deliveries and role
    changes (``finished_at IS NOT NULL AND finished_at < …``) read the whole table at every
    batch without an index on ``finished_at``; 0025 adds one to each, on the finished rows
    only, and its downgrade drops them (and nothing else: the rows stay)."""
    database = SqlDatabase(url)
    try:
        await migrate.upgrade(database, "0024_pending_login_failed")
        assert await _purge_indexes(database) == {}
        owner = account()
        async with database.unit_of_work() as uow:
            await uow.accounts.add(owner)
            await uow.commit()

        await migrate.upgrade(database, "0025_purge_indexes")
        made = await _purge_indexes(database)
        assert set(made) == set(PURGE_INDEXES)
        for name, definition in made.items():
            assert f" ON {PURGE_INDEXES[name]} " in definition.replace('"', " ").replace(
                "public.", ""
            ), definition
            assert "finished_at IS NOT NULL" in definition.replace("(", "").replace(")", "")

        await migrate.downgrade(database, "0024_pending_login_failed")
        assert await _purge_indexes(database) == {}
        async with database.unit_of_work() as uow:
            assert await uow.accounts.get(owner.id) is not None
        await migrate.upgrade(database)
        assert set(await _purge_indexes(database)) == set(PURGE_INDEXES)
        # The models' indexes are the migrations' (compared at the head: later revisions
        # add to the models too).
        assert await migrate.pending_differences(database) == []
    finally:
        await database.dispose()


async def test_the_purges_indexes_come_with_0025_and_go_with_its_downgrade_on_postgres(
    empty_pg_url: str,
) -> None:
    await _purge_indexes_up_and_down(empty_pg_url)


async def test_the_purges_indexes_come_with_0025_and_go_with_its_downgrade_on_sqlite(
    sqlite_url: str,
) -> None:
    await _purge_indexes_up_and_down(sqlite_url)


async def _retention_column(database: SqlDatabase) -> bool:
    async with database.engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: inspect(sync).get_columns("web_instances"))
    return "audit_retention_days" in {c["name"] for c in columns}


async def _instance_purge_terms_up_and_down(url: str) -> None:
    """0025 -> 0026: each announced instance also says its audit retention (NULL for a row an
    older version wrote, which is kept and compared with nothing); the downgrade drops the
    column, and the rows stay."""
    database = SqlDatabase(url)
    row = {
        "id": str(uuid.uuid4()),
        "host": "older",
        "pid": 7,
        "kind": "web",
        "shared_state": "memory",
        "started_at": datetime.now(UTC),
        "seen_at": datetime.now(UTC),
        "webhooks": None,
    }
    older = sa.table(
        "web_instances",
        *(sa.column(name) for name in row if not name.endswith("_at")),
        sa.column("started_at", UtcDateTime()),
        sa.column("seen_at", UtcDateTime()),
    )
    try:
        await _filled_at(database, "0025_purge_indexes", (older, [row]))
        assert not await _retention_column(database)

        await migrate.upgrade(database, "0026_instance_purge_terms")
        assert await _retention_column(database)
        async with database.engine.connect() as conn:
            kept = await conn.execute(text("SELECT id, audit_retention_days FROM web_instances"))
            assert kept.all() == [(row["id"], None)]

        await migrate.downgrade(database, "0025_purge_indexes")
        assert not await _retention_column(database)
        async with database.engine.connect() as conn:
            ids = (await conn.execute(text("SELECT id FROM web_instances"))).scalars().all()
        assert ids == [row["id"]]
        await migrate.upgrade(database)
        assert await _retention_column(database)
        # The models are the migrations' (compared at the head: later revisions add to the
        # models too).
        assert await migrate.pending_differences(database) == []
    finally:
        await database.dispose()


async def test_instances_say_their_audit_retention_from_0026_on_postgres(
    empty_pg_url: str,
) -> None:
    await _instance_purge_terms_up_and_down(empty_pg_url)


async def test_instances_say_their_audit_retention_from_0026_on_sqlite(sqlite_url: str) -> None:
    await _instance_purge_terms_up_and_down(sqlite_url)


def _older_pending_login(now: datetime, **columns: Any) -> tuple[dict[str, Any], sa.TableClause]:
    """A pending login's row as an older revision wrote it (a sign-in's, consumed ``now``,
    with ``columns`` besides), and that revision's table of its columns."""
    row = {
        "state_hash": "s" * 64,
        "purpose": "login",
        "browser_hash": "b" * 64,
        "destination": "/account",
        "created_at": now,
        "expires_at": now + timedelta(minutes=10),
        "consumed_at": now,
        **columns,
    }
    older = sa.table(
        "pending_login",
        *(sa.column(name) for name in row if not name.endswith("_at")),
        *(sa.column(name, UtcDateTime()) for name in row if name.endswith("_at")),
    )
    return row, older


async def _older_version_writes(
    database: SqlDatabase, older: sa.TableClause, row: dict[str, Any]
) -> None:
    """An older version's round trip, started beside this one (its row's columns only)."""
    async with database.engine.begin() as conn:
        await conn.execute(
            sa.insert(older), [row | {"state_hash": "t" * 64, "browser_hash": "c" * 64}]
        )


async def _pending_logins_kept_by_downgrade(database: SqlDatabase, revision: str) -> None:
    """Down to ``revision``, both rows (an older version's and this one's) are kept."""
    await migrate.downgrade(database, revision)
    async with database.engine.connect() as conn:
        hashes = (await conn.execute(text("SELECT state_hash FROM pending_login ORDER BY 1"))).all()
    assert hashes == [("s" * 64,), ("t" * 64,)]


async def _pending_login_failure_up_and_down(url: str) -> None:
    """0026 -> 0027: a failed sign-in's pending login keeps why (``failure``, the refusal's
    code); a row written before reads back with none, and the downgrade keeps the rows."""
    database = SqlDatabase(url)
    now = datetime.now(UTC)
    row, older = _older_pending_login(now, failed_at=now)
    try:
        await _filled_at(database, "0026_instance_purge_terms", (older, [row]))
        await migrate.upgrade(database, "0027_pending_login_failure")
        # Read as 0027's models did (later revisions add columns the models read).
        async with database.engine.connect() as conn:
            kept = (await conn.execute(text("SELECT failed_at, failure FROM pending_login"))).one()
        assert kept[0] is not None
        assert kept[1] is None
        await migrate.downgrade(database, "0026_instance_purge_terms")
        async with database.engine.connect() as conn:
            hashes = (await conn.execute(text("SELECT state_hash FROM pending_login"))).all()
        assert hashes == [("s" * 64,)]
    finally:
        await database.dispose()


async def test_a_failed_sign_in_keeps_why_from_0027_on_postgres(empty_pg_url: str) -> None:
    await _pending_login_failure_up_and_down(empty_pg_url)


async def test_a_failed_sign_in_keeps_why_from_0027_on_sqlite(sqlite_url: str) -> None:
    await _pending_login_failure_up_and_down(sqlite_url)


async def _pending_login_signed_out_up_and_down(url: str) -> None:
    """0027 -> 0028: a pending login keeps when its browser signed out (``signed_out_at``),
    found by its binding value's digest; a row written before reads back with none, an older
    version (which names no such column) still writes its rows beside this one, and the
    downgrade keeps the rows."""
    database = SqlDatabase(url)
    now = datetime.now(UTC)
    row, older = _older_pending_login(now, failed_at=None)
    try:
        await _filled_at(database, "0027_pending_login_failure", (older, [row]))
        await migrate.upgrade(database, "0028_pending_login_signed_out")
        await _older_version_writes(database, older, row)
        # This version's repositories read 0029's column too.
        await migrate.upgrade(database, "0029_pending_login_superseded_by")
        async with database.unit_of_work() as uow:
            assert (kept := await uow.pending_logins.get("s" * 64)) is not None
            assert kept.signed_out_at is None
            assert await uow.pending_logins.mark_signed_out({"b" * 64}, now) == 1
            await uow.commit()
        async with database.unit_of_work() as uow:
            marked = await uow.pending_logins.get("s" * 64)
            other = await uow.pending_logins.get("t" * 64)
        assert marked is not None
        assert marked.signed_out_at is not None
        assert other is not None
        assert other.signed_out_at is None
        await _pending_logins_kept_by_downgrade(database, "0027_pending_login_failure")
    finally:
        await database.dispose()


async def test_a_sign_out_marks_the_sign_ins_under_way_from_0028_on_postgres(
    empty_pg_url: str,
) -> None:
    await _pending_login_signed_out_up_and_down(empty_pg_url)


async def test_a_sign_out_marks_the_sign_ins_under_way_from_0028_on_sqlite(
    sqlite_url: str,
) -> None:
    await _pending_login_signed_out_up_and_down(sqlite_url)


async def _pending_login_superseded_by_up_and_down(url: str) -> None:
    """0028 -> 0029: a pending login keeps whom a later Discord sign-in of its browser signed
    in (``superseded_by``); a row written before reads back with none, an older version
    (which names no such column) still writes its rows beside this one, and the downgrade
    keeps the rows."""
    database = SqlDatabase(url)
    now = datetime.now(UTC)
    row, older = _older_pending_login(now, signed_out_at=None)
    account = AccountId.new()
    try:
        await _filled_at(database, "0028_pending_login_signed_out", (older, [row]))
        await migrate.upgrade(database, "0029_pending_login_superseded_by")
        await _older_version_writes(database, older, row)
        async with database.unit_of_work() as uow:
            assert (kept := await uow.pending_logins.get("s" * 64)) is not None
            assert kept.superseded_by is None
            held = await uow.pending_logins.lock("t" * 64, {"b" * 64})
            assert held is not None
            assert held.state_digest == "t" * 64
            assert await uow.pending_logins.supersede({"b" * 64}, account, but="t" * 64) == 1
            assert await uow.pending_logins.supersede({"b" * 64}, account, but="t" * 64) == 0
            await uow.commit()
        async with database.unit_of_work() as uow:
            marked = await uow.pending_logins.get("s" * 64)
            other = await uow.pending_logins.get("t" * 64)
        assert marked is not None
        assert marked.superseded_by == account
        assert other is not None
        assert other.superseded_by is None
        await _pending_logins_kept_by_downgrade(database, "0028_pending_login_signed_out")
    finally:
        await database.dispose()


async def test_a_discord_sign_in_records_whom_it_signed_in_from_0029_on_postgres(
    empty_pg_url: str,
) -> None:
    await _pending_login_superseded_by_up_and_down(empty_pg_url)


async def test_a_discord_sign_in_records_whom_it_signed_in_from_0029_on_sqlite(
    sqlite_url: str,
) -> None:
    await _pending_login_superseded_by_up_and_down(sqlite_url)


def _schema(sync: Any) -> dict[str, Any]:
    """Every table's columns (type, nullability, default), keys, indexes and constraints, as
    the database describes them."""
    found = inspect(sync)
    schema: dict[str, Any] = {}
    for table in sorted(found.get_table_names()):
        columns = {
            c["name"]: (str(c["type"]), c["nullable"], str(c.get("default")))
            for c in found.get_columns(table)
        }
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]), _options(i))
            for i in found.get_indexes(table)
        )
        uniques = sorted(
            (u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(table)
        )
        checks = sorted((c["name"], c["sqltext"]) for c in found.get_check_constraints(table))
        keys = sorted(
            (f["name"], tuple(f["constrained_columns"]), f["referred_table"], str(f["options"]))
            for f in found.get_foreign_keys(table)
        )
        primary = tuple(found.get_pk_constraint(table)["constrained_columns"])
        schema[table] = (columns, indexes, uniques, checks, keys, primary)
    return schema


def _options(index: Any) -> str:
    """An index's dialect options (a partial index's WHERE), as text."""
    options = index.get("dialect_options") or {}
    return str(sorted((name, str(value)) for name, value in options.items()))


# The last revisions: each one's downgrade must give back the schema its previous revision
# made (the one the previous release's models match: its own test compared them), for a
# rollback of the code after `db downgrade`.
LAST_REVISIONS = [
    "0022_unconfirmed_claims",
    "0023_declined_addresses",
    "0024_pending_login_failed",
    "0025_purge_indexes",
    "0026_instance_purge_terms",
    "0027_pending_login_failure",
    "0028_pending_login_signed_out",
    "0029_pending_login_superseded_by",
]


async def _downgrades_give_back_the_previous_schema(url: str) -> None:
    database = SqlDatabase(url)
    try:
        made: dict[str, dict[str, Any]] = {}
        for revision in LAST_REVISIONS:
            await migrate.upgrade(database, revision)
            async with database.engine.connect() as conn:
                made[revision] = await conn.run_sync(_schema)
        assert made[LAST_REVISIONS[-1]] != made[LAST_REVISIONS[0]]
        await migrate.upgrade(database)
        for revision in reversed(LAST_REVISIONS[:-1]):
            await migrate.downgrade(database, revision)
            async with database.engine.connect() as conn:
                assert await conn.run_sync(_schema) == made[revision], revision
    finally:
        await database.dispose()


async def test_the_last_downgrades_give_back_the_previous_schema_on_postgres(
    empty_pg_url: str,
) -> None:
    await _downgrades_give_back_the_previous_schema(empty_pg_url)


async def test_the_last_downgrades_give_back_the_previous_schema_on_sqlite(
    sqlite_url: str,
) -> None:
    await _downgrades_give_back_the_previous_schema(sqlite_url)
