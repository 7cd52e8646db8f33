"""A worker's pass the database rolled back for another transaction (``StorageContention``)
is said as such, not as the database out of reach: the database answered, and the next
pass goes on. It neither starts nor ends a streak of outage: said as unreachable, an outage
that began right after was not said at all (said once per streak), and the next pass that
worked said that the database worked again."""

from __future__ import annotations

import logging

import pytest

from domain import errors
from entrypoints.queue_worker import StorageTrouble


def test_contention_is_not_said_as_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("tests.storage_trouble")
    trouble = StorageTrouble(log, "role queue")
    with caplog.at_level(logging.INFO, logger=log.name):
        trouble.failed(errors.StorageContention())
        trouble.failed(errors.StorageError())
        trouble.worked()
    said = [r.getMessage() for r in caplog.records]
    assert not any("unreachable" in line for line in said[:1]), said
    assert "rolled back" in said[0]
    assert any("unreachable" in line for line in said[1:]), said  # the outage, said
    assert "works again" in said[-1]
