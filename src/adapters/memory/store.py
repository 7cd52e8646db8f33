"""An in-memory database with real transactions.

Honest enough to pass the same contract tests as the SQL adapters: a unit of work sees a
private copy of the tables, ``commit()`` publishes it, anything else is thrown away; the
uniqueness rules of the SQL schema raise ``Conflict``; and transactions are serialised by a
lock, so "consume once" has exactly one winner as it does with row locks in Postgres.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter, deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import takewhile
from types import TracebackType
from typing import Self, TypeVar

from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
    QueueBell,
)
from domain import errors
from domain.model import (
    ADD_MAY_HAVE_GIVEN,
    Account,
    AccountId,
    ApiKey,
    AuditEvent,
    AuditKind,
    DeliveryStatus,
    DiscordId,
    EmailKind,
    EmailPurpose,
    EmailToken,
    Link,
    LinkedRole,
    LinkProposal,
    LinkRow,
    LinkTicket,
    LostRoleConnection,
    OutgoingEmail,
    PendingLogin,
    RoleAction,
    RoleChange,
    RoleChangeCount,
    RoleChangeStatus,
    RoleConnectionCounts,
    RoleConnectionLoss,
    RoleConnectionLossCount,
    RoleConnectionToken,
    Session,
    SignInMethod,
    normalize_email,
)
from domain.ports import RoleCallOutcome
from domain.webhooks import (
    GoneEndpoint,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSummary,
    WebhookEvent,
    WebhookState,
)


@dataclass
class Tables:
    accounts: dict[AccountId, Account] = field(default_factory=dict)
    links: dict[DiscordId, Link] = field(default_factory=dict)
    pending_logins: dict[str, PendingLogin] = field(default_factory=dict)
    link_tickets: dict[str, LinkTicket] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    api_keys: dict[uuid.UUID, ApiKey] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)
    email_tokens: dict[str, EmailToken] = field(default_factory=dict)
    outgoing_emails: dict[uuid.UUID, OutgoingEmail] = field(default_factory=dict)
    link_proposals: dict[str, LinkProposal] = field(default_factory=dict)
    role_changes: dict[tuple[DiscordId, LinkedRole], RoleChange] = field(default_factory=dict)
    webhook_events: dict[uuid.UUID, WebhookEvent] = field(default_factory=dict)
    webhook_deliveries: dict[uuid.UUID, WebhookDelivery] = field(default_factory=dict)
    gone_endpoints: dict[str, GoneEndpoint] = field(default_factory=dict)
    role_connection_tokens: dict[DiscordId, RoleConnectionToken] = field(default_factory=dict)
    # (account, normalised address) -> when its holder declined the account.
    declined_addresses: dict[tuple[AccountId, str], datetime] = field(default_factory=dict)

    def copy(self) -> Tables:
        # Rows are frozen dataclasses, so copying the containers isolates a transaction.
        return Tables(
            dict(self.accounts),
            dict(self.links),
            dict(self.pending_logins),
            dict(self.link_tickets),
            dict(self.sessions),
            dict(self.api_keys),
            list(self.audit),
            dict(self.email_tokens),
            dict(self.outgoing_emails),
            dict(self.link_proposals),
            dict(self.role_changes),
            dict(self.webhook_events),
            dict(self.webhook_deliveries),
            dict(self.gone_endpoints),
            dict(self.role_connection_tokens),
            dict(self.declined_addresses),
        )


class AnyLoopLock:
    """A lock for coroutines of any event loop, in any thread: what the memory database takes
    for each unit of work. Litestar's test client runs the app (its requests and workers) on
    an event loop in a thread of its own, and a test runs its own calls on the main one. An
    ``asyncio.Lock`` released in one thread woke a waiter of the other thread's loop without
    waking that loop, which then slept for good when nothing else was due (the test suite
    hung now and then); and once bound to one loop it refused waiters of another.

    A waiter is woken through its own loop (``call_soon_threadsafe``) and then tries again
    (not first in line: another may take the lock meanwhile)."""

    def __init__(self) -> None:
        self._state = threading.Lock()
        self._held = False
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            with self._state:
                if not self._held:
                    self._held = True
                    return True
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
            try:
                await waiter[1]
            except asyncio.CancelledError:
                with self._state:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)  # not woken: nothing to pass on
                    elif not self._held:
                        self._wake_next()  # woken, but leaving: the next one's turn
                raise

    def release(self) -> None:
        with self._state:
            if not self._held:
                raise RuntimeError("the lock is not held")
            self._held = False
            self._wake_next()

    def _wake_next(self) -> None:
        """With ``_state`` held."""
        while self._waiters:
            loop, future = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # its loop is closed: no one waits there any more
                continue
            return


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MemoryDatabase:
    def __init__(self, bell: QueueBell | None = None) -> None:
        """``bell``: rung when a committed transaction queued work (as ``SqlDatabase``)."""
        self.tables = Tables()
        self.commits = 0
        self.lock = AnyLoopLock()
        self.bell = bell or QueueBell()

    def unit_of_work(self, *, read_only: bool = False) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self, read_only=read_only)

    @property
    def directory(self) -> MemoryLinkDirectory:
        return MemoryLinkDirectory(self)

    @property
    def shared_between_processes(self) -> bool:
        return False  # this process's memory

    async def ping(self) -> bool:
        return True

    async def dispose(self) -> None:
        """Nothing to release: the data lives as long as the process."""


class MemoryLinkDirectory:
    """``LinkDirectory`` on the committed tables (a read needs no transaction)."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    async def link_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        return self._db.tables.links.get(discord_id)

    async def link_rows_by_discord_ids(self, discord_ids: Sequence[int]) -> Sequence[LinkRow]:
        links = self._db.tables.links
        found = (links.get(DiscordId(d)) for d in dict.fromkeys(discord_ids))
        return [
            (
                link.discord_id.value,
                str(link.account_id.value),
                link.linked_at,
                link.discord_username,
                link.discord_global_name,
            )
            for link in found
            if link is not None
        ]

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        return next((k for k in self._db.tables.api_keys.values() if k.digest == digest), None)


