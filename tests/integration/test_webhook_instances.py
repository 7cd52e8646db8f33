"""The webhook outbox with two instances on one Postgres, each its own container (engine,
pool, worker and listening connection), as in separate processes, sending to one receiver
over real HTTP. Workers poll once an hour here: a webhook that goes out was announced by
NOTIFY (or by the listener's wake-up when it starts listening, which the tests wait out)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from dependency_injector import providers
from sqlalchemy import func, select

from adapters.queue_listener import BellListener
from adapters.sql import SqlDatabase
from adapters.sql.notifications import WEBHOOK_LISTENER_APPLICATION_NAME, PostgresQueueListener
from adapters.sql.tables import webhook_deliveries
from entrypoints.container import build_container
from entrypoints.webhook_worker import WebhookWorker
from tests.bot_support import wait_until
from tests.fakes.clock import ManualClock
from tests.fakes.queue_listener import CountingListener
from tests.harness import Harness, make_settings
from tests.integration.postgres import PostgresServer, listener_pids
from tests.integration.webhook_receiver import Receiver
from tests.servers import serve

SECRET = "whsec_" + base64.b64encode(b"two-instances-webhook-secret-32b").decode()
DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement
AN_HOUR = 3600.0


@dataclass
class Instance:
    h: Harness
    worker: WebhookWorker
    listener: CountingListener


@contextlib.asynccontextmanager
async def instance(database_url: str, hook_url: str, clock: ManualClock) -> AsyncIterator[Instance]:
    container = build_container(
        make_settings(
            storage="sql",
            database_url=database_url,
            webhook_urls=hook_url,
            webhook_secret=SECRET,
            webhook_poll_seconds=AN_HOUR,
        )
    )
    h = Harness.build(container)
    container.clock.override(clock)
    h.clock = clock
    real = container.webhook_queue_listener()
    assert isinstance(real, BellListener)  # this process\'s commits, and on Postgres
    assert isinstance(real.across, PostgresQueueListener)  # every instance\'s
    listener = CountingListener(real)
    container.webhook_queue_listener.override(providers.Object(listener))
    worker = WebhookWorker(container)
    try:
        yield Instance(h, worker, listener)
    finally:
        await worker.stop()
        await container.webhook_sender().aclose()
        await container.sql_db().dispose()


async def settled(*instances: Instance) -> None:
    await wait_until(
        lambda: all(i.listener.wakes >= 1 and i.worker.idle for i in instances), DEADLINE
    )


async def test_two_instances_deliver_each_event_once_woken_by_notify(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    receiver = Receiver((SECRET,))
    clock = ManualClock(datetime(2030, 5, 1, tzinfo=UTC))
    with serve(receiver) as url:
        hook_url = f"{url}/hooks"
        async with (
            instance(postgres.url, hook_url, clock) as a,
            instance(postgres.url, hook_url, clock) as b,
        ):
            a.worker.start()
            b.worker.start()
            await settled(a, b)
            # Queued from both instances, a few at a time, while both workers are sending.
            people = 24
            for start in range(0, people, 4):
                await asyncio.gather(
                    *(
                        (a if n % 2 else b).h.sign_up(f"person{n}", f"person{n}@example.com")
                        for n in range(start, start + 4)
                    )
                )
            await wait_until(lambda: len(receiver.hooks()) >= people, DEADLINE)
            await wait_until(lambda: a.worker.idle and b.worker.idle, DEADLINE)
            listeners = len(await listener_pids(pg_db, WEBHOOK_LISTENER_APPLICATION_NAME))

    hooks = receiver.hooks()
    assert all(h.verified and h.type == "account.created" for h in hooks)
    ids = Counter(h.message_id for h in hooks)
    assert len(ids) == people
    assert set(ids.values()) == {1}  # each event once
    created = Counter(h.payload["data"]["taskflow_user_id"] for h in hooks)
    assert len(created) == people
    async with pg_db.engine.connect() as conn:
        states: dict[str, int] = dict(
            (
                await conn.execute(
                    select(webhook_deliveries.c.state, func.count()).group_by(
                        webhook_deliveries.c.state
                    )
                )
            ).all()
        )
    assert states == {"delivered": people}
    assert listeners == 2  # one listening connection per instance, named for operators
