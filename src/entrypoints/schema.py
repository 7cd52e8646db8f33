"""What a process says of its database's schema revision when it is not this version's: the
CLI's commands (refusing an older one), and ``serve`` and the bot once, in the log, at start.

A later release's schema is served on, not refused: during a rolling upgrade the new
release's ``db upgrade`` runs while the older release's instances still serve, and one of them
that restarts then (a crash, a new node, autoscaling) must come up again, or the upgrade takes
capacity away as it goes; readiness (``revisions.is_current``) takes it for current for the
same reason. After a rollback that is meant to last, the log says how to take the schema back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from adapters.sql import SqlDatabase, revisions
from domain.errors import DomainError
from entrypoints.settings import database_url_without_password

if TYPE_CHECKING:
    from entrypoints.container import Container


@dataclass(frozen=True)
class UnknownRevision:
    message: str
    later_release: bool  # taskflow-link's tables are there; else another program's migrations


async def unknown_revision(database: SqlDatabase, url: str) -> UnknownRevision | None:
    """What to say of a database at a revision this version does not know (``None``: it
    knows them all): a later release's schema, or another program's migrations."""
    found = await revisions.found_revisions(database) or []
    if set(found) <= revisions.known_revisions():
        return None
    where, listed = database_url_without_password(url), ", ".join(found)
    strangers = [r for r in found if r not in revisions.known_revisions()]
    if await revisions.has_own_tables(database):
        which = f"revision {listed}, which this version does not know"
        if len(strangers) < len(found):
            which = (
                f"revisions {listed}, of which this version does not know {', '.join(strangers)}"
            )
        return UnknownRevision(
            f"The database at {where} is at {which} (this version's newest is "
            f"{revisions.head_revision()}): a later release migrated it.",
            later_release=True,
        )
    return UnknownRevision(
        f"The database at {where} holds another program's migrations ({listed}) and none "
        "of taskflow-link's tables: it is not taskflow-link's database. Give taskflow-link "
        "one of its own (TASKFLOW_LINK_DATABASE_URL).",
        later_release=False,
    )


# What fails meanwhile, said to whoever starts a process on a schema older than its own.
_UNTIL_THEN = (
    "until then, what needs what it has not got fails (pages answer 503, the bot's commands "
    "say something went wrong) and /readyz says not ready"
)


async def start_up_problem(database: SqlDatabase, url: str) -> tuple[int, str] | None:
    """The level and words of what a serving process logs at start about its database's
    schema (``None``: this version's). Database errors are raised."""
    found = await revisions.found_revisions(database)
    head = revisions.head_revision()
    if found == [head]:
        return None
    where = database_url_without_password(url)
    if not found:
        return logging.ERROR, (
            f"The database at {where} has no schema revision: run `taskflow-link db upgrade` "
            f"(it says so if the tables there are another program's); {_UNTIL_THEN}."
        )
    if set(found) <= revisions.known_revisions():
        return logging.ERROR, (
            f"The database at {where} is at revision {', '.join(found)}, this version needs "
            f"{head}: run `taskflow-link db upgrade`; {_UNTIL_THEN}."
        )
    unknown = await unknown_revision(database, url)
    if unknown is None:  # migrated meanwhile
        return None
    if not unknown.later_release:
        return logging.ERROR, unknown.message
    return logging.WARNING, (
        f"{unknown.message} This version serves on it, as an older release does during a "
        f"rolling upgrade. {rollback_advice()}"
    )


def rollback_advice() -> str:
    """What to do about a later release's schema once the rollback to this version is meant
    to last: only that release knows how to take its migrations back."""
    return (
        "If this is a rollback meant to last: stop every instance, take the schema back with "
        f"the later release's `taskflow-link db downgrade {revisions.head_revision()} --yes` "
        "(it drops what that release added), then start this version again."
    )


def unreachable_at_start(url: str, exc: BaseException) -> str:
    """What a serving process says at start of a database it could not use (a mistyped host
    or port, a database not started yet, a wrong password): which one, the setting that
    names it and what fails meanwhile. The error is named by its kind, never its words (as
    ``/readyz`` names it): the process goes on, and its workers say when it answers."""
    cause = exc.__cause__ if isinstance(exc, DomainError) and exc.__cause__ else exc
    cause = getattr(cause, "orig", None) or cause
    return (
        f"Cannot reach the database at {database_url_without_password(url)} "
        f"({type(cause).__name__}): check TASKFLOW_LINK_DATABASE_URL and that the database is "
        "running and takes connections from here; until it answers, pages answer 503, the "
        "bot's commands say something went wrong and /readyz says not ready."
    )


class StartUpSchemaCheck:
    """Looks once, in the background (a database that does not answer holds up no start),
    and logs what ``start_up_problem`` finds, or that it could not reach the database (the
    readiness check and the workers then say when it answers)."""

    def __init__(self, database: SqlDatabase, url: str, log: logging.Logger, timeout: float):
        self._database, self._url, self._log, self._timeout = database, url, log, timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.check(), name="schema check at start")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                problem = await start_up_problem(self._database, self._url)
        except (OSError, TimeoutError, SQLAlchemyError, DomainError) as exc:
            self._log.warning("%s", unreachable_at_start(self._url, exc))
            return
        level, message = problem or (logging.DEBUG, "schema revision checked at start: current")
        self._log.log(level, "%s", message)


def schema_check_in_thread(container: Container, log: logging.Logger) -> threading.Thread | None:
    """The check of ``serve --workers N``, once for its workers (each would have said it
    again), in a thread of its own beside the server's supervisor (a database that does not
    answer holds up no start); started, and its database connections closed at its end."""
    check = schema_check_at_start(container, log)
    if check is None:
        return None
    database = container.storage()

    async def check_and_close() -> None:
        try:
            await check.check()
        finally:
            await database.dispose()

    thread = threading.Thread(
        target=lambda: asyncio.run(check_and_close()), name="schema check at start", daemon=True
    )
    thread.start()
    return thread


def schema_check_at_start(container: Container, log: logging.Logger) -> StartUpSchemaCheck | None:
    """The check of a serving process on SQL storage (none on the memory storage)."""
    database = container.storage()
    if not isinstance(database, SqlDatabase):
        return None
    settings = container.settings()
    return StartUpSchemaCheck(
        database,
        settings.database_url,
        log,
        timeout=settings.db_connect_timeout_seconds + settings.db_statement_timeout_seconds,
    )