class MemoryUnitOfWork:
    def __init__(self, db: MemoryDatabase, *, read_only: bool = False) -> None:
        self._db = db
        self._read_only = read_only
        self.work = db.tables.copy()
        self.rings: set[str] = set()  # the queues written to since the last commit
        self.accounts = MemoryAccounts(self)
        self.links = MemoryLinks(self)
        self.pending_logins = MemoryPendingLogins(self)
        self.link_tickets = MemoryLinkTickets(self)
        self.sessions = MemorySessions(self)
        self.api_keys = MemoryApiKeys(self)
        self.audit = MemoryAudit(self)
        self.email_tokens = MemoryEmailTokens(self)
        self.outgoing_emails = MemoryOutgoingEmails(self)
        self.declined_addresses = MemoryDeclinedAddresses(self)
        self.link_proposals = MemoryLinkProposals(self)
        self.role_changes = MemoryRoleChanges(self)
        self.webhooks = MemoryWebhooks(self)
        self.role_connection_tokens = MemoryRoleConnectionTokens(self)
        self.maintenance = MemoryMaintenance()

    async def __aenter__(self) -> Self:
        await self._db.lock.acquire()
        self.work = self._db.tables.copy()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.rollback()
        finally:
            self._db.lock.release()

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        self._db.tables = self.work
        self._db.commits += 1
        self.work = self._db.tables.copy()
        rung = frozenset(self.rings)
        self.rings.clear()
        if rung:
            self._db.bell.ring(rung)

    async def rollback(self) -> None:
        self.work = self._db.tables.copy()
        self.rings.clear()


_OneTime = TypeVar("_OneTime", PendingLogin, LinkTicket, EmailToken, LinkProposal)
_Expiring = TypeVar("_Expiring", PendingLogin, LinkTicket, Session, EmailToken, LinkProposal)


def _consume(table: dict[str, _OneTime], key: str, now: datetime) -> _OneTime | None:
    row = table.get(key)
    if row is None or row.consumed_at is not None:
        return None
    table[key] = replace(row, consumed_at=now)
    return table[key]


def _purge(table: dict[str, _Expiring], now: datetime, limit: int | None) -> int:
    gone = [key for key, row in table.items() if row.expires_at <= now][:limit]
    for key in gone:
        del table[key]
    return len(gone)


class _Repo:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def _t(self) -> Tables:
        return self._uow.work

    def _queued(self, channel: str, count: int = 1) -> None:
        """Work for a queue's workers: they are woken once the transaction commits."""
        if count:
            self._uow.rings.add(channel)


class MemoryMaintenance:
    async def take_purge_turn(self, *, wait: bool) -> bool:
        return True  # units of work run one at a time (the database's lock)


class MemoryAccounts(_Repo):
    def _check_unique(self, account: Account) -> None:
        """The SQL schema's unique username and unique (unshared) confirmed normalised email:
        any number of accounts may hold an address unconfirmed."""
        name = account.username.lower()
        email = normalize_email(account.email)
        for other in self._t.accounts.values():
            if other.id == account.id:
                continue
            if other.username.lower() == name:
                raise errors.Conflict(f"username {name!r} is taken")
            if (
                email is not None
                and account.email_verified
                and other.email_verified
                and not account.email_shared
                and not other.email_shared
                and normalize_email(other.email) == email
            ):
                raise errors.Conflict("this email address is taken")

    async def add(self, account: Account) -> None:
        if account.id in self._t.accounts:
            raise errors.Conflict("account id exists")
        self._check_unique(account)
        self._t.accounts[account.id] = replace(account, username=account.username.lower())

    async def update(self, account: Account) -> None:
        if account.id not in self._t.accounts:
            raise errors.NotFound("No such account.")
        self._check_unique(account)
        self._t.accounts[account.id] = replace(account, username=account.username.lower())

    async def get(self, account_id: AccountId) -> Account | None:
        return self._t.accounts.get(account_id)

    async def lock(self, account_id: AccountId) -> Account | None:
        return self._t.accounts.get(account_id)  # transactions are serialised already

    async def lock_if_free(self, account_id: AccountId) -> Account | None:
        return self._t.accounts.get(account_id)  # transactions are serialised already

    async def get_by_username(self, username: str) -> Account | None:
        name = username.lower()
        return next((a for a in self._t.accounts.values() if a.username.lower() == name), None)

    async def find_by_email(self, email: str) -> Sequence[Account]:
        wanted = normalize_email(email)
        if wanted is None:
            return []
        return sorted(
            (a for a in self._t.accounts.values() if normalize_email(a.email) == wanted),
            key=lambda a: a.created_at,
        )

    async def usernames_starting_with(self, prefix: str) -> set[str]:
        p = prefix.lower()
        return {
            a.username.lower()
            for a in self._t.accounts.values()
            if a.username.lower().startswith(p)
        }


