"""The pauses other instances tell of (through Redis) are bounded as a 429's own are: a value
no instance publishes (a key written by hand, a compromised or corrupted store) paused every
call of every instance for as long as it said, or, beyond what a date holds, raised at each
call's catch-up (OverflowError), so no role change or Linked Roles push was ever made."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from domain.use_cases.discord_pauses import RETRY_AFTER_MAX, DiscordPauses

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class _Told:
    """A shared store that answers what it was told to (whatever an instance published)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def publish(self, pauses: Mapping[str, float]) -> None:
        return None

    async def read(self, names: Sequence[str]) -> dict[str, float]:
        return dict.fromkeys(names, self.seconds)


@pytest.mark.parametrize(
    "seconds",
    [10 * 365 * 86400.0, 9.2e15, 1e300, math.inf],
    ids=["ten-years", "redis-max-pttl", "1e300", "infinity"],
)
async def test_a_shared_pause_is_never_longer_than_a_429s_own(seconds: float) -> None:
    pauses = DiscordPauses(_Told(seconds))

    await pauses.catch_up(["server:1"], NOW)

    assert pauses.until(("server:1",), NOW) == NOW + RETRY_AFTER_MAX


async def test_a_shared_pause_that_says_nothing_pauses_nothing() -> None:
    pauses = DiscordPauses(_Told(math.nan))

    await pauses.catch_up(["server:1"], NOW)

    assert pauses.until(("server:1",), NOW) is None
