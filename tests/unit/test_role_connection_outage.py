"""Linked Roles while Discord is down (5xx, timeouts), with the in-memory fakes: a pass stops
after OUTAGE_THRESHOLD failures in a row and leaves the rest of its backlog due, untried and
without a failure, instead of a call for each row; every later pass waits for the pause (30 s,
then longer while it lasts), and once Discord answers again the backlog drains."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from domain import errors
from domain.model import DiscordId
from domain.use_cases import RoleSyncReport
from domain.use_cases.discord_pauses import (
    OUTAGE_PAUSES,
    OUTAGE_THRESHOLD,
    DiscordOutage,
    FailuresInARow,
)
from domain.use_cases.role_connections import CLAIM_LEASE
from entrypoints.role_connection_worker import log_report
from tests.fakes.role_connections import LIFETIME, connected, fake, linked, refresh_pass, rows
from tests.harness import Harness

IDS = [DiscordId(7600 + n) for n in range(8)]


async def backlog(h: Harness) -> None:
    for n, discord_id in enumerate(IDS):
        await connected(h, discord_id.value, f"user{n}")
    h.clock.advance(timedelta(days=1))  # linked_days changed: every row is due


async def test_discord_down_holds_the_rest_of_the_pass_until_it_answers_again(
    r: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await backlog(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordUnavailable()

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["push"] * OUTAGE_THRESHOLD  # then nothing more
    assert report.failed == OUTAGE_THRESHOLD
    assert report.paused == len(IDS) - OUTAGE_THRESHOLD
    assert report.paused_until == r.clock.now() + OUTAGE_PAUSES[0]
    assert report.down
    assert not report.blocked
    untried = [row for row in rows(r).values() if row.failures == 0]
    assert len(untried) == len(IDS) - OUTAGE_THRESHOLD
    assert all(row.claimed_until is None and row.next_push_at <= r.clock.now() for row in untried)
    with caplog.at_level(logging.WARNING, logger="taskflow_link.role_connections"):
        log_report(report)
    assert "Discord is not answering" in caplog.text

    r.clock.advance(OUTAGE_PAUSES[0] - timedelta(seconds=1))
    waiting = await refresh_pass(r)  # a pass during the pause claims nothing, calls nothing
    assert waiting == RoleSyncReport(paused_until=report.paused_until, down=True)
    assert len(fake(r).calls) == calls + OUTAGE_THRESHOLD

    r.clock.advance(timedelta(seconds=1))  # the pause is over: a pass tries again, fails...
    again = await refresh_pass(r)
    assert len(fake(r).calls) == calls + 2 * OUTAGE_THRESHOLD
    assert again.paused_until == r.clock.now() + OUTAGE_PAUSES[1]  # ...the next step is longer

    fake(r).push_outage = None  # Discord is back
    r.clock.advance(CLAIM_LEASE)  # the pause, and the back-off of those that failed
    assert (await refresh_pass(r)).pushed == len(IDS)
    assert all(linked(fake(r).connections[i]) == ("1", "1") for i in IDS)
    assert len(fake(r).calls) == calls + 2 * OUTAGE_THRESHOLD + len(IDS)


async def test_a_refresh_that_finds_discord_down_counts_as_a_call_in_a_row(r: Harness) -> None:
    """The refresh grant is a call to Discord as the push is: refreshes failing in a row hold
    the rest of the pass back too (no refresh token is spent by one not made)."""
    await backlog(r)
    r.clock.advance(timedelta(seconds=LIFETIME))  # every access token ended: refreshed first
    calls = len(fake(r).calls)
    fake(r).refresh_outage = errors.DiscordUnavailable()

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["refresh"] * OUTAGE_THRESHOLD
    assert (report.failed, report.paused) == (OUTAGE_THRESHOLD, len(IDS) - OUTAGE_THRESHOLD)
    assert report.down


async def test_an_answer_from_discord_ends_the_count_of_failures_in_a_row() -> None:
    """The logic both features share: failures between answers are single failures, and
    the pause grows while passes fail alike, back to the first step after an answer."""
    outage = DiscordOutage()
    failures = FailuresInARow(outage)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(3):
        for _ in range(OUTAGE_THRESHOLD - 1):
            failures.unavailable(now)
        failures.answered()
    assert outage.until(now) is None
    for _ in range(OUTAGE_THRESHOLD - 1):
        failures.unavailable(now)
    failures.new_pass()  # failures of passes apart are not in a row
    failures.unavailable(now)
    assert outage.until(now) is None
    steps = []
    for _ in range(len(OUTAGE_PAUSES) + 1):
        for _ in range(OUTAGE_THRESHOLD):
            failures.unavailable(now)
        until = outage.until(now)
        assert until is not None
        steps.append(until - now)
        failures.new_pass()
    assert steps == [*OUTAGE_PAUSES, OUTAGE_PAUSES[-1]]  # capped
    failures.answered()
    assert outage.until(now) is None