class MemoryLinks(_Repo):
    async def add(self, link: Link) -> None:
        if link.discord_id in self._t.links:
            raise errors.Conflict("this Discord id is already linked")
        if any(existing.account_id == link.account_id for existing in self._t.links.values()):
            raise errors.Conflict("this account is already linked")
        if link.account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.links[link.discord_id] = link

    async def get_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        return self._t.links.get(discord_id)

    async def hold_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        return self._t.links.get(discord_id)  # transactions here run one at a time

    async def get_by_account(self, account_id: AccountId) -> Link | None:
        return next((k for k in self._t.links.values() if k.account_id == account_id), None)

    async def remove(self, link: Link) -> bool:
        current = self._t.links.get(link.discord_id)
        if current is None or current.account_id != link.account_id:
            return False
        del self._t.links[link.discord_id]
        return True

    async def set_role_connection_lost(
        self, discord_id: DiscordId, at: datetime | None, why: RoleConnectionLoss | None
    ) -> None:
        current = self._t.links.get(discord_id)
        if current is not None:
            self._t.links[discord_id] = replace(
                current, role_connection_lost_at=at, role_connection_lost_why=why
            )

    def _lost(self) -> list[LostRoleConnection]:
        found = [
            LostRoleConnection(
                link.discord_id,
                link.role_connection_lost_at,
                link.role_connection_lost_why,
                link.discord_id in self._t.role_connection_tokens,
            )
            for link in self._t.links.values()
            if link.role_connection_lost_at is not None
            and link.role_connection_lost_why is not None
        ]
        return sorted(found, key=lambda lost: (lost.since, lost.discord_id))

    async def role_connection_losses(self) -> Sequence[RoleConnectionLossCount]:
        counted = Counter((lost.why, lost.tokens_kept) for lost in self._lost())
        return [RoleConnectionLossCount(why, kept, n) for (why, kept), n in counted.items()]

    async def lost_role_connections(self, limit: int) -> Sequence[LostRoleConnection]:
        return self._lost()[:limit]


class MemoryPendingLogins(_Repo):
    async def add(self, pending: PendingLogin) -> None:
        if pending.state_digest in self._t.pending_logins:
            raise errors.Conflict("duplicate state")
        if pending.account_id is not None and pending.account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.pending_logins[pending.state_digest] = pending

    async def consume(self, state_digest: str, now: datetime) -> PendingLogin | None:
        return _consume(self._t.pending_logins, state_digest, now)

    async def get(self, state_digest: str) -> PendingLogin | None:
        return self._t.pending_logins.get(state_digest)

    async def mark_failed(
        self, state_digest: str, now: datetime, failure: str | None = None
    ) -> None:
        pending = self._t.pending_logins.get(state_digest)
        if pending is not None and pending.consumed_at is not None:
            self._t.pending_logins[state_digest] = replace(pending, failed_at=now, failure=failure)

    async def mark_signed_in(self, state_digest: str, account_id: AccountId) -> None:
        pending = self._t.pending_logins.get(state_digest)
        if pending is not None and pending.consumed_at is not None:
            if account_id not in self._t.accounts:
                raise errors.Conflict("no such account")  # the SQL foreign key
            self._t.pending_logins[state_digest] = replace(pending, account_id=account_id)

    async def lock(
        self, state_digest: str, browser_digests: Collection[str] = ()
    ) -> PendingLogin | None:
        return self._t.pending_logins.get(state_digest)  # one writer at a time here

    async def supersede(
        self, browser_digests: Collection[str], account_id: AccountId, *, but: str
    ) -> int:
        rows = self._t.pending_logins
        due = [
            key
            for key, row in rows.items()
            if row.browser_digest in browser_digests
            and key != but
            and row.superseded_by != account_id
        ]
        for key in due:
            rows[key] = replace(rows[key], superseded_by=account_id)
        return len(due)

    async def mark_signed_out(self, browser_digests: Collection[str], now: datetime) -> int:
        rows = self._t.pending_logins
        due = [
            key
            for key, row in rows.items()
            if row.browser_digest in browser_digests and row.signed_out_at is None
        ]
        for key in due:
            rows[key] = replace(rows[key], signed_out_at=now)
        return len(due)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return _purge(self._t.pending_logins, now, limit)


class MemoryLinkTickets(_Repo):
    async def add(self, ticket: LinkTicket) -> None:
        if ticket.digest in self._t.link_tickets:
            raise errors.Conflict("duplicate ticket")
        self._t.link_tickets[ticket.digest] = ticket

    async def consume(self, digest: str, now: datetime) -> LinkTicket | None:
        return _consume(self._t.link_tickets, digest, now)

    async def consume_for_discord(self, discord_id: DiscordId, now: datetime) -> int:
        tickets = self._t.link_tickets
        live = [
            key
            for key, row in tickets.items()
            if row.discord.id == discord_id and row.consumed_at is None and now < row.expires_at
        ]
        for key in live:
            tickets[key] = replace(tickets[key], consumed_at=now)
        return len(live)

    async def add_replacing(self, ticket: LinkTicket) -> None:
        await self.consume_for_discord(ticket.discord.id, ticket.created_at)
        await self.add(ticket)

    async def replaced(self, ticket: LinkTicket) -> bool:
        mine = (ticket.created_at, ticket.digest)
        return any(
            row.discord.id == ticket.discord.id
            and (row.created_at, key) > mine
            and (row.consumed_at is None or row.consumed_at > ticket.created_at)
            for key, row in self._t.link_tickets.items()
        )

    async def get(self, digest: str) -> LinkTicket | None:
        return self._t.link_tickets.get(digest)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return _purge(self._t.link_tickets, now, limit)


class MemoryLinkProposals(_Repo):
    async def add(self, proposal: LinkProposal) -> None:
        if proposal.digest in self._t.link_proposals:
            raise errors.Conflict("duplicate proposal")
        if proposal.account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.link_proposals[proposal.digest] = proposal

    async def consume(self, digest: str, now: datetime) -> LinkProposal | None:
        return _consume(self._t.link_proposals, digest, now)

    async def get(self, digest: str) -> LinkProposal | None:
        return self._t.link_proposals.get(digest)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return _purge(self._t.link_proposals, now, limit)


