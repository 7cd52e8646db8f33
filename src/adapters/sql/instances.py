"""Which web instances and gateway bots use this database. Each announces itself once a minute
(a row of ``web_instances``: where it runs, what it is, and how it shares its rate limits and
interaction replay guard, which webhook URLs it queues events for, and how long it keeps
audit events), so that those that keep these apart (one without Redis beside others with it,
or two Redises), queue webhooks for other URLs or purge by other settings can say so: neither
could see the other anywhere else. The purge reads them too (``SqlPurgePeers``), and deletes
only what every process would."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from adapters.sql.database import SqlDatabase
from adapters.sql.errors import translate
from adapters.sql.tables import web_instances
from domain.ports import Clock, PurgeTerms

# An instance seen within this is taken as running (it announces itself every minute); one
# that stopped without a word (killed) drops out of every list after it.
LIVE_FOR = timedelta(minutes=3)
# A row not seen for this long is deleted by the next instance that announces itself.
FORGET_AFTER = timedelta(days=1)
# How the database fails a call: SQLAlchemy's errors, and what asyncpg raises as it is when
# it cannot connect (a refused connection is an OSError, a connect timeout a TimeoutError).
_FAILURES = (SQLAlchemyError, OSError, TimeoutError)


@dataclass(frozen=True)
class Instance:
    id: str
    host: str
    pid: int
    # "web", or "gateway" with the shards it runs ("gateway 0-3,8/16"; alone: every shard).
    kind: str
    # "memory" (no Redis), "redis" (its Redis did not answer) or "redis <deployment id>".
    shared_state: str
    started_at: datetime
    seen_at: datetime
    # A digest of the webhook URLs it queues events for; None: a version that did not say.
    webhooks: str | None = None
    # Its TASKFLOW_LINK_AUDIT_RETENTION_DAYS (0: forever); None: a version that did not say.
    audit_retention_days: int | None = None

    def __str__(self) -> str:
        return f"{self.host} (pid {self.pid}, started {self.started_at:%Y-%m-%d %H:%M:%S} UTC)"


class SqlInstanceRoster:
    """This process's row of ``web_instances`` (as ``kind``), and the others'."""

    def __init__(self, database: SqlDatabase, clock: Clock, kind: str) -> None:
        self._database, self._clock, self.kind = database, clock, kind
        self.id = str(uuid.uuid4())
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self._started_at: datetime | None = None

    async def announce(
        self,
        shared_state: str,
        *,
        webhooks: str | None = None,
        audit_retention_days: int | None = None,
    ) -> Sequence[Instance]:
        """Records this instance as seen now, sharing its state as ``shared_state`` says,
        queuing webhooks for the URLs ``webhooks`` digests and keeping audit events
        ``audit_retention_days`` (0: forever);
        deletes the rows of instances not seen for a day; answers the other instances seen in
        the last few minutes, the oldest first. A database error is the domain's
        ``StorageError`` (``StorageNotReady`` before ``db upgrade``)."""
        now = self._clock.now()
        started = self._started_at or now
        table = web_instances
        try:
            async with self._database.writer_turn(), self._database.engine.begin() as conn:
                seen = await conn.execute(
                    update(table)
                    .where(table.c.id == self.id)
                    .values(
                        shared_state=shared_state,
                        webhooks=webhooks,
                        audit_retention_days=audit_retention_days,
                        seen_at=now,
                    )
                )
                if seen.rowcount == 0:  # the first time (or a day lost and forgotten)
                    await conn.execute(
                        insert(table).values(
                            id=self.id,
                            host=self.host,
                            pid=self.pid,
                            kind=self.kind,
                            shared_state=shared_state,
                            webhooks=webhooks,
                            audit_retention_days=audit_retention_days,
                            started_at=started,
                            seen_at=now,
                        )
                    )
                await conn.execute(delete(table).where(table.c.seen_at < now - FORGET_AFTER))
                rows = await conn.execute(
                    select(table)
                    .where(table.c.id != self.id, table.c.seen_at >= now - LIVE_FOR)
                    .order_by(table.c.started_at, table.c.id)
                )
                others = [Instance(**row._mapping) for row in rows]
        except _FAILURES as exc:
            raise translate(exc) from exc
        self._started_at = started
        return others

    async def clock_offset(self) -> timedelta | None:
        """How far this process's clock is ahead of the database server's (behind: negative),
        the query's round trip taken out; ``None`` on SQLite, whose clock is this host's."""
        if self._database.dialect != "postgresql":
            return None
        try:
            async with self._database.engine.connect() as conn:
                before = self._clock.now()
                theirs: datetime = (await conn.execute(select(func.clock_timestamp()))).scalar_one()
                after = self._clock.now()
        except _FAILURES as exc:
            raise translate(exc) from exc
        return before + (after - before) / 2 - theirs

    async def leave(self) -> None:
        """Deletes this instance's row (it stops): the others stop counting it at once."""
        try:
            async with self._database.writer_turn(), self._database.engine.begin() as conn:
                await conn.execute(delete(web_instances).where(web_instances.c.id == self.id))
        except _FAILURES as exc:
            raise translate(exc) from exc


class SqlPurgePeers:
    """What the processes announced lately say the purge may delete (``PurgePeers``)."""

    def __init__(self, database: SqlDatabase, clock: Clock) -> None:
        self._database, self._clock = database, clock

    async def live(self) -> Sequence[PurgeTerms]:
        """The terms of every process seen within ``LIVE_FOR`` (one that stopped deleted its
        row; one killed without a word counts until then), whether or not it was seen twice:
        the purge is held back from the first sighting, lest it delete what a process just
        started keeps."""
        table = web_instances
        try:
            async with self._database.engine.connect() as conn:
                rows = await conn.execute(
                    select(table.c.audit_retention_days, table.c.webhooks).where(
                        table.c.seen_at >= self._clock.now() - LIVE_FOR
                    )
                )
                return [PurgeTerms(row.audit_retention_days, row.webhooks) for row in rows]
        except _FAILURES as exc:
            raise translate(exc) from exc
