"""Which schema revision this version of the package needs, and whether a database has it,
without loading Alembic (readiness probes ask every few seconds; Alembic costs a process about
20 MB). The migrations' own files say it: each names its ``revision`` and ``down_revision``,
and the newest is the one no other revises. A test checks this agrees with Alembic."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from adapters.sql.database import SqlDatabase

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_FIELD = re.compile(r'^(revision|down_revision)\b[^=]*=\s*["\']([^"\']+)["\']', re.MULTILINE)


@functools.cache
def head_revision() -> str:
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        fields = dict(_FIELD.findall(path.read_text(encoding="utf-8")))
        if "revision" in fields:
            revisions.add(fields["revision"])
            if "down_revision" in fields:
                revised.add(fields["down_revision"])
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one: {sorted(heads)}")
    return heads.pop()


async def is_current(database: SqlDatabase) -> bool:
    """Whether the database's schema is this version's newest."""
    async with database.engine.connect() as conn:
        try:
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except DBAPIError:
            return False  # no schema at all
    return [row[0] for row in found] == [head_revision()]