class MemorySessions(_Repo):
    async def add(self, session: Session) -> None:
        if session.digest in self._t.sessions or any(
            s.id == session.id for s in self._t.sessions.values()
        ):
            raise errors.Conflict("duplicate session")
        if session.account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.sessions[session.digest] = session

    async def get(self, digest: str) -> Session | None:
        return self._t.sessions.get(digest)

    async def touch(self, digest: str, now: datetime) -> None:
        current = self._t.sessions.get(digest)
        if current is not None:  # like an UPDATE that matches no row
            self._t.sessions[digest] = replace(current, last_seen_at=now)

    async def list_for_account(self, account_id: AccountId) -> Sequence[Session]:
        return sorted(
            (s for s in self._t.sessions.values() if s.account_id == account_id),
            key=lambda s: (-s.created_at.timestamp(), str(s.id)),
        )

    async def renew(
        self, digest: str, new_digest: str, now: datetime, proved_with: SignInMethod | None
    ) -> bool:
        current = self._t.sessions.pop(digest, None)
        if current is None:
            return False
        renewed = replace(current, digest=new_digest, last_seen_at=now)
        if proved_with is not None:
            renewed = replace(renewed, proved_at=now, proved_with=proved_with)
        self._t.sessions[new_digest] = renewed
        return True

    async def remove(self, digest: str) -> bool:
        return self._t.sessions.pop(digest, None) is not None

    async def remove_by_id(self, account_id: AccountId, session_id: uuid.UUID) -> bool:
        found = next((k for k, s in self._t.sessions.items() if s.id == session_id), None)
        if found is None or self._t.sessions[found].account_id != account_id:
            return False
        del self._t.sessions[found]
        return True

    async def lock(
        self, digests: Collection[str], *, account_id: AccountId | None = None
    ) -> Sequence[Session]:
        rows = self._t.sessions
        held = {k for k, s in rows.items() if k in digests or s.account_id == account_id}
        return [rows[k] for k in sorted(held)]

    async def remove_for_account(self, account_id: AccountId, *, keep: str | None = None) -> int:
        gone = [k for k, s in self._t.sessions.items() if s.account_id == account_id and k != keep]
        for key in gone:
            del self._t.sessions[key]
        return len(gone)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return _purge(self._t.sessions, now, limit)


class MemoryApiKeys(_Repo):
    async def add(self, key: ApiKey) -> None:
        if any(k.name == key.name and k.revoked_at is None for k in self._t.api_keys.values()):
            raise errors.Conflict("an active key has this name")
        self._t.api_keys[key.id] = key

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        return next((k for k in self._t.api_keys.values() if k.digest == digest), None)

    async def list(self) -> Sequence[ApiKey]:
        return sorted(self._t.api_keys.values(), key=lambda k: k.created_at)

    async def revoke(self, key_id: uuid.UUID, now: datetime) -> bool:
        key = self._t.api_keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._t.api_keys[key_id] = replace(key, revoked_at=now)
        return True

    async def record_use(self, key_id: uuid.UUID, at: datetime, *, unless_since: datetime) -> bool:
        key = self._t.api_keys.get(key_id)
        if key is None or (key.last_used_at is not None and key.last_used_at > unless_since):
            return False
        self._t.api_keys[key_id] = replace(key, last_used_at=at)
        return True


