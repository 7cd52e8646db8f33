"""The ``QueueListener`` where nothing tells across processes (SQLite, the memory store)."""

from __future__ import annotations

from collections.abc import Callable


class NoQueueListener:
    """Workers rely on polling, and on being woken by their own process (the web app wakes
    its worker after a form that may have queued an email)."""

    async def listen(self, wake: Callable[[], None]) -> None:
        return None
