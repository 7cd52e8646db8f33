"""Wrong-password counts for the sign-in throttle, in a Litestar store: the process's memory by
default, Redis when several instances must share them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from litestar.stores.base import Store


class StorePasswordAttempts:
    """One key per account (or unknown login): ``{"failures": n, "last": iso time}``, dropped
    by the store ``forget_after`` the last failure.

    Reading and writing are two steps: two wrong passwords at the same instant may count as
    one. A throttle can afford that; it still slows guessing down by orders of magnitude."""

    def __init__(self, store: Store, namespace: str = "password-attempts") -> None:
        self._store = store
        self._prefix = f"{namespace}:"

    async def failures(self, key: str) -> tuple[int, datetime | None]:
        raw = await self._store.get(self._prefix + key)
        if raw is None:
            return 0, None
        try:
            data = json.loads(raw)
            return int(data["failures"]), datetime.fromisoformat(data["last"])
        except (ValueError, KeyError, TypeError):
            return 0, None  # unreadable: start over rather than lock the account

    async def record_failure(self, key: str, now: datetime, *, forget_after: timedelta) -> None:
        failures, last = await self.failures(key)
        if last is None or now - last >= forget_after:
            failures = 0
        value = json.dumps({"failures": failures + 1, "last": now.isoformat()})
        await self._store.set(
            self._prefix + key, value, expires_in=int(forget_after.total_seconds())
        )

    async def clear(self, key: str) -> None:
        await self._store.delete(self._prefix + key)
