"""How a worker hears that work was queued for it: from its own process through the
``QueueBell`` (a committed transaction that queued work rings it), and, on Postgres, from
every instance through LISTEN/NOTIFY (``adapters.sql.notifications``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from domain.ports import QueueListener

# The queues' channels, Postgres NOTIFY channels too.
EMAIL_QUEUE_CHANNEL = "taskflow_link_email_queue"
ROLE_QUEUE_CHANNEL = "taskflow_link_role_queue"  # the Discord role changes
WEBHOOK_QUEUE_CHANNEL = "taskflow_link_webhook_queue"
ROLE_CONNECTION_CHANNEL = "taskflow_link_role_connections"  # Linked Roles made due

log = logging.getLogger("taskflow_link.queues")

_Subscriber = tuple[asyncio.AbstractEventLoop, Callable[[], None]]


class QueueBell:
    """This process's wake-ups: the units of work ring the channels of the queues a committed
    transaction wrote to (nothing for a rollback, nothing for a request that queued nothing),
    and each subscribed worker is woken on its own event loop (a worker and the request that
    queued may run on different loops in different threads)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._guard = threading.Lock()

    def subscribe(self, channel: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (on the running loop) at each ring of ``channel``, until the returned
        function is called."""
        entry = (asyncio.get_running_loop(), wake)
        with self._guard:
            self._subscribers.setdefault(channel, []).append(entry)

        def unsubscribe() -> None:
            with self._guard, contextlib.suppress(ValueError):
                self._subscribers.get(channel, []).remove(entry)

        return unsubscribe

    def ring(self, channels: Iterable[str]) -> None:
        with self._guard:
            subscribers = [s for c in set(channels) for s in self._subscribers.get(c, ())]
        for loop, wake in subscribers:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
                loop.call_soon_threadsafe(wake)


class BellListener:
    """``QueueListener`` for one queue: this process's bell, and what ``across`` hears from
    other instances (Postgres), if anything does."""

    def __init__(self, bell: QueueBell, channel: str, across: QueueListener | None = None) -> None:
        self._bell, self._channel = bell, channel
        self.across = across

    async def listen(self, wake: Callable[[], None]) -> None:
        unsubscribe = self._bell.subscribe(self._channel, wake)
        try:
            if self.across is not None:
                try:
                    await self.across.listen(wake)
                except Exception:
                    # A bug (outages are survived inside): this process's wake-ups go on.
                    log.exception("listening to %s across instances stopped", self._channel)
            await asyncio.Event().wait()  # until cancelled
        finally:
            unsubscribe()
