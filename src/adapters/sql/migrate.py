"""Run the Alembic migrations shipped inside the package, on an async engine."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from adapters.sql.database import SqlDatabase
from adapters.sql.tables import metadata

MIGRATIONS = Path(__file__).parent / "migrations"
# The key of the advisory lock migrations take on Postgres: a 64-bit number of this
# application's own (the ASCII of "taskflow"), unlikely to be another program's key.
MIGRATION_LOCK = 0x7461736B666C6F77


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


class RevisionRefused(Exception):
    """Alembic cannot go to the revision asked for (unknown, or not that way from here);
    nothing was changed. The message is Alembic's, naming the revision."""


class TablesOfAnother(Exception):
    """A database without a schema revision has tables named as this schema's (another
    program's ``accounts`` or ``sessions``): the first migration would fail on them, or worse,
    take them for its own. Nothing was changed."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(", ".join(tables))
        self.tables = tables


def _refuse_tables_of_another(sync: Connection) -> None:
    """Checked under the migration's lock: another instance's ``db upgrade`` may have just
    made these tables, with their revision."""
    if MigrationContext.configure(sync).get_current_heads():
        return
    if taken := sorted(set(inspect(sync).get_table_names()) & set(metadata.tables)):
        raise TablesOfAnother(taken)


def _heads(sync: Connection) -> str | None:
    """The revision(s) of the database, as ``current_revision`` gives them."""
    return ", ".join(sorted(MigrationContext.configure(sync).get_current_heads())) or None


def _upgrade(sync: Connection, revision: str) -> str | None:
    _refuse_tables_of_another(sync)
    before = _heads(sync)
    command.upgrade(_config(sync), revision)
    return before


def _downgrade(sync: Connection, revision: str) -> str | None:
    before = _heads(sync)
    command.downgrade(_config(sync), revision)
    return before


async def upgrade(database: SqlDatabase, revision: str = "head") -> str | None:
    """Migrate up to ``revision``; returns the revision the database was at (under the
    migration's lock: not what another instance's ``db upgrade`` found before this one)."""
    return await _migrate(database, lambda sync: _upgrade(sync, revision))


async def downgrade(database: SqlDatabase, revision: str) -> str | None:
    """Migrate down to ``revision``; returns the revision the database was at."""
    return await _migrate(database, lambda sync: _downgrade(sync, revision))


def _while_planning(exc: AssertionError) -> bool:
    """Whether Alembic's own planning of the steps failed an assertion: a relative revision
    past the newest (``head+1``) does, where other impossible targets are a CommandError."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    module = str(frame.tb_frame.f_globals.get("__name__", "")) if frame is not None else ""
    return module.startswith("alembic.script")


async def _migrate(database: SqlDatabase, step: Callable[[Connection], str | None]) -> str | None:
    """Run a migration in one transaction.

    On Postgres the transaction first takes an advisory lock, so that several instances
    starting at once (each running ``db upgrade``) migrate one after the other: the first
    migrates, the others then find the database at the revision they want and do nothing.
    Without it, two would both see an empty database and both create the tables. The lock
    is the transaction's: it goes with the commit or rollback, even if the process dies.

    On SQLite, foreign keys are off meanwhile: ALTER TABLE there rebuilds a table (copy,
    drop, rename), and dropping ``accounts`` with foreign keys on would cascade to every
    session, link and token. They are checked afterwards. (SQLite needs no lock: its write
    transactions, ``BEGIN IMMEDIATE``, already run one at a time.)"""
    sqlite = database.dialect == "sqlite"
    async with database.engine.connect() as conn:
        if sqlite:  # a pragma that only works outside a transaction
            await conn.run_sync(_sqlite_foreign_keys, False)
        try:
            async with conn.begin():
                if database.dialect == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                try:
                    before = await conn.run_sync(step)
                except CommandError as exc:  # before any change: found while planning the steps
                    raise RevisionRefused(str(exc)) from exc
                except AssertionError as exc:
                    if not _while_planning(exc):
                        raise
                    raise RevisionRefused("no way there from the database's revision") from exc
                if sqlite:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                await conn.run_sync(_sqlite_foreign_keys, True)
    return before


def _sqlite_foreign_keys(sync: Connection, on: bool) -> None:
    cursor = sync.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


@functools.cache
def head_revision() -> str:
    """The newest revision shipped with this version of the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None  # noqa: S101 - the package ships migrations
    return head


async def current_revision(database: SqlDatabase) -> str | None:
    """The database's revision (``None``: none). A version table holding several (a branched
    history, or one written by hand) gives them all, comma-separated: Alembic's
    ``get_current_revision`` raises on them, which the CLI showed as a traceback."""
    async with database.engine.connect() as conn:
        heads = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_heads()
        )
    return ", ".join(sorted(heads)) or None


async def pending_differences(database: SqlDatabase) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] = agreed)."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )


async def autogenerate(database: SqlDatabase, message: str) -> None:
    """Developer tool: write a new revision from the difference between models and database."""
    async with database.engine.begin() as conn:
        await conn.run_sync(
            lambda sync: command.revision(_config(sync), message=message, autogenerate=True)
        )
