"""A database outage and a database fault are told apart: the first is a 503 "try again"
logged as a warning with its cause, the second a 500 logged as an error with its traceback
(the issue: a NUL or an over-long name was reported as "cannot reach its database", its cause
dropped and logged at INFO)."""

from __future__ import annotations

import logging

import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)

from adapters.sql.errors import translate
from domain import errors
from domain.model import LinkTicket
from entrypoints.web import create_app
from tests.harness import Harness


class _State(Exception):
    """A driver error with its SQLSTATE, as asyncpg's (and SQLAlchemy's wrapper of them) say it."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (IntegrityError("INSERT", {}, Exception("duplicate key")), errors.Conflict),
        (OperationalError("SELECT", {}, Exception("connection refused")), errors.StorageError),
        (ConnectionRefusedError(), errors.StorageError),
        (TimeoutError(), errors.StorageError),
        (DataError("INSERT", {}, Exception("value too long")), errors.StorageFault),
        (ProgrammingError("SELECT", {}, Exception("no such table")), errors.StorageFault),
        # What asyncpg's errors become through SQLAlchemy: a plain DBAPIError, told apart by
        # the SQLSTATE. Cut off by statement_timeout (waiting for another instance's lock),
        # a server shutting down, a lost connection: outages. A value too long: a fault.
        (DBAPIError("SELECT", {}, _State("57014")), errors.StorageError),
        (DBAPIError("SELECT", {}, _State("57P01")), errors.StorageError),
        (DBAPIError("SELECT", {}, _State("25P03")), errors.StorageError),
        (DBAPIError("SELECT", {}, _State("08006")), errors.StorageError),
        (DBAPIError("INSERT", {}, _State("22001")), errors.StorageFault),
        # The database refusing the connection itself: a wrong password (28P01: the setting
        # not yet changed with Postgres' during a rotation), a role that may not log in
        # (28000), a database that is not there (3D000). Nothing in the code is wrong and
        # nothing works until the operator acts: an outage (503, said once by a worker), not
        # a 500 with a traceback at each request and at each worker's pass.
        (DBAPIError("SELECT", {}, _State("28P01")), errors.StorageError),
        (DBAPIError("SELECT", {}, _State("28000")), errors.StorageError),
        (DBAPIError("SELECT", {}, _State("3D000")), errors.StorageError),
        # Postgres breaking a deadlock (40P01), or a serialization failure (40001): another
        # request held what this one needed, and this one was rolled back. Before, a 500 and a
        # traceback, as for a bug; now a 503 "try again", which works at once.
        (DBAPIError("DELETE", {}, _State("40P01")), errors.StorageContention),
        (DBAPIError("UPDATE", {}, _State("40001")), errors.StorageContention),
    ],
)
def test_driver_errors_become_the_right_domain_error(raised: Exception, expected: type) -> None:
    assert type(translate(raised)) is expected


class _Failing:
    def __init__(self, error: errors.DomainError, cause: Exception) -> None:
        self._error, self._cause = error, cause

    async def execute(self, token: str) -> LinkTicket:
        raise self._error from self._cause


async def test_a_fault_is_a_500_logged_with_its_cause(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    cause = DataError("INSERT", {}, Exception("value too long for type character varying(64)"))
    with h.container.show_link_ticket.override(
        providers.Factory(_Failing, errors.StorageFault(), cause)
    ):
        async with AsyncTestClient(app=create_app(h.container)) as client:
            answer = await client.get("/link/" + "A" * 43)
    assert answer.status_code == 500
    assert "cannot reach" not in answer.text
    record = next(r for r in caplog.records if r.getMessage().startswith("storage fault"))
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert "value too long" in caplog.text


async def test_an_outage_is_a_503_logged_as_a_warning_with_its_cause(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    cause = OperationalError("SELECT", {}, Exception("connection refused"))
    with h.container.show_link_ticket.override(
        providers.Factory(_Failing, errors.StorageError(), cause)
    ):
        async with AsyncTestClient(app=create_app(h.container)) as client:
            answer = await client.get("/link/" + "A" * 43)
    assert answer.status_code == 503
    assert "cannot reach its database" in answer.text
    record = next(r for r in caplog.records if r.getMessage().startswith("database unreachable"))
    assert record.levelname == "WARNING"
    assert "OperationalError" in record.getMessage()


async def test_a_worker_names_why_it_cannot_use_the_database_once_without_a_traceback(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by helper-187's review: `serve` with a wrong database password (28P01) logged
    "email delivery pass failed" with a 170-line traceback at every poll (each 2 s), as for a
    bug. Now said once, with the kind of refusal (never the driver's words: they may hold the
    host or the user's name), as for an unreachable database."""
    from entrypoints.email_worker import EmailWorker

    refused = DBAPIError("SELECT", {}, _State("28P01"))

    class Refused:
        async def execute(self, **_: object) -> object:
            raise translate(refused) from refused

    h.container.deliver_emails.override(Refused())
    try:
        worker = EmailWorker(h.container)
        caplog.set_level(logging.INFO, logger="taskflow_link.email")
        for _ in range(3):
            await worker.run_once()
    finally:
        h.container.deliver_emails.reset_override()
    records = [r for r in caplog.records if r.name == "taskflow_link.email"]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].exc_info is None
    assert "SQLSTATE 28P01" in records[0].getMessage()
