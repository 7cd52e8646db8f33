"""Postgres LISTEN/NOTIFY for the email queue, so that every instance's worker hears at once
about an email queued by any instance (queuing one sends a NOTIFY in its transaction, see
``SqlOutgoingEmails``), instead of finding it at its next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
)

# How the listening connection shows in pg_stat_activity (operators, and the tests).
LISTENER_APPLICATION_NAME = "taskflow-link email listener"
ROLE_LISTENER_APPLICATION_NAME = "taskflow-link role listener"
WEBHOOK_LISTENER_APPLICATION_NAME = "taskflow-link webhook listener"
ROLE_CONNECTION_LISTENER_APPLICATION_NAME = "taskflow-link role-connection listener"

# Each queue's listener logs under its worker's logger, so that whoever follows (or quiets)
# one queue's logs gets its listener's too: all of them logged as the email queue's.
_LOGGERS = {
    EMAIL_QUEUE_CHANNEL: "taskflow_link.email",
    ROLE_QUEUE_CHANNEL: "taskflow_link.roles",
    WEBHOOK_QUEUE_CHANNEL: "taskflow_link.webhooks",
    ROLE_CONNECTION_CHANNEL: "taskflow_link.role_connections",
}

# What an unreachable, restarting or overloaded database looks like.
_OUTAGES = (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PostgresQueueListener:
    """``QueueListener`` on a dedicated connection (outside the pool) that LISTENs on the
    queue's channel. The connection is checked every ``check_seconds`` (a connection that
    died silently would otherwise never hear anything again); when it is lost, this logs
    once and reconnects after ``retry_seconds[0]``, doubling the wait after each failure up to
    ``retry_seconds[1]``. Meanwhile the worker keeps polling, so nothing is lost, only late.
    """

    def __init__(
        self,
        url: str,
        channel: str = EMAIL_QUEUE_CHANNEL,
        *,
        application_name: str = LISTENER_APPLICATION_NAME,
        connect_timeout: float = 5.0,
        check_seconds: float = 30.0,
        retry_seconds: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._url, self._channel, self._application_name = url, channel, application_name
        # For the log: "email queue listener", "webhook queue listener".
        self._label = application_name.removeprefix("taskflow-link ").replace(" ", " queue ", 1)
        self._connect_timeout, self._check_seconds = connect_timeout, check_seconds
        self._retry_first, self._retry_max = retry_seconds
        self._log = logging.getLogger(_LOGGERS.get(channel, "taskflow_link.queues"))

    async def listen(self, wake: Callable[[], None]) -> None:
        engine = create_async_engine(
            self._url,
            poolclass=NullPool,  # one connection of its own, closed when it is done
            connect_args={
                "timeout": self._connect_timeout,
                "server_settings": {"application_name": self._application_name},
            },
        )
        loop, log = asyncio.get_running_loop(), self._log
        delay, outage = self._retry_first, False  # outage: already logged
        try:
            while True:
                started, listening = loop.time(), False

                def now_listening() -> None:
                    nonlocal listening, outage
                    listening = True
                    if outage:
                        log.info("%s: listening again", self._label)
                    outage = False

                problem = "lost its database connection"
                try:
                    await self._listen_until_lost(engine, wake, now_listening)
                except _OUTAGES as exc:
                    if not listening:
                        problem = f"cannot reach the database ({type(exc).__name__})"
                except Exception:
                    # A bug rather than an outage: say so loudly, then keep trying all the same.
                    if not outage:
                        log.exception("%s failed; workers keep polling", self._label)
                    problem, outage = "failed", True
                if outage:
                    log.debug("%s %s; retrying", self._label, problem)
                else:
                    log.warning("%s %s; workers keep polling meanwhile", self._label, problem)
                    outage = True
                # Back off, from the shortest wait again after a connection that held a while
                # (one that keeps dropping at once must not make this a busy loop).
                if listening and loop.time() - started >= self._retry_max:
                    delay = self._retry_first
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
        finally:
            await engine.dispose()

    async def _listen_until_lost(
        self, engine: AsyncEngine, wake: Callable[[], None], now_listening: Callable[[], None]
    ) -> None:
        async with engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's
            lost = asyncio.Event()
            driver.add_termination_listener(lambda _connection: lost.set())
            try:
                await driver.add_listener(self._channel, lambda *_notification: wake())
                now_listening()
                wake()  # for what was queued while nobody listened
                while not lost.is_set():
                    # Not wait_for, which in Python 3.11 loses a cancellation that comes in the
                    # turn the connection is lost: the listener then went on reconnecting.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._check_seconds):
                            await lost.wait()
                        break
                    await driver.execute("SELECT 1", timeout=self._connect_timeout)
            finally:
                # Drop the connection without a goodbye: it may be dead, or half-dead (a
                # graceful close could then wait for the network's own timeout).
                with contextlib.suppress(Exception):
                    await conn.invalidate()
