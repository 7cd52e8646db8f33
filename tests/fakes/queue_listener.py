"""A ``QueueListener`` that wraps the real one and counts the wake-ups it gives (the tests of
several workers on one Postgres)."""

from __future__ import annotations

from collections.abc import Callable

from domain.ports import QueueListener


class CountingListener:
    """The instance's real listener, counting the wake-ups it gives."""

    def __init__(self, inner: QueueListener) -> None:
        self.inner, self.wakes = inner, 0

    async def listen(self, wake: Callable[[], None]) -> None:
        def counted() -> None:
            self.wakes += 1
            wake()

        await self.inner.listen(counted)
