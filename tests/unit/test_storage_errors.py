"""A database outage and a database fault are told apart: the first is a 503 "try again"
logged as a warning with its cause, the second a 500 logged as an error with its traceback
(the issue: a NUL or an over-long name was reported as "cannot reach its database", its cause
dropped and logged at INFO)."""

from __future__ import annotations

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
