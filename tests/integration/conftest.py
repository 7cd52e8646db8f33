from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sql import SqlDatabase, migrate
from adapters.sql.tables import metadata
from tests.integration.demo_browser import chromium, demo, problems
from tests.integration.mailbox import smtp_server
from tests.integration.postgres import PostgresServer, Unavailable, start_postgres
from tests.integration.redis_server import RedisServer, start_redis
from tests.integration.stack import browser, stack, stack_emulator, stack_settings

__all__ = [
    "browser",
    "chromium",
    "demo",
    "problems",
    "smtp_server",
    "stack",
    "stack_emulator",
    "stack_settings",
]  # for the end-to-end tests (and the demo's, in test_demo_browser*.py: one demo a file)

_migrated: set[str] = set()


async def _up_down_up(database: SqlDatabase) -> None:
    """Every SQL test runs on a schema that went up, back down to empty and up again."""
    await migrate.upgrade(database)
    await migrate.downgrade(database, "base")
    await migrate.upgrade(database)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    if isinstance(server, Unavailable):
        pytest.skip(server.reason)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    if isinstance(server, Unavailable):
        pytest.skip(server.reason)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The shared Redis, emptied before each test (and started again if a test stopped it)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    try:
        await client.ping()
    except Exception:
        redis_server.start_server()
    await client.flushall()
    await client.aclose()
    return redis_server.url


@pytest.fixture
async def pg_db(postgres: PostgresServer) -> AsyncIterator[SqlDatabase]:
    """The shared, migrated test database, emptied before each test."""
    database = SqlDatabase(postgres.url, pool_size=25, max_overflow=5)
    if postgres.url not in _migrated:
        await _up_down_up(database)
        _migrated.add(postgres.url)
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    async with database.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def empty_pg_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """A brand-new empty database on the Postgres server (for migration tests)."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres.url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres.url_for(name)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'taskflow-link.db'}"


async def _made_template(path: Path) -> None:
    database = SqlDatabase(f"sqlite+aiosqlite:///{path}")
    try:
        await _up_down_up(database)
    finally:
        await database.dispose()  # the last connection's close folds the -wal file in


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated as ``_up_down_up`` migrates (up, down to empty, up again),
    once for the session (for each xdist worker), closed: ``sqlite_db`` copies it.

    Made in its own event loop: a session fixture outlives each test's loop."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(_made_template(path))
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the template is not one closed file: {leftovers}"
    return path


@pytest.fixture
async def sqlite_db(sqlite_url: str, sqlite_template: Path) -> AsyncIterator[SqlDatabase]:
    """A fresh copy of the migrated template in this test's own file (a file copy of a SQLite
    database is safe when nothing has it open: the template is closed, this copy new)."""
    target = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    # created readable by its owner only, as the app creates its file; copyfile keeps the mode
    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    shutil.copyfile(sqlite_template, target)
    database = SqlDatabase(sqlite_url)
    try:
        yield database
    finally:
        await database.dispose()
