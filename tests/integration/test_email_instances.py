"""The email queue with several instances on one Postgres: each instance is a container of
its own (its own engine and pool) with its own worker, as in separate processes. Every
instance's worker hears of an email queued anywhere (LISTEN/NOTIFY), claims batches no other
worker gets (SKIP LOCKED), and the listener comes back after losing its connection.

Workers poll once an hour here: an email that goes out was announced by NOTIFY (or by the
listener's wake-up when it starts listening, which the tests wait out first)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dependency_injector import providers
from sqlalchemy import text

from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
    BellListener,
)
from adapters.sql import SqlDatabase
from adapters.sql.notifications import (
    LISTENER_APPLICATION_NAME,
    ROLE_CONNECTION_LISTENER_APPLICATION_NAME,
    ROLE_LISTENER_APPLICATION_NAME,
    WEBHOOK_LISTENER_APPLICATION_NAME,
    PostgresQueueListener,
)
from domain import errors
from domain.model import DeliveryStatus, EmailKind, OutgoingEmail
from domain.ports import EmailMessage
from domain.use_cases.email_delivery import MAX_ATTEMPTS, RETRY_DELAYS
from entrypoints.container import build_container
from entrypoints.email_worker import EmailWorker
from tests.bot_support import wait_until
from tests.fakes.clock import ManualClock
from tests.fakes.queue_listener import CountingListener
from tests.harness import TEST_SECRET_KEY, Harness, make_settings
from tests.integration.postgres import PostgresServer, listener_pids
from tests.servers import free_port

DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement
AN_HOUR = 3600.0


@dataclass
class Sent:
    """What reached the mail server, and through which instance."""

    messages: list[tuple[str, EmailMessage]] = field(default_factory=list)

    def sender(self, instance: str, *, failing: bool = False) -> RecordingSender:
        return RecordingSender(self, instance, failing)

    def to(self, address: str) -> list[str]:
        """The instances that sent an email to ``address``."""
        return [who for who, message in self.messages if message.to == address]


@dataclass
class RecordingSender:
    sent: Sent
    instance: str
    failing: bool = False

    async def send(self, message: EmailMessage) -> None:
        if self.failing:
            raise errors.EmailNotSent()
        await asyncio.sleep(0)  # let the other worker run in between
        self.sent.messages.append((self.instance, message))


@dataclass
class Instance:
    h: Harness
    worker: EmailWorker
    listener: CountingListener


@contextlib.asynccontextmanager
async def instance(
    url: str, name: str, sent: Sent, clock: ManualClock, *, failing: bool = False
) -> AsyncIterator[Instance]:
    """One instance of the service (its container, engine and worker; the worker is started
    by the test). Instances share the test's clock, as servers share the time."""
    container = build_container(
        make_settings(storage="sql", database_url=url, email_poll_seconds=AN_HOUR)
    )
    h = Harness.build(container)
    container.clock.override(clock)
    h.clock = clock
    container.email_sender.override(sent.sender(name, failing=failing))
    real = container.email_queue_listener()
    assert isinstance(real, BellListener)  # this process\'s commits, and on Postgres
    assert isinstance(real.across, PostgresQueueListener)  # every instance\'s
    listener = CountingListener(real)
    container.email_queue_listener.override(providers.Object(listener))
    worker = EmailWorker(container)
    try:
        yield Instance(h, worker, listener)
    finally:
        await worker.stop()
        await container.sql_db().dispose()


async def settled(*instances: Instance) -> None:
    """Each worker listens, has done what its start and its listener's first wake-up asked
    for, and waits: from now on only a NOTIFY can make it look at the queue."""
    await wait_until(
        lambda: all(i.listener.wakes >= 1 and i.worker.idle for i in instances), DEADLINE
    )


