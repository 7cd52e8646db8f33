"""Which schema revision this version of the package needs, and whether a database has it,
without loading Alembic (readiness probes ask every few seconds; Alembic costs a process about
20 MB). The migrations' own files say it: each names its ``revision`` and ``down_revision``,
and the newest is the one no other revises. A test checks this agrees with Alembic."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from adapters.sql.database import SqlDatabase

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_FIELD = re.compile(r'^(revision|down_revision)\b[^=]*=\s*["\']([^"\']+)["\']', re.MULTILINE)


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this version of the package ships."""
    return frozenset(_graph()[0])


@functools.cache
def head_revision() -> str:
    revisions, revised = _graph()
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one: {sorted(heads)}")
    return heads.pop()


def _graph() -> tuple[set[str], set[str]]:
    """(every revision, every revision some other one revises)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        fields = dict(_FIELD.findall(path.read_text(encoding="utf-8")))
        if "revision" in fields:
            revisions.add(fields["revision"])
            if "down_revision" in fields:
                revised.add(fields["down_revision"])
    return revisions, revised


# Tables every taskflow-link database has had since the first revision: a database whose
# alembic_version names a revision this version does not know is a newer release's when it
# has them, another program's when it has not. Not ``accounts`` and ``user_links`` alone:
# ``user_links`` is the original guide's table (its code reads it), so the database of an
# application that followed the guide (TaskFlow's own, say: Alembic too, and an ``accounts``
# table) would pass for a later release's, and the service would serve on its tables.
OWN_TABLES = frozenset({"accounts", "user_links", "pending_login", "link_tickets"})


async def has_own_tables(database: SqlDatabase) -> bool:
    """Whether the database holds taskflow-link's tables (``OWN_TABLES``)."""
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    return names >= OWN_TABLES


async def found_revisions(database: SqlDatabase) -> list[str] | None:
    """The revisions the database's ``alembic_version`` holds (``[]`` after a downgrade to
    base), or ``None`` when it has no such table (never migrated). Connection errors and
    timeouts are raised, never taken for a missing table."""
    async with database.engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return None
        found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    return sorted(row[0] for row in found)


async def is_current(database: SqlDatabase) -> bool:
    """Whether the database's schema serves this version: its newest revision, or one this
    version does not know (a newer release's). During a rolling upgrade the release step (the
    new version's ``db upgrade``) migrates the database while the older version's instances
    still serve, as each migration allows; were they not ready from then on, an orchestrator
    would take them all out of service before a new one is up. (The CLI's commands only warn
    about such a revision, for the same reason.) An unknown revision in a database without
    taskflow-link's tables is another program's: not ready."""
    async with database.engine.connect() as conn:
        try:
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except DBAPIError:
            # No schema at all, unless the table is there and refused us (a grant forgotten
            # for the service's role): that is raised, for readiness to name, never taken for
            # a database `db upgrade` would fix. Looked at only now (on the same connection:
            # a database that fails to connect is not tried twice), so that the probe's usual
            # way costs one query.
            await conn.rollback()  # Postgres refuses more in a failed transaction
            if await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
                raise
            return False
    revisions = {row[0] for row in found}
    if revisions == {head_revision()}:
        return True
    if not revisions or revisions & known_revisions():
        return False
    return await has_own_tables(database)
