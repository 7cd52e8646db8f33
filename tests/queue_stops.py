"""Every queue (email, webhooks, the role for linked members, Linked Roles) set up the same way
for the tests of a worker that stops during a pass: rows due, the outside call (SMTP, a
webhook receiver, Discord) behind a ``Gate`` that holds the first call, and the rows read back
as ``Row``s, on the in-memory store or on SQL (SQLite, Postgres). A second instance (its own
container on the same database) shares the first one's clock and outside world."""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar.types import ASGIApp
from sqlalchemy import select

from adapters.memory import MemoryDatabase
from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
)
from adapters.sql import SqlDatabase
from adapters.sql.tables import (
    discord_role_changes,
    outgoing_emails,
    role_connection_tokens,
    webhook_deliveries,
)
from adapters.webhooks import endpoint_for
from domain.model import (
    DeliveryStatus,
    DiscordId,
    EmailKind,
    LinkedRole,
    OutgoingEmail,
    RoleAction,
    RoleChange,
    RoleChangeStatus,
)
from domain.ports import EmailMessage, RoleCallOutcome, RoleCallResult, WebhookMessage
from domain.webhooks import (
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    WebhookState,
)
from entrypoints.container import build_container
from entrypoints.email_worker import EmailWorker
from entrypoints.queue_worker import QueueWorker
from entrypoints.role_connection_worker import RoleConnectionWorker
from entrypoints.role_worker import RoleWorker
from entrypoints.webhook_worker import WebhookWorker
from tests.fakes.role_connections import InMemoryDiscordWithRoles, connected, fake, role_harness
from tests.harness import Harness, make_settings, webhook_secret

HOOK = "https://hooks.example.com/in"
SECRET = webhook_secret("queue-stops")
ROLE = LinkedRole(DiscordId(1300000000000000001), DiscordId(1300000000000000099))
ROWS = 6  # queued; every worker's batch takes them all
AN_HOUR = 3600.0


class Gate:
    """The outside call: the first one is held until the gate opens (or for good); every
    call is counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def through(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await self.opened.wait()


@dataclass(frozen=True)
class Row:
    """A queued row as a worker left it."""

    done: bool  # sent, delivered, applied, pushed
    leased: bool  # under a lease that has not run out
    tries: int  # attempts (failures, for Linked Roles) counted towards giving up


NOT_DONE_AND_FREE = Row(done=False, leased=False, tries=0)


class QueueKind(ABC):
    name: str
    channel: str  # what the workers are woken on
    listener: str  # the container's provider of the worker's listener

    def __init__(self, gate: Gate, **settings: Any) -> None:
        """``settings``: the storage's (memory unless given)."""
        self.gate, self.settings = gate, settings

    @abstractmethod
    def instance(self, like: Harness | None = None) -> Harness:
        """A process of the service, its outside call behind the gate (``like``: another
        instance of the same deployment, whose clock and outside world it shares)."""

    @abstractmethod
    async def fill(self, h: Harness) -> None:
        """``ROWS`` rows due now."""

    @abstractmethod
    def worker(self, h: Harness) -> QueueWorker: ...

    async def rows(self, h: Harness) -> list[Row]:
        now = h.clock.now()
        if h.container.settings().storage == "memory":
            database: MemoryDatabase = h.container.memory_db()
            return [self.row(found, now) for found in self.in_memory(database)]
        sql: SqlDatabase = h.container.sql_db()
        async with sql.engine.connect() as conn:
            return [self.row(found, now) for found in await conn.execute(self.query())]

    @abstractmethod
    def in_memory(self, database: MemoryDatabase) -> list[Any]: ...

    @abstractmethod
    def query(self) -> Any: ...

    @abstractmethod
    def row(self, found: Any, now: datetime) -> Row:
        """A row of the store (a domain object or a SQL row: the same names)."""

    def _share(self, h: Harness, like: Harness | None) -> Harness:
        if like is not None:
            h.container.clock.override(like.clock)
            h.clock = like.clock
        return h


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


