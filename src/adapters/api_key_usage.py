"""When each API key was last used, without a write per request.

A request only compares two times in memory. The first use of a key in a minute (by this
process, and unless the stored time is already that recent) schedules one write, made by a
task of its own: the request never waits for it, and a slow or unreachable database never
fails it. The write itself is conditional (``record_use``), so instances that all saw a key
within the same minute change its row once between them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from domain.model import API_KEY_LAST_USED_EVERY, ApiKey
from domain.ports import UnitOfWorkFactory

log = logging.getLogger("taskflow_link.api_keys")


class ThrottledApiKeyUsage:
    def __init__(
        self, uow: UnitOfWorkFactory, *, every: timedelta = API_KEY_LAST_USED_EVERY
    ) -> None:
        self._uow = uow
        self._every = every
        # The last use this process wrote (or is about to write), per key.
        self._noted: dict[uuid.UUID, datetime] = {}
        self._pending: dict[uuid.UUID, datetime] = {}
        self._writer: asyncio.Task[None] | None = None

    def used(self, key: ApiKey, at: datetime) -> None:
        last = self._noted.get(key.id)
        if key.last_used_at is not None and (last is None or key.last_used_at > last):
            last = key.last_used_at  # another process (or an earlier run) recorded it
        if last is not None and at - last < self._every:
            return
        # Noted before anything awaits: of concurrent requests, one schedules the write.
        self._noted[key.id] = at
        self._pending[key.id] = at
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write(), name="api key last use")

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                async with self._uow() as uow:
                    for key_id, at in batch.items():
                        await uow.api_keys.record_use(key_id, at, unless_since=at - self._every)
                    await uow.commit()
            except Exception as exc:
                # Tried again at the key's next use; the request it came from was answered.
                for key_id, at in batch.items():
                    if self._noted.get(key_id) == at:
                        del self._noted[key_id]
                log.warning(
                    "could not record when %d API key(s) were last used: %s",
                    len(batch),
                    type(exc).__name__,
                )

    async def idle(self) -> None:
        """Wait until the writes scheduled so far are done (tests, shutdown). Waiting is all
        it does: cancelling the caller leaves the writes to finish."""
        writer = self._writer
        if writer is not None and writer.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([writer])

    async def close(self) -> None:
        """At shutdown: finish the writes under way (``close_resources`` bounds the wait)."""
        await self.idle()
