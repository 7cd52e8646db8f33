"""Wrong-password counts for the sign-in throttle, in a Litestar store: the process's memory by
default, Redis when several instances must share them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from litestar.stores.base import Store

from adapters.shared_state import update_atomically


class StorePasswordAttempts:
    """One key per account (or unknown login): ``{"failures": n, "last": iso time}``, dropped
    by the store ``forget_after`` the last failure.

    A check reserves its try (counts it as a failure) before the password is hashed, and a
    right password clears the count: a burst of guesses sent at once is counted one by one,
    not all read as "no failures yet" while the first hashes run (a real server checked 69
    of 80). A reservation is atomic: in Redis by ``WATCH``/``MULTI`` (whichever instances
    the guesses reach), in memory by this process's turn for the key. While Redis is away,
    each instance counts in its own memory (see ``shared_state``)."""

    def __init__(self, store: Store, namespace: str = "password-attempts") -> None:
        self._store = store
        self._prefix = f"{namespace}:"
        # Per event loop (tests run several), per key while some check holds or awaits it.
        self._turns: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[asyncio.Lock, int]]
        ] = weakref.WeakKeyDictionary()

    async def failures(self, key: str) -> tuple[int, datetime | None]:
        return _parse(await self._store.get(self._prefix + key))

    async def reserve(
        self,
        key: str,
        now: datetime,
        *,
        forget_after: timedelta,
        wait_for: Callable[[int, datetime | None], timedelta | None],
    ) -> timedelta | None:
        def change(raw: bytes | None) -> tuple[timedelta | None, str | None]:
            failures, last = _parse(raw)
            if last is not None and now - last >= forget_after:
                failures, last = 0, None
            wait = wait_for(failures, last)
            if wait is not None:
                return wait, None
            return None, json.dumps({"failures": failures + 1, "last": now.isoformat()})

        async with self._turn(key):
            return await update_atomically(
                self._store, self._prefix + key, change, int(forget_after.total_seconds())
            )

    async def clear(self, key: str) -> None:
        async with self._turn(key):
            await self._store.delete(self._prefix + key)

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """This process's turn to read and write ``key`` (the lock exists while in use)."""
        turns = self._turns.setdefault(asyncio.get_running_loop(), {})
        lock, users = turns.get(key, (asyncio.Lock(), 0))
        turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = turns[key]
            if users == 1:
                del turns[key]
            else:
                turns[key] = (lock, users - 1)


def _parse(raw: bytes | None) -> tuple[int, datetime | None]:
    if raw is None:
        return 0, None
    try:
        data = json.loads(raw)
        return int(data["failures"]), datetime.fromisoformat(data["last"])
    except (ValueError, KeyError, TypeError):
        return 0, None  # unreadable: start over rather than lock the account
