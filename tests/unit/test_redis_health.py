"""``RedisHealth`` and a call past the Redis URL's ``max_connections`` (no outage)."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import MaxConnectionsError, NoPermissionError, ResponseError

from adapters.shared_state import RedisHealth


async def _busy() -> str:
    raise MaxConnectionsError("Too many connections")


async def _shared() -> str:
    return "shared"


async def _local() -> str:
    return "local"


async def test_what_a_call_past_max_connections_kept_goes_back_at_most_once_every_retry_after() -> (
    None
):
    """Such a call uses this process's memory (an interaction id kept there only); a later
    call that gets a connection writes back what it remembers, as after an outage. Not
    after every burst: at most once every ``retry_after`` (it writes all it remembers)."""
    now = [100.0]
    health = RedisHealth(retry_after=2.0, clock=lambda: now[0])
    written: list[float] = []

    async def write_back() -> None:
        written.append(now[0])

    health.on_recovery(write_back)
    assert await health.call(_shared, _local) == "shared"
    assert written == []  # nothing kept in memory only
    assert await health.call(_busy, _local) == "local"
    assert not health.down
    assert await health.call(_shared, _local) == "shared"
    assert written == [100.0]
    assert await health.call(_busy, _local) == "local"
    assert await health.call(_shared, _local) == "shared"
    assert written == [100.0]  # within retry_after of the last
    now[0] = 102.0
    assert await health.call(_shared, _local) == "shared"
    assert written == [100.0, 102.0]  # the one kept meanwhile
    now[0] = 200.0
    assert await health.call(_shared, _local) == "shared"
    assert written == [100.0, 102.0]  # nothing kept since


async def test_a_write_back_past_max_connections_is_tried_again_and_starts_no_outage() -> None:
    now = [100.0]
    health = RedisHealth(retry_after=2.0, clock=lambda: now[0])
    tries: list[float] = []

    async def write_back() -> None:
        tries.append(now[0])
        if len(tries) == 1:
            raise MaxConnectionsError("Too many connections")

    health.on_recovery(write_back)
    assert await health.call(_busy, _local) == "local"
    assert await health.call(_shared, _local) == "shared"
    assert not health.down
    now[0] = 102.0
    assert await health.call(_shared, _local) == "shared"
    assert tries == [100.0, 102.0]


async def test_a_write_back_redis_refuses_is_said_and_starts_no_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis answered, and refused a write-back (an ACL user without ``@scripting``, which
    the password counts' merge uses; a full Redis refusing writes): an outage would start
    again at every recovery. It is logged, and the other write-backs still run."""
    health = RedisHealth(retry_after=2.0, clock=lambda: 100.0)
    ran: list[str] = []

    async def refused() -> None:
        ran.append("refused")
        raise NoPermissionError("this user has no permissions to run the 'eval' command")

    async def full() -> None:
        ran.append("full")
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    async def taken() -> None:
        ran.append("taken")

    for write_back in (refused, full, taken):
        health.on_recovery(write_back)
    caplog.set_level(logging.ERROR, logger="taskflow_link.redis")
    assert await health.call(_busy, _local) == "local"
    assert await health.call(_shared, _local) == "shared"
    assert ran == ["refused", "full", "taken"]
    assert not health.down
    assert "no permissions to run the 'eval' command" in caplog.text
    assert "OOM command not allowed" in caplog.text
