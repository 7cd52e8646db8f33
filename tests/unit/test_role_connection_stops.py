"""A stop (SIGTERM, a rolling deploy, Ctrl-C) that cuts off a Linked Roles refresh, on the
in-memory adapters.

Discord rotates refresh tokens: the one a refresh spends stops working once Discord has
answered. A refresh cut off after Discord issued the new pair, before it was stored, lost the
member's connection: the row kept the spent refresh token, the next try got ``invalid_grant``
and deleted it (and a member unlinked meanwhile went on showing "linked" on Discord). The
refresh and the storing of its answer are now one step a cut-off does not split: the step
gets a bounded time to end, then the cancellation goes on.
(``tests/integration/test_role_connection_stops_postgres.py``: the same over HTTP and
Postgres.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from domain.model import DiscordId
from domain.ports import DiscordTokens
from entrypoints.role_connection_worker import RoleConnectionWorker
from entrypoints.web import create_app
from tests.fakes.role_connections import (
    InMemoryDiscordWithRoles,
    connected,
    fake,
    refresh_pass,
    role_harness,
    rows,
)
from tests.harness import Harness
from tests.queue_stops import AN_HOUR, Gate, Lifespan, until_cancelled, worker_task

MEMBER_ID = 7301
MEMBER = DiscordId(MEMBER_ID)


@pytest.fixture
async def r() -> AsyncIterator[Harness]:
    h = role_harness(role_connections_poll_seconds=AN_HOUR)
    yield h
    h.container.unwire()


def answer_held(discord: InMemoryDiscordWithRoles, gate: Gate) -> None:
    """Discord spends the refresh token and issues the new pair at once; its answer reaches
    the caller only once ``gate`` opens (the answer on its way)."""
    refresh = discord.refresh

    async def issued_then_held(refresh_token: str, **limits: Any) -> DiscordTokens:
        issued = await refresh(refresh_token, **limits)
        await gate.through()
        return issued

    discord.refresh = issued_then_held  # type: ignore[method-assign]


def kept_refresh_token(h: Harness) -> str:
    row = rows(h)[MEMBER]
    opened = h.container.secret_box().open(row.sealed, context=f"discord-role-connection:{MEMBER}")
    return str(json.loads(opened)["refresh_token"])


async def expired(h: Harness) -> None:
    """``MEMBER`` connected 8 days ago: the access token has expired, the row is due."""
    await connected(h, MEMBER_ID)
    fake(h).expire(MEMBER)
    async with h.uow() as uow:
        await uow.role_connection_tokens.mark_all_due(h.clock.now())
        await uow.commit()


async def test_a_stop_that_cuts_off_a_refresh_keeps_the_tokens_discord_issued(
    r: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await expired(r)
    gate = Gate()
    answer_held(fake(r), gate)
    worker = RoleConnectionWorker(r.container)
    worker.start()
    await asyncio.wait_for(gate.entered.wait(), 60)  # a bound, not a measurement
    runner = worker_task(worker.name)

    stopping = asyncio.ensure_future(worker.stop(grace=0))  # the grace over at once: cut off
    await until_cancelled(runner)
    gate.opened.set()  # Discord's answer arrives after the cut-off
    await stopping

    # The row holds the pair Discord issued (its refresh token is the live one), let go.
    _, live = fake(r).tokens_of(MEMBER)
    assert kept_refresh_token(r) in live
    row = rows(r)[MEMBER]
    assert row.claimed_until is None
    assert row.failures == 0
    # The stop's warning says the refresh finished (it was not cut off mid-answer).
    (warning,) = [m for m in caplog.messages if "did not finish within" in m]
    assert "once the step that must finish has (its answer is kept)" in warning
    # The next pass pushes with it: no invalid_grant, no deletion (the gate held only the
    # first call).
    report = await refresh_pass(r)
    assert (report.pushed, report.revoked) == (1, 0)
    assert MEMBER in rows(r)


async def test_a_refresh_that_does_not_end_within_its_bound_is_cut_off_all_the_same() -> None:
    """The step is shielded for a bounded time only: a refresh whose answer never comes does
    not hold the stop (its row is let go, due, as any cut-off call's)."""
    h = role_harness(role_connections_poll_seconds=AN_HOUR, shutdown_timeout_seconds=60.0)
    try:
        await expired(h)
        gate = Gate()  # never opened
        answer_held(fake(h), gate)
        pusher = h.container.role_connection_pusher()
        pusher.finish_seconds = 0.0  # no time at all after the cut-off
        worker = RoleConnectionWorker(h.container)
        worker.start()
        await asyncio.wait_for(gate.entered.wait(), 60)  # a bound, not a measurement
        # Returns once the pass has let go of the row: the step was cut off at its bound,
        # not left to the worker's last resort (60 s here, then the row under its lease).
        await worker.stop(grace=0)
        row = rows(h)[MEMBER]
        assert row.claimed_until is None
        assert row.failures == 0
    finally:
        gate.opened.set()
        h.container.unwire()


async def test_a_valid_access_token_is_pushed_without_a_refresh(r: Harness) -> None:
    """Only a refresh is at risk of losing its answer: none is made while the access token
    Discord gave still works."""
    await connected(r, MEMBER_ID)
    before = fake(r).refreshes

    report = await refresh_pass(r, everything=True)

    assert report.pushed == 1
    assert fake(r).refreshes == before


async def test_the_web_apps_shutdown_waits_for_the_refresh_it_cut_off_before_it_closes() -> None:
    """Through the app's lifespan (uvicorn's, at SIGTERM): the grace over, the pass is cut
    off inside the refresh; the worker then waits for the step (not only for letting go of
    its rows, ``TASKFLOW_LINK_SHUTDOWN_TIMEOUT_SECONDS``, short here) before the app closes
    the database. Before, the worker gave up on the pass after that short while and cancelled
    it once more, and the step with it: Discord's answer was lost all the same."""
    h = role_harness(role_connections_poll_seconds=AN_HOUR, shutdown_timeout_seconds=0.05)
    gate = Gate()
    try:
        await expired(h)
        answer_held(fake(h), gate)
        server = Lifespan(create_app(h.container))
        await server.start()
        await asyncio.wait_for(gate.entered.wait(), 60)  # a bound, not a measurement
        runner = worker_task(RoleConnectionWorker.name)
        closing = asyncio.ensure_future(server.shutdown())
        await until_cancelled(runner)  # the grace is over: cut off
        # Past the end of the worker's own wait after a cut-off as it stood (0.05 s, timed
        # from the cut-off, before this sleep began: timers fire in order).
        await asyncio.sleep(0.5)
        gate.opened.set()
        await closing
        _, live = fake(h).tokens_of(MEMBER)
        assert kept_refresh_token(h) in live
        assert rows(h)[MEMBER].claimed_until is None
    finally:
        gate.opened.set()
        h.container.unwire()