class EmailQueue(QueueKind):
    name, channel = "email", EMAIL_QUEUE_CHANNEL
    listener = "email_queue_listener"

    def instance(self, like: Harness | None = None) -> Harness:
        h = self._share(
            Harness.build(
                build_container(make_settings(email_poll_seconds=AN_HOUR, **self.settings))
            ),
            like,
        )
        outbox, gate = h.outbox, self.gate

        class Sender:
            async def send(self, message: EmailMessage) -> None:
                await gate.through()
                await outbox.send(message)

        h.container.email_sender.override(Sender())
        return h

    async def fill(self, h: Harness) -> None:
        for n in range(ROWS // 2):
            account = (await h.sign_up(f"user{n}", f"user{n}@example.com")).account
            async with h.uow() as uow:  # a notice besides the confirmation: two per account
                now = h.clock.now()
                notice = OutgoingEmail(
                    uuid.uuid4(),
                    EmailKind.PASSWORD_CHANGED,
                    account.email or "",
                    account.id,
                    now,
                    now,
                )
                await uow.outgoing_emails.add(notice)
                await uow.commit()

    def worker(self, h: Harness) -> QueueWorker:
        return EmailWorker(h.container)

    def in_memory(self, database: MemoryDatabase) -> list[Any]:
        return list(database.tables.outgoing_emails.values())

    def query(self) -> Any:
        return select(outgoing_emails)

    def row(self, found: Any, now: datetime) -> Row:
        pending = _status(found.status) == DeliveryStatus.PENDING.value
        return Row(
            _status(found.status) == DeliveryStatus.SENT.value,
            pending and found.next_attempt_at > now,
            found.attempts,
        )


class WebhookQueue(QueueKind):
    name, channel = "webhook", WEBHOOK_QUEUE_CHANNEL
    listener = "webhook_queue_listener"

    def instance(self, like: Harness | None = None) -> Harness:
        settings = make_settings(
            webhook_urls=HOOK, webhook_secret=SECRET, webhook_poll_seconds=AN_HOUR, **self.settings
        )
        h = self._share(Harness.build(build_container(settings)), like)
        gate = self.gate

        class Sender:
            async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
                await gate.through()
                return 204

        h.container.webhook_sender.override(Sender())
        return h

    async def fill(self, h: Harness) -> None:
        endpoint = endpoint_for(HOOK)
        for _ in range(ROWS):
            now = h.clock.now()
            event = WebhookEvent(uuid.uuid4(), WebhookEventType.LINK_CREATED, now, '{"type":"x"}')
            delivery = WebhookDelivery(uuid.uuid4(), event, endpoint.key, endpoint.host, now, now)
            async with h.uow() as uow:
                await uow.webhooks.add(event, [delivery])
                await uow.commit()

    def worker(self, h: Harness) -> QueueWorker:
        return WebhookWorker(h.container)

    def in_memory(self, database: MemoryDatabase) -> list[Any]:
        return list(database.tables.webhook_deliveries.values())

    def query(self) -> Any:
        return select(webhook_deliveries).order_by(webhook_deliveries.c.seq)

    def row(self, found: Any, now: datetime) -> Row:
        pending = _status(found.state) == WebhookState.PENDING.value
        return Row(
            _status(found.state) == WebhookState.DELIVERED.value,
            pending and found.next_attempt_at > now,
            found.attempts,
        )


class RoleQueue(QueueKind):
    name, channel = "role", ROLE_QUEUE_CHANNEL
    listener = "role_queue_listener"

    def instance(self, like: Harness | None = None) -> Harness:
        settings = make_settings(
            discord_linked_roles=str(ROLE),
            discord_bot_token="bot-token",
            discord_roles_poll_seconds=AN_HOUR,
            **self.settings,
        )
        h = self._share(Harness.build(build_container(settings)), like)
        gate = self.gate

        class Roles:
            async def add_role(
                self, role: LinkedRole, member: DiscordId, *, reason: str
            ) -> RoleCallResult:
                await gate.through()
                return RoleCallResult(RoleCallOutcome.DONE)

            remove_role = add_role

        h.container.discord_roles.override(Roles())
        return h

    async def fill(self, h: Harness) -> None:
        for n in range(ROWS):
            now = h.clock.now()
            async with h.uow() as uow:  # members never linked: their role goes
                change = RoleChange(DiscordId(900 + n), ROLE, RoleAction.REMOVE, now, now)
                await uow.role_changes.request(change)
                await uow.commit()

    def worker(self, h: Harness) -> QueueWorker:
        return RoleWorker(h.container)

    def in_memory(self, database: MemoryDatabase) -> list[Any]:
        return list(database.tables.role_changes.values())

    def query(self) -> Any:
        return select(discord_role_changes)

    def row(self, found: Any, now: datetime) -> Row:
        held = found.claimed_until
        return Row(
            _status(found.status) == RoleChangeStatus.DONE.value,
            held is not None and held > now,
            found.attempts,
        )


class RoleConnectionQueue(QueueKind):
    name, channel = "role connection", ROLE_CONNECTION_CHANNEL
    listener = "role_connection_listener"

    def instance(self, like: Harness | None = None) -> Harness:
        h = self._share(role_harness(role_connections_poll_seconds=AN_HOUR, **self.settings), like)
        discord = fake(like) if like is not None else fake(h)
        if like is not None:  # the same Discord: the tokens it issued work from either
            h.container.discord_oauth.override(discord)
            h.container.discord_role_connections.override(discord)
            h.discord = discord
        return h

    async def fill(self, h: Harness) -> None:
        for n in range(ROWS):
            await connected(h, 700 + n, f"member{n}")
        async with h.uow() as uow:  # as when linked_days changes: every connection due
            await uow.role_connection_tokens.mark_all_due(h.clock.now())
            await uow.commit()
        discord: InMemoryDiscordWithRoles = fake(h)
        pushes, gate = discord.push, self.gate

        async def push(access_token: str, connection: Any, **limits: Any) -> None:
            await gate.through()
            await pushes(access_token, connection, **limits)

        discord.push = push  # type: ignore[method-assign]

    def worker(self, h: Harness) -> QueueWorker:
        return RoleConnectionWorker(h.container)

    def in_memory(self, database: MemoryDatabase) -> list[Any]:
        return list(database.tables.role_connection_tokens.values())

    def query(self) -> Any:
        return select(role_connection_tokens)

    def row(self, found: Any, now: datetime) -> Row:
        held = found.claimed_until
        return Row(
            held is None and found.next_push_at > now,
            held is not None and held > now,
            found.failures,
        )


QUEUES: dict[str, type[QueueKind]] = {
    kind.name: kind for kind in (EmailQueue, WebhookQueue, RoleQueue, RoleConnectionQueue)
}


async def stopped_during_the_first_call(
    kind: QueueKind, worker: QueueWorker, *, cut_off: bool = False
) -> None:
    """``worker`` claims its batch and starts its first call; its process stops then. The
    call finishes as the stop begins (within the grace), or, ``cut_off``, not before the
    stop is over (a grace of 0: it is cut off at once)."""
    worker.start()
    await asyncio.wait_for(kind.gate.entered.wait(), 60)  # a bound, not a measurement
    if cut_off:
        await worker.stop(grace=0)
        kind.gate.opened.set()
        return
    stopping = asyncio.ensure_future(worker.stop())
    for _ in range(10_000):  # a bound, not a deadline: each turn is one of the loop's
        if worker.stopping.asked:
            break
        await asyncio.sleep(0)
    assert worker.stopping.asked
    kind.gate.opened.set()
    await stopping


def worker_task(name: str) -> asyncio.Task[object]:
    """A running worker's task, by its name (``QueueWorker.name``)."""
    named = f"taskflow-link {name} worker"
    return next(task for task in asyncio.all_tasks() if task.get_name() == named)


async def until_cancelled(task: asyncio.Task[object]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60  # a bound, not a measurement
    while not (task.cancelling() or task.done()):
        assert loop.time() < deadline, "the stop never cut the pass off"
        await asyncio.sleep(0.001)


class Lifespan:
    """A server's ASGI lifespan for an app, in this event loop (Litestar's test client runs
    the app in a thread of its own, and its exit blocks the caller's loop)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Future[None] | None = None

    async def _send(self, message: Any) -> None:
        await self._from_app.put(message)

    async def _receive(self) -> Any:
        return await self._to_app.get()

    async def _step(self, what: str) -> None:
        await self._to_app.put({"type": f"lifespan.{what}"})
        answer = await asyncio.wait_for(self._from_app.get(), 60)  # a bound, not a timing
        assert answer["type"] == f"lifespan.{what}.complete", answer

    async def start(self) -> None:
        scope: Any = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self._app(scope, self._receive, self._send))
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        assert self._task is not None
        await self._task