async def eventually(
    read: Callable[[], Awaitable[set[int]]], wanted: Callable[[set[int]], bool]
) -> set[int]:
    """What ``read`` gives once it is ``wanted`` (a closing connection leaves
    pg_stat_activity a little after it closed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not wanted(found := await read()):
        assert loop.time() < deadline, f"still {found}"
        await asyncio.sleep(0.05)
    return found


async def terminate(database: SqlDatabase, pids: set[int]) -> None:
    async with database.engine.connect() as conn:
        for pid in pids:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@pytest.fixture
def clock() -> ManualClock:
    # The real time: `taskflow-link email retry`, in its own process, requeues at the real now.
    return ManualClock(datetime.now(UTC))


async def test_two_instances_send_each_queued_email_exactly_once(
    postgres: PostgresServer, pg_db: SqlDatabase, clock: ManualClock
) -> None:
    sent = Sent()
    async with (
        instance(postgres.url, "a", sent, clock) as a,
        instance(postgres.url, "b", sent, clock) as b,
    ):
        a.worker.start()
        b.worker.start()
        await settled(a, b)
        addresses = [f"person{n}@example.com" for n in range(24)]
        # Queued from both instances, a few at a time, while both workers are sending.
        for start in range(0, len(addresses), 4):
            await asyncio.gather(
                *(
                    (a if n % 2 else b).h.sign_up(f"person{n}", addresses[n])
                    for n in range(start, start + 4)
                )
            )
        await wait_until(lambda: len(sent.messages) >= len(addresses), DEADLINE)
        await wait_until(lambda: a.worker.idle and b.worker.idle, DEADLINE)

    assert Counter(message.to for _, message in sent.messages) == Counter(addresses)
    assert await _statuses(pg_db) == {"sent": len(addresses)}


async def test_an_email_queued_by_another_instance_wakes_a_worker_that_polls_hourly(
    postgres: PostgresServer, pg_db: SqlDatabase, clock: ManualClock
) -> None:
    sent = Sent()
    async with (
        instance(postgres.url, "a", sent, clock) as a,
        instance(postgres.url, "b", sent, clock) as b,
    ):
        b.worker.start()  # a only queues: it runs no worker
        await settled(b)
        await a.h.sign_up("alice", "alice@example.com")
        await wait_until(lambda: sent.to("alice@example.com") == ["b"], DEADLINE)

        # The listener's connection is cut (a restarted database, a network blip): it comes
        # back by itself, and the next email from elsewhere still wakes the worker.
        await wait_until(lambda: b.worker.idle, DEADLINE)
        wakes = b.listener.wakes
        before = await eventually(
            lambda: listener_pids(pg_db, LISTENER_APPLICATION_NAME), lambda pids: len(pids) == 1
        )
        await terminate(pg_db, before)
        await wait_until(lambda: b.listener.wakes > wakes and b.worker.idle, DEADLINE)
        after = await eventually(
            lambda: listener_pids(pg_db, LISTENER_APPLICATION_NAME), lambda pids: len(pids) == 1
        )
        assert after != before
        await a.h.sign_up("bob", "bob@example.com")
        await wait_until(lambda: sent.to("bob@example.com") == ["b"], DEADLINE)


async def test_the_listener_reconnects_after_its_connection_is_terminated(
    postgres: PostgresServer, pg_db: SqlDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskflow_link.email")
    listener = PostgresQueueListener(postgres.url, retry_seconds=(0.05, 1.0))
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    async def queue_one() -> None:
        async with pg_db.unit_of_work() as uow:
            await uow.outgoing_emails.add(_notice())
            await uow.commit()

    task = asyncio.create_task(listener.listen(wake))
    try:
        await wait_until(lambda: wakes == 1, DEADLINE)  # listening: "look at the queue now"
        await queue_one()
        await wait_until(lambda: wakes == 2, DEADLINE)  # the NOTIFY, at commit

        before = await listener_pids(pg_db, LISTENER_APPLICATION_NAME)
        await terminate(pg_db, before)
        await wait_until(lambda: wakes == 3, DEADLINE)  # listening again, and looks again
        # The terminated backend may linger in pg_stat_activity a little.
        after = await eventually(
            lambda: listener_pids(pg_db, LISTENER_APPLICATION_NAME),
            lambda pids: bool(pids) and not pids & before,
        )
        assert after
        await queue_one()
        await wait_until(lambda: wakes == 4, DEADLINE)  # NOTIFY on the new connection
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    ours = [r for r in caplog.records if r.name == "taskflow_link.email"]
    [warning] = [r for r in ours if r.levelno >= logging.WARNING]  # once, for the one loss
    assert "lost its database connection" in warning.getMessage()
    assert [r.getMessage() for r in ours if r.levelno == logging.INFO] == [
        "email queue listener: listening again"
    ]
    # Cancelled: its connection is closed.
    await eventually(
        lambda: listener_pids(pg_db, LISTENER_APPLICATION_NAME), lambda pids: pids == set()
    )


async def test_a_listener_that_cannot_reach_the_database_warns_once_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskflow_link.email")
    nowhere = f"postgresql+asyncpg://taskflow:s3cret-pw@127.0.0.1:{free_port()}/taskflow"
    listener = PostgresQueueListener(nowhere, retry_seconds=(0.01, 0.05))

    def tries() -> int:
        return sum("retrying" in r.getMessage() for r in caplog.records)

    task = asyncio.create_task(listener.listen(lambda: None))
    try:
        await wait_until(lambda: tries() >= 3, DEADLINE)
        assert not task.done()  # an outage never ends it
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "email queue listener cannot reach the database" in warnings[0]
    assert "s3cret-pw" not in caplog.text


@pytest.mark.parametrize(
    ("channel", "application_name", "logger"),
    [
        (EMAIL_QUEUE_CHANNEL, LISTENER_APPLICATION_NAME, "taskflow_link.email"),
        (ROLE_QUEUE_CHANNEL, ROLE_LISTENER_APPLICATION_NAME, "taskflow_link.roles"),
        (WEBHOOK_QUEUE_CHANNEL, WEBHOOK_LISTENER_APPLICATION_NAME, "taskflow_link.webhooks"),
        (
            ROLE_CONNECTION_CHANNEL,
            ROLE_CONNECTION_LISTENER_APPLICATION_NAME,
            "taskflow_link.role_connections",
        ),
    ],
    ids=["email", "roles", "webhooks", "role_connections"],
)
async def test_each_queues_listener_logs_where_its_worker_does(
    caplog: pytest.LogCaptureFixture, channel: str, application_name: str, logger: str
) -> None:
    """Every queue's listener logged under ``taskflow_link.email``: an operator who quieted
    the email logger lost the webhook listener's outage, and one who followed
    ``taskflow_link.webhooks`` never saw it."""
    caplog.set_level(logging.DEBUG, logger="taskflow_link")
    nowhere = f"postgresql+asyncpg://taskflow:s3cret-pw@127.0.0.1:{free_port()}/taskflow"
    listener = PostgresQueueListener(
        nowhere, channel, application_name=application_name, retry_seconds=(0.01, 0.05)
    )
    task = asyncio.create_task(listener.listen(lambda: None))
    try:
        await wait_until(
            lambda: any(r.levelno >= logging.WARNING for r in caplog.records), DEADLINE
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert caplog.records
    assert {r.name for r in caplog.records} == {logger}
    assert "cannot reach the database" in caplog.records[0].getMessage()


async def test_the_notify_is_part_of_the_transaction_that_queues(pg_db: SqlDatabase) -> None:
    """Sent at commit (not before), dropped by a rollback, and one per transaction."""
    heard: list[str] = []
    async with pg_db.engine.connect() as probe, pg_db.engine.connect() as other:
        driver = (await probe.get_raw_connection()).driver_connection
        assert driver is not None

        def record(*notification: object) -> None:
            heard.append(str(notification[-1]))  # the payload

        await driver.add_listener(EMAIL_QUEUE_CHANNEL, record)
        raw = (await other.get_raw_connection()).driver_connection
        assert raw is not None

        async with pg_db.unit_of_work() as uow:
            await uow.outgoing_emails.add(_notice())  # rolled back
        async with pg_db.unit_of_work() as uow:
            await uow.outgoing_emails.add(_notice())
            await uow.outgoing_emails.add(_notice())
            await raw.execute(f"NOTIFY {EMAIL_QUEUE_CHANNEL}, 'before the commit'")
            await uow.commit()
        await raw.execute(f"NOTIFY {EMAIL_QUEUE_CHANNEL}, 'end'")
        await wait_until(lambda: "end" in heard, DEADLINE)
        await driver.remove_listener(EMAIL_QUEUE_CHANNEL, record)
    # Notifications arrive in commit order: anything sent outside those transactions would
    # be among them.
    assert heard == ["before the commit", "", "end"]


async def test_email_retry_requeues_a_given_up_email_which_is_then_sent(
    postgres: PostgresServer, pg_db: SqlDatabase, clock: ManualClock, tmp_path: Path
) -> None:
    sent = Sent()
    async with (
        instance(postgres.url, "a", sent, clock, failing=True) as a,
        instance(postgres.url, "b", sent, clock) as b,
    ):
        # Instance a's mail server is down until delivery gives up.
        signed_up = await a.h.sign_up("carol", "carol@example.com")
        for delay in (timedelta(0), *RETRY_DELAYS):
            clock.advance(delay)
            await a.h.deliver()
        async with pg_db.unit_of_work(read_only=True) as uow:
            email = await uow.outgoing_emails.latest(signed_up.account.id, EmailKind.VERIFY_EMAIL)
        assert email is not None
        assert (email.status, email.attempts) == (DeliveryStatus.FAILED, MAX_ATTEMPTS)

        b.worker.start()
        await settled(b)
        assert sent.messages == []  # given up: nobody tries it any more

        done = await _cli(postgres.url, tmp_path, "email", "retry")
        assert (done.returncode, done.stdout.strip()) == (0, "Requeued 1 email(s).")
        assert "carol" not in done.stdout + done.stderr  # no addresses (nor links)
        await wait_until(lambda: sent.to("carol@example.com") == ["b"], DEADLINE)

        again = await _cli(postgres.url, tmp_path, "email", "retry", "--id", str(email.id))
        assert again.returncode == 1
        assert "No email with this id was given up." in again.stderr
        bad = await _cli(postgres.url, tmp_path, "email", "retry", "--id", "not-a-uuid")
        assert bad.returncode == 2
        assert "not a valid UUID" in bad.stderr
        assert "Traceback" not in again.stderr + bad.stderr
    async with pg_db.unit_of_work(read_only=True) as uow:
        after = await uow.outgoing_emails.latest(signed_up.account.id, EmailKind.VERIFY_EMAIL)
    assert after is not None
    assert (after.status, after.attempts) == (DeliveryStatus.SENT, 1)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def _cli(url: str, cwd: Path, *args: str) -> Done:
    """``taskflow-link ARGS`` as an operator runs it: a process of its own."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": url,
    }
    if "PYTHONPATH" in os.environ:  # where Python finds the code under test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from entrypoints.cli import main; main()",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return Done(process.returncode, stdout.decode(), stderr.decode())


def _notice() -> OutgoingEmail:
    now = datetime.now(UTC)
    return OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, "x@example.com", None, now, now)


async def _statuses(database: SqlDatabase) -> dict[str, int]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status, count(*) AS n FROM outgoing_emails GROUP BY status")
        )
        return {row.status: row.n for row in rows}
