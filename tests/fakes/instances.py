"""The processes announced on one database, in memory: ``MemoryRoster`` stands in for
``SqlInstanceRoster`` (one per process, each on a shared ``Board``), and the board for
``SqlPurgePeers``, with the same rules (the others seen within ``LIVE_FOR``, the oldest first)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import timedelta

from adapters.sql.instances import LIVE_FOR, Instance
from domain.ports import PurgeTerms
from tests.fakes.clock import ManualClock


class Board:
    """The rows of ``web_instances``; as ``PurgePeers``, the terms of the live ones."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.rows: dict[str, Instance] = {}

    def live_rows(self) -> list[Instance]:
        since = self.clock.now() - LIVE_FOR
        return sorted(
            (row for row in self.rows.values() if row.seen_at >= since),
            key=lambda row: (row.started_at, row.id),
        )

    async def live(self) -> Sequence[PurgeTerms]:
        return [PurgeTerms(r.audit_retention_days, r.webhooks) for r in self.live_rows()]


_pids = itertools.count(1000)


class MemoryRoster:
    def __init__(self, board: Board, kind: str) -> None:
        self._board, self.kind = board, kind
        self.pid = next(_pids)
        self.id = f"instance-{self.pid}"

    async def announce(
        self,
        shared_state: str,
        *,
        webhooks: str | None = None,
        audit_retention_days: int | None = None,
    ) -> Sequence[Instance]:
        now = self._board.clock.now()
        mine = self._board.rows.get(self.id)
        self._board.rows[self.id] = Instance(
            self.id,
            "host.example",
            self.pid,
            self.kind,
            shared_state,
            mine.started_at if mine else now,
            now,
            webhooks,
            audit_retention_days,
        )
        return [dataclasses.replace(r) for r in self._board.live_rows() if r.id != self.id]

    async def clock_offset(self) -> timedelta | None:
        return None

    async def leave(self) -> None:
        self._board.rows.pop(self.id, None)
