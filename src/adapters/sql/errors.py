from __future__ import annotations

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from domain import errors


def translate(exc: Exception) -> errors.DomainError:
    """The domain's view of a driver error (the original stays chained for the logs)."""
    if isinstance(exc, IntegrityError):
        return errors.Conflict()
    if isinstance(exc, SQLAlchemyError | OSError | TimeoutError):
        return errors.StorageError()
    raise exc
