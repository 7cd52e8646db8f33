"""State that is not in the database: rate limits, sign-in throttles and the interaction replay
guard. In one process it lives in memory (Litestar's ``MemoryStore``, swept of expired
entries, and window counters); with Redis it is shared by every instance (Litestar's
``RedisStore``, ``INCR`` for the rate limits' counters, and ``SET NX`` for the replay guard).

When Redis does not answer, each call falls back to this process's memory at once: limits then
count per instance and a replay is only recognised by the instance that saw the original, until
Redis answers again (tried again after ``retry_after`` seconds, by one call at a time, and by
a task of this process's own while calls are rare; the interaction ids this process remembers
and the rate limits' and sign-in throttles' counts it kept meanwhile are then written back).
The outage and the recovery are logged once each; a request never fails because of Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

from domain.ports import DISCORD_PAUSE_MAX

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("taskflow_link.redis")
T = TypeVar("T")
PREFIX = "taskflow-link"
WRITE_BACK_BATCH = 1000  # interaction ids per round trip, when Redis answers again


def _redis_down() -> tuple[type[BaseException], ...]:
    """What an unreachable, restarting or overloaded Redis looks like (redis is imported only
    by processes that use it)."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    return (RedisError, OSError, TimeoutError)


def _pool_exhausted() -> type[BaseException]:
    """A call past the URL's ``max_connections``: no outage (a burst of requests, which anyone
    can send, made one: the whole process then counted in its own memory until the retry),
    that call only uses this process's memory."""
    from redis.exceptions import MaxConnectionsError  # noqa: PLC0415

    return MaxConnectionsError


