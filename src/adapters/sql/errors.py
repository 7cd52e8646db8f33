from __future__ import annotations

from sqlalchemy.exc import (
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain import errors

# What an unreachable, restarting or overloaded database looks like: worth a retry later.
_OUTAGES = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    OSError,
    TimeoutError,
)


# Postgres' SQLSTATEs for a statement the server cut off or a server going away, which the
# driver reports as plain errors, not as a lost connection: query_canceled (past
# statement_timeout, waiting for a lock another instance holds, say), admin_shutdown,
# crash_shutdown, cannot_connect_now (starting or stopping), too_many_connections,
# idle_in_transaction_session_timeout; and class 08, connection exceptions. Also the server
# refusing the connection itself: invalid_catalog_name (the database is not there) and class
# 28, invalid authorization (a wrong password, as between Postgres' password rotation and the
# setting's): nothing in the code is wrong and nothing works until the operator acts, so it is
# a 503 and a worker's line said once, not a 500 and a traceback at each request and pass.
OUTAGE_STATES = frozenset({"57014", "57P01", "57P02", "57P03", "53300", "25P03", "3D000"})
_OUTAGE_CLASSES = ("08", "28")


def outage_state(exc: BaseException) -> bool:
    """Whether the database (or the driver, for SQLAlchemy's ``orig``) named an outage."""
    cause = getattr(exc, "orig", None) or exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return isinstance(state, str) and (state in OUTAGE_STATES or state.startswith(_OUTAGE_CLASSES))


# Postgres' SQLSTATEs for a transaction it rolled back for another one (deadlock_detected,
# serialization_failure): the locks are taken in one order where we know of a cycle, and one
# not foreseen gets a 503 "try again", never a 500.
CONTENTION_STATES = frozenset({"40P01", "40001"})


def contention(exc: BaseException) -> bool:
    """Whether the database rolled the transaction back to let another one through (a
    deadlock broken, a serialization failure): nothing is wrong, and trying again works."""
    return _sqlstate(exc) in CONTENTION_STATES


def _sqlstate(exc: BaseException) -> str | None:
    cause = getattr(exc, "orig", None) or exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return state if isinstance(state, str) else None


# Postgres' SQLSTATEs for a table or a column that is not there (undefined_table,
# undefined_column), and SQLite's words for them.
_NOT_MIGRATED_STATES = frozenset({"42P01", "42703"})
_NOT_MIGRATED_WORDS = ("no such table", "no such column", "has no column named")


def not_migrated(exc: BaseException) -> errors.StorageNotReady | None:
    """When the database refused a statement for a table or column it has not got (a schema
    older than this version's: ``taskflow-link db upgrade`` not run yet), saying which in the
    driver's words (never SQLAlchemy's, which add the statement and its parameters)."""
    cause = getattr(exc, "orig", None) or exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    words = str(cause).splitlines()[0][:200] if str(cause) else ""
    if state in _NOT_MIGRATED_STATES or (
        isinstance(exc, OperationalError) and any(w in words for w in _NOT_MIGRATED_WORDS)
    ):
        return errors.StorageNotReady(words)
    return None


def translate(exc: Exception) -> errors.DomainError:
    """The domain's view of a driver error (the original stays chained for the logs): a
    uniqueness or foreign-key violation is a ``Conflict``, a missing table or column a
    ``StorageNotReady`` (run ``db upgrade``), an outage a ``StorageError``, and anything else
    (a value the column refuses, a bad statement) a ``StorageFault``: a bug, never reported as
    "cannot reach the database"."""
    if isinstance(exc, IntegrityError):
        return errors.Conflict()
    if (not_ready := not_migrated(exc)) is not None:
        return not_ready
    if contention(exc):
        return errors.StorageContention()
    if isinstance(exc, _OUTAGES) or outage_state(exc):
        return errors.StorageError()
    if isinstance(exc, SQLAlchemyError):
        return errors.StorageFault()
    raise exc
