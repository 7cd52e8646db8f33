"""API keys checked from a short-lived cache in the process: the lookup API then costs one
query (the link), not two. A key revoked with ``taskflow-link api-key revoke`` stops working
within ``ttl`` (5 seconds by default) in every process.

One read per key at a time: an entry still valid is read again in the background while the
requests keep its answer; once it has expired, the requests that arrive meanwhile wait for
that one read. Without that, every entry's expiry sent all the requests of that moment to the
database at once."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from domain.model import ApiKey
from domain.ports import LinkDirectory

T = TypeVar("T")

# An entry is read again, in the background, once this share of its life has passed; the
# requests meanwhile still get it, so a key in steady use never makes anyone wait for the
# database (and a failed read leaves it valid until it expires).
_REFRESH_AFTER = 0.8


class CachedApiKeyLookup:
    """Known keys and unknown digests are remembered apart, each up to ``max_entries``: a
    flood of made-up tokens (each an unknown digest) pushes out other unknown digests, never
    a key in use, so it cannot turn every real client's request into a query."""

    def __init__(
        self,
        directory: LinkDirectory,
        *,
        ttl_seconds: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        # digest -> (the key, when the entry expires); and unknown digest -> when it expires
        self._known: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        # digest -> the read under way
        self._reading: dict[str, asyncio.Future[ApiKey | None]] = {}

    async def by_digest(self, digest: str) -> ApiKey | None:
        now = self._clock()
        if self._ttl <= 0:  # no cache (API_KEY_CACHE_SECONDS=0): every request reads
            return await self._read(digest, now)
        reading = self._reading.get(digest)
        if reading is not None and reading.get_loop() is not asyncio.get_running_loop():
            reading = None  # another event loop's (a test's, long gone): not one to wait for
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            if reading is None and known[1] - now <= self._ttl * (1 - _REFRESH_AFTER):
                self._start_read(digest, now)  # in the background: this answer is still valid
            return known[0]
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None and unknown_until > now:
            return None
        if reading is None:
            reading = self._start_read(digest, now)
        # Shielded: a request that gives up (its client left) does not cancel the read that
        # the others wait for.
        return await asyncio.shield(reading)

    async def known(self, digest: str) -> ApiKey | None:
        """The key from its entry, live or lapsed: no read, none started. Without a cache,
        read.

        Lapsed entries count: requests the per-key limit refuses never reach ``by_digest`` to
        renew one, so a revoked key got a budget of its own back at each lapse, and a key
        without a seal, kept over its limit, fell back to its client's (where neighbours'
        made-up tokens could keep it refused). A revocation is never undone; one made since
        the entry was read is found by the next request the limit lets through."""
        if self._ttl <= 0:
            return await self._read(digest, self._clock())
        known = self._known.get(digest)
        return known[0] if known is not None else None

    def _start_read(self, digest: str, now: float) -> asyncio.Future[ApiKey | None]:
        reading = asyncio.ensure_future(self._read(digest, now))
        self._reading[digest] = reading
        reading.add_done_callback(lambda done: self._read_done(digest, done))
        return reading

    async def _read(self, digest: str, now: float) -> ApiKey | None:
        """The stored key; remembered only once read (a failed read keeps the old entry)."""
        key = await self._directory.api_key_by_digest(digest)
        self._known.pop(digest, None)
        self._unknown.pop(digest, None)
        if key is None:
            _remember(self._unknown, digest, now + self._ttl, self._max)
        else:
            _remember(self._known, digest, (key, now + self._ttl), self._max)
        return key

    def _read_done(self, digest: str, done: asyncio.Future[ApiKey | None]) -> None:
        if self._reading.get(digest) is done:
            del self._reading[digest]
        if not done.cancelled():
            done.exception()  # retrieved: each waiting request raised it already, if any

    async def close(self) -> None:
        """Ends the reads under way (a background refresh, say) before the database goes: at
        shutdown one would otherwise die with the event loop ("Task was destroyed")."""
        loop = asyncio.get_running_loop()
        # Another event loop's reads (a test's, long gone) cannot be waited for from this one.
        reading = [read for read in self._reading.values() if read.get_loop() is loop]
        self._reading.clear()
        for read in reading:
            read.cancel()
        await asyncio.gather(*reading, return_exceptions=True)


def _remember(entries: OrderedDict[str, T], digest: str, value: T, most: int) -> None:
    entries[digest] = value
    while len(entries) > most:  # the oldest goes first
        entries.popitem(last=False)
