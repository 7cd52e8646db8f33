"""A step that a stop must not cut in the middle: an outside call whose answer is lost unless
it is stored, and the storing of it.

A stop cuts off what its process is doing by cancelling it (the queue worker's grace over,
Ctrl-C on a CLI command). Most calls cut off that way may simply go again. Not Discord's
refresh grant: Discord spends the refresh token as it answers, so a refresh cut off once
Discord has issued the new pair, before the pair is stored, leaves only the spent token (the
next try: ``invalid_grant``, the member's connection lost). ``uncut`` lets such a step end
first, for a bounded time, then lets the cancellation go on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def uncut(step: Coroutine[Any, Any, T], *, within: float) -> T:
    """``step``'s outcome. Cancelled meanwhile, the caller waits up to ``within`` seconds
    more for ``step`` to end (what it stores is stored), then is cancelled all the same (the
    step's outcome is dropped: the caller was cut off). A step still running then, or when
    the caller is cancelled again while it waits (the stop gave up on it), is cancelled."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise  # it ended as the cut came (or was itself cancelled): nothing to wait for
        try:
            await asyncio.wait((task,), timeout=within)
        finally:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: the cut-off stands, not the step's own error
        raise
