"""Scoped API keys on Postgres, over real HTTP (the stack: uvicorn, the emulator, a manual
clock the server shares), and the ``api-key`` commands as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import select, text

from adapters.sql import SqlDatabase, migrate
from adapters.sql.tables import UtcDateTime, api_keys, audit_events
from domain.model import ApiScope
from entrypoints.container import Container, build_container
from entrypoints.web import create_app
from tests.harness import TEST_SECRET_KEY, make_settings
from tests.integration.postgres import PostgresServer
from tests.integration.stack import Stack
from tests.servers import serve

BOTH = ["links:read", "links:write"]
LINKED = 1_100_000_000_000_000_001


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _linked_account(stack: Stack, discord_id: int = LINKED) -> None:
    """An account with a password (so unlinking cannot lock it out), linked to Discord."""
    from tests.contracts.repositories import account, link

    owner = account(f"owner{discord_id % 1000}", f"owner{discord_id % 1000}@example.com")
    async with stack.container.uow()() as uow:
        await uow.accounts.add(owner)
        await uow.links.add(link(discord_id, owner.id))
        await uow.commit()


async def _last_used(db: SqlDatabase, name: str) -> datetime | None:
    async with db.engine.connect() as conn:
        found = await conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.name == name))
        value: datetime | None = found.scalar_one()
        return value


async def _eventually_last_used(db: SqlDatabase, name: str, expected: datetime) -> None:
    """The write happens off the request path: wait for it (a deadline, not a measurement)."""
    for _ in range(600):
        if await _last_used(db, name) == expected:
            return
        await asyncio.sleep(0.05)
    assert await _last_used(db, name) == expected


@pytest.fixture
async def writes_to_api_keys(pg_db: SqlDatabase) -> AsyncIterator[SqlDatabase]:
    """Counts the UPDATE statements run on ``api_keys``, whether or not they changed a row
    (a statement trigger, dropped afterwards)."""
    statements = [
        "CREATE TABLE test_api_key_writes (at timestamptz NOT NULL DEFAULT now())",
        "CREATE FUNCTION test_count_api_key_write() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO test_api_key_writes DEFAULT VALUES; RETURN NULL; END $$",
        "CREATE TRIGGER test_count_api_key_writes AFTER UPDATE ON api_keys "
        "FOR EACH STATEMENT EXECUTE FUNCTION test_count_api_key_write()",
    ]
    async with pg_db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    try:
        yield pg_db
    finally:
        async with pg_db.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER test_count_api_key_writes ON api_keys"))
            await conn.execute(text("DROP FUNCTION test_count_api_key_write()"))
            await conn.execute(text("DROP TABLE test_api_key_writes"))


async def _writes(db: SqlDatabase) -> int:
    async with db.engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM test_api_key_writes"))
        return int(found.scalar_one())


async def test_a_read_only_key_is_refused_on_delete_naming_links_write(stack: Stack) -> None:
    await _linked_account(stack)
    reader = await stack.container.create_api_key().execute("reader")
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        refused = await client.delete(f"/api/v1/links/{LINKED}", headers=_bearer(reader.token))
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/json"
        error = refused.json()["error"]
        assert error["code"] == "missing_scope"
        assert "links:write" in error["message"]
        still = await client.get(f"/api/v1/links/{LINKED}", headers=_bearer(reader.token))
        assert still.status_code == 200  # nothing was unlinked


async def test_a_write_key_unlinks_and_the_audit_names_it(stack: Stack) -> None:
    await _linked_account(stack)
    writer = await stack.container.create_api_key().execute("offboarding-job", BOTH)
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        removed = await client.delete(f"/api/v1/links/{LINKED}", headers=_bearer(writer.token))
        assert removed.status_code == 200, removed.text
        assert removed.json()["discord_id"] == str(LINKED)
        gone = await client.get(f"/api/v1/links/{LINKED}", headers=_bearer(writer.token))
        assert gone.status_code == 404
    async with stack.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(audit_events.c.detail).where(
                    audit_events.c.kind == "unlinked", audit_events.c.discord_id == LINKED
                )
            )
        ).all()
    assert [row.detail for row in rows] == [
        {"via": "api", "api_key": "offboarding-job", "api_key_id": str(writer.key.id)}
    ]


async def test_an_expired_key_gets_401_saying_it_expired(stack: Stack) -> None:
    temp = await stack.container.create_api_key().execute("temp", expires_in=timedelta(days=7))
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        ok = await client.get("/api/v1/links/42", headers=_bearer(temp.token))
        assert ok.status_code == 404  # valid: the id is simply not linked
        stack.clock.advance(timedelta(days=7))  # the server shares this clock
        expired = await client.get("/api/v1/links/42", headers=_bearer(temp.token))
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"] == "Bearer"
    assert expired.json()["error"]["code"] == "api_key_expired"
    assert "expired on" in expired.json()["error"]["message"]


async def test_last_use_is_written_once_a_minute_whatever_the_traffic(
    stack: Stack, writes_to_api_keys: SqlDatabase
) -> None:
    db = writes_to_api_keys
    busy = await stack.container.create_api_key().execute("busy", BOTH)
    await stack.container.create_api_key().execute("quiet")  # never used
    first_use = stack.clock.now()
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        for _ in range(60):
            answer = await client.get("/api/v1/links/42", headers=_bearer(busy.token))
            assert answer.status_code == 404
        await _eventually_last_used(db, "busy", first_use)
        assert await _writes(db) == 1
        assert await _last_used(db, "quiet") is None

        stack.clock.advance(timedelta(seconds=59))  # still the same minute for this key
        for _ in range(30):
            await client.get("/api/v1/links/42", headers=_bearer(busy.token))
        stack.clock.advance(timedelta(seconds=1))  # a minute after the first write
        for _ in range(30):
            await client.get("/api/v1/links/42", headers=_bearer(busy.token))
        await _eventually_last_used(db, "busy", first_use + timedelta(minutes=1))
    assert await _writes(db) == 2


@pytest.fixture
async def patient_app(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> AsyncIterator[tuple[str, Container]]:
    """The web app on Postgres with the longest statement timeout there is: a statement that
    waits for a lock waits (for ten minutes), it is not cut off after 5 seconds."""
    settings = make_settings(
        storage="sql",
        database_url=postgres.url,
        discord_client_id="1",
        discord_client_secret="unused",
        db_statement_timeout_seconds=600,
    )
    server, setup = build_container(settings), build_container(settings)
    try:
        with serve(create_app(server)) as url:
            yield url, setup
    finally:
        await setup.sql_db().dispose()


async def test_last_use_is_written_off_the_request_path(
    patient_app: tuple[str, Container], pg_db: SqlDatabase
) -> None:
    """While another transaction holds the key's row, requests made with the key are still
    answered: the write waits for the lock, the requests do not. Then the write lands."""
    url, setup = patient_app
    key = await setup.create_api_key().execute("blocked")
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        pg_db.engine.connect() as locker,
    ):
        transaction = await locker.begin()
        await locker.execute(
            select(api_keys.c.id).where(api_keys.c.id == key.key.id).with_for_update()
        )
        try:
            for _ in range(5):
                answer = await client.get("/api/v1/links/42", headers=_bearer(key.token))
                assert answer.status_code == 404
            assert await _last_used(pg_db, "blocked") is None
        finally:
            await transaction.rollback()
        for _ in range(600):
            if await _last_used(pg_db, "blocked") is not None:
                break
            await asyncio.sleep(0.05)
    assert await _last_used(pg_db, "blocked") is not None


# -- the command line, as a separate process ---------------------------------------------------


def _command(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": database_url,
    }
    if "PYTHONPATH" in os.environ:  # where Python finds the code under test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(  # noqa: S603 - our own interpreter and command
        [sys.executable, "-c", "from entrypoints.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,  # no .env file of the developer's
        timeout=300,
        check=False,
    )


async def test_api_key_commands_show_scopes_expiry_and_last_use(
    pg_db: SqlDatabase, postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.url
    # The commands read the real clock: a run over midnight (UTC) sees two dates.
    started = datetime.now(UTC)
    created = _command(
        url, tmp_path, "api-key", "create", "crm", "--scope", "links:read", "--scope",
        "links:write", "--expires-in", "30",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "'crm': links:read links:write; expires " in created.stdout
    (token,) = re.findall(r"tfl_[A-Za-z0-9_-]{65}", created.stdout)
    plain = _command(url, tmp_path, "api-key", "create", "dashboard")
    assert "'dashboard': links:read; never expires." in plain.stdout
    unknown = _command(url, tmp_path, "api-key", "create", "x", "--scope", "links:delete")
    assert unknown.returncode == 2
    assert "Invalid value for '--scope': 'links:delete' is not a scope: give links:read" in (
        unknown.stderr
    )

    # The key is used once, the way the API's guard uses it (real clock, as the command's).
    container = build_container(make_settings(storage="sql", database_url=url))
    try:
        key = await container.authenticate_api_key().execute(token, ApiScope.LINKS_WRITE)
        assert key is not None
        await container.api_key_usage().idle()
    finally:
        await container.sql_db().dispose()

    listed = _command(url, tmp_path, "api-key", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "SCOPES", "CREATED", "LAST", "USED", "EXPIRES", "STATUS"]
    by_name = {row.split()[0]: row for row in rows}
    assert set(by_name) == {"crm", "dashboard"}
    days = (started, datetime.now(UTC))
    crm = by_name["crm"]
    assert "links:read,links:write" in crm
    dates = {f"{day:%Y-%m-%d}" for day in days}
    assert sum(crm.count(date) for date in dates) == 2  # created today, used today
    assert any(f"{day + timedelta(days=30):%Y-%m-%d}" in crm for day in days)  # in 30 days
    assert crm.rstrip().endswith("active")
    dashboard = by_name["dashboard"].split()
    assert dashboard[1] == "links:read"
    assert dashboard.count("never") == 2  # never used, never expires
    assert token not in listed.stdout

    revoked = _command(url, tmp_path, "api-key", "revoke", "crm")
    assert revoked.returncode == 0
    listed = _command(url, tmp_path, "api-key", "list")
    assert any(f"revoked {day:%Y-%m-%d}" in listed.stdout for day in (started, datetime.now(UTC)))


# -- upgrading: keys from before scopes --------------------------------------------------------


async def _keys_from_before_scopes(url: str) -> None:
    """At 0004 a key could read and unlink: after the upgrade it still can; a row written
    without scopes afterwards (an older version during a rolling upgrade) may only read."""
    at_0004 = sa.table(
        "api_keys",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("key_hash", sa.String()),
        sa.column("created_at", UtcDateTime()),
    )
    database = SqlDatabase(url)
    try:
        await migrate.upgrade(database, "0004")
        now = datetime(2026, 1, 1, tzinfo=UTC)
        old: dict[str, Any] = {"id": uuid.uuid4(), "name": "old", "key_hash": "o" * 64}
        async with database.engine.begin() as conn:
            await conn.execute(sa.insert(at_0004), {**old, "created_at": now})
        await migrate.upgrade(database)
        async with database.engine.begin() as conn:
            later = {"id": uuid.uuid4(), "name": "later", "key_hash": "l" * 64}
            await conn.execute(sa.insert(at_0004), {**later, "created_at": now})
        found = await database.directory.api_key_by_digest("o" * 64)
        assert found is not None
        assert found.scopes == {ApiScope.LINKS_READ, ApiScope.LINKS_WRITE}
        assert found.expires_at is None
        assert found.last_used_at is None
        written_later = await database.directory.api_key_by_digest("l" * 64)
        assert written_later is not None
        assert written_later.scopes == {ApiScope.LINKS_READ}
        await migrate.downgrade(database, "0004")  # and back: the columns go, the keys stay
        async with database.engine.connect() as conn:
            names = (await conn.execute(select(at_0004.c.name))).scalars().all()
        assert sorted(names) == ["later", "old"]
    finally:
        await database.dispose()


async def test_keys_from_before_scopes_keep_both_on_postgres(empty_pg_url: str) -> None:
    await _keys_from_before_scopes(empty_pg_url)


async def test_keys_from_before_scopes_keep_both_on_sqlite(sqlite_url: str) -> None:
    await _keys_from_before_scopes(sqlite_url)


async def test_the_directory_reads_a_whole_key_in_one_statement(pg_db: SqlDatabase) -> None:
    """The guard's lookup stays one statement (compiled from the tables, so it reads the new
    columns too), outside any transaction."""
    from adapters.sql.postgres_directory import PostgresLinkDirectory
    from domain.model import ApiKey

    expires = datetime(2031, 1, 1, tzinfo=UTC)
    key = ApiKey(
        uuid.uuid4(),
        "full",
        "f" * 64,
        datetime(2030, 1, 1, tzinfo=UTC),
        scopes=frozenset({ApiScope.LINKS_WRITE}),
        expires_at=expires,
        last_used_at=datetime(2030, 6, 1, tzinfo=UTC),
    )
    async with pg_db.unit_of_work() as uow:
        await uow.api_keys.add(key)
        await uow.commit()
    # What the server is sent, seen by asyncpg itself on the directory's own connection.
    directory = pg_db.directory
    assert isinstance(directory, PostgresLinkDirectory)
    sent: list[str] = []
    assert await directory.api_key_by_digest("0" * 64) is None  # opens its connection
    ((_, conn),) = directory._idle  # the one the next call uses
    conn.add_query_logger(lambda r: sent.append(r.query))
    found = await directory.api_key_by_digest("f" * 64)
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
    assert found == key
    assert len(sent) == 1, sent
    assert "FROM api_keys" in sent[0]
