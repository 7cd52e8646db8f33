"""Waits the integration tests share: for a server process to be ready, for a task's transaction
to wait for a lock. Each is a deadline only (generous: the suite runs with both cores busy), never
a measurement; each looks often, so that a test goes on as soon as it can."""

from __future__ import annotations

import asyncio
import subprocess
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER
from sqlalchemy.pool import Pool

from adapters.sql import SqlDatabase

# How often a wait looks again.
POLL_SECONDS = 0.05
# How long a server process may take to start.
START_UP_SECONDS = 90.0


class NotReadyInTime(AssertionError):
    """The process still ran, not ready, when the wait's deadline came."""


def until_ready(
    process: subprocess.Popen[Any],
    ready: Callable[[], bool],
    *,
    within: float = START_UP_SECONDS,
) -> bool:
    """Until ``ready()`` while ``process`` runs: ``True`` once ready, ``False`` if the process
    ended first (its output says why: a port another process took, say). The process is
    checked again once ``ready()`` says yes: a server of another process that took the port
    answers there for one that ended. ``NotReadyInTime`` past ``within`` seconds."""
    deadline = time.monotonic() + within
    while process.poll() is None:
        if ready() and process.poll() is None:
            return True
        if time.monotonic() > deadline:
            raise NotReadyInTime(f"not ready within {within} s")
        time.sleep(POLL_SECONDS)
    return False


# The Postgres server processes of the connections each task holds (checked out of any pool,
# from the pool's checkout to its checkin): the lock a task waits for is its own connection's.
_backends: weakref.WeakKeyDictionary[asyncio.Task[Any], set[int]] = weakref.WeakKeyDictionary()
_holder: dict[int, asyncio.Task[Any]] = {}  # a connection (its id) to the task holding it


def _server_pid(dbapi_connection: Any) -> int | None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    get_pid = getattr(driver, "get_server_pid", None)  # asyncpg's
    return int(get_pid()) if get_pid is not None else None


@event.listens_for(Pool, "checkout")
def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop (a synchronous engine)
        return
    pid = _server_pid(dbapi_connection)
    if task is None or pid is None:
        return
    _backends.setdefault(task, set()).add(pid)
    _holder[id(dbapi_connection)] = task


@event.listens_for(Pool, "checkin")
def _checked_in(dbapi_connection: Any, record: Any) -> None:
    task = _holder.pop(id(dbapi_connection), None)
    pid = _server_pid(dbapi_connection) if dbapi_connection is not None else None
    if task is not None and pid is not None:
        _backends.get(task, set()).discard(pid)


# Those of the given server processes waiting for another's lock (a row's, a table's).
_BLOCKED = text(
    "SELECT pid FROM unnest(:pids) AS pid WHERE cardinality(pg_blocking_pids(pid)) > 0"
).bindparams(bindparam("pids", type_=ARRAY(INTEGER)))


async def until_it_waits_for_a_lock(database: SqlDatabase, task: asyncio.Task[Any]) -> None:
    """Until ``task``'s own transaction waits for a lock another holds (or ``task`` is over
    without waiting): a connection it checked out of a pool on ``database``'s server, whose
    server process Postgres says is blocked. Another test's or task's waits do not count; nor
    do those of a task ``task`` starts (only its own connections are known)."""
    async with database.engine.connect() as conn:
        while not task.done():
            pids = sorted(_backends.get(task, ()))
            if pids and (await conn.execute(_BLOCKED, {"pids": pids})).first() is not None:
                return
            await asyncio.sleep(POLL_SECONDS)
