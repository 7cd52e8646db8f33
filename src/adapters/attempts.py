"""Wrong-password counts for the sign-in throttle, in a Litestar store: the process's memory by
default, Redis when several instances must share them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from litestar.stores.base import Store

from adapters.shared_state import FallbackStore, update_atomically

if TYPE_CHECKING:
    from redis.asyncio import Redis


class StorePasswordAttempts:
    """One key per account (or unknown login): ``{"failures": n, "last": iso time}``, dropped
    by the store ``forget_after`` the last failure.

    Guesses sent all at once were each checked while the first ones hashed (a real server
    checked 69 of 80): every one had read "no failures yet". Now the checks of one key take
    turns in this process (``one_at_a_time``), each seeing the ones before; and a check
    reserves its try (counts it as a failure, until a right password clears the count)
    before hashing, atomically (in Redis by ``WATCH``/``MULTI``), for the checks that other
    instances run at the same time. In Redis, the time since the last failure is what Redis'
    clock says (the key is kept ``forget_after`` from each failure: ``forget_after`` less its
    TTL), not the hosts': ``last`` is what the clock of the instance that wrote it said.

    While Redis is away, each instance counts in its own memory (see ``shared_state``); when
    Redis answers again, those counts are merged into Redis' (the larger count, and the later
    failure: the longer time left) and dropped from memory."""

    def __init__(self, store: Store, namespace: str = "password-attempts") -> None:
        self._store = store
        self._prefix = f"{namespace}:"
        self._checks = _KeyedLocks()
        self._updates = _KeyedLocks()
        if isinstance(store, FallbackStore):
            store.write_back_with(_merge_into_redis)

    def one_at_a_time(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._checks.hold(key)

    async def failures(self, key: str) -> tuple[int, datetime | None]:
        """How many wrong passwords in a row, and when the last one was (what tests look at:
        checks go through ``reserve``)."""
        return _parse(await self._store.get(self._prefix + key))

    async def reserve(
        self,
        key: str,
        now: datetime,
        *,
        forget_after: timedelta,
        wait_for: Callable[[int, datetime | None], timedelta | None],
    ) -> timedelta | None:
        def change(raw: bytes | None, left: float | None) -> tuple[timedelta | None, str | None]:
            failures, last = _parse(raw)
            if last is not None and left is not None:
                # In Redis: the time since the last failure by Redis' clock (the key is kept
                # ``forget_after`` from each failure), not by the clock of the host that
                # wrote ``last``, which may be minutes or hours off this one's.
                last = now - max(timedelta(0), forget_after - timedelta(seconds=left))
            if last is not None and now - last >= forget_after:
                failures, last = 0, None
            wait = wait_for(failures, last)
            if wait is not None:
                return wait, None
            return None, json.dumps({"failures": failures + 1, "last": now.isoformat()})

        # In memory, the store's read and write are awaited apart: this process's turn for
        # the key keeps other updates out between them (Redis needs no turn, WATCH does it).
        async with self._updates.hold(key):
            return await update_atomically(
                self._store, self._prefix + key, change, int(forget_after.total_seconds())
            )

    async def clear(self, key: str) -> None:
        async with self._updates.hold(key):
            await self._store.delete(self._prefix + key)

    @property
    def keys_in_use(self) -> int:
        """How many keys this process holds a lock for now (none once all are done)."""
        return self._checks.in_use + self._updates.in_use


class _KeyedLocks:
    """An asyncio lock per key, per event loop (tests run several), kept only while in use."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[asyncio.Lock, int]]
        ] = weakref.WeakKeyDictionary()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        lock, users = locks.get(key, (asyncio.Lock(), 0))
        locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = locks[key]
            if users == 1:
                del locks[key]
            else:
                locks[key] = (lock, users - 1)

    @property
    def in_use(self) -> int:
        return sum(len(locks) for locks in self._locks.values())


# The counts kept in an instance's memory during an outage, merged into Redis' when it answers
# again, in one step (nothing else runs in Redis meanwhile): the larger count, and the later
# failure, the one with more time left (by Redis' clock for its own). KEYS: the keys' names;
# ARGV: for each, the failures, the milliseconds left and the time of the last failure, as
# the instance kept them. The value is written as ``json.dumps`` writes it.
_MERGE = """
for i, name in ipairs(KEYS) do
  local failures = tonumber(ARGV[3 * i - 2])
  local left = tonumber(ARGV[3 * i - 1])
  local last = ARGV[3 * i]
  local ok, held = pcall(cjson.decode, redis.call('GET', name) or 'null')
  if ok and type(held) == 'table' and type(held.failures) == 'number'
      and type(held.last) == 'string' then
    failures = math.max(failures, held.failures)
    local held_left = redis.call('PTTL', name)
    if held_left > left then
      last, left = held.last, held_left
    end
  end
  redis.call('SET', name, string.format('{"failures": %d, "last": %s}', failures,
    cjson.encode(last)), 'PX', left)
end
"""


async def _merge_into_redis(redis: Redis, entries: list[tuple[str, bytes, int]]) -> None:
    names: list[str] = []
    args: list[int | str] = []
    for name, value, left in entries:
        failures, last = _parse(value)
        if last is not None and failures > 0 and left > 0:
            names.append(name)
            args += [failures, left, last.isoformat()]
    if names:
        await redis.eval(_MERGE, len(names), *names, *args)


def _parse(raw: bytes | None) -> tuple[int, datetime | None]:
    if raw is None:
        return 0, None
    try:
        data = json.loads(raw)
        return int(data["failures"]), datetime.fromisoformat(data["last"])
    except (ValueError, KeyError, TypeError):
        return 0, None  # unreadable: start over rather than lock the account
