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


def translate(exc: Exception) -> errors.DomainError:
    """The domain's view of a driver error (the original stays chained for the logs): a
    uniqueness or foreign-key violation is a ``Conflict``, an outage a ``StorageError``, and
    anything else (a value the column refuses, a bad statement) a ``StorageFault``: a bug,
    never reported as "cannot reach the database"."""
    if isinstance(exc, IntegrityError):
        return errors.Conflict()
    if isinstance(exc, _OUTAGES):
        return errors.StorageError()
    if isinstance(exc, SQLAlchemyError):
        return errors.StorageFault()
    raise exc
