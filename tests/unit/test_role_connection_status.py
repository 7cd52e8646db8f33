"""``taskflow-link role-connections status``: how the kept Linked Roles connections stand,
and whose is lost, for an operator (never a token, never an email address)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.memory import MemoryDatabase
from domain.model import (
    AuditEvent,
    AuditKind,
    DiscordId,
    LostRoleConnection,
    RoleConnectionCounts,
    RoleConnectionLoss,
    RoleConnectionLossCount,
)
from domain.use_cases import RoleConnectionStatus, ShowRoleConnectionStatus
from entrypoints.cli import cli
from tests.fakes.role_connections import (
    KEY_A,
    connected,
    fake,
    refresh_pass,
    role_harness,
)
from tests.harness import TEST_SECRET_KEY, Harness


@pytest.fixture
def r() -> Harness:
    return role_harness()


async def test_the_status_counts_each_connection_once_and_lists_the_lost(r: Harness) -> None:
    await connected(r, 7101, "ann")  # current
    await connected(r, 7102, "ben")  # its key not configured here
    await connected(r, 7103, "cat")  # the app removed in Discord: revoked, tokens deleted
    await connected(r, 7104, "dan")  # a configured key fails to open it: kept, unreadable
    await connected(r, 7105, "eve")  # unlinked: due at once ("not linked" to push)
    database: MemoryDatabase = r.container.memory_db()
    tokens = database.tables.role_connection_tokens
    body = tokens[DiscordId(7102)].sealed.split(".", 2)[2]
    tokens[DiscordId(7102)] = replace(tokens[DiscordId(7102)], sealed=f"v1.AAAAAAAA.{body}")
    altered = tokens[DiscordId(7104)].sealed
    tail = "BBBB" if altered.endswith("AAAA") else "AAAA"
    tokens[DiscordId(7104)] = replace(tokens[DiscordId(7104)], sealed=altered[:-4] + tail)
    fake(r).deauthorize(DiscordId(7103))
    report = await refresh_pass(r, everything=True)
    assert (report.revoked, report.unreadable, report.key_missing) == (1, 1, 1)
    revoked_at = r.clock.now()
    r.clock.advance(timedelta(seconds=30))  # ben's next try is 1 minute after his first
    await r.container.unlink_discord().execute(DiscordId(7105))
    database.tables.audit.append(  # as a worker records it (see the pusher's tests)
        AuditEvent(
            AuditKind.ROLE_TOKENS_DELETED,
            r.clock.now(),
            None,
            DiscordId(7199),
            {"reason": "given_up"},
        )
    )

    show: ShowRoleConnectionStatus = r.container.show_role_connection_status()
    status = await show.execute(since=timedelta(days=30), lost=10)

    # ann current; ben retrying (his key missing here); dan kept but unreadable; eve due.
    assert status.counts == RoleConnectionCounts(current=1, due=1, retrying=1, unreadable=1)
    assert status.key_missing == 1
    assert sorted(status.losses, key=lambda c: (c.why, c.tokens_kept)) == [
        RoleConnectionLossCount(RoleConnectionLoss.REVOKED, False, 1),
        RoleConnectionLossCount(RoleConnectionLoss.UNREADABLE, True, 1),
    ]
    assert status.lost == [
        LostRoleConnection(DiscordId(7103), revoked_at, RoleConnectionLoss.REVOKED, False),
        LostRoleConnection(DiscordId(7104), revoked_at, RoleConnectionLoss.UNREADABLE, True),
    ]
    assert status.given_up == 1
    assert status.since == r.clock.now() - timedelta(days=30)
    # Without a key configured here, which rows its key misses is not known (never a guess).
    blind = ShowRoleConnectionStatus(r.container.uow(), r.clock, None)
    unknown = await blind.execute(since=timedelta(days=1))
    assert unknown.key_missing is None
    assert unknown.lost == []  # listed only when asked for


def _status(**changes: Any) -> RoleConnectionStatus:
    from datetime import UTC, datetime

    since = datetime(2026, 10, 25, tzinfo=UTC)
    status = RoleConnectionStatus(
        counts=RoleConnectionCounts(current=7, due=1, retrying=2, pushing=1, unreadable=1),
        key_missing=1,
        losses=[
            RoleConnectionLossCount(RoleConnectionLoss.REVOKED, False, 2),
            RoleConnectionLossCount(RoleConnectionLoss.UNREADABLE, True, 1),
        ],
        lost=[
            LostRoleConnection(DiscordId(7103), since, RoleConnectionLoss.REVOKED, False),
            LostRoleConnection(
                DiscordId(7104), since + timedelta(hours=1), RoleConnectionLoss.UNREADABLE, True
            ),
        ],
        given_up=3,
        since=since,
    )
    return replace(status, **changes)


def _runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # away from a .env of the repository
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'tl.db'}")
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", KEY_A)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    return runner


def test_the_status_command_prints_counts_and_with_lost_whose(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = _runner(monkeypatch, tmp_path)
    asked: list[tuple[Any, int]] = []

    async def execute(self: ShowRoleConnectionStatus, *, since: Any, lost: int = 0) -> Any:
        asked.append((since, lost))
        return _status(lost=_status().lost[:lost])

    monkeypatch.setattr(ShowRoleConnectionStatus, "execute", execute)
    counts = runner.invoke(cli, ["role-connections", "status"])
    assert counts.exit_code == 0, counts.output
    lines = counts.output.splitlines()
    assert lines[0] == (
        "12 role connection(s) kept: 7 current, 1 due, 2 retrying (failed, tried again later), "
        "1 being pushed, 1 unreadable (no key here opens them; the member was told)."
    )
    assert "1 sealed with a key not configured here" in counts.output
    assert "3 lost (until the member connects again)" in counts.output
    assert "2 revoked in Discord (tokens deleted)" in counts.output
    assert "1 unreadable, tokens kept (roles stay as last pushed, not updated)" in counts.output
    assert "3 given up since 2026-10-25 00:00 UTC" in counts.output
    assert "7103" not in counts.output  # listed only with --lost
    listed = runner.invoke(cli, ["role-connections", "status", "--lost", "--since", "7d"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("DISCORD ID"))) :][:3]
    assert table[0].split() == ["DISCORD", "ID", "LOST", "SINCE", "WHY", "TOKENS"]
    assert table[1].split() == ["7103", "2026-10-25", "00:00", "UTC", "revoked", "deleted"]
    assert table[2].split() == ["7104", "2026-10-25", "01:00", "UTC", "unreadable", "kept"]
    assert asked == [(timedelta(days=30), 0), (timedelta(days=7), 100)]
    none = _status(counts=RoleConnectionCounts(), key_missing=0, losses=[], lost=[], given_up=0)
    monkeypatch.setattr(ShowRoleConnectionStatus, "execute", lambda *_a, **_k: _done(none))
    empty = runner.invoke(cli, ["role-connections", "status", "--lost"])
    assert empty.exit_code == 0, empty.output
    assert "No role connection is kept" in empty.output
    assert "No member's connection is lost." in empty.output


async def _done(value: Any) -> Any:
    return value


def test_the_status_command_works_on_the_real_database_without_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run where no key is configured (a cron job given only the database): the counts, and
    that which key the tokens need is not known here."""
    runner = _runner(monkeypatch, tmp_path)
    monkeypatch.delenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY")
    shown = runner.invoke(cli, ["role-connections", "status", "--lost"])
    assert shown.exit_code == 0, shown.output
    assert "No role connection is kept" in shown.output
    assert "Keys: not known here (no TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY)" in shown.output
    assert "No member's connection is lost." in shown.output
