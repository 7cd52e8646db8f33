"""Every serving process purges by its own settings: without a word, the shortest retention
won (a gateway bot without TASKFLOW_LINK_AUDIT_RETENTION_DAYS deleted at 365 days the audit
events the web instances kept forever), and a process naming fewer webhook URLs deleted the
others' abandoned deliveries as "no longer configured". Each process now announces what its
purge depends on, names the others whose settings differ, and the purge deletes only what
every live process would. (The roster in memory here; on SQLite and Postgres, and two
``serve`` processes, in tests/integration/test_instance_sharing.py.)"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
from dependency_injector import providers

from adapters.shared_state import SharedState
from adapters.webhooks import endpoint_for
from domain.model import AccountId, AuditEvent, AuditKind
from domain.ports import PurgeTerms
from domain.use_cases import NO_WEBHOOKS, PurgeExpired, PurgeReport
from domain.webhooks import endpoints_digest
from entrypoints.container import build_container
from entrypoints.instances import WEB, InstanceWatch
from entrypoints.purge_worker import PurgeWorker
from tests.fakes.clock import ManualClock
from tests.fakes.instances import Board, MemoryRoster
from tests.harness import Harness, make_settings
from tests.unit.test_webhooks import HOOKS, OTHER, SECRET, deliveries, webhook_harness

MINUTE = timedelta(minutes=1)
RETENTION = "TASKFLOW_LINK_AUDIT_RETENTION_DAYS"


class Peers:
    def __init__(self, *terms: PurgeTerms) -> None:
        self.terms = list(terms)

    async def live(self) -> Sequence[PurgeTerms]:
        return self.terms


async def _audit_events(h: Harness, *ages_in_days: int) -> None:
    now = h.clock.now()
    async with h.uow() as uow:
        for days in ages_in_days:
            event = AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=days), AccountId.new())
            await uow.audit.record(event)
        await uow.commit()


@pytest.mark.parametrize(
    ("others", "deleted", "held"),
    [
        ([], 3, None),  # alone: its own 365 days
        ([PurgeTerms(30, None)], 3, None),  # a shorter one does not shorten its own
        ([PurgeTerms(365, "x"), PurgeTerms(500, None)], 1, 500),  # the longest of them all
        ([PurgeTerms(500, None), PurgeTerms(0, None)], 0, 0),  # one keeps them forever
        ([PurgeTerms(None, None)], 3, None),  # an older version, which did not say
    ],
    ids=["alone", "shorter", "longer", "forever", "unsaid"],
)
async def test_the_purge_keeps_audit_events_as_long_as_any_live_process_does(
    others: list[PurgeTerms], deleted: int, held: int | None
) -> None:
    h = Harness.build(build_container(make_settings(audit_retention_days=365)))
    await _audit_events(h, 366, 400, 800, 10)
    peers = Peers(PurgeTerms(365, None), *others)  # its own row among them

    report = await h.container.purge_expired(peers=peers).execute()

    assert (report.audit_events, report.audit_retention_held) == (deleted, held)
    assert len(await h.container.read_audit_trail().execute()) == 4 - deleted


async def test_a_process_that_keeps_audit_events_forever_deletes_none_whatever_the_others() -> None:
    h = Harness.build(build_container(make_settings(audit_retention_days=0)))
    await _audit_events(h, 800)
    report = await h.container.purge_expired(peers=Peers(PurgeTerms(30, None))).execute()
    assert (report.audit_events, report.audit_retention_held) == (0, None)


async def test_the_purge_keeps_every_pending_delivery_while_a_live_process_names_other_urls() -> (
    None
):
    """A web instance names HOOKS and OTHER; a gateway bot only HOOKS. The bot's purge took
    OTHER for removed, and deleted its deliveries untouched for 30 days (say OTHER's queue
    waits for `webhooks retry` after a 410, or only the web instance sends it)."""
    h = webhook_harness()
    await h.sign_up("alice", "alice@example.com")  # one delivery per endpoint, never tried
    h.clock.advance(timedelta(days=31))
    queued = {d.id for d in deliveries(h)}
    both = endpoints_digest([endpoint_for(HOOKS), endpoint_for(OTHER)])
    bot = Harness.build(build_container(make_settings(webhook_urls=HOOKS, webhook_secret=SECRET)))
    bot.container.memory_db.override(h.container.memory_db())
    bot.container.clock.override(h.clock)
    mine = endpoints_digest([endpoint_for(HOOKS)])
    try:
        purge = bot.container.purge_expired(
            peers=Peers(PurgeTerms(365, mine), PurgeTerms(365, both))
        )
        report = await purge.execute()
        assert (report.webhook_deliveries, report.webhooks_held) == (0, True)
        assert report.webhook_pending_kept == 2
        assert {d.id for d in deliveries(h)} == queued

        # Once the web instance names the same URLs (or is gone), the removed one's go.
        agreed = bot.container.purge_expired(peers=Peers(PurgeTerms(365, mine)))
        report = await agreed.execute()
        assert (report.webhook_deliveries, report.webhooks_held) == (1, False)
    finally:
        bot.container.unwire()
        h.container.unwire()


async def test_a_peer_that_did_not_say_its_urls_holds_nothing_back() -> None:
    h = webhook_harness(HOOKS)
    report = await PurgeExpired(
        h.uow,
        h.clock,
        NO_WEBHOOKS,
        peers=Peers(PurgeTerms(None, None), PurgeTerms(None, "x")),
    ).execute()
    assert (report.webhooks_held, report.audit_retention_held) == (False, None)


def _watches(board: Board, *settings: tuple[str, int | None]) -> list[InstanceWatch]:
    plain = SharedState(None)
    return [
        InstanceWatch(MemoryRoster(board, kind), plain, 60, audit_retention_days=days)
        for kind, days in settings
    ]


def _about_retention(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if RETENTION in r.getMessage()]


async def test_processes_whose_audit_retention_differs_name_each_other_once_seen_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    board = Board(ManualClock())
    # A web instance keeps them forever, another the same; a gateway bot started without the
    # setting (365), a shard of it with 30; an older version says nothing.
    web, same, bot, shard, older = _watches(
        board, (WEB, 0), (WEB, 0), ("gateway 0/2", 365), ("gateway 1/2", 30), ("gateway 1/2", None)
    )
    for watch in (web, same, bot, shard, older):
        await watch.check()
    assert _about_retention(caplog) == []  # each seen once: it could be one being replaced
    for _ in range(3):
        board.clock.advance(MINUTE)
        for watch in (web, same, bot, shard, older):
            await watch.check()
    about = _about_retention(caplog)
    # web and same each name bot and shard; bot names web, same and shard; shard names web,
    # same and bot: once each. Nobody names older, nor does older name anyone.
    assert len(about) == 2 + 2 + 3 + 3, about
    on_bot = [m for m in about if "keeps audit events 365 days, this one forever" in m]
    assert len(on_bot) == 2  # web's and same's
    assert all(m.startswith("Another copy of the gateway bot uses this database") for m in on_bot)
    assert all("deletes only what every process would: no audit event" in m for m in on_bot)
    [bot_on_shard] = [m for m in about if "keeps audit events 30 days, this one 365 days" in m]
    assert "audit events older than 365 days" in bot_on_shard


async def test_a_process_replaced_by_one_with_another_retention_is_not_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    board = Board(ManualClock())
    web, old = _watches(board, (WEB, 30), (WEB, 365))
    await old.check()
    await web.check()
    await old.stop()  # a rolling restart: the old setting's instance stops
    board.clock.advance(MINUTE)
    await web.check()
    board.clock.advance(MINUTE)
    await web.check()
    assert _about_retention(caplog) == []


class _Reports:
    def __init__(self, *reports: PurgeReport) -> None:
        self._reports = list(reports)

    async def execute(self, **_: object) -> PurgeReport:
        return self._reports.pop(0)


async def test_the_worker_says_once_what_other_processes_hold_its_purge_back_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = build_container(make_settings(audit_retention_days=365))
    held = PurgeReport(0, 0, 0, audit_retention_held=0, webhooks_held=True)
    free = PurgeReport(0, 0, 0)
    container.purge_expired.override(providers.Object(_Reports(held, held, free, free)))
    caplog.set_level(logging.INFO, logger="taskflow_link.purge")
    worker = PurgeWorker(container, first_run_after=1)
    for _ in range(4):
        await worker.run_once()
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(said) == 2, said
    (level, warning), (_, back) = said
    assert level == "WARNING"
    assert "audit events kept forever, not the 365 days of this one's " + RETENTION in warning
    assert "every pending webhook delivery kept" in warning
    assert "TASKFLOW_LINK_WEBHOOK_URLS" in warning
    assert "hooks.example" not in warning
    assert "its own settings apply" in back