class MemoryAudit(_Repo):
    async def record(self, event: AuditEvent) -> None:
        if any(e.id == event.id for e in self._t.audit):
            raise errors.Conflict("duplicate audit event id")
        self._t.audit.append(event)

    async def for_account(self, account_id: AccountId) -> Sequence[AuditEvent]:
        return [e for e in self._t.audit if e.account_id == account_id]

    async def search(
        self,
        *,
        account_id: AccountId | None = None,
        discord_id: DiscordId | None = None,
        login: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        found = [
            e
            for e in self._t.audit
            if account_id in (None, e.account_id)
            and discord_id in (None, e.discord_id)
            and (login is None or e.detail.get("login") == login)
            and (since is None or e.at >= since)
        ]
        # Newest first; among equal times, the one recorded last first (as the SQL seq).
        order = {id(e): n for n, e in enumerate(self._t.audit)}
        found.sort(key=lambda e: (e.at, order[id(e)]), reverse=True)
        return found[:limit]

    async def count_since(self, account_id: AccountId, kind: AuditKind, since: datetime) -> int:
        return sum(
            1
            for e in self._t.audit
            if e.account_id == account_id and e.kind is kind and e.at >= since
        )

    async def reasons_since(self, kind: AuditKind, since: datetime) -> Mapping[str, int]:
        found = (e for e in self._t.audit if e.kind == kind and e.at >= since)
        return dict(Counter(e.detail.get("reason", "") for e in found))

    async def purge_before(self, before: datetime, limit: int | None = None) -> int:
        gone = {id(e) for e in [e for e in self._t.audit if e.at < before][:limit]}
        self._t.audit[:] = [e for e in self._t.audit if id(e) not in gone]
        return len(gone)


class MemoryEmailTokens(_Repo):
    async def add(self, token: EmailToken) -> None:
        if token.digest in self._t.email_tokens:
            raise errors.Conflict("duplicate email token")
        if token.account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.email_tokens[token.digest] = token

    async def consume(self, digest: str, purpose: EmailPurpose, now: datetime) -> EmailToken | None:
        row = self._t.email_tokens.get(digest)
        if row is None or row.purpose is not purpose:
            return None
        return _consume(self._t.email_tokens, digest, now)

    async def get(self, digest: str) -> EmailToken | None:
        return self._t.email_tokens.get(digest)

    async def remove(self, digest: str) -> bool:
        return self._t.email_tokens.pop(digest, None) is not None

    async def consume_all(self, account_id: AccountId, purpose: EmailPurpose, now: datetime) -> int:
        used = [
            key
            for key, row in self._t.email_tokens.items()
            if row.account_id == account_id and row.purpose is purpose and row.consumed_at is None
        ]
        for key in used:
            _consume(self._t.email_tokens, key, now)
        return len(used)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return _purge(self._t.email_tokens, now, limit)


class MemoryDeclinedAddresses(_Repo):
    async def add(self, account_id: AccountId, email: str, at: datetime) -> None:
        if account_id not in self._t.accounts:
            raise errors.Conflict("no such account")  # the SQL foreign key
        self._t.declined_addresses.setdefault((account_id, normalize_email(email) or email), at)

    async def declined(self, account_id: AccountId, email: str) -> bool:
        return (account_id, normalize_email(email) or email) in self._t.declined_addresses

    async def remove(self, account_id: AccountId, email: str) -> bool:
        key = (account_id, normalize_email(email) or email)
        return self._t.declined_addresses.pop(key, None) is not None


class MemoryOutgoingEmails(_Repo):
    async def add(self, email: OutgoingEmail) -> None:
        if email.id in self._t.outgoing_emails:
            raise errors.Conflict("duplicate email id")
        self._t.outgoing_emails[email.id] = email
        self._queued(EMAIL_QUEUE_CHANNEL)

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[OutgoingEmail]:
        # Transactions are serialised by the database's lock: one claimer at a time.
        table = self._t.outgoing_emails
        due = sorted(
            (
                e
                for e in table.values()
                if e.status is DeliveryStatus.PENDING and e.next_attempt_at <= now
            ),
            key=lambda e: e.next_attempt_at,  # a stable sort: queue order among equals
        )[:limit]
        for email in due:
            table[email.id] = replace(email, next_attempt_at=until)
        picked = {e.id for e in due}
        return [e for e in table.values() if e.id in picked]  # dicts keep insertion order

    def _held(self, email_id: uuid.UUID, lease: datetime) -> OutgoingEmail | None:
        """The email while it is pending under the lease that ends at ``lease``."""
        current = self._t.outgoing_emails.get(email_id)
        if current is None or current.status is not DeliveryStatus.PENDING:
            return None
        return current if current.next_attempt_at == lease else None

    async def renew_claim(self, email: OutgoingEmail, until: datetime) -> OutgoingEmail | None:
        current = self._held(email.id, email.next_attempt_at)
        if current is None:
            return None
        self._t.outgoing_emails[email.id] = replace(current, next_attempt_at=until)
        return self._t.outgoing_emails[email.id]

    async def release(self, email: OutgoingEmail, now: datetime) -> bool:
        released = await self.renew_claim(email, now) is not None
        if released:
            self._queued(EMAIL_QUEUE_CHANNEL)
        return released

    async def requeue_failed(self, now: datetime, email_id: uuid.UUID | None = None) -> int:
        failed = [
            e
            for e in self._t.outgoing_emails.values()
            if e.status is DeliveryStatus.FAILED and email_id in (None, e.id)
        ]
        for email in failed:
            self._t.outgoing_emails[email.id] = _requeued(email, now)
        self._queued(EMAIL_QUEUE_CHANNEL, len(failed))
        return len(failed)

    async def save(self, email: OutgoingEmail, *, leased_until: datetime) -> bool:
        if self._held(email.id, leased_until) is None:
            return False
        self._t.outgoing_emails[email.id] = email
        return True

    def _of(self, account_id: AccountId, kind: EmailKind) -> list[OutgoingEmail]:
        return sorted(
            (
                e
                for e in self._t.outgoing_emails.values()
                if e.account_id == account_id and e.kind is kind
            ),
            key=lambda e: e.created_at,
        )

    async def latest(self, account_id: AccountId, kind: EmailKind) -> OutgoingEmail | None:
        emails = self._of(account_id, kind)
        return emails[-1] if emails else None

    async def count_since(self, account_id: AccountId, kind: EmailKind, since: datetime) -> int:
        return sum(1 for e in self._of(account_id, kind) if e.created_at >= since)

    async def lock_recipient(self, to: str) -> None:
        """Transactions are serialised already."""

    async def count_to_since(self, to: str, kinds: Collection[EmailKind], since: datetime) -> int:
        return sum(
            1
            for e in self._t.outgoing_emails.values()
            if e.to == to and e.kind in kinds and e.created_at >= since
        )

    async def count_to_since_from(
        self, to: str, kinds: Collection[EmailKind], since: datetime, client: str | None
    ) -> int:
        return sum(
            1
            for e in self._t.outgoing_emails.values()
            if e.to == to and e.kind in kinds and e.created_at >= since and e.client == client
        )

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        gone = [
            key
            for key, e in self._t.outgoing_emails.items()
            if e.finished_at is not None and e.finished_at < before
        ][:limit]
        for key in gone:
            del self._t.outgoing_emails[key]
        return len(gone)


def _refused_as_no_member(change: RoleChange) -> bool:
    """Not in the server when refused: leaving a server drops its roles (nothing to remove)."""
    return (
        change.status is RoleChangeStatus.REFUSED
        and change.last_error == RoleCallOutcome.NOT_A_MEMBER.value
    )


class MemoryRoleChanges(_Repo):
    async def request(self, change: RoleChange) -> None:
        table = self._t.role_changes
        key = (change.discord_id, change.role)
        current = table.get(key)
        self._queued(ROLE_QUEUE_CHANNEL)
        if current is None:
            table[key] = replace(change, status=RoleChangeStatus.PENDING, version=1)
            return
        table[key] = replace(
            current,
            action=change.action,
            account_id=change.account_id,
            requested_at=change.requested_at,
            next_attempt_at=change.next_attempt_at,
            status=RoleChangeStatus.PENDING,
            attempts=0,
            version=current.version + 1,
            finished_at=None,
            last_error=None,
        )

    async def request_for_links(self, role: LinkedRole, now: datetime, *, every: bool) -> int:
        requested = 0
        for link in self._t.links.values():
            current = self._t.role_changes.get((link.discord_id, role))
            if (
                not every
                and current is not None
                and current.action is RoleAction.ADD
                and current.status in (RoleChangeStatus.PENDING, RoleChangeStatus.DONE)
            ):
                continue
            change = RoleChange(link.discord_id, role, RoleAction.ADD, now, now, link.account_id)
            await self.request(change)
            requested += 1
        return requested

    async def retry_removals(self, role: LinkedRole, now: datetime) -> int:
        stuck = [
            c
            for (_, of), c in self._t.role_changes.items()
            if of == role
            and c.action is RoleAction.REMOVE
            and c.status in (RoleChangeStatus.REFUSED, RoleChangeStatus.FAILED)
            and not _refused_as_no_member(c)
        ]
        for change in stuck:
            await self.request(replace(change, requested_at=now, next_attempt_at=now))
        return len(stuck)

    async def request_for_unlinked(self, role: LinkedRole, now: datetime) -> int:
        left = [
            c
            for (discord_id, of), c in self._t.role_changes.items()
            if of == role
            and c.action is RoleAction.ADD
            and c.status is not RoleChangeStatus.PENDING
            and not _refused_as_no_member(c)
            and discord_id not in self._t.links
        ]
        for change in left:
            removal = replace(change, action=RoleAction.REMOVE, requested_at=now)
            await self.request(replace(removal, next_attempt_at=now))
        return len(left)

    async def claim_due(
        self,
        now: datetime,
        until: datetime,
        limit: int,
        *,
        skip_guilds: Collection[DiscordId] = (),
        roles: Collection[LinkedRole] | None = None,
    ) -> Sequence[RoleChange]:
        # Transactions are serialised by the database's lock: one claimer at a time.
        table = self._t.role_changes
        due = sorted(
            (
                c
                for c in table.values()
                if c.status is RoleChangeStatus.PENDING
                and c.next_attempt_at <= now
                and (c.claimed_until is None or c.claimed_until <= now)
                and c.role.guild_id not in skip_guilds
                and (roles is None or c.role in roles)
            ),
            key=lambda c: c.next_attempt_at,  # a stable sort: queue order among equals
        )[:limit]
        claimed = []
        for change in due:
            key = (change.discord_id, change.role)
            table[key] = replace(change, claimed_until=until)
            claimed.append(table[key])
        return claimed

    def _held(self, change: RoleChange) -> RoleChange | None:
        current = self._t.role_changes.get((change.discord_id, change.role))
        if current is None or current.claimed_until != change.claimed_until:
            return None
        return current

    async def renew_claim(self, change: RoleChange, until: datetime) -> RoleChange | None:
        current = self._held(change)
        if current is None or current.status is not RoleChangeStatus.PENDING:
            return None
        renewed = replace(current, claimed_until=until)
        self._t.role_changes[(change.discord_id, change.role)] = renewed
        return renewed

    async def release(self, change: RoleChange) -> bool:
        current = self._held(change)
        if current is None or current.claimed_until is None:
            return False
        if current.status is not RoleChangeStatus.PENDING:
            return False
        self._t.role_changes[(change.discord_id, change.role)] = replace(
            current, claimed_until=None
        )
        self._queued(ROLE_QUEUE_CHANNEL)
        return True

    async def finish(self, change: RoleChange) -> bool:
        current = self._held(change)
        if current is None or current.claimed_until is None:
            return False
        key = (change.discord_id, change.role)
        if current.version != change.version:
            self._t.role_changes[key] = replace(current, claimed_until=None)
            return False
        self._t.role_changes[key] = replace(
            current,
            action=change.action,
            account_id=change.account_id,
            status=change.status,
            attempts=change.attempts,
            next_attempt_at=change.next_attempt_at,
            finished_at=change.finished_at,
            last_error=change.last_error,
            claimed_until=None,
        )
        return True

    async def refuse_queued(
        self, role: LinkedRole, now: datetime, reason: str
    ) -> Sequence[RoleChange]:
        refused = []
        for change in self._t.role_changes.values():
            if (
                change.role == role
                and change.status is RoleChangeStatus.PENDING
                and (change.claimed_until is None or change.claimed_until <= now)
            ):
                refused.append(
                    replace(
                        change,
                        status=RoleChangeStatus.REFUSED,
                        finished_at=now,
                        last_error=reason,
                        claimed_until=None,
                    )
                )
        for change in refused:
            self._t.role_changes[(change.discord_id, change.role)] = change
        return refused

    async def get(self, discord_id: DiscordId, role: LinkedRole) -> RoleChange | None:
        return self._t.role_changes.get((discord_id, role))

    async def added(self, discord_id: DiscordId) -> Sequence[LinkedRole]:
        return [
            c.role
            for c in self._t.role_changes.values()
            if c.discord_id == discord_id
            and c.action is RoleAction.ADD
            and c.status in ADD_MAY_HAVE_GIVEN
        ]

    async def pending(
        self, roles: Collection[LinkedRole] | None = None
    ) -> tuple[int, datetime | None]:
        waiting = [
            c.next_attempt_at
            for c in self._t.role_changes.values()
            if c.status is RoleChangeStatus.PENDING and (roles is None or c.role in roles)
        ]
        return len(waiting), min(waiting, default=None)

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        table = self._t.role_changes
        gone = [
            key
            for key, c in table.items()
            if c.discord_id not in self._t.links
            and c.finished_at is not None
            and c.finished_at < before
            and (
                (c.action is RoleAction.REMOVE and c.status is RoleChangeStatus.DONE)
                or _refused_as_no_member(c)
            )
        ][:limit]
        for key in gone:
            del table[key]
        return len(gone)

    async def counts_since(self, since: datetime) -> Sequence[RoleChangeCount]:
        counts = Counter(
            (c.role, c.action, c.status, c.last_error)
            for c in self._t.role_changes.values()
            if c.requested_at >= since
        )
        return [RoleChangeCount(*key, count) for key, count in counts.items()]


class MemoryRoleConnectionTokens(_Repo):
    """Compare-and-swap on the row's version (or its sealed tokens), as the SQL adapter."""

    @property
    def _rows(self) -> dict[DiscordId, RoleConnectionToken]:
        return self._t.role_connection_tokens

    async def add(self, token: RoleConnectionToken) -> None:
        if token.discord_id in self._rows:
            raise errors.Conflict("this Discord user's tokens are kept already")
        self._rows[token.discord_id] = replace(token, version=1)

    async def get(self, discord_id: DiscordId) -> RoleConnectionToken | None:
        return self._rows.get(discord_id)

    def _write(
        self, token: RoleConnectionToken, current: RoleConnectionToken
    ) -> RoleConnectionToken:
        self._rows[token.discord_id] = replace(token, version=current.version + 1)
        return self._rows[token.discord_id]

    async def replace(self, token: RoleConnectionToken) -> RoleConnectionToken | None:
        current = self._rows.get(token.discord_id)
        if current is None or current.version != token.version:
            return None
        return self._write(token, current)

    async def take(
        self, token: RoleConnectionToken, until: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        current = self._rows.get(token.discord_id)
        if current is None:
            return None
        held = current.claimed_until
        if held is not None and held > now and held != token.claimed_until:
            return None
        return self._write(replace(current, claimed_until=until), current)

    async def release(self, token: RoleConnectionToken) -> bool:
        current = self._rows.get(token.discord_id)
        if current is None or token.claimed_until is None:
            return False
        if current.claimed_until != token.claimed_until:
            return False
        self._write(replace(current, claimed_until=None), current)
        self._queued(ROLE_CONNECTION_CHANNEL)
        return True

    async def remove(self, token: RoleConnectionToken) -> bool:
        current = self._rows.get(token.discord_id)
        if current is None or current.version != token.version:
            return False
        del self._rows[token.discord_id]
        return True

    async def swap_sealed(
        self, token: RoleConnectionToken, sealed: str, expires_at: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        current = self._rows.get(token.discord_id)
        if current is None or current.sealed != token.sealed:
            return None
        changed = replace(current, sealed=sealed, expires_at=expires_at, updated_at=now)
        return self._write(changed, current)

    async def remove_sealed(self, discord_id: DiscordId, sealed: str) -> bool:
        current = self._rows.get(discord_id)
        if current is None or current.sealed != sealed:
            return False
        del self._rows[discord_id]
        return True

    async def mark_due(self, discord_id: DiscordId, now: datetime) -> bool:
        current = self._rows.get(discord_id)
        if current is None:
            return False
        self._write(replace(current, next_push_at=now, failures=0), current)
        self._queued(ROLE_CONNECTION_CHANNEL)
        return True

    async def mark_all_due(self, now: datetime) -> int:
        for current in list(self._rows.values()):
            self._write(replace(current, next_push_at=now), current)
        return len(self._rows)

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[RoleConnectionToken]:
        # Transactions are serialised by the database's lock: one claimer at a time.
        due = sorted(
            (
                t
                for t in self._rows.values()
                if t.next_push_at <= now and (t.claimed_until is None or t.claimed_until <= now)
            ),
            key=lambda t: (t.next_push_at, t.discord_id),
        )[:limit]
        return [self._write(replace(t, claimed_until=until), t) for t in due]

    async def counts(self, now: datetime) -> RoleConnectionCounts:
        lost = {
            d
            for d, link in self._t.links.items()
            if link.role_connection_lost_at is not None
            and link.role_connection_lost_why is RoleConnectionLoss.UNREADABLE
        }
        counted = Counter(
            _standing(row, now, row.discord_id in lost) for row in self._rows.values()
        )
        return RoleConnectionCounts(**counted)

    async def page(self, after: DiscordId | None, limit: int) -> Sequence[RoleConnectionToken]:
        ordered = sorted(self._rows.values(), key=lambda t: t.discord_id)
        return [t for t in ordered if after is None or t.discord_id > after][:limit]


def _standing(row: RoleConnectionToken, now: datetime, lost: bool) -> str:
    """Where ``row`` stands at ``now`` (a field of ``RoleConnectionCounts``); ``lost``: its
    link says the connection is lost as unreadable."""
    if row.claimed_until is not None and row.claimed_until > now:
        return "pushing"
    if lost:
        return "unreadable"
    if row.next_push_at <= now:
        return "due"
    return "retrying" if row.failures else "current"


def _requeued(email: OutgoingEmail, now: datetime) -> OutgoingEmail:
    return replace(
        email,
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        attempts=0,
        finished_at=None,
        last_error=None,
    )


class MemoryWebhooks(_Repo):
    async def add(self, event: WebhookEvent, deliveries: Sequence[WebhookDelivery]) -> None:
        if event.id in self._t.webhook_events:
            raise errors.Conflict("duplicate webhook event id")
        if any(d.id in self._t.webhook_deliveries for d in deliveries):
            raise errors.Conflict("duplicate webhook delivery id")
        self._t.webhook_events[event.id] = event
        for delivery in deliveries:
            self._t.webhook_deliveries[delivery.id] = replace(delivery, event=event)
        self._queued(WEBHOOK_QUEUE_CHANNEL)

    async def claim_due(
        self, now: datetime, until: datetime, limit: int, endpoints: Sequence[str]
    ) -> Sequence[WebhookDelivery]:
        # Transactions are serialised by the database's lock: one claimer at a time.
        table = self._t.webhook_deliveries
        picked: set[uuid.UUID] = set()
        for key in set(endpoints):
            queue = [  # dicts keep insertion order: queue order
                d for d in table.values() if d.endpoint == key and d.state is WebhookState.PENDING
            ][:limit]
            for delivery in takewhile(lambda d: d.next_attempt_at <= now, queue):
                table[delivery.id] = replace(delivery, next_attempt_at=until)
                picked.add(delivery.id)
        return [d for d in table.values() if d.id in picked]

    def _held(self, delivery_id: uuid.UUID, lease: datetime) -> WebhookDelivery | None:
        """The delivery while it is pending under the lease that ends at ``lease``."""
        current = self._t.webhook_deliveries.get(delivery_id)
        if current is None or current.state is not WebhookState.PENDING:
            return None
        return current if current.next_attempt_at == lease else None

    async def renew_claim(
        self, delivery: WebhookDelivery, until: datetime
    ) -> WebhookDelivery | None:
        current = self._held(delivery.id, delivery.next_attempt_at)
        if current is None:
            return None
        self._t.webhook_deliveries[delivery.id] = replace(current, next_attempt_at=until)
        return self._t.webhook_deliveries[delivery.id]

    async def release(self, delivery: WebhookDelivery, now: datetime) -> bool:
        released = await self.renew_claim(delivery, now) is not None
        if released:
            self._queued(WEBHOOK_QUEUE_CHANNEL)
        return released

    async def save(self, delivery: WebhookDelivery, *, leased_until: datetime) -> bool:
        current = self._held(delivery.id, leased_until)
        if current is None:
            return False
        self._t.webhook_deliveries[delivery.id] = replace(delivery, event=current.event)
        return True

    async def get(self, delivery_id: uuid.UUID) -> WebhookDelivery | None:
        return self._t.webhook_deliveries.get(delivery_id)

    async def requeue(self, now: datetime, delivery_id: uuid.UUID | None = None) -> int:
        stopped = (WebhookState.FAILED, WebhookState.GONE)
        chosen = [
            d
            for d in self._t.webhook_deliveries.values()
            if d.state in stopped and delivery_id in (None, d.id)
        ]
        for delivery in chosen:
            self._t.webhook_deliveries[delivery.id] = replace(
                delivery,
                state=WebhookState.PENDING,
                next_attempt_at=now,
                attempts=0,
                finished_at=None,
            )
        self._queued(WEBHOOK_QUEUE_CHANNEL, len(chosen))
        return len(chosen)

    async def mark_gone(self, endpoint: WebhookEndpoint, since: datetime) -> None:
        if endpoint.key not in self._t.gone_endpoints:
            self._t.gone_endpoints[endpoint.key] = GoneEndpoint(endpoint.key, endpoint.host, since)

    async def gone_endpoints(self) -> Sequence[GoneEndpoint]:
        return sorted(self._t.gone_endpoints.values(), key=lambda g: (g.since, g.endpoint))

    async def forget_gone(self, endpoint: str | None = None) -> int:
        keys = [k for k in self._t.gone_endpoints if endpoint in (None, k)]
        for key in keys:
            del self._t.gone_endpoints[key]
        self._queued(WEBHOOK_QUEUE_CHANNEL, len(keys))  # their waiting deliveries can go now
        return len(keys)

    async def summary(self) -> Sequence[WebhookEndpointSummary]:
        found: dict[str, WebhookEndpointSummary] = {}
        for d in self._t.webhook_deliveries.values():
            summary = found.setdefault(d.endpoint, WebhookEndpointSummary(d.endpoint, d.host))
            summary.counts[d.state] = summary.counts.get(d.state, 0) + 1
            if d.last_error is not None and d.last_attempt_at is not None:
                newest = summary.last_error_at
                if newest is None or d.last_attempt_at > newest:
                    found[d.endpoint] = replace(
                        summary,
                        last_error=d.last_error,
                        last_error_at=d.last_attempt_at,
                        delivered_since_error=d.state is WebhookState.DELIVERED,
                    )
        return sorted(found.values(), key=lambda s: s.endpoint)

    async def purge_finished(
        self, before: datetime, configured: Sequence[str] | None, limit: int | None = None
    ) -> int:
        table = self._t.webhook_deliveries
        # As SqlWebhooks: the 410'd head of a queue still stopped (and configured) stays.
        gone = [
            key
            for key, d in table.items()
            if d.finished_at is not None
            and d.finished_at < before
            and not (
                d.state is WebhookState.GONE
                and d.endpoint in self._t.gone_endpoints
                and (configured is None or d.endpoint in configured)
            )
        ][:limit]
        if configured is not None and (limit is None or len(gone) < limit):
            # As SqlWebhooks._purge_abandoned: a queue nobody has sent from since ``before``,
            # from its head to its first younger delivery (the table keeps queue order).
            sent = {d.endpoint for d in table.values() if _sent_since(d, before)}
            queues: dict[str, list[WebhookDelivery]] = {}
            for d in table.values():
                if d.state is WebhookState.PENDING and d.endpoint not in configured:
                    queues.setdefault(d.endpoint, []).append(d)
            for endpoint, queue in sorted(queues.items()):
                if endpoint not in sent:
                    gone += [
                        d.id
                        for d in takewhile(lambda d: d.created_at < before, queue)
                        if d.next_attempt_at < before
                    ][: None if limit is None else limit - len(gone)]
        events = {table[key].event.id for key in gone}
        for key in gone:
            del table[key]
        named = {d.event.id for d in table.values()}
        for event_id in events - named:  # as SqlWebhooks: the events of what it deleted
            self._t.webhook_events.pop(event_id, None)
        return len(gone)


def _sent_since(delivery: WebhookDelivery, since: datetime) -> bool:
    """Attempted, finished, let go or requeued at or after ``since``."""
    moved = (
        delivery.state is WebhookState.PENDING
        and delivery.next_attempt_at >= since
        and delivery.next_attempt_at != delivery.created_at
    )
    return moved or any(
        at is not None and at >= since for at in (delivery.last_attempt_at, delivery.finished_at)
    )
