"""API keys checked from a short-lived cache in the process: the lookup API then costs one
query (the link), not two. A key revoked with ``taskflow-link api-key revoke`` stops working
within ``ttl`` (5 seconds by default) in every process."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from domain.model import ApiKey
from domain.ports import LinkDirectory

T = TypeVar("T")


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

    async def by_digest(self, digest: str) -> ApiKey | None:
        now = self._clock()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None and unknown_until > now:
            return None
        key = await self._directory.api_key_by_digest(digest)
        self._known.pop(digest, None)
        self._unknown.pop(digest, None)
        if key is None:
            _remember(self._unknown, digest, now + self._ttl, self._max)
        else:
            _remember(self._known, digest, (key, now + self._ttl), self._max)
        return key


def _remember(entries: OrderedDict[str, T], digest: str, value: T, most: int) -> None:
    entries[digest] = value
    while len(entries) > most:  # the oldest goes first
        entries.popitem(last=False)
