"""Two webhook claimers on real Postgres, the second one arriving while the first still holds
an endpoint's first delivery in its transaction: it waits for that row (it may not skip it and
take the deliveries behind it), then sees what the first left. Whatever the timing, no two
workers send one endpoint's deliveries side by side or out of order. And the other writers of
delivery rows never wait for one in an order that could close a circle with a claim's: purge
skips what another transaction holds, bulk requeue locks in the claims' order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlWebhooks
from domain.model import DiscordId
from domain.ports import UnitOfWork, WebhookMessage
from domain.use_cases import WebhookReport
from domain.webhooks import GoneEndpoint, WebhookDelivery, WebhookEndpoint, WebhookState
from tests.contracts.repositories import HOOK_A, HOOK_B, NOW, webhook, write
from tests.fakes.webhooks import InterleavingSender
from tests.harness import sql_harness, webhook_secret
from tests.integration.postgres import PostgresServer

DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement
LEASE = timedelta(minutes=2)
SECRET = webhook_secret("webhook-claims")


async def _blocked_or_done(database: SqlDatabase, task: asyncio.Task[object]) -> None:
    """Until ``task`` waits for a row lock in this database (or has finished: then the
    assertions after say whether it should have)."""
    deadline = time.monotonic() + DEADLINE
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while not task.done():
        async with database.engine.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return
        assert time.monotonic() < deadline, "the second claimer neither waited nor finished"
        await asyncio.sleep(0.02)


async def _queue_three(pg_db: SqlDatabase) -> list[WebhookDelivery]:
    queued = [webhook(NOW) for _ in range(3)]

    async def add_all(uow: UnitOfWork) -> None:
        for event, deliveries in queued:
            await uow.webhooks.add(event, deliveries)

    await write(pg_db.unit_of_work, add_all)
    return [ds[0] for _, ds in queued]


async def _claim(pg_db: SqlDatabase) -> list[WebhookDelivery]:
    async with pg_db.unit_of_work() as uow:
        claimed = await uow.webhooks.claim_due(NOW, NOW + LEASE, 10, [HOOK_A.key])
        await uow.commit()
    return list(claimed)


async def test_a_claim_made_while_another_holds_the_endpoint_takes_nothing(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    first, *_behind = await _queue_three(pg_db)
    async with pg_db.unit_of_work() as uow:
        # Worker A's claim, one delivery (its batch was full), not committed yet.
        [held] = await uow.webhooks.claim_due(NOW, NOW + LEASE, 1, [HOOK_A.key])
        other = asyncio.create_task(_claim(pg_db))  # worker B, woken by a NOTIFY
        await _blocked_or_done(pg_db, other)
        await uow.commit()
    assert held.id == first.id
    # B saw A's lease on the first delivery: the two behind it (due, unlocked) stay put.
    assert await asyncio.wait_for(other, DEADLINE) == []


async def test_a_claim_waiting_on_a_delivery_being_finished_starts_after_it(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    first, second, third = await _queue_three(pg_db)
    async with pg_db.unit_of_work() as uow:
        [held] = await uow.webhooks.claim_due(NOW, NOW + LEASE, 1, [HOOK_A.key])
        await uow.commit()
    assert held.id == first.id
    async with pg_db.unit_of_work() as uow:
        # Worker A records the first as delivered; B claims meanwhile and waits for it.
        delivered = replace(held, state=WebhookState.DELIVERED, attempts=1, finished_at=NOW)
        assert await uow.webhooks.save(delivered, leased_until=held.next_attempt_at)
        other = asyncio.create_task(_claim(pg_db))
        await _blocked_or_done(pg_db, other)
        await uow.commit()
    # Then the second is first in line: B takes it and the third, in order.
    assert [d.id for d in await asyncio.wait_for(other, DEADLINE)] == [second.id, third.id]


async def test_two_workers_send_one_endpoints_events_in_order(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """The review's case through the use cases: worker A is sending link.created when an
    unlink commits and worker B makes a pass. B leaves the endpoint to A; A's next pass
    sends link.deleted."""
    sender = InterleavingSender()
    arrived, during = sender.arrived, sender.during

    async with sql_harness(
        postgres.url, webhook_urls="https://hooks.example.com/in", webhook_secret=SECRET
    ) as h:
        h.container.webhook_sender.override(sender)
        account = (await h.sign_up("alice", "alice@example.com")).account
        await h.container.deliver_webhooks().execute()
        arrived.clear()
        await h.discord_link(account.id, h.discord_user(7300, username="d_alice"))
        second_worker: list[WebhookReport] = []

        async def unlink_and_a_second_worker() -> None:
            await h.container.unlink_discord().execute(DiscordId(7300))
            second_worker.append(await h.container.deliver_webhooks().execute())

        during.append(unlink_and_a_second_worker)
        await h.container.deliver_webhooks().execute()
        await h.container.deliver_webhooks().execute()
    assert second_worker == [WebhookReport()]
    assert arrived == ["link.created", "link.deleted"]


async def test_purge_skips_a_delivery_another_transaction_holds_and_never_waits(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """A claim holds the first of two month-old deliveries of an endpoint no longer
    configured: purge leaves that whole queue to its next run at once (had it waited on the
    claim's row, it could wait in a circle with another claim; had it deleted the other, the
    claimer would send the first and the receiver never get the second)."""
    month_ago = NOW - timedelta(days=40)
    queued = [webhook(month_ago) for _ in range(2)]

    async def add_all(uow: UnitOfWork) -> None:
        for event, deliveries in queued:
            await uow.webhooks.add(event, deliveries)

    await write(pg_db.unit_of_work, add_all)
    held_id, free_id = (ds[0].id for _, ds in queued)

    async def purge() -> int:
        async with pg_db.unit_of_work() as uow:
            purged = await uow.webhooks.purge_finished(NOW - timedelta(days=30), [])
            await uow.commit()
        return purged

    async with pg_db.unit_of_work() as uow:
        [held] = await uow.webhooks.claim_due(NOW, NOW + LEASE, 1, [HOOK_A.key])
        assert held.id == held_id
        purging = asyncio.create_task(purge())
        await _blocked_or_done(pg_db, purging)
        assert purging.done(), "purge waited for the claim's row lock"
        assert await purging == 0
        # (The claimer gives up: a claim that went through would put the row in a worker's
        # hand, and purge keeps those.)
        await uow.rollback()
    async with pg_db.unit_of_work(read_only=True) as uow:
        assert await uow.webhooks.get(free_id) is not None
        assert await uow.webhooks.get(held_id) is not None
    assert await purge() == 2  # the next run takes the queue


async def test_bulk_requeue_locks_its_rows_endpoint_by_endpoint_in_queue_order(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """Claims lock endpoint by endpoint (sorted keys), each in queue order; so does
    ``webhooks retry``. Queued B, B, A, A (so the table's own order is not the claims'),
    with B's first row held by another transaction: requeue waits for it holding both of
    A's rows and none of B's after it. An UPDATE alone would have locked B's first (and
    waited there) before A's."""
    queued = [webhook(NOW, endpoint) for endpoint in (HOOK_B, HOOK_B, HOOK_A, HOOK_A)]
    failed = [
        (event, [replace(d, state=WebhookState.FAILED, attempts=10, finished_at=NOW)])
        for event, [d] in queued
    ]

    async def add_all(uow: UnitOfWork) -> None:
        for event, deliveries in failed:
            await uow.webhooks.add(event, deliveries)

    await write(pg_db.unit_of_work, add_all)
    b1, b2, a1, a2 = (ds[0].id for _, ds in failed)
    lock = text("SELECT seq FROM webhook_deliveries WHERE id = :id FOR UPDATE")

    async def requeue() -> int:
        async with pg_db.unit_of_work() as uow:
            requeued = await uow.webhooks.requeue(NOW)
            await uow.commit()
        return requeued

    async def can_lock(delivery_id: object) -> bool:
        async with pg_db.engine.connect() as conn, conn.begin():
            try:
                await conn.execute(text(f"{lock.text} NOWAIT"), {"id": delivery_id})
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                    return False
                raise
            return True

    async with pg_db.engine.connect() as holder, holder.begin():
        await holder.execute(lock, {"id": b1})
        requeuing = asyncio.create_task(requeue())
        await _blocked_or_done(pg_db, requeuing)
        assert not requeuing.done()
        assert [await can_lock(i) for i in (a1, a2, b2)] == [False, False, True]
    assert await asyncio.wait_for(requeuing, DEADLINE) == 4


