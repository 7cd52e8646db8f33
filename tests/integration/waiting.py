"""Waits the integration tests share: for a server process to be ready, for a transaction to
wait for a lock. Each is a deadline only (generous: the suite runs with both cores busy), never
a measurement; each looks often, so that a test goes on as soon as it can."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, text

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


async def until_it_waits_for_a_lock(database: SqlDatabase, task: asyncio.Task[Any]) -> None:
    """Until a transaction waits for a row lock (or ``task`` is over without waiting)."""
    waiting = select(func.count()).where(text("wait_event_type = 'Lock'"))
    waiting = waiting.select_from(text("pg_stat_activity"))
    async with database.engine.connect() as conn:
        while not task.done():
            seen = (await conn.execute(waiting)).scalar_one()
            await conn.rollback()  # pg_stat_activity is read once per transaction
            if seen:
                return
            await asyncio.sleep(POLL_SECONDS)
