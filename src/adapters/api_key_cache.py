"""API keys checked from a short-lived cache in the process: the lookup API then costs one
query (the link), not two. A key revoked with ``taskflow-link api-key revoke`` stops working
within ``ttl`` (5 seconds by default) in every process."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from domain.model import ApiKey
from domain.ports import LinkDirectory


class CachedApiKeyLookup:
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
        # digest -> (key or None for an unknown digest, when the entry expires)
        self._entries: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()

    async def by_digest(self, digest: str) -> ApiKey | None:
        now = self._clock()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await self._directory.api_key_by_digest(digest)
        self._entries[digest] = (key, now + self._ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:  # unknown digests must not grow it forever
            self._entries.popitem(last=False)
        return key