async def test_a_pass_that_saw_no_410_before_its_claim_sends_nothing_behind_one_made_meanwhile(
    postgres: PostgresServer, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's review: worker B's pass read the stopped endpoints, then worker A's
    attempt was answered 410 (its delivery refused, the endpoint stopped, the ones behind let
    go), then B claimed: each statement sees what committed before it, so B took the
    deliveries behind the refused one and sent them, ahead of it, to an endpoint that had
    asked for nothing more. B lets them go untried."""
    sent: list[str] = []

    class RefusingFirst:
        async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
            sent.append(json.loads(message.body)["data"]["taskflow_user_id"])
            return 410 if len(sent) == 1 else 204

    async with sql_harness(
        postgres.url, webhook_urls="https://hooks.example.com/in", webhook_secret=SECRET
    ) as h:
        h.container.webhook_sender.override(RefusingFirst())
        for name in ("alice", "bob", "carol"):
            await h.sign_up(name, f"{name}@example.com")
        read_gone = SqlWebhooks.gone_endpoints
        worker_a: list[WebhookReport] = []

        async def then_worker_a_meanwhile(self: SqlWebhooks) -> Sequence[GoneEndpoint]:
            found = await read_gone(self)
            if not worker_a:  # worker B's first look: worker A's whole pass runs now
                worker_a.append(WebhookReport())
                worker_a[0] = await h.container.deliver_webhooks().execute()
            return found

        monkeypatch.setattr(SqlWebhooks, "gone_endpoints", then_worker_a_meanwhile)
        worker_b = await h.container.deliver_webhooks().execute()
        monkeypatch.undo()
        assert len(worker_a[0].gone) == 1
        assert worker_b == WebhookReport()
        async with pg_db.unit_of_work(read_only=True) as uow:
            [status] = await uow.webhooks.summary()
        assert status.counts == {WebhookState.GONE: 1, WebhookState.PENDING: 2}
    assert len(sent) == 1  # alice's, refused; bob's and carol's wait behind it