class RedisHealth:
    """Whether to try Redis now; logs the first failure of an outage and the recovery.

    While Redis is down, one call at a time tries it again (every ``retry_after`` seconds),
    the others use the fallback meanwhile: against a Redis that takes connections but does
    not answer, every call in the window after ``retry_after`` waited out the timeout on a
    connection of its own (an attacker's review: a hundred at once, every two seconds).

    With a ``probe`` (a write to Redis), a task of its own tries it too, every ``retry_after``
    seconds from the first failure until Redis answers: what this process kept in its memory
    meanwhile (the interaction ids it saw, its counts) goes back to Redis then, not whenever a
    call next happens to use Redis (an instance that serves only pages may make none for
    long, and a replay to another instance passed meanwhile). ``stop`` ends that task."""

    def __init__(
        self,
        *,
        retry_after: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], Awaitable[object]] | None = None,
    ):
        self._retry_after = retry_after
        self._clock = clock
        self._down_since: float | None = None
        self._next_try = 0.0
        self._probing = False  # a call is trying Redis while it is down
        self._errors = _redis_down()
        self._busy = _pool_exhausted()
        # A call past max_connections kept something in this process's memory only (a count;
        # the replay guard's pool waits instead): a call that gets a connection writes it back,
        # at most once every ``retry_after`` (all this process remembers: a burst after burst
        # did not repeat it).
        self._kept_locally = False
        self._next_write_back = 0.0
        self._on_recovery: list[Callable[[], Awaitable[None]]] = []
        self._probe = probe
        self._retrying: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def worth_trying(self) -> bool:
        """Up, or down with no call trying it and its retry due."""
        return self._down_since is None or (not self._probing and self._clock() >= self._next_try)

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "Redis is unreachable (%s): rate limits, sign-in throttles, interaction "
                "replay protection and Discord's rate limits met by other instances now count "
                "in this process only, until it answers again",
                type(exc).__name__,
            )
        self._next_try = now + self._retry_after
        self._keep_trying()

    def _keep_trying(self) -> None:
        """Starts the task that tries Redis again while it is down (one per process's loop)."""
        if self._probe is None or self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the calls find Redis back
            return
        task = self._retrying
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._retrying = loop.create_task(self._retry(self._probe), name="redis retry")

    async def _retry(self, probe: Callable[[], Awaitable[object]]) -> None:
        async def nothing() -> None:
            return None

        while self.down:
            # When its retry is due; a little later while a call is trying it.
            await asyncio.sleep(max(self._next_try - self._clock(), self._retry_after / 10, 0.05))
            if self.down and self.worth_trying():
                await self.call(probe, nothing)

    async def stop(self) -> None:
        """Ends the task that tries Redis again (at shutdown), and starts none after."""
        self._stopped = True
        task, self._retrying = self._retrying, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def on_recovery(self, catch_up: Callable[[], Awaitable[None]]) -> None:
        """``catch_up()`` when Redis answers again after an outage, before the call that
        found it back returns: what this process kept in its memory meanwhile goes to Redis
        (a Redis error there starts another outage)."""
        self._on_recovery.append(catch_up)

    def succeeded(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Redis answers again after %.0f s: limits and replay protection are shared again",
                self._clock() - self._down_since,
            )
            self._down_since = None

    def _write_back_due(self) -> bool:
        """Whether a call past max_connections kept something in memory only, and its write
        back is due (then it is taken: the next one comes ``retry_after`` later at the soonest)."""
        now = self._clock()
        if not self._kept_locally or now < self._next_write_back:
            return False
        self._kept_locally, self._next_write_back = False, now + self._retry_after
        return True

    async def _catch_up(self) -> None:
        from redis.exceptions import ResponseError  # noqa: PLC0415 - only with Redis

        try:
            for catch_up in self._on_recovery:
                try:
                    await catch_up()
                except ResponseError as exc:
                    # Redis answered, and refused this write-back (an ACL user without a
                    # command it uses, a full Redis that refuses writes): no outage, which
                    # would start again at every recovery; said, and the next goes on.
                    log.error("Redis refused to take back what this process kept: %s", exc)
        except self._busy:  # the pool's connections all in use: the next call tries again
            self._kept_locally = True
        except self._errors as exc:  # gone again: another outage, said as such
            self.failed(exc)

    async def call(
        self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        """``shared()`` on Redis, or ``local()`` when Redis is down (or just went down)."""
        if self.worth_trying():
            probe = self._down_since is not None  # this call is the one trying it again
            self._probing = self._probing or probe
            try:
                result = await shared()
            except self._busy:  # this call only: the pool's connections are all in use
                self._kept_locally = True  # (written back by the next call that gets one)
            except self._errors as exc:
                self.failed(exc)
            else:
                # Whichever call finds Redis back (this one, or one under way since before
                # the outage) writes back what this process kept meanwhile: a call under way
                # that only said so left those ids in memory, and a replay passed elsewhere.
                # So does the next call after one past max_connections (no outage: without
                # it, an id seen then stayed in this memory, and a replay passed elsewhere).
                back = self._down_since is not None or self._write_back_due()
                self.succeeded()  # first: what this process sees from now on is shared
                if back:
                    await self._catch_up()
                return result
            finally:
                if probe:
                    self._probing = False
        return await local()


# What an atomic update makes of a stored value (None: there is none) and of the seconds it
# has left in Redis, by Redis' clock (None: in this process's memory, or no expiry): its
# result, and the value to store (None: leave it as it is).
Change = Callable[[bytes | None, float | None], tuple[T, str | None]]


async def update_atomically(store: Store, key: str, change: Change[T], expires_in: int) -> T:
    """Read ``key``, let ``change`` decide, write what it says, with no other write to ``key``
    in between: on Redis, by any instance (``WATCH``/``MULTI``, tried again when another
    instance wrote first); in memory, by the caller, who must take its own turn for ``key``
    in this process (the store's reads and writes are awaited, others may run meanwhile)."""
    if isinstance(store, FallbackStore):
        return await store.update(key, change, expires_in)
    return await _update_in(store, key, change, expires_in)


async def _update_in(store: Store, key: str, change: Change[T], expires_in: int) -> T:
    result, new = change(await store.get(key), None)
    if new is not None:
        await store.set(key, new, expires_in=expires_in)
    return result


async def _update_on_redis(redis: Redis, name: str, change: Change[T], expires_in: int) -> T:
    from redis.exceptions import WatchError  # noqa: PLC0415

    # Leaving the pipeline's block resets it (UNWATCH when nothing was written).
    async with redis.pipeline(transaction=True) as pipe:
        while True:  # a WatchError means another instance's write went through: progress
            try:
                await pipe.watch(name)
                raw = await pipe.get(name)
                left = await pipe.pttl(name)  # -2: none; -1: no expiry
                result, new = change(
                    raw.encode() if isinstance(raw, str) else raw,
                    left / 1000 if left >= 0 else None,
                )
                if new is None:
                    return result
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(name, new, ex=expires_in)
                await pipe.execute()
                return result
            except WatchError:
                continue


class SweptMemoryStore(MemoryStore):
    """Litestar's ``MemoryStore`` forgets an expired entry only when that key is read again
    (and ``exists`` says yes to it until then):
    a count kept for each login tried, or for each client address, stayed for good (2,000
    unknown logins left 2,000 entries). This one also drops every expired entry on a write,
    at most once every ``sweep_every`` seconds (one pass over the entries, yielding to the
    event loop every thousand)."""

    __slots__ = ("_clock", "_next_sweep", "_sweep_every")

    def __init__(
        self, *, sweep_every: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._sweep_every = sweep_every
        self._clock = clock
        self._next_sweep = clock() + sweep_every

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        await super().set(key, value, expires_in)
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            await self.delete_expired()

    async def exists(self, key: str) -> bool:
        """Litestar's answers yes for an expired entry not yet read again."""
        return await self.get(key) is not None

    def __len__(self) -> int:
        """Entries held, expired or not (for tests and the curious)."""
        return len(self._store)

    def held(self) -> list[tuple[str, bytes, int, object]]:
        """The entries held and not expired: each key, its value, the milliseconds it has
        left, and a mark for ``forget`` (read at once, no other call in between)."""
        now = datetime.now(tz=UTC)  # Litestar's expiry clock
        return [
            (key, held.data, math.ceil((held.expires_at - now).total_seconds() * 1000), held)
            for key, held in self._store.items()
            if held.expires_at is not None and held.expires_at > now
        ]

    def forget(self, key: str, mark: object) -> None:
        """Drops ``key`` if it holds what ``held`` saw (not when written since)."""
        if self._store.get(key) is mark:
            del self._store[key]


# The clock of the rate limits' windows in memory (a name tests can move on).
window_clock = time.monotonic


class MemoryWindowCounter:
    """Hits per key in fixed windows, in this process: a key's first hit opens a window of
    ``seconds``; hits within it count up from 1; the next hit after it opens a new one. No
    await between reading and writing a count (and a lock for other threads' loops): hits at
    once are counted one by one. Ended windows are swept on a hit, at most once a minute."""

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or window_clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (hits, window ends at)
        self._guard = threading.Lock()
        self._next_sweep = self._clock() + 60.0

    async def hit(self, key: str, seconds: int) -> tuple[int, int]:
        """(the hits in the key's window, this one included; whole seconds until it ends)."""
        now = self._clock()
        with self._guard:
            if now >= self._next_sweep:
                self._next_sweep = now + 60.0
                self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            hits, ends = self._windows.get(key, (0, 0.0))
            if ends <= now:
                hits, ends = 0, now + seconds
            self._windows[key] = (hits + 1, ends)
        return hits + 1, max(1, math.ceil(ends - now))

    def running(self) -> list[tuple[str, tuple[int, float], int]]:
        """The windows not ended: each key, its window (a mark for ``forget``) and the
        milliseconds it has left."""
        now = self._clock()
        with self._guard:
            return [
                (key, window, math.ceil((window[1] - now) * 1000))
                for key, window in self._windows.items()
                if window[1] > now
            ]

    def forget(self, key: str, window: tuple[int, float]) -> None:
        """Drops ``key``'s window if it is still what ``running`` saw (no hit since)."""
        with self._guard:
            if self._windows.get(key) == window:
                del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


class WindowCounter:
    """``MemoryWindowCounter``'s counts shared by every instance through Redis: one round trip
    a hit (``SET NX EX``, ``INCR`` and ``TTL`` in one ``MULTI``: atomic, so simultaneous hits
    on any instances are each counted once, and nothing waits for another key's hits). While
    Redis is down, this process's memory counts; when Redis answers again, the hits it counted
    meanwhile are added to Redis' window for each key (one opened that ends when this
    process's would, if Redis has none) and dropped from memory."""

    def __init__(
        self, redis: Redis, health: RedisHealth, namespace: str, *, prefix: str = PREFIX
    ) -> None:
        self._redis, self._health, self._prefix = redis, health, f"{prefix}:{namespace}:"
        self._local = MemoryWindowCounter()
        health.on_recovery(self._write_back)

    async def _write_back(self) -> None:
        running = self._local.running()
        for start in range(0, len(running), WRITE_BACK_BATCH):
            batch = running[start : start + WRITE_BACK_BATCH]
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, (hits, _), left in batch:
                    pipe.set(self._prefix + key, 0, px=left, nx=True)
                    pipe.incrby(self._prefix + key, hits)
                await pipe.execute()
            for key, window, _ in batch:
                self._local.forget(key, window)
        if running:
            log.info("%d rate-limit counts this process kept added to Redis'", len(running))

    async def hit(self, key: str, seconds: int) -> tuple[int, int]:
        return await self._health.call(
            lambda: self._shared_hit(self._prefix + key, seconds),
            lambda: self._local.hit(key, seconds),
        )

    async def _shared_hit(self, name: str, seconds: int) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(name, 0, ex=seconds, nx=True)
            pipe.incr(name)
            pipe.ttl(name)
            _, hits, ttl = await pipe.execute()
        if ttl < 0:  # no expiry (it cannot happen here; but a count kept for good refuses
            await self._redis.expire(name, seconds)  # its client for good)
            ttl = seconds
        return int(hits), max(1, int(ttl))  # TTL rounds: under half a second left reads 0


# Writes entries a store kept in memory during an outage back to Redis (``write_back_with``).
WriteBack = Callable[["Redis", list[tuple[str, bytes, int]]], Awaitable[None]]


class FallbackStore(Store):
    """A Litestar store on Redis that uses a memory store while Redis is down."""

    def __init__(
        self,
        shared: Store,
        local: Store,
        health: RedisHealth,
        *,
        redis: Redis | None = None,
        name_of: Callable[[str], str] = str,
    ) -> None:
        """``redis`` and ``name_of`` (a key's name in Redis, as ``shared`` names it): what
        ``update`` needs to update a value atomically."""
        self._shared = shared
        self._local = local
        self._health = health
        self._redis = redis
        self._name_of = name_of
        self._write_back: WriteBack | None = None

    def write_back_with(self, write: WriteBack) -> None:
        """When Redis answers again after an outage, what this store kept in this process's
        memory meanwhile goes back to Redis by ``write(redis, entries)`` (in batches of
        ``WRITE_BACK_BATCH``: each key's name in Redis, its value and the milliseconds it has
        left), which merges it with what Redis holds; then it is dropped from memory (unless
        written again since), so that the next outage starts from nothing rather than from
        counts Redis has moved on from. One ``write`` per store (a later one replaces it)."""
        if self._redis is None or not isinstance(self._local, SweptMemoryStore):
            raise RuntimeError("this store was made without its Redis client")
        if self._write_back is None:
            self._health.on_recovery(self._catch_up)
        self._write_back = write

    async def _catch_up(self) -> None:
        local, redis, write = self._local, self._redis, self._write_back
        if not isinstance(local, SweptMemoryStore) or redis is None or write is None:
            return
        held = local.held()  # before any await: what was kept until now
        for start in range(0, len(held), WRITE_BACK_BATCH):
            batch = held[start : start + WRITE_BACK_BATCH]
            await write(redis, [(self._name_of(key), value, ms) for key, value, ms, _ in batch])
            for key, _, _, mark in batch:
                local.forget(key, mark)
        if held:
            log.info("%d entries this process kept in its memory merged into Redis", len(held))

    async def update(self, key: str, change: Change[T], expires_in: int) -> T:
        """See ``update_atomically``."""
        redis = self._redis
        if redis is None:
            raise RuntimeError("this store was made without its Redis client")
        return await self._health.call(
            lambda: _update_on_redis(redis, self._name_of(key), change, expires_in),
            lambda: _update_in(self._local, key, change, expires_in),
        )

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        await self._health.call(
            lambda: self._shared.set(key, value, expires_in),
            lambda: self._local.set(key, value, expires_in),
        )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._health.call(
            lambda: self._shared.get(key, renew_for), lambda: self._local.get(key, renew_for)
        )

    async def delete(self, key: str) -> None:
        await self._health.call(lambda: self._shared.delete(key), lambda: self._local.delete(key))

    async def delete_all(self) -> None:
        await self._health.call(self._shared.delete_all, self._local.delete_all)

    async def exists(self, key: str) -> bool:
        return await self._health.call(
            lambda: self._shared.exists(key), lambda: self._local.exists(key)
        )

    async def expires_in(self, key: str) -> int | None:
        return await self._health.call(
            lambda: self._shared.expires_in(key), lambda: self._local.expires_in(key)
        )


class MemoryReplayGuard:
    """Interaction ids seen in this process, each forgotten after its ``ttl``.

    At most ``max_entries`` of them: past that the oldest are forgotten early, while their
    timestamps may still be accepted, and a replay of one was taken as new. So the guard keeps
    the newest timestamp it ever forgot early, and refuses any interaction sent at or before
    it (``sent_at``): the cap bounds memory without reopening a replay. Under such traffic an
    honest interaction sent in that same second is refused too, and the log says why."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000):
        self._clock = clock
        self._max = max_entries
        # key -> (forget at, sent at: the interaction's own timestamp, when known)
        self._seen: OrderedDict[str, tuple[float, float | None]] = OrderedDict()
        self._forgot_until: float | None = None  # newest timestamp forgotten before its ttl

    async def first_time(
        self,
        key: str,
        ttl_seconds: int,
        sent_at: float | None = None,
        *,
        refuse_forgotten: bool = True,
    ) -> bool:
        """``sent_at``: the interaction's timestamp (none for a gateway claim, which only
        counts what is held). ``refuse_forgotten=False``: another store decides (Redis), this
        one only remembers."""
        now = self._clock()
        while self._seen and next(iter(self._seen.values()))[0] <= now:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        forgot = self._forgot_until
        if refuse_forgotten and sent_at is not None and forgot is not None and sent_at <= forgot:
            log.warning(
                "interaction refused as a possible replay: sent at or before %d, the newest "
                "timestamp this process forgot to stay within %d interaction ids (traffic "
                "above what it can hold for their accepted age; Redis holds more)",
                forgot,
                self._max,
            )
            return False
        self._seen[key] = (now + ttl_seconds, sent_at)  # every entry has the same ttl
        while len(self._seen) > self._max:
            _, (_, evicted) = self._seen.popitem(last=False)
            if evicted is not None and (forgot is None or evicted > forgot):
                self._forgot_until = forgot = evicted
        return True

    def remembered(self) -> list[tuple[str, int]]:
        """The ids held, each with the whole seconds left until it is forgotten."""
        now = self._clock()
        return [(key, math.ceil(at - now)) for key, (at, _) in self._seen.items() if at > now]


class RedisReplayGuard:
    """Interaction ids seen by any instance: ``SET key 1 NX EX ttl`` has one winner. Each id
    this instance sees is also kept in its memory: while Redis is away, a replay of one seen
    before the outage is still refused here.

    When Redis answers again, every id this instance remembers goes back to it, for what is
    left of its lifetime (``SET NX``: an entry there stays as it is): those it saw only in its
    memory during the outage, which a replay to another instance would otherwise have passed
    after it, and those Redis lost meanwhile if it restarted empty."""

    def __init__(
        self, redis: Redis, health: RedisHealth, local: MemoryReplayGuard, *, prefix: str = PREFIX
    ) -> None:
        self._redis = redis
        self._health = health
        self._local = local
        self._prefix = f"{prefix}:replay:"
        health.on_recovery(self._write_back)

    async def _write_back(self) -> None:
        remembered = self._local.remembered()  # before any await: what was seen until now
        for start in range(0, len(remembered), WRITE_BACK_BATCH):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, seconds in remembered[start : start + WRITE_BACK_BATCH]:
                    pipe.set(self._prefix + key, b"1", nx=True, ex=seconds)
                await pipe.execute()
        if remembered:
            log.info(
                "%d interaction ids this process remembers written back to Redis", len(remembered)
            )

    async def first_time(self, key: str, ttl_seconds: int, sent_at: float | None = None) -> bool:
        """``sent_at``: see ``MemoryReplayGuard``; only this instance's memory (while Redis
        is away) refuses what it may have forgotten."""

        async def shared() -> bool:
            first = bool(await self._redis.set(self._prefix + key, b"1", nx=True, ex=ttl_seconds))
            # And new to this instance: one that saw it still refuses it after Redis
            # restarted empty (or was flushed).
            held = await self._local.first_time(key, ttl_seconds, sent_at, refuse_forgotten=False)
            return held and first

        return await self._health.call(
            shared, lambda: self._local.first_time(key, ttl_seconds, sent_at)
        )


# The longest pause kept in Redis (see ``SharedDiscordPauses.read``).
_PAUSE_MAX_MS = int(DISCORD_PAUSE_MAX.total_seconds() * 1000)


class RedisDiscordPauses:
    """Discord's rate limits every instance keeps (``SharedDiscordPauses``): one key per
    pause, ``{prefix}:discord-pause:{name}``, which expires when the pause ends (Redis' clock
    counts it, not the hosts'). A pause is lengthened, never shortened (``SET NX`` then
    ``PEXPIRE GT``, in one ``MULTI``). While Redis is down each process keeps its own."""

    def __init__(self, redis: Redis, health: RedisHealth, *, prefix: str = PREFIX) -> None:
        self._redis, self._health, self._prefix = redis, health, f"{prefix}:discord-pause:"

    async def publish(self, pauses: Mapping[str, float]) -> None:
        async def shared() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for name, seconds in pauses.items():
                    milliseconds = min(max(1, math.ceil(seconds * 1000)), _PAUSE_MAX_MS)
                    pipe.set(self._prefix + name, b"1", px=milliseconds, nx=True)
                    pipe.pexpire(self._prefix + name, milliseconds, gt=True)
                await pipe.execute()

        async def local() -> None:
            return None

        await self._health.call(shared, local)

    async def read(self, names: Sequence[str]) -> dict[str, float]:
        async def shared() -> dict[str, float]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.pttl(self._prefix + name)
                left = await pipe.execute()
            found = {
                name: milliseconds
                for name, milliseconds in zip(names, left, strict=True)
                if milliseconds > 0  # -2: none; -1: no expiry (none of ours)
            }
            # Longer than any pause an instance publishes (written by hand, a compromised
            # Redis): lengthened-never-shortened would keep every instance paused for as
            # long as it says. Shortened to the longest, and taken as that.
            beyond = [name for name, milliseconds in found.items() if milliseconds > _PAUSE_MAX_MS]
            if beyond:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name in beyond:
                        pipe.pexpire(self._prefix + name, _PAUSE_MAX_MS, lt=True)
                    await pipe.execute()
                log.warning(
                    "Discord pauses in Redis longer than %s shortened to it: %s",
                    DISCORD_PAUSE_MAX,
                    ", ".join(sorted(beyond)),
                )
            return {
                name: min(milliseconds, _PAUSE_MAX_MS) / 1000
                for name, milliseconds in found.items()
            }

        async def local() -> dict[str, float]:
            return {}

        if not names:
            return {}
        return await self._health.call(shared, local)


class SharedState:
    """Where a process keeps what several instances must agree on (see the module's doc).
    ``prefix`` starts each of its Redis keys: deployments sharing one Redis database need
    one each, or they share their budgets and replay guard."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        timeout: float = 0.5,
        retry_after: float = 2.0,
        prefix: str = PREFIX,
    ):
        self._prefix = prefix
        self.redis: Redis | None = None
        # The replay guard's client: a pool of its own, where a call waits for a connection
        # (up to ``timeout``) when all of them are in use. A call past the other pool's
        # ``max_connections`` uses this process's memory, which a burst of cheap requests
        # (anyone's) picks: for the guard, a replay of an interaction another instance saw
        # was accepted then. Only interactions signed by Discord use this one.
        self.replay_redis: Redis | None = None
        self.health: RedisHealth | None = None
        if redis_url is not None:
            from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415

            redis = self.redis = Redis.from_url(
                redis_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
                health_check_interval=30,
            )
            self.replay_redis = Redis.from_pool(
                BlockingConnectionPool.from_url(
                    redis_url,
                    # As many as the other (the URL's ``max_connections`` wins over it).
                    max_connections=redis.connection_pool.max_connections,
                    timeout=timeout,  # the wait for a connection; then "no connection"
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry_on_timeout=False,
                    health_check_interval=30,
                )
            )

            async def probe() -> object:  # a write, as /readyz's: a read-only Redis is down
                return await redis.set(f"{prefix}:ready", b"1", ex=60, nx=True)

            self.health = RedisHealth(retry_after=retry_after, probe=probe)
        self._stores: dict[str, Store] = {}
        self._counters: dict[str, MemoryWindowCounter | WindowCounter] = {}
        self._local_replays = MemoryReplayGuard()
        self.replay_guard: MemoryReplayGuard | RedisReplayGuard = self._local_replays
        # Discord's rate limits, every instance's (None: each process keeps its own).
        self.discord_pauses: RedisDiscordPauses | None = None
        if self.replay_redis is not None and self.health is not None:
            self.replay_guard = RedisReplayGuard(
                self.replay_redis, self.health, self._local_replays, prefix=prefix
            )
        if self.redis is not None and self.health is not None:
            self.discord_pauses = RedisDiscordPauses(self.redis, self.health, prefix=prefix)

    @property
    def shared(self) -> bool:
        return self.redis is not None

    def store(self, namespace: str) -> Store:
        """One store per purpose, its keys apart from the others'."""
        if namespace not in self._stores:
            store: Store = SweptMemoryStore()
            if self.redis is not None and self.health is not None:
                from litestar.stores.redis import RedisStore  # noqa: PLC0415

                named = f"{self._prefix}:{namespace}"
                shared = RedisStore(self.redis, namespace=named)
                store = FallbackStore(
                    shared,
                    store,
                    self.health,
                    redis=self.redis,
                    name_of=lambda key: f"{named}:{key}",  # as RedisStore does
                )
            self._stores[namespace] = store
        return self._stores[namespace]

    def counter(self, namespace: str) -> MemoryWindowCounter | WindowCounter:
        """Hits per key in fixed windows (rate limits), one counter per purpose."""
        if namespace not in self._counters:
            counter: MemoryWindowCounter | WindowCounter = MemoryWindowCounter()
            if self.redis is not None and self.health is not None:
                counter = WindowCounter(self.redis, self.health, namespace, prefix=self._prefix)
            self._counters[namespace] = counter
        return self._counters[namespace]

    async def differences(self, agreed: dict[str, str]) -> list[str]:
        """Which of ``agreed`` (what every instance must share: a setting's name, and its
        value or a fingerprint of it) differ from those of the instance of this deployment that
        started last with that setting, within a day; and leaves this instance's for the next.
        One key per setting (``{prefix}:agreed-settings:{name}``): a process that has no
        value for one (a gateway bot, for the interactions' maximum age) leaves the last
        one's for the next. None without Redis, or when it does not answer (nothing to
        compare with)."""
        if self.redis is None:
            return []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, value in agreed.items():
                    pipe.set(f"{self._prefix}:agreed-settings:{name}", value, ex=86_400, get=True)
                before = await pipe.execute()
        except _redis_down():
            return []
        differ = []
        for (name, value), stored in zip(agreed.items(), before, strict=True):
            theirs = stored.decode(errors="replace") if isinstance(stored, bytes) else stored
            if isinstance(theirs, str) and theirs != value:  # none yet: SET GET answers nil
                differ.append(name)
        return sorted(differ)

    async def deployment(self) -> str | None:
        """The id this deployment's Redis (under its key prefix) gives it, the same for every
        instance that shares its state with this one: the first to ask makes it (``SET NX``),
        the others read it in the same call (``GET``). A Redis that restarts empty makes a new
        one at the next ask. ``None`` without Redis, or when it does not answer."""
        if self.redis is None:
            return None
        made = secrets.token_hex(8)
        try:
            before = await self.redis.set(f"{self._prefix}:deployment", made, nx=True, get=True)
        except _redis_down():
            return None
        if isinstance(before, bytes):
            return before.decode(errors="replace")
        return before if isinstance(before, str) else made

    async def eviction_policy(self) -> str | None:
        """Redis' ``maxmemory-policy`` when it may evict this service's keys (a ``maxmemory``
        is set and the policy is not ``noeviction``); ``None`` otherwise, without Redis, or
        when Redis does not tell (``CONFIG`` renamed, or not allowed to this ACL user, as on
        most managed Redis)."""
        if self.redis is None:
            return None
        try:
            config = await self.redis.config_get("maxmemory*")
        except _redis_down():
            return None
        said = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in config.items()
        }
        policy = said.get("maxmemory-policy")
        if policy in (None, "noeviction") or said.get("maxmemory", "0") == "0":
            return None
        return policy

    async def problem(self) -> str | None:
        """What is wrong with Redis (``None``: nothing, or no Redis): "unreachable", or that it
        refuses writes. Asked with a write (a key of its own, gone after a minute), not a
        ``PING``: a Redis that is full (``maxmemory`` with ``noeviction``) or read-only (a
        replica, an old primary after a failover) answers ``PING`` but refuses every count
        and replay id, so each instance counted in its own memory while ``/readyz`` said
        "ok". Set only when absent (``NX``), which such a Redis refuses all the same: a write
        (to the AOF and every replica) a minute, not one per probe of each instance and per
        anonymous request to ``/readyz``."""
        if self.redis is None:
            return None
        from redis.exceptions import ConnectionError as Unreachable  # noqa: PLC0415
        from redis.exceptions import TimeoutError as NoAnswer  # noqa: PLC0415

        try:
            await self.redis.set(f"{self._prefix}:ready", b"1", ex=60, nx=True)
        except _pool_exhausted():  # a burst of requests holds every connection: Redis is fine
            return None
        except (Unreachable, NoAnswer, OSError, TimeoutError) as exc:
            self._outage(exc)
            return "unreachable"
        except _redis_down() as exc:  # an answer, but a refusal: OOM, READONLY, NOPERM…
            self._outage(exc)
            return f"refuses writes ({type(exc).__name__})"
        return None

    def _outage(self, exc: BaseException) -> None:
        """What the probe found is an outage as a call's failure is: logged once (an instance
        started with a wrong password or host said nothing until a request used Redis), and
        tried again by the health's own task, which writes back what this process kept when
        Redis answers (the probe's success alone would skip that, so it is not told)."""
        if self.health is not None:
            self.health.failed(exc)

    async def ping(self) -> bool:
        """``True`` without Redis, or when Redis answers and takes writes."""
        return await self.problem() is None

    async def close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.replay_redis is not None:
            await self.replay_redis.aclose()
