"""Repositories over one ``AsyncSession``. They never commit (the unit of work does)."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import takewhile
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Delete,
    Executable,
    Insert,
    Result,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
)
from adapters.sql.errors import translate
from adapters.sql.tables import (
    UtcDateTime,
    accounts,
    api_keys,
    audit_events,
    declined_addresses,
    discord_role_changes,
    email_tokens,
    gone_webhook_endpoints,
    link_proposals,
    link_tickets,
    outgoing_emails,
    pending_login,
    role_connection_tokens,
    sessions,
    user_links,
    webhook_deliveries,
    webhook_events,
)
from domain.model import (
    ADD_MAY_HAVE_GIVEN,
    Account,
    AccountId,
    ApiKey,
    AuditEvent,
    AuditKind,
    AuthPurpose,
    DeliveryStatus,
    DiscordId,
    DiscordUser,
    EmailKind,
    EmailPurpose,
    EmailToken,
    Link,
    LinkedRole,
    LinkProposal,
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
    scopes_from_text,
    scopes_to_text,
)
from domain.ports import RoleCallOutcome
from domain.webhooks import (
    GoneEndpoint,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSummary,
    WebhookEvent,
    WebhookEventType,
    WebhookState,
)


def _claiming(claim: Update, due: Select[Any], key: Any, *, postgres: bool) -> Update:
    """``claim`` (an UPDATE that takes rows for a worker) restricted to the rows ``due`` picks
    by ``key``, the table's own key column.

    On Postgres the subquery locks the rows it picks and skips the rows another claimer
    holds, so concurrent workers take disjoint batches without waiting for each other; a row
    claimed (and committed) meanwhile is checked against the WHERE clause again and left out.
    MATERIALIZED: the locking subquery runs exactly once (a planner that re-ran it inside a
    join could lock and update more than its limit). SQLite has no row locks, and needs none:
    its writers run one at a time (BEGIN IMMEDIATE), so each claimer sees the others' claims.
    """
    if postgres:
        picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        return claim.where(key == picked.c[key.name])
    return claim.where(key.in_(due.scalar_subquery()))


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _run(self, statement: Executable, params: Any = None) -> Result[Any]:
        try:
            return await self._session.execute(statement, params)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise translate(exc) from exc

    async def _consume(
        self, table: Table, key: Column[str], digest: str, now: datetime, *extra: Any
    ) -> Any:
        """One statement: of concurrent callers exactly one sees ``consumed_at IS NULL``."""
        query = (
            update(table)
            .where(key == digest, table.c.consumed_at.is_(None), *extra)
            .values(consumed_at=now)
            .returning(*table.c)
        )
        return (await self._run(query)).first()

    async def _count(self, statement: Delete | Update | Insert) -> int:
        result = await self._run(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def _delete_some(
        self, table: Table, key: Column[Any], where: ColumnElement[bool], limit: int | None
    ) -> int:
        """Delete the rows ``where`` says, at most ``limit`` of them (``None``: all), but
        those another transaction holds (SKIP LOCKED on Postgres; SQLite serialises writers):
        the next pass finds them. Deleted in the table's order, they waited for a
        transaction that takes them in its own (``remove_for_account``, the digests';
        ``PendingLoginRepository.lock``, the states') while it waited for one deleted
        already: a deadlock, and Postgres aborted one of the two."""
        some = select(key).where(where).with_for_update(skip_locked=True)
        if limit is not None:
            some = some.limit(limit)
        return await self._count(delete(table).where(key.in_(some.scalar_subquery())))


# -- row <-> domain ------------------------------------------------------------------------


def _account(row: Any) -> Account:
    return Account(
        AccountId(row.id),
        row.username,
        row.email,
        bool(row.email_verified),
        row.password_hash,
        row.created_at,
        bool(row.email_shared),
        row.device_epoch,
        row.discord_unlinked_at,
    )


def _account_values(account: Account) -> dict[str, Any]:
    return {
        "id": account.id.value,
        "username": account.username.lower(),
        "email": account.email,
        "email_normalized": normalize_email(account.email),
        "email_verified": account.email_verified,
        "password_hash": account.password_hash,
        "created_at": account.created_at,
        "email_shared": account.email_shared,
        "device_epoch": account.device_epoch,
        "discord_unlinked_at": account.discord_unlinked_at,
    }


def _link(row: Any) -> Link:
    return Link(
        DiscordId(row.discord_id),
        AccountId(row.taskflow_user_id),
        row.linked_at,
        row.discord_username,
        row.discord_global_name,
        row.discord_avatar,
        row.role_connection_lost_at,
        _known(RoleConnectionLoss, row.role_connection_lost_why),
    )


_E = TypeVar("_E", bound=enum.StrEnum)


def _known(kind: type[_E], value: str | None) -> _E | None:
    """``value`` as a member of ``kind``, or ``None`` when it is none of this version's: a
    newer release wrote it (a rolling upgrade, a rollback), in a column no CHECK constraint
    bounds. Read into the enum, it raised on every read of its row."""
    try:
        return None if value is None else kind(value)
    except ValueError:
        return None


def _known_or_text(kind: type[_E], value: str) -> _E | str:
    """``value`` as a member of ``kind``, or as its text when a newer release wrote it."""
    return _known(kind, value) or str(value)


def _pending(row: Any) -> PendingLogin:
    return PendingLogin(
        state_digest=row.state_hash,
        purpose=_known_or_text(AuthPurpose, row.purpose),  # a newer release's as its text
        browser_digest=row.browser_hash,
        destination=row.destination,
        created_at=row.created_at,
        expires_at=row.expires_at,
        account_id=AccountId(row.account_id) if row.account_id else None,
        ticket_digest=row.ticket_hash,
        consumed_at=row.consumed_at,
        failed_at=row.failed_at,
        failure=row.failure,
        signed_out_at=row.signed_out_at,
        superseded_by=AccountId(row.superseded_by) if row.superseded_by else None,
    )


def _ticket(row: Any) -> LinkTicket:
    return LinkTicket(
        row.token_hash,
        _discord_user(row),
        row.created_at,
        row.expires_at,
        row.consumed_at,
    )


def _discord_user(row: Any) -> DiscordUser:
    return DiscordUser(
        DiscordId(row.discord_id),
        row.discord_username,
        row.discord_global_name,
        row.discord_avatar,
    )


def _proposal(row: Any) -> LinkProposal:
    return LinkProposal(
        row.token_hash,
        _discord_user(row),
        AccountId(row.account_id),
        row.destination,
        row.created_at,
        row.expires_at,
        row.consumed_at,
    )


def _session_row(row: Any) -> Session:
    return Session(
        row.token_hash,
        AccountId(row.account_id),
        row.created_at,
        row.expires_at,
        id=row.id,
        method=_known_or_text(SignInMethod, row.method),
        last_seen_at=row.last_seen_at,
        proved_at=row.proved_at,
        proved_with=_known_or_text(SignInMethod, row.proved_with) if row.proved_with else None,
    )


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.name,
        row.key_hash,
        row.created_at,
        row.revoked_at,
        scopes=scopes_from_text(row.scopes),
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


def _audit(row: Any) -> AuditEvent:
    return AuditEvent(
        kind=_known_or_text(AuditKind, row.kind),
        at=row.at,
        account_id=AccountId(row.account_id) if row.account_id else None,
        discord_id=DiscordId(row.discord_id) if row.discord_id else None,
        detail=dict(row.detail),
        id=row.id,
    )


def _email_token(row: Any) -> EmailToken:
    return EmailToken(
        row.token_hash,
        EmailPurpose(row.purpose),
        AccountId(row.account_id),
        row.email,
        row.created_at,
        row.expires_at,
        row.consumed_at,
        row.proposal_hash,
    )


def _outgoing(row: Any) -> OutgoingEmail:
    return OutgoingEmail(
        id=row.id,
        kind=EmailKind(row.kind),
        to=row.recipient,
        account_id=AccountId(row.account_id) if row.account_id else None,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        # A newer release's status (its CHECK constraint widened) as its text: only ``latest``
        # reads a row not pending, for the account page's words about it.
        status=_known_or_text(DeliveryStatus, row.status),
        attempts=row.attempts,
        finished_at=row.finished_at,
        last_error=row.last_error,
        detail=dict(row.detail),
        client=row.client,
    )


def _outgoing_values(email: OutgoingEmail) -> dict[str, Any]:
    return {
        "id": email.id,
        "kind": email.kind.value,
        "recipient": email.to,
        "account_id": email.account_id.value if email.account_id else None,
        "created_at": email.created_at,
        "status": str(email.status),
        "next_attempt_at": email.next_attempt_at,
        "attempts": email.attempts,
        "finished_at": email.finished_at,
        "last_error": email.last_error,
        "detail": dict(email.detail),
        "client": email.client,
    }


# -- repositories ------------------------------------------------------------------------------


class SqlAccounts(_Repo):
    async def add(self, account: Account) -> None:
        await self._run(insert(accounts), _account_values(account))

    async def update(self, account: Account) -> None:
        values = _account_values(account)
        del values["id"]
        await self._run(update(accounts).where(accounts.c.id == account.id.value).values(**values))

    async def get(self, account_id: AccountId) -> Account | None:
        row = (await self._run(select(accounts).where(accounts.c.id == account_id.value))).first()
        return _account(row) if row else None

    async def lock(self, account_id: AccountId) -> Account | None:
        # FOR UPDATE on Postgres; SQLite ignores it (BEGIN IMMEDIATE serialises writers).
        query = select(accounts).where(accounts.c.id == account_id.value).with_for_update()
        row = (await self._run(query)).first()
        return _account(row) if row else None

    async def lock_if_free(self, account_id: AccountId) -> Account | None:
        query = select(accounts).where(accounts.c.id == account_id.value)
        row = (await self._run(query.with_for_update(skip_locked=True))).first()
        return _account(row) if row else None

    async def get_by_username(self, username: str) -> Account | None:
        query = select(accounts).where(accounts.c.username == username.lower())
        row = (await self._run(query)).first()
        return _account(row) if row else None

    async def find_by_email(self, email: str) -> Sequence[Account]:
        wanted = normalize_email(email)
        if wanted is None:
            return []
        query = (
            select(accounts)
            .where(accounts.c.email_normalized == wanted)
            .order_by(accounts.c.created_at, accounts.c.id)
        )
        return [_account(row) for row in await self._run(query)]

    async def usernames_starting_with(self, prefix: str) -> set[str]:
        query = select(accounts.c.username).where(
            accounts.c.username.startswith(prefix.lower(), autoescape=True)
        )
        return {row.username for row in await self._run(query)}


class SqlLinks(_Repo):
    async def add(self, link: Link) -> None:
        await self._run(
            insert(user_links),
            {
                "discord_id": link.discord_id.value,
                "taskflow_user_id": link.account_id.value,
                "linked_at": link.linked_at,
                "discord_username": link.discord_username,
                "discord_global_name": link.discord_global_name,
                "discord_avatar": link.discord_avatar,
            },
        )

    async def get_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        query = select(user_links).where(user_links.c.discord_id == discord_id.value)
        row = (await self._run(query)).first()
        return _link(row) if row else None

    async def hold_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        # FOR KEY SHARE on Postgres: a DELETE waits for this transaction, and this waits for
        # a DELETE not committed yet (then reads the row gone); updates of other columns go
        # on. SQLite ignores it (BEGIN IMMEDIATE serialises writers).
        query = select(user_links).where(user_links.c.discord_id == discord_id.value)
        row = (await self._run(query.with_for_update(read=True, key_share=True))).first()
        return _link(row) if row else None

    async def get_by_account(self, account_id: AccountId) -> Link | None:
        query = select(user_links).where(user_links.c.taskflow_user_id == account_id.value)
        row = (await self._run(query)).first()
        return _link(row) if row else None

    async def remove(self, link: Link) -> bool:
        query = delete(user_links).where(
            user_links.c.discord_id == link.discord_id.value,
            user_links.c.taskflow_user_id == link.account_id.value,
        )
        return await self._count(query) > 0

    async def set_role_connection_lost(
        self, discord_id: DiscordId, at: datetime | None, why: RoleConnectionLoss | None
    ) -> None:
        query = (
            update(user_links)
            .where(user_links.c.discord_id == discord_id.value)
            .values(role_connection_lost_at=at, role_connection_lost_why=why and why.value)
        )
        await self._run(query)

    def _lost(self) -> Select[Any]:
        tokens = role_connection_tokens.c
        kept = exists().where(tokens.discord_id == user_links.c.discord_id)
        return select(
            user_links.c.discord_id,
            user_links.c.role_connection_lost_at.label("since"),
            user_links.c.role_connection_lost_why.label("why"),
            kept.label("kept"),
        ).where(user_links.c.role_connection_lost_at.is_not(None))

    async def role_connection_losses(self) -> Sequence[RoleConnectionLossCount]:
        lost = self._lost().subquery()
        query = select(lost.c.why, lost.c.kept, func.count().label("members")).group_by(
            lost.c.why, lost.c.kept
        )
        counted: dict[tuple[RoleConnectionLoss, bool], int] = {}
        for row in await self._run(query):
            why = _known(RoleConnectionLoss, row.why)  # a newer release's: not counted
            if why is not None:
                counted[why, bool(row.kept)] = int(row.members)
        return [RoleConnectionLossCount(why, kept, n) for (why, kept), n in counted.items()]

    async def lost_role_connections(self, limit: int) -> Sequence[LostRoleConnection]:
        known = [why.value for why in RoleConnectionLoss]
        query = (
            self._lost()
            .where(user_links.c.role_connection_lost_why.in_(known))
            .order_by(user_links.c.role_connection_lost_at, user_links.c.discord_id)
            .limit(limit)
        )
        return [
            LostRoleConnection(
                DiscordId(row.discord_id), row.since, RoleConnectionLoss(row.why), bool(row.kept)
            )
            for row in await self._run(query)
        ]


class SqlPendingLogins(_Repo):
    async def add(self, pending: PendingLogin) -> None:
        await self._run(
            insert(pending_login),
            {
                "state_hash": pending.state_digest,
                "purpose": str(pending.purpose),
                "account_id": pending.account_id.value if pending.account_id else None,
                "browser_hash": pending.browser_digest,
                "ticket_hash": pending.ticket_digest,
                "destination": pending.destination,
                "created_at": pending.created_at,
                "expires_at": pending.expires_at,
                "consumed_at": pending.consumed_at,
                "failed_at": pending.failed_at,
                "failure": pending.failure,
                "signed_out_at": pending.signed_out_at,
                "superseded_by": pending.superseded_by.value if pending.superseded_by else None,
            },
        )

    async def consume(self, state_digest: str, now: datetime) -> PendingLogin | None:
        row = await self._consume(pending_login, pending_login.c.state_hash, state_digest, now)
        return _pending(row) if row else None

    async def get(self, state_digest: str) -> PendingLogin | None:
        query = select(pending_login).where(pending_login.c.state_hash == state_digest)
        row = (await self._run(query)).first()
        return _pending(row) if row else None

    async def mark_failed(
        self, state_digest: str, now: datetime, failure: str | None = None
    ) -> None:
        await self._run(
            update(pending_login)
            .where(
                pending_login.c.state_hash == state_digest,
                pending_login.c.consumed_at.is_not(None),
            )
            .values(failed_at=now, failure=failure)
        )

    async def mark_signed_in(self, state_digest: str, account_id: AccountId) -> None:
        await self._run(
            update(pending_login)
            .where(
                pending_login.c.state_hash == state_digest,
                pending_login.c.consumed_at.is_not(None),
            )
            .values(account_id=account_id.value)
        )

    async def lock(
        self, state_digest: str, browser_digests: Collection[str] = ()
    ) -> PendingLogin | None:
        # FOR UPDATE on Postgres: a mark_signed_out committed while this waited is read here.
        # SQLite ignores it (BEGIN IMMEDIATE serialises writers). In the states' order, as
        # mark_signed_out locks them: two transactions holding rows of one browser never wait
        # for each other in a circle.
        held = pending_login.c.state_hash == state_digest
        if browser_digests:
            held = or_(held, pending_login.c.browser_hash.in_(sorted(browser_digests)))
        query = select(pending_login).where(held).order_by(pending_login.c.state_hash)
        rows = (await self._run(query.with_for_update())).all()
        return next((_pending(row) for row in rows if row.state_hash == state_digest), None)

    async def mark_signed_out(self, browser_digests: Collection[str], now: datetime) -> int:
        if not browser_digests:
            return 0
        # Locked in the states' order first (see ``lock``): an UPDATE takes its rows in
        # whatever order its plan reads them.
        due = (
            select(pending_login.c.state_hash)
            .where(
                pending_login.c.browser_hash.in_(sorted(browser_digests)),
                pending_login.c.signed_out_at.is_(None),
            )
            .order_by(pending_login.c.state_hash)
            .with_for_update()
        )
        mark = (
            update(pending_login)
            .where(pending_login.c.state_hash.in_(due), pending_login.c.signed_out_at.is_(None))
            .values(signed_out_at=now)
        )
        return await self._count(mark)

    async def supersede(
        self, browser_digests: Collection[str], account_id: AccountId, *, but: str
    ) -> int:
        if not browser_digests:
            return 0
        mark = (
            update(pending_login)
            .where(
                pending_login.c.browser_hash.in_(sorted(browser_digests)),
                pending_login.c.state_hash != but,
                or_(
                    pending_login.c.superseded_by.is_(None),
                    pending_login.c.superseded_by != account_id.value,
                ),
            )
            .values(superseded_by=account_id.value)
        )
        return await self._count(mark)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            pending_login, pending_login.c.state_hash, pending_login.c.expires_at <= now, limit
        )


def _ticket_values(ticket: LinkTicket) -> dict[str, Any]:
    return {
        "token_hash": ticket.digest,
        "discord_id": ticket.discord.id.value,
        "discord_username": ticket.discord.username,
        "discord_global_name": ticket.discord.global_name,
        "discord_avatar": ticket.discord.avatar,
        "created_at": ticket.created_at,
        "expires_at": ticket.expires_at,
        "consumed_at": ticket.consumed_at,
    }


def _replacing_ticket() -> Insert:
    """Postgres: one statement spends a Discord account's live tickets (at the new ticket's
    ``created_at``) and adds the new one. Built once. Its parameters are named after no column
    (``new_`` and ``spend_``): the parameters of a statement executed with a dict, whose keys
    name columns, would become the SET clause of the UPDATE too. Every part of a statement
    sees the same snapshot, so the spend never sees the row the INSERT adds.

    Unlike ``consume_for_discord`` it waits for a ticket another transaction holds (a
    redemption spending it), rather than skip it: should that transaction roll back (its link
    refused), the skipped ticket was live again beside the new one. Once the holder is done,
    the ticket is checked again: spent by a commit, it is left out; live again after a
    rollback, it is spent here. The wait is bounded by ``statement_timeout`` (a 503, "try
    again"), and no cycle can form: a redemption waits for no ticket (its link's spend skips
    them), and the tickets are locked in one order (``token_hash``), so two /link commands of
    one Discord account only queue up."""
    live = (
        link_tickets.c.discord_id == bindparam("spend_discord_id"),
        link_tickets.c.consumed_at.is_(None),
        link_tickets.c.expires_at > bindparam("spend_at"),
    )
    due = (
        select(link_tickets.c.token_hash)
        .where(*live)
        .order_by(link_tickets.c.token_hash)
        .with_for_update()
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    spend = update(link_tickets).values(consumed_at=bindparam("spend_at"))
    spent = spend.where(link_tickets.c.token_hash == due.c.token_hash, *live).cte("spent")
    new: dict[str, Any] = {c.name: bindparam(f"new_{c.name}") for c in link_tickets.c}
    return insert(link_tickets).values(new).add_cte(spent)


_REPLACING_TICKET = _replacing_ticket()


class SqlLinkTickets(_Repo):
    def __init__(self, session: AsyncSession, *, postgres: bool = False) -> None:
        super().__init__(session)
        self._postgres = postgres

    async def add(self, ticket: LinkTicket) -> None:
        await self._run(insert(link_tickets), _ticket_values(ticket))

    async def add_replacing(self, ticket: LinkTicket) -> None:
        if self._postgres:  # one round trip
            new = {f"new_{name}": value for name, value in _ticket_values(ticket).items()}
            spend = {"spend_discord_id": ticket.discord.id.value, "spend_at": ticket.created_at}
            await self._run(_REPLACING_TICKET, new | spend)
            return
        await self.consume_for_discord(ticket.discord.id, ticket.created_at)
        await self.add(ticket)

    async def consume(self, digest: str, now: datetime) -> LinkTicket | None:
        row = await self._consume(link_tickets, link_tickets.c.token_hash, digest, now)
        return _ticket(row) if row else None

    async def consume_for_discord(self, discord_id: DiscordId, now: datetime) -> int:
        """On Postgres a ticket another transaction holds is skipped, not waited for: only
        ``consume``, ``add_replacing`` and this statement lock a ticket, all to spend it (should
        that transaction roll back, its ticket stays live). Waiting deadlocked two redemptions of
        one Discord account's tickets: each held its own ticket, one waited for the other's
        link to commit, the other (whose link spends tickets) for the first one's ticket."""
        live = (
            link_tickets.c.discord_id == discord_id.value,
            link_tickets.c.consumed_at.is_(None),
            link_tickets.c.expires_at > now,
        )
        spend = update(link_tickets).where(*live).values(consumed_at=now)
        due = select(link_tickets.c.token_hash).where(*live)
        return await self._count(
            _claiming(spend, due, link_tickets.c.token_hash, postgres=self._postgres)
        )

    async def replaced(self, ticket: LinkTicket) -> bool:
        """By the ``discord_id`` index; a Discord account has few tickets (each /link spends
        the earlier ones, the purge deletes the expired)."""
        c = link_tickets.c
        newer = or_(
            c.created_at > ticket.created_at,
            and_(c.created_at == ticket.created_at, c.token_hash > ticket.digest),
        )
        live_then = or_(c.consumed_at.is_(None), c.consumed_at > ticket.created_at)
        query = select(exists().where(c.discord_id == ticket.discord.id.value, newer, live_then))
        return bool((await self._run(query)).scalar_one())

    async def get(self, digest: str) -> LinkTicket | None:
        row = (
            await self._run(select(link_tickets).where(link_tickets.c.token_hash == digest))
        ).first()
        return _ticket(row) if row else None

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            link_tickets, link_tickets.c.token_hash, link_tickets.c.expires_at <= now, limit
        )


class SqlLinkProposals(_Repo):
    async def add(self, proposal: LinkProposal) -> None:
        await self._run(
            insert(link_proposals),
            {
                "token_hash": proposal.digest,
                "account_id": proposal.account_id.value,
                "discord_id": proposal.discord.id.value,
                "discord_username": proposal.discord.username,
                "discord_global_name": proposal.discord.global_name,
                "discord_avatar": proposal.discord.avatar,
                "destination": proposal.destination,
                "created_at": proposal.created_at,
                "expires_at": proposal.expires_at,
                "consumed_at": proposal.consumed_at,
            },
        )

    async def consume(self, digest: str, now: datetime) -> LinkProposal | None:
        row = await self._consume(link_proposals, link_proposals.c.token_hash, digest, now)
        return _proposal(row) if row else None

    async def get(self, digest: str) -> LinkProposal | None:
        query = select(link_proposals).where(link_proposals.c.token_hash == digest)
        row = (await self._run(query)).first()
        return _proposal(row) if row else None

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            link_proposals, link_proposals.c.token_hash, link_proposals.c.expires_at <= now, limit
        )


class SqlSessions(_Repo):
    async def add(self, session: Session) -> None:
        await self._run(
            insert(sessions),
            {
                "token_hash": session.digest,
                "account_id": session.account_id.value,
                "created_at": session.created_at,
                "expires_at": session.expires_at,
                "id": session.id,
                "method": str(session.method),
                "last_seen_at": session.last_seen_at,
                "proved_at": session.proved_at,
                "proved_with": str(session.proved_with) if session.proved_with else None,
            },
        )

    async def get(self, digest: str) -> Session | None:
        row = (await self._run(select(sessions).where(sessions.c.token_hash == digest))).first()
        return _session_row(row) if row else None

    async def touch(self, digest: str, now: datetime) -> None:
        await self._run(
            update(sessions).where(sessions.c.token_hash == digest).values(last_seen_at=now)
        )

    async def list_for_account(self, account_id: AccountId) -> Sequence[Session]:
        query = (
            select(sessions)
            .where(sessions.c.account_id == account_id.value)
            .order_by(sessions.c.created_at.desc(), sessions.c.id)
        )
        return [_session_row(row) for row in await self._run(query)]

    async def renew(
        self, digest: str, new_digest: str, now: datetime, proved_with: SignInMethod | None
    ) -> bool:
        # An UPDATE of the row, not a delete and an insert: the insert's foreign key check
        # locked the account after the session, the reverse of "sign out everywhere" and a
        # password reset, which lock the account first (an attacker's review saw deadlocks).
        values: dict[str, Any] = {"token_hash": new_digest, "last_seen_at": now}
        if proved_with is not None:
            values |= {"proved_at": now, "proved_with": proved_with.value}
        query = update(sessions).where(sessions.c.token_hash == digest).values(**values)
        return await self._count(query) == 1

    async def remove(self, digest: str) -> bool:
        return await self._count(delete(sessions).where(sessions.c.token_hash == digest)) > 0

    async def remove_by_id(self, account_id: AccountId, session_id: uuid.UUID) -> bool:
        query = delete(sessions).where(
            sessions.c.account_id == account_id.value, sessions.c.id == session_id
        )
        return await self._count(query) > 0

    async def lock(
        self, digests: Collection[str], *, account_id: AccountId | None = None
    ) -> Sequence[Session]:
        # FOR UPDATE on Postgres (SQLite serialises writers), one statement in the digests'
        # order: the browser's sessions (another account's too, through a copied cookie) and
        # the account's as one set, as every other holder of several sessions takes them.
        held: ColumnElement[bool] = sessions.c.token_hash.in_(sorted(digests))
        if account_id is not None:
            held = or_(held, sessions.c.account_id == account_id.value)
        query = select(sessions).where(held).order_by(sessions.c.token_hash).with_for_update()
        return [_session_row(row) for row in await self._run(query)]

    async def remove_for_account(self, account_id: AccountId, *, keep: str | None = None) -> int:
        # Locked in the digests' order first (FOR UPDATE: Postgres; SQLite serialises
        # writers), as ``sign_out_browser`` ends a browser's sessions: deleted in the table's
        # order, a sign-out ending two of them at once (its cookies naming both) deadlocked.
        # Then deleted by account in a statement of its own: one DELETE whose rows were the
        # locking subquery's missed a session renewed meanwhile (its token_hash changed
        # under the outer scan's snapshot), which lived on. Its own statement sees it, locked.
        # The kept session is locked with the others, in their order: its caller renews it
        # next, and a sign-out whose cookies name it and another one (copied cookies) took
        # them in the digests' order, one holding what the other waited for (a deadlock).
        owned = sessions.c.account_id == account_id.value
        await self._run(
            select(sessions.c.token_hash)
            .where(owned)
            .order_by(sessions.c.token_hash)
            .with_for_update()
        )
        if keep is not None:
            owned = owned & (sessions.c.token_hash != keep)
        return await self._count(delete(sessions).where(owned))

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            sessions, sessions.c.token_hash, sessions.c.expires_at <= now, limit
        )


class SqlApiKeys(_Repo):
    async def add(self, key: ApiKey) -> None:
        await self._run(
            insert(api_keys),
            {
                "id": key.id,
                "name": key.name,
                "key_hash": key.digest,
                "created_at": key.created_at,
                "revoked_at": key.revoked_at,
                "scopes": scopes_to_text(key.scopes),
                "expires_at": key.expires_at,
                "last_used_at": key.last_used_at,
            },
        )

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        row = (await self._run(select(api_keys).where(api_keys.c.key_hash == digest))).first()
        return _api_key(row) if row else None

    async def list(self) -> Sequence[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        return [_api_key(row) for row in await self._run(query)]

    async def revoke(self, key_id: uuid.UUID, now: datetime) -> bool:
        query = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return await self._count(query) > 0

    async def record_use(self, key_id: uuid.UUID, at: datetime, *, unless_since: datetime) -> bool:
        # The condition makes instances that all saw the key used within a minute write one
        # row version between them, not one each.
        query = (
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= unless_since),
            )
            .values(last_used_at=at)
        )
        return await self._count(query) > 0


class SqlAudit(_Repo):
    async def record(self, event: AuditEvent) -> None:
        await self._run(
            insert(audit_events),
            {
                "id": event.id,
                "kind": str(event.kind),
                "at": event.at,
                "account_id": event.account_id.value if event.account_id else None,
                "discord_id": event.discord_id.value if event.discord_id else None,
                "detail": dict(event.detail),
            },
        )

    async def for_account(self, account_id: AccountId) -> Sequence[AuditEvent]:
        query = (
            select(audit_events)
            .where(audit_events.c.account_id == account_id.value)
            .order_by(audit_events.c.at, audit_events.c.seq)
        )
        return [_audit(row) for row in await self._run(query)]

    async def search(
        self,
        *,
        account_id: AccountId | None = None,
        discord_id: DiscordId | None = None,
        login: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        query = select(audit_events)
        if account_id is not None:
            query = query.where(audit_events.c.account_id == account_id.value)
        if discord_id is not None:
            query = query.where(audit_events.c.discord_id == discord_id.value)
        if login is not None:
            # Postgres ``detail ->> 'login'``, SQLite ``json_extract(detail, '$.login')``.
            query = query.where(audit_events.c.detail["login"].as_string() == login)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        query = query.order_by(audit_events.c.at.desc(), audit_events.c.seq.desc()).limit(limit)
        return [_audit(row) for row in await self._run(query)]

    async def count_since(self, account_id: AccountId, kind: AuditKind, since: datetime) -> int:
        query = select(func.count()).where(
            audit_events.c.account_id == account_id.value,
            audit_events.c.kind == kind.value,
            audit_events.c.at >= since,
        )
        return int((await self._run(query)).scalar_one())

    async def reasons_since(self, kind: AuditKind, since: datetime) -> Mapping[str, int]:
        # Postgres ``detail ->> 'reason'``, SQLite ``json_extract(detail, '$.reason')``.
        reason = audit_events.c.detail["reason"].as_string().label("reason")
        query = (
            select(reason, func.count().label("events"))
            .where(audit_events.c.kind == kind.value, audit_events.c.at >= since)
            .group_by(reason)
        )
        return {row.reason or "": int(row.events) for row in await self._run(query)}

    async def purge_before(self, before: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            audit_events, audit_events.c.seq, audit_events.c.at < before, limit
        )


class SqlEmailTokens(_Repo):
    async def add(self, token: EmailToken) -> None:
        await self._run(
            insert(email_tokens),
            {
                "token_hash": token.digest,
                "purpose": token.purpose.value,
                "account_id": token.account_id.value,
                "email": token.email,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "consumed_at": token.consumed_at,
                "proposal_hash": token.proposal_digest,
            },
        )

    async def consume(self, digest: str, purpose: EmailPurpose, now: datetime) -> EmailToken | None:
        row = await self._consume(
            email_tokens,
            email_tokens.c.token_hash,
            digest,
            now,
            email_tokens.c.purpose == purpose.value,
        )
        return _email_token(row) if row else None

    async def get(self, digest: str) -> EmailToken | None:
        # A link of a purpose a newer release added (a rolling upgrade, a rollback; the CHECK
        # constraint widened by its migration) is none of this version's: every reader asks
        # for a purpose of its own, so it is not found here (read into the enum, it was a 500
        # on its page), and ``consume`` never spends it.
        query = select(email_tokens).where(
            email_tokens.c.token_hash == digest,
            email_tokens.c.purpose.in_([purpose.value for purpose in EmailPurpose]),
        )
        row = (await self._run(query)).first()
        return _email_token(row) if row else None

    async def remove(self, digest: str) -> bool:
        query = delete(email_tokens).where(email_tokens.c.token_hash == digest)
        return await self._count(query) > 0

    async def consume_all(self, account_id: AccountId, purpose: EmailPurpose, now: datetime) -> int:
        query = (
            update(email_tokens)
            .where(
                email_tokens.c.account_id == account_id.value,
                email_tokens.c.purpose == purpose.value,
                email_tokens.c.consumed_at.is_(None),
            )
            .values(consumed_at=now)
        )
        return await self._count(query)

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        return await self._delete_some(
            email_tokens, email_tokens.c.token_hash, email_tokens.c.expires_at <= now, limit
        )


class SqlDeclinedAddresses(_Repo):
    def __init__(self, session: AsyncSession, *, postgres: bool = False) -> None:
        super().__init__(session)
        self._postgres = postgres

    async def add(self, account_id: AccountId, email: str, at: datetime) -> None:
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        await self._run(
            dialect_insert(declined_addresses)
            .values(
                account_id=account_id.value,
                email_normalized=normalize_email(email) or email,
                declined_at=at,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "email_normalized"])
        )

    async def declined(self, account_id: AccountId, email: str) -> bool:
        d = declined_addresses.c
        address = normalize_email(email) or email
        query = select(literal(1)).where(
            d.account_id == account_id.value, d.email_normalized == address
        )
        return (await self._run(query)).first() is not None

    async def remove(self, account_id: AccountId, email: str) -> bool:
        d = declined_addresses.c
        address = normalize_email(email) or email
        query = delete(declined_addresses).where(
            d.account_id == account_id.value, d.email_normalized == address
        )
        return await self._count(query) > 0


class _QueueRepo(_Repo):
    """The repository of a queue that workers take from. Writing work for them wakes them:
    in this process through ``rings`` (the unit of work rings the bell once the transaction
    committed), and, on Postgres, in every instance through a NOTIFY, which is
    part of the transaction too: delivered at commit, dropped by a rollback, and repeated
    ones in one transaction arrive as one (``PostgresQueueListener``)."""

    channel: ClassVar[str]

    def __init__(
        self, session: AsyncSession, *, postgres: bool = False, rings: set[str] | None = None
    ) -> None:
        super().__init__(session)
        self._postgres = postgres
        self._rings: set[str] = set() if rings is None else rings

    async def _wake_listeners(self) -> None:
        self._rings.add(self.channel)
        if self._postgres:
            await self._run(select(func.pg_notify(self.channel, "")))

    async def _write_back(
        self,
        table: Table,
        pending: ColumnElement[bool],
        row_id: uuid.UUID,
        values: dict[str, Any],
        leased_until: datetime,
    ) -> bool:
        """``values`` written to ``table``'s row ``row_id`` while it is still the caller's:
        ``pending`` (the table's "still pending" condition) and its lease
        (``next_attempt_at``, as ``renew_claim`` left it) ending at ``leased_until``. Whether
        it was."""
        query = (
            update(table)
            .where(table.c.id == row_id, pending, table.c.next_attempt_at == leased_until)
            .values(**values)
        )
        return await self._count(query) == 1


# The advisory lock of purge batches (see ``SqlMaintenance``): a 64-bit key of its own beside
# the migrations' (the ASCII of "tfpurge!"; the recipients' take two 32-bit keys, another space).
PURGE_LOCK = 0x7466707572676521


class SqlMaintenance(_Repo):
    def __init__(self, session: AsyncSession, *, postgres: bool = False) -> None:
        super().__init__(session)
        self._postgres = postgres

    async def take_purge_turn(self, *, wait: bool) -> bool:
        """On Postgres a transaction-level advisory lock, released by the commit or rollback
        (or the connection's end): a session-level one would outlive its batch on a pooled
        connection, and behind PgBouncer in transaction mode stay with whichever client got
        that server connection next. SQLite runs writers one at a time (BEGIN IMMEDIATE):
        the batch already has the database to itself."""
        if not self._postgres:
            return True
        if wait:
            await self._wait_for_purge_lock()
            return True
        taken = (await self._run(select(func.pg_try_advisory_xact_lock(PURGE_LOCK)))).scalar()
        return bool(taken)

    async def _wait_for_purge_lock(self) -> None:
        """Wait for the purge's lock however long the batch holding it takes, in waits shorter
        than the statement timeout: one wait was one statement, which the server cut off at
        ``statement_timeout`` (and the client a second later), so that ``purge-expired``
        behind a serving process's long batch failed as if the database were broken. Each
        wait is bounded by ``lock_timeout`` inside a savepoint (a wait that runs out is rolled
        back to it, the transaction goes on), and the lock, once granted, is the
        transaction's. Between two waits the lock is not asked for only for a round trip: a
        purge asking in that moment may get it first, and is waited for in turn."""
        setting = select(func.current_setting("statement_timeout"))
        limit_ms = _milliseconds((await self._run(setting)).scalar_one())
        if limit_ms == 0:  # no statement timeout: one wait
            await self._run(select(func.pg_advisory_xact_lock(PURGE_LOCK)))
            return
        before = (await self._run(select(func.current_setting("lock_timeout")))).scalar_one()
        step = f"{max(1, int(limit_ms // 2))}ms"
        while True:
            try:
                async with self._session.begin_nested():
                    await self._session.execute(select(func.set_config("lock_timeout", step, True)))
                    await self._session.execute(select(func.pg_advisory_xact_lock(PURGE_LOCK)))
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                if _sqlstate(exc) == LOCK_NOT_AVAILABLE:
                    continue
                raise translate(exc) from exc
            break
        await self._run(select(func.set_config("lock_timeout", before, True)))


# Postgres' lock_not_available: a wait for a lock that ran past lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


def _sqlstate(exc: BaseException) -> str | None:
    cause = getattr(exc, "orig", None) or exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return state if isinstance(state, str) else None


def _milliseconds(setting: str) -> float:
    """A Postgres duration setting as ``SHOW`` gives it (``5s``, ``500ms``, ``1min``, ``0``)
    in milliseconds."""
    units = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    number = setting.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * units.get(setting[len(number) :], 1)


# The first half of the recipients' advisory locks (two 32-bit keys: a key space apart from
# the migrations' 64-bit one), "tfle" in ASCII; the second is a hash of the address. Two
# addresses with one hash only take turns.
RECIPIENT_LOCKS = 0x74666C65


def _recipient_lock_key(to: str) -> int:
    digest = hashlib.blake2b(to.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class SqlOutgoingEmails(_QueueRepo):
    channel = EMAIL_QUEUE_CHANNEL

    async def add(self, email: OutgoingEmail) -> None:
        await self._run(insert(outgoing_emails), _outgoing_values(email))
        await self._wake_listeners()

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[OutgoingEmail]:
        due = (
            select(outgoing_emails.c.seq)
            .where(
                outgoing_emails.c.status == DeliveryStatus.PENDING.value,
                outgoing_emails.c.next_attempt_at <= now,
                # Only kinds this version can write: a newer release's (a rolling upgrade,
                # a rollback) is left to an instance that knows it. Read back, it broke
                # every pass, and no email went out while it was due.
                outgoing_emails.c.kind.in_([kind.value for kind in EmailKind]),
            )
            .order_by(outgoing_emails.c.next_attempt_at, outgoing_emails.c.seq)
            .limit(limit)
        )
        claim = update(outgoing_emails).values(next_attempt_at=until)
        claim = _claiming(claim, due, outgoing_emails.c.seq, postgres=self._postgres)
        rows = await self._run(claim.returning(*outgoing_emails.c))
        return [_outgoing(row) for row in sorted(rows, key=lambda row: row.seq)]

    async def renew_claim(self, email: OutgoingEmail, until: datetime) -> OutgoingEmail | None:
        # Whoever claims an email after our lease ran out moves its next attempt beyond our
        # lease's end, so an unchanged value means it is still ours.
        query = (
            update(outgoing_emails)
            .where(
                outgoing_emails.c.id == email.id,
                outgoing_emails.c.status == DeliveryStatus.PENDING.value,
                outgoing_emails.c.next_attempt_at == email.next_attempt_at,
            )
            .values(next_attempt_at=until)
            .returning(*outgoing_emails.c)
        )
        row = (await self._run(query)).first()
        return _outgoing(row) if row else None

    async def release(self, email: OutgoingEmail, now: datetime) -> bool:
        released = await self.renew_claim(email, now) is not None
        if released:
            await self._wake_listeners()
        return released

    async def requeue_failed(self, now: datetime, email_id: uuid.UUID | None = None) -> int:
        query = (
            update(outgoing_emails)
            .where(outgoing_emails.c.status == DeliveryStatus.FAILED.value)
            .values(
                status=DeliveryStatus.PENDING.value,
                next_attempt_at=now,
                attempts=0,
                finished_at=None,
                last_error=None,
            )
        )
        if email_id is not None:
            query = query.where(outgoing_emails.c.id == email_id)
        requeued = await self._count(query)
        if requeued:
            await self._wake_listeners()
        return requeued

    async def save(self, email: OutgoingEmail, *, leased_until: datetime) -> bool:
        values = _outgoing_values(email)
        del values["id"]
        pending = outgoing_emails.c.status == DeliveryStatus.PENDING.value
        return await self._write_back(outgoing_emails, pending, email.id, values, leased_until)

    async def latest(self, account_id: AccountId, kind: EmailKind) -> OutgoingEmail | None:
        query = (
            select(outgoing_emails)
            .where(
                outgoing_emails.c.account_id == account_id.value,
                outgoing_emails.c.kind == kind.value,
            )
            .order_by(outgoing_emails.c.created_at.desc(), outgoing_emails.c.seq.desc())
            .limit(1)
        )
        row = (await self._run(query)).first()
        return _outgoing(row) if row else None

    async def count_since(self, account_id: AccountId, kind: EmailKind, since: datetime) -> int:
        query = select(func.count()).where(
            outgoing_emails.c.account_id == account_id.value,
            outgoing_emails.c.kind == kind.value,
            outgoing_emails.c.created_at >= since,
        )
        return int((await self._run(query)).scalar_one())

    async def lock_recipient(self, to: str) -> None:
        # SQLite runs writers one at a time (BEGIN IMMEDIATE): nothing to lock there.
        if self._postgres:
            key = _recipient_lock_key(to)
            await self._run(select(func.pg_advisory_xact_lock(RECIPIENT_LOCKS, key)))

    async def count_to_since(self, to: str, kinds: Collection[EmailKind], since: datetime) -> int:
        query = select(func.count()).where(
            outgoing_emails.c.recipient == to,
            outgoing_emails.c.kind.in_([kind.value for kind in kinds]),
            outgoing_emails.c.created_at >= since,
        )
        return int((await self._run(query)).scalar_one())

    async def count_to_since_from(
        self, to: str, kinds: Collection[EmailKind], since: datetime, client: str | None
    ) -> int:
        query = select(func.count()).where(
            outgoing_emails.c.recipient == to,
            outgoing_emails.c.kind.in_([kind.value for kind in kinds]),
            outgoing_emails.c.created_at >= since,
            outgoing_emails.c.client.is_not_distinct_from(client),
        )
        return int((await self._run(query)).scalar_one())

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        finished = and_(
            outgoing_emails.c.finished_at.is_not(None), outgoing_emails.c.finished_at < before
        )
        return await self._delete_some(outgoing_emails, outgoing_emails.c.seq, finished, limit)


# The actions and statuses this version knows: a newer release's (its migration widened the
# CHECK constraints; a rolling upgrade, a rollback) are left to an instance that knows them.
# Read into the enums they raised, and a worker's pass stopped on them.
_KNOWN_ACTIONS = [action.value for action in RoleAction]
_KNOWN_STATUSES = [status.value for status in RoleChangeStatus]


def _role_change(row: Any) -> RoleChange:
    return RoleChange(
        discord_id=DiscordId(row.discord_id),
        role=LinkedRole(DiscordId(row.guild_id), DiscordId(row.role_id)),
        action=RoleAction(row.action),
        requested_at=row.requested_at,
        next_attempt_at=row.next_attempt_at,
        account_id=AccountId(row.account_id) if row.account_id else None,
        status=RoleChangeStatus(row.status),
        attempts=row.attempts,
        version=row.version,
        claimed_until=row.claimed_until,
        finished_at=row.finished_at,
        last_error=row.last_error,
    )


_roles = discord_role_changes.c
_FINISHED = (RoleChangeStatus.DONE, RoleChangeStatus.FAILED, RoleChangeStatus.REFUSED)


# Not refused because the member was not in the server: leaving a server drops its roles, so
# there is nothing to remove (each call, a 404, could only fail again, one per member who left
# at every roles sync).
_NOT_REFUSED_AS_NO_MEMBER = or_(
    _roles.status != RoleChangeStatus.REFUSED.value,
    _roles.last_error.is_(None),
    _roles.last_error != RoleCallOutcome.NOT_A_MEMBER.value,
)


def _of_roles(roles: Collection[LinkedRole]) -> ColumnElement[bool]:
    """The rows of one of ``roles`` (none, when it is empty)."""
    return or_(
        false(),
        *(
            and_(_roles.guild_id == role.guild_id.value, _roles.role_id == role.role_id.value)
            for role in sorted(roles)
        ),
    )


class SqlRoleChanges(_QueueRepo):
    channel = ROLE_QUEUE_CHANNEL

    def _insert(self) -> postgresql.Insert | sqlite.Insert:
        table = discord_role_changes
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    @staticmethod
    def _requested_again(excluded: Any) -> dict[str, Any]:
        """What a new request makes of an existing row (its claim stays)."""
        return {
            "action": excluded.action,
            "account_id": excluded.account_id,
            "requested_at": excluded.requested_at,
            "next_attempt_at": excluded.next_attempt_at,
            "status": RoleChangeStatus.PENDING.value,
            "attempts": 0,
            "version": _roles.version + 1,
            "finished_at": None,
            "last_error": None,
        }

    @staticmethod
    def _new_row(change: RoleChange) -> dict[str, Any]:
        return {
            "discord_id": change.discord_id.value,
            "guild_id": change.role.guild_id.value,
            "role_id": change.role.role_id.value,
            "action": change.action.value,
            "account_id": change.account_id.value if change.account_id else None,
            "status": RoleChangeStatus.PENDING.value,
            "attempts": 0,
            "version": 1,
            "requested_at": change.requested_at,
            "next_attempt_at": change.next_attempt_at,
        }

    async def request(self, change: RoleChange) -> None:
        # One statement: of two concurrent requests for a row, the second waits for the
        # first's row lock and then raises the version again (both count).
        statement = self._insert().values(**self._new_row(change))
        statement = statement.on_conflict_do_update(
            index_elements=[_roles.discord_id, _roles.guild_id, _roles.role_id],
            set_=self._requested_again(statement.excluded),
        )
        await self._run(statement)
        await self._wake_listeners()

    async def request_for_links(self, role: LinkedRole, now: datetime, *, every: bool) -> int:
        links = select(
            user_links.c.discord_id,
            literal(role.guild_id.value).label("guild_id"),
            literal(role.role_id.value).label("role_id"),
            literal(RoleAction.ADD.value).label("action"),
            user_links.c.taskflow_user_id,
            literal(RoleChangeStatus.PENDING.value).label("status"),
            literal(0).label("attempts"),
            literal(1).label("version"),
            literal(now, UtcDateTime()).label("requested_at"),
            literal(now, UtcDateTime()).label("next_attempt_at"),
        ).where(user_links.c.discord_id > 0)  # SQLite needs a WHERE before ON CONFLICT
        statement = self._insert().from_select(
            [
                "discord_id",
                "guild_id",
                "role_id",
                "action",
                "account_id",
                "status",
                "attempts",
                "version",
                "requested_at",
                "next_attempt_at",
            ],
            links,
        )
        already = and_(
            _roles.action == RoleAction.ADD.value,
            _roles.status.in_([RoleChangeStatus.PENDING.value, RoleChangeStatus.DONE.value]),
        )
        # A row of a newer release's action or status is that release's: never overwritten
        # with this version's values (its change lost, or done twice), with ``every`` too.
        ours = and_(_roles.action.in_(_KNOWN_ACTIONS), _roles.status.in_(_KNOWN_STATUSES))
        statement = statement.on_conflict_do_update(
            index_elements=[_roles.discord_id, _roles.guild_id, _roles.role_id],
            set_=self._requested_again(statement.excluded),
            where=ours if every else and_(ours, not_(already)),
        )
        requested = await self._count(statement)
        if requested:
            await self._wake_listeners()
        return requested

    async def retry_removals(self, role: LinkedRole, now: datetime) -> int:
        return await self._ask_again(
            now,
            _roles.guild_id == role.guild_id.value,
            _roles.role_id == role.role_id.value,
            _roles.action == RoleAction.REMOVE.value,
            _roles.status.in_([RoleChangeStatus.REFUSED.value, RoleChangeStatus.FAILED.value]),
            _NOT_REFUSED_AS_NO_MEMBER,
        )

    async def request_for_unlinked(self, role: LinkedRole, now: datetime) -> int:
        linked = select(user_links.c.discord_id).where(user_links.c.discord_id == _roles.discord_id)
        return await self._ask_again(
            now,
            _roles.guild_id == role.guild_id.value,
            _roles.role_id == role.role_id.value,
            _roles.action == RoleAction.ADD.value,
            _roles.status.in_([s.value for s in _FINISHED]),
            _NOT_REFUSED_AS_NO_MEMBER,
            ~linked.exists(),
            action=RoleAction.REMOVE,
        )

    async def _ask_again(
        self, now: datetime, *where: ColumnElement[bool], action: RoleAction | None = None
    ) -> int:
        """The finished rows matching ``where`` asked for again, due ``now`` (as ``action``,
        or their own); how many."""
        values: dict[str, Any] = {
            "requested_at": now,
            "next_attempt_at": now,
            "status": RoleChangeStatus.PENDING.value,
            "attempts": 0,
            "version": _roles.version + 1,
            "finished_at": None,
            "last_error": None,
        }
        if action is not None:
            values["action"] = action.value
        asked = await self._count(update(discord_role_changes).where(*where).values(**values))
        if asked:
            await self._wake_listeners()
        return asked

    async def claim_due(
        self,
        now: datetime,
        until: datetime,
        limit: int,
        *,
        skip_guilds: Collection[DiscordId] = (),
        roles: Collection[LinkedRole] | None = None,
    ) -> Sequence[RoleChange]:
        due = (
            select(_roles.seq)
            .where(
                _roles.status == RoleChangeStatus.PENDING.value,
                _roles.action.in_(_KNOWN_ACTIONS),
                _roles.next_attempt_at <= now,
                or_(_roles.claimed_until.is_(None), _roles.claimed_until <= now),
                *([_roles.guild_id.not_in([g.value for g in skip_guilds])] if skip_guilds else []),
                *([_of_roles(roles)] if roles is not None else []),
            )
            .order_by(_roles.next_attempt_at, _roles.seq)
            .limit(limit)
        )
        claim = update(discord_role_changes).values(claimed_until=until)
        claim = _claiming(claim, due, _roles.seq, postgres=self._postgres)
        rows = await self._run(claim.returning(*discord_role_changes.c))
        return [_role_change(row) for row in sorted(rows, key=lambda row: row.seq)]

    @staticmethod
    def _held(change: RoleChange) -> Any:
        """The row, while this claim on it holds (a new claim always moves it further)."""
        return and_(
            _roles.discord_id == change.discord_id.value,
            _roles.guild_id == change.role.guild_id.value,
            _roles.role_id == change.role.role_id.value,
            _roles.claimed_until == change.claimed_until,
        )

    async def renew_claim(self, change: RoleChange, until: datetime) -> RoleChange | None:
        if change.claimed_until is None:
            return None
        query = (
            update(discord_role_changes)
            .where(self._held(change), _roles.status == RoleChangeStatus.PENDING.value)
            .values(claimed_until=until)
            .returning(*discord_role_changes.c)
        )
        row = (await self._run(query)).first()
        return _role_change(row) if row else None

    async def release(self, change: RoleChange) -> bool:
        if change.claimed_until is None:
            return False
        query = (
            update(discord_role_changes)
            .where(self._held(change), _roles.status == RoleChangeStatus.PENDING.value)
            .values(claimed_until=None)
        )
        released = await self._count(query) == 1
        if released:
            await self._wake_listeners()
        return released

    async def finish(self, change: RoleChange) -> bool:
        if change.claimed_until is None:
            return False
        written = update(discord_role_changes).where(
            self._held(change), _roles.version == change.version
        )
        written = written.values(
            action=change.action.value,
            account_id=change.account_id.value if change.account_id else None,
            status=change.status.value,
            attempts=change.attempts,
            next_attempt_at=change.next_attempt_at,
            finished_at=change.finished_at,
            last_error=change.last_error,
            claimed_until=None,
        )
        if await self._count(written):
            return True
        # A newer request came while this one was in flight: let the next delivery have it.
        await self._run(
            update(discord_role_changes).where(self._held(change)).values(claimed_until=None)
        )
        return False

    async def refuse_queued(
        self, role: LinkedRole, now: datetime, reason: str
    ) -> Sequence[RoleChange]:
        queued = select(_roles.seq).where(
            _roles.guild_id == role.guild_id.value,
            _roles.role_id == role.role_id.value,
            _roles.status == RoleChangeStatus.PENDING.value,
            _roles.action.in_(_KNOWN_ACTIONS),
            or_(_roles.claimed_until.is_(None), _roles.claimed_until <= now),
        )
        refuse = update(discord_role_changes).values(
            status=RoleChangeStatus.REFUSED.value,
            finished_at=now,
            last_error=reason,
            claimed_until=None,
        )
        refuse = _claiming(refuse, queued, _roles.seq, postgres=self._postgres)
        rows = await self._run(refuse.returning(*discord_role_changes.c))
        return [_role_change(row) for row in sorted(rows, key=lambda row: row.seq)]

    async def get(self, discord_id: DiscordId, role: LinkedRole) -> RoleChange | None:
        query = select(discord_role_changes).where(
            _roles.discord_id == discord_id.value,
            _roles.guild_id == role.guild_id.value,
            _roles.role_id == role.role_id.value,
            _roles.action.in_(_KNOWN_ACTIONS),
            _roles.status.in_(_KNOWN_STATUSES),
        )
        row = (await self._run(query)).first()
        return _role_change(row) if row else None

    async def added(self, discord_id: DiscordId) -> Sequence[LinkedRole]:
        query = (
            select(_roles.guild_id, _roles.role_id)
            .where(
                _roles.discord_id == discord_id.value,
                _roles.action == RoleAction.ADD.value,
                _roles.status.in_([status.value for status in ADD_MAY_HAVE_GIVEN]),
            )
            .order_by(_roles.guild_id, _roles.role_id)
        )
        rows = await self._run(query)
        return [LinkedRole(DiscordId(row.guild_id), DiscordId(row.role_id)) for row in rows]

    async def pending(
        self, roles: Collection[LinkedRole] | None = None
    ) -> tuple[int, datetime | None]:
        query = select(func.count(), func.min(_roles.next_attempt_at)).where(
            _roles.status == RoleChangeStatus.PENDING.value,
            # A newer release's action: never claimed here (``claim_due``), so no pending
            # change of this version's, which ``roles sync`` would wait for in vain.
            _roles.action.in_(_KNOWN_ACTIONS),
            *([_of_roles(roles)] if roles is not None else []),
        )
        row: Any = (await self._run(query)).one()  # min() keeps the column's type
        return int(row[0]), row[1]

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        linked = select(user_links.c.discord_id).where(user_links.c.discord_id == _roles.discord_id)
        nothing_left = or_(
            and_(
                _roles.action == RoleAction.REMOVE.value,
                _roles.status == RoleChangeStatus.DONE.value,
            ),
            and_(
                _roles.status == RoleChangeStatus.REFUSED.value,
                _roles.last_error == RoleCallOutcome.NOT_A_MEMBER.value,
            ),
        )
        old = select(_roles.seq).where(
            _roles.finished_at.is_not(None),
            _roles.finished_at < before,
            nothing_left,
            ~linked.exists(),
        )
        if limit is not None:
            old = old.limit(limit)
        if self._postgres:
            # A row a link or a worker holds at this moment is left for the next purge,
            # never waited for (the purge holds the other tables' rows it deleted).
            old = old.with_for_update(skip_locked=True)
        query = delete(discord_role_changes).where(_roles.seq.in_(old.scalar_subquery()))
        return await self._count(query)

    async def counts_since(self, since: datetime) -> Sequence[RoleChangeCount]:
        grouped = (_roles.guild_id, _roles.role_id, _roles.action, _roles.status, _roles.last_error)
        query = (
            select(*grouped, func.count().label("rows"))
            .where(_roles.requested_at >= since)
            .group_by(*grouped)
        )
        return [
            RoleChangeCount(
                LinkedRole(DiscordId(row.guild_id), DiscordId(row.role_id)),
                # A newer release's as its text: counted apart, as that release's.
                _known_or_text(RoleAction, row.action),
                _known_or_text(RoleChangeStatus, row.status),
                row.last_error,
                int(row.rows),
            )
            for row in await self._run(query)
        ]


def _webhook_event(row: Any) -> WebhookEvent:
    try:
        kind: WebhookEventType | str = WebhookEventType(row.type)
    except ValueError:  # a newer release's event: its payload goes as that release wrote it
        kind = str(row.type)
    return WebhookEvent(row.id, kind, row.occurred_at, row.payload)


def _webhook_delivery(row: Any, event: WebhookEvent) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        event=event,
        endpoint=row.endpoint,
        host=row.host,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        # A newer release's state (its CHECK constraint widened) as its text: claims and
        # renewals read pending ones only; ``get`` (``webhooks retry --id``) any.
        state=_known_or_text(WebhookState, row.state),
        attempts=row.attempts,
        last_attempt_at=row.last_attempt_at,
        finished_at=row.finished_at,
        last_error=row.last_error,
    )


def _webhook_delivery_values(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event.id,
        "endpoint": delivery.endpoint,
        "host": delivery.host,
        "created_at": delivery.created_at,
        "state": str(delivery.state),
        "next_attempt_at": delivery.next_attempt_at,
        "attempts": delivery.attempts,
        "last_attempt_at": delivery.last_attempt_at,
        "finished_at": delivery.finished_at,
        "last_error": delivery.last_error,
    }


def _stopped_head(configured: Sequence[str] | None) -> ColumnElement[bool]:
    """A delivery refused with 410 by an endpoint still stopped (``gone_webhook_endpoints``)
    and still configured (``None``: any): the head of a queue that waits for `webhooks
    retry`, which sends it first. Purged, the retry would start the queue after it, a hole
    in the receiver's stream."""
    d = webhook_deliveries.c
    stopped = and_(
        d.state == WebhookState.GONE.value,
        d.endpoint.in_(select(gone_webhook_endpoints.c.endpoint).scalar_subquery()),
    )
    return stopped if configured is None else and_(stopped, d.endpoint.in_(sorted(configured)))


class SqlWebhooks(_QueueRepo):
    channel = WEBHOOK_QUEUE_CHANNEL

    async def _with_events(self, rows: Sequence[Any]) -> list[WebhookDelivery]:
        ids = {row.event_id for row in rows}
        if not ids:
            return []
        query = select(webhook_events).where(webhook_events.c.id.in_(ids))
        events = {row.id: _webhook_event(row) for row in await self._run(query)}
        return [_webhook_delivery(row, events[row.event_id]) for row in rows]

    async def add(self, event: WebhookEvent, deliveries: Sequence[WebhookDelivery]) -> None:
        await self._run(
            insert(webhook_events),
            {
                "id": event.id,
                "type": str(event.type),
                "occurred_at": event.occurred_at,
                "payload": event.payload,
            },
        )
        if deliveries:
            await self._run(
                insert(webhook_deliveries),
                [_webhook_delivery_values(replace(d, event=event)) for d in deliveries],
            )
            await self._wake_listeners()

    async def claim_due(
        self, now: datetime, until: datetime, limit: int, endpoints: Sequence[str]
    ) -> Sequence[WebhookDelivery]:
        """Per endpoint, its first pending deliveries in queue order, taken only from the
        first on and while they are due: a delivery under another claim's lease (or waiting
        for its retry) at the head of an endpoint's queue holds back the rest.

        On Postgres the head is read with its row lock, waiting (never skipping) for another
        claimer or sender that holds it, then seen as that one left it: leased (nothing
        taken), finished (the next is the head) or still due. SKIP LOCKED would
        pass over a locked head and take the deliveries behind it, out of order. Endpoints
        are locked in one order by every claimer, so two claims never wait for each other in
        a circle. SQLite's writers run one at a time, so each claimer sees the others'."""
        d = webhook_deliveries.c
        claimed: list[Any] = []
        for key in sorted(set(endpoints)):
            queue = (
                select(d.seq, d.next_attempt_at)
                .where(d.endpoint == key, d.state == WebhookState.PENDING.value)
                .order_by(d.seq)
                .limit(limit)
            )
            if self._postgres:
                queue = queue.with_for_update(of=webhook_deliveries)
            rows = await self._run(queue)
            due = [row.seq for row in takewhile(lambda r: r.next_attempt_at <= now, rows)]
            if due:
                claim = (
                    update(webhook_deliveries)
                    .where(d.seq.in_(due))
                    .values(next_attempt_at=until)
                    .returning(*webhook_deliveries.c)
                )
                claimed.extend(await self._run(claim))
        return await self._with_events(sorted(claimed, key=lambda r: r.seq))

    async def renew_claim(
        self, delivery: WebhookDelivery, until: datetime
    ) -> WebhookDelivery | None:
        d = webhook_deliveries.c
        query = (
            update(webhook_deliveries)
            .where(
                d.id == delivery.id,
                d.state == WebhookState.PENDING.value,
                d.next_attempt_at == delivery.next_attempt_at,
            )
            .values(next_attempt_at=until)
            .returning(*webhook_deliveries.c)
        )
        row = (await self._run(query)).first()
        return _webhook_delivery(row, delivery.event) if row else None

    async def release(self, delivery: WebhookDelivery, now: datetime) -> bool:
        released = await self.renew_claim(delivery, now) is not None
        if released:
            await self._wake_listeners()
        return released

    async def save(self, delivery: WebhookDelivery, *, leased_until: datetime) -> bool:
        values = _webhook_delivery_values(delivery)
        del values["id"], values["event_id"]
        pending = webhook_deliveries.c.state == WebhookState.PENDING.value
        return await self._write_back(
            webhook_deliveries, pending, delivery.id, values, leased_until
        )

    async def get(self, delivery_id: uuid.UUID) -> WebhookDelivery | None:
        query = select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        found = await self._with_events(list(await self._run(query)))
        return found[0] if found else None

    async def requeue(self, now: datetime, delivery_id: uuid.UUID | None = None) -> int:
        """On Postgres the rows are locked first, in the order claims lock theirs (endpoint
        by endpoint, each in queue order), then updated: an UPDATE alone locks them in the
        order it finds them, and could hold a row a claim waits for while it waits for one
        that claim holds. SQLite's writers run one at a time."""
        d = webhook_deliveries.c
        stopped = d.state.in_((WebhookState.FAILED.value, WebhookState.GONE.value))
        chosen = stopped if delivery_id is None else stopped & (d.id == delivery_id)
        if self._postgres:
            # COLLATE "C": the keys' byte order, the one claims sort them in (hex digits
            # sort alike in any collation, but nothing is left to the database's).
            in_order = d.endpoint.collate("C"), d.seq
            await self._run(select(d.seq).where(chosen).order_by(*in_order).with_for_update())
        query = (
            update(webhook_deliveries)
            .where(chosen)
            .values(
                state=WebhookState.PENDING.value,
                next_attempt_at=now,
                attempts=0,
                finished_at=None,
            )
        )
        requeued = await self._count(query)
        if requeued:
            await self._wake_listeners()
        return requeued

    async def mark_gone(self, endpoint: WebhookEndpoint, since: datetime) -> None:
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        await self._run(
            dialect_insert(gone_webhook_endpoints)
            .values(endpoint=endpoint.key, host=endpoint.host, since=since)
            .on_conflict_do_nothing(index_elements=["endpoint"])
        )

    async def gone_endpoints(self) -> Sequence[GoneEndpoint]:
        g = gone_webhook_endpoints.c
        query = select(gone_webhook_endpoints).order_by(g.since, g.endpoint)
        return [GoneEndpoint(row.endpoint, row.host, row.since) for row in await self._run(query)]

    async def forget_gone(self, endpoint: str | None = None) -> int:
        query = delete(gone_webhook_endpoints)
        if endpoint is not None:
            query = query.where(gone_webhook_endpoints.c.endpoint == endpoint)
        forgotten = await self._count(query)
        if forgotten:
            await self._wake_listeners()  # their waiting deliveries can go now
        return forgotten

    async def summary(self) -> Sequence[WebhookEndpointSummary]:
        d = webhook_deliveries.c
        counted = select(
            d.endpoint, func.max(d.host).label("host"), d.state, func.count().label("number")
        ).group_by(d.endpoint, d.state)
        found: dict[str, WebhookEndpointSummary] = {}
        for row in await self._run(counted):
            summary = found.setdefault(row.endpoint, WebhookEndpointSummary(row.endpoint, row.host))
            summary.counts[_known_or_text(WebhookState, row.state)] = int(row.number)
        newest = (
            select(d.endpoint, func.max(d.last_attempt_at).label("at"))
            .where(d.last_error.is_not(None))
            .group_by(d.endpoint)
            .subquery()
        )
        errors_query = (
            select(d.endpoint, d.last_error, d.last_attempt_at, d.state)
            .join(newest, (d.endpoint == newest.c.endpoint) & (d.last_attempt_at == newest.c.at))
            .where(d.last_error.is_not(None))
        )
        for row in await self._run(errors_query):
            if row.endpoint in found:
                found[row.endpoint] = replace(
                    found[row.endpoint],
                    last_error=row.last_error,
                    last_error_at=row.last_attempt_at,
                    delivered_since_error=row.state == WebhookState.DELIVERED.value,
                )
        return sorted(found.values(), key=lambda s: s.endpoint)

    async def purge_finished(
        self, before: datetime, configured: Sequence[str] | None, limit: int | None = None
    ) -> int:
        """On Postgres the rows to delete are taken with FOR UPDATE SKIP LOCKED: a row a claim
        or a sender holds is left for the next purge, never waited for (a purge that waited
        on one claim's row while holding rows another claim waits for could close a circle
        of waits). SQLite has no row locks, and runs writers one at a time."""
        d = webhook_deliveries.c
        old = select(d.seq).where(
            d.finished_at.is_not(None),
            d.finished_at < before,
            ~_stopped_head(configured),
        )
        if limit is not None:
            old = old.limit(limit)
        if self._postgres:
            old = old.with_for_update(skip_locked=True)
        events = list(
            await self._deleted_events(
                delete(webhook_deliveries).where(d.seq.in_(old.scalar_subquery()))
            )
        )
        purged = len(events)
        if configured is not None and (limit is None or purged < limit):
            left = None if limit is None else limit - purged
            events += await self._purge_abandoned(before, configured, left)
        await self._forget_events(events)
        return len(events)

    async def _deleted_events(self, deleting: Delete) -> Sequence[uuid.UUID]:
        """Run ``deleting`` (of deliveries): the event of each delivery it deleted."""
        rows = await self._run(deleting.returning(webhook_deliveries.c.event_id))
        return list(rows.scalars())

    async def _forget_events(self, events: Sequence[uuid.UUID]) -> None:
        """Delete those of ``events`` (the events of the deliveries just deleted) that no
        delivery names any more: what a purge batch deleted bounds what it looks at (the
        whole table, searched at every batch, grew with it). An event is never without a
        delivery otherwise: one is queued with them, and only a purge deletes them."""
        d, e = webhook_deliveries.c, webhook_events.c
        named = select(d.seq).where(d.event_id == e.id).exists()
        unique = sorted(set(events))
        for start in range(0, len(unique), 500):  # SQLite's bound parameters, in bounds
            chunk = unique[start : start + 500]
            await self._run(delete(webhook_events).where(e.id.in_(chunk), ~named))

    async def _purge_abandoned(
        self, before: datetime, configured: Sequence[str], limit: int | None
    ) -> list[uuid.UUID]:
        """The oldest pending deliveries of endpoints no longer configured, the head of
        each queue on: an endpoint is left as it is when any delivery of it was attempted,
        finished, let go or requeued since ``before`` (an instance whose settings still name
        it is sending it: deciding delivery by delivery cut queues in their middle), or, on
        Postgres, when a claim or a sender holds one of the rows to go (taken with SKIP
        LOCKED: the queue is left for the next run, never waited for). What goes is the run
        of deliveries queued before ``before`` from the head up to the first younger one
        (the oldest ``limit`` of them, across the endpoints, when there are more). The event
        of each delivery deleted."""
        d = webhook_deliveries.c
        pending = d.state == WebhookState.PENDING.value
        candidates = (
            select(d.endpoint)
            .where(pending, d.endpoint.not_in(sorted(set(configured))), d.created_at < before)
            .distinct()
            .order_by(d.endpoint)
        )
        events: list[uuid.UUID] = []
        for endpoint in list((await self._run(candidates)).scalars()):
            purged = len(events)
            if limit is not None and purged >= limit:
                break
            if await self._sent_since(endpoint, before):
                continue
            young = select(func.min(d.seq)).where(
                pending, d.endpoint == endpoint, d.created_at >= before
            )
            first_young = (await self._run(young)).scalar()
            # Untouched for 30 days: a delivery `webhooks retry` puts back meanwhile is due
            # now, and stays.
            old = [
                pending,
                d.endpoint == endpoint,
                d.created_at < before,
                d.next_attempt_at < before,
            ]
            if first_young is not None:
                old.append(d.seq < first_young)
            if limit is not None:  # the head of the queue, as many as this batch takes
                last = select(d.seq).where(*old).order_by(d.seq).offset(limit - purged - 1)
                last_seq = (await self._run(last.limit(1))).scalar()
                if last_seq is not None:
                    old.append(d.seq <= last_seq)
            expected = (
                await self._run(select(func.count()).select_from(webhook_deliveries).where(*old))
            ).scalar_one()
            taken = select(d.seq).where(*old)
            if self._postgres:
                taken = taken.with_for_update(skip_locked=True)
            held = len((await self._run(taken)).all())
            # Held by a claim, or sent from since the first look: the queue waits a run.
            if held != expected or await self._sent_since(endpoint, before):
                continue
            events += await self._deleted_events(delete(webhook_deliveries).where(*old))
        return events

    async def _sent_since(self, endpoint: str, since: datetime) -> bool:
        """Whether any delivery of ``endpoint`` was attempted, finished, let go or requeued
        at or after ``since`` (a pending one whose next attempt moved off its queuing
        time)."""
        d = webhook_deliveries.c
        moved = and_(
            d.state == WebhookState.PENDING.value,
            d.next_attempt_at >= since,
            d.next_attempt_at != d.created_at,
        )
        query = (
            select(d.seq)
            .where(
                d.endpoint == endpoint,
                or_(d.last_attempt_at >= since, d.finished_at >= since, moved),
            )
            .limit(1)
        )
        return (await self._run(query)).first() is not None


def _role_token(row: Any) -> RoleConnectionToken:
    return RoleConnectionToken(
        discord_id=DiscordId(row.discord_id),
        sealed=row.sealed,
        expires_at=row.expires_at,
        next_push_at=row.next_push_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        failures=row.failures,
        claimed_until=row.claimed_until,
    )


class SqlRoleConnectionTokens(_QueueRepo):
    """Every write is one statement that compares before it writes (the row's version, or its
    sealed tokens) and moves the version on: under Postgres' row locks a second writer of the
    same row re-checks the condition against the first one's row and matches nothing.
    A row made due wakes the workers, this process's and (Postgres) every instance's."""

    _t = role_connection_tokens
    channel = ROLE_CONNECTION_CHANNEL

    async def add(self, token: RoleConnectionToken) -> None:
        await self._run(
            insert(self._t),
            {
                "discord_id": token.discord_id.value,
                "sealed": token.sealed,
                "expires_at": token.expires_at,
                "next_push_at": token.next_push_at,
                "created_at": token.created_at,
                "updated_at": token.updated_at,
                "version": 1,
                "failures": token.failures,
                "claimed_until": token.claimed_until,
            },
        )

    async def get(self, discord_id: DiscordId) -> RoleConnectionToken | None:
        row = (
            await self._run(select(self._t).where(self._t.c.discord_id == discord_id.value))
        ).first()
        return _role_token(row) if row else None

    async def _update(
        self, discord_id: DiscordId, *where: Any, **values: Any
    ) -> RoleConnectionToken | None:
        query = (
            update(self._t)
            .where(self._t.c.discord_id == discord_id.value, *where)
            .values(version=self._t.c.version + 1, **values)
            .returning(*self._t.c)
        )
        row = (await self._run(query)).first()
        return _role_token(row) if row else None

    async def replace(self, token: RoleConnectionToken) -> RoleConnectionToken | None:
        return await self._update(
            token.discord_id,
            self._t.c.version == token.version,
            sealed=token.sealed,
            expires_at=token.expires_at,
            next_push_at=token.next_push_at,
            updated_at=token.updated_at,
            failures=token.failures,
            claimed_until=token.claimed_until,
        )

    async def take(
        self, token: RoleConnectionToken, until: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        held = self._t.c.claimed_until
        free = [held.is_(None), held <= now]
        if token.claimed_until is not None:
            free.append(held == token.claimed_until)
        return await self._update(token.discord_id, or_(*free), claimed_until=until)

    async def release(self, token: RoleConnectionToken) -> bool:
        if token.claimed_until is None:
            return False
        released = await self._update(
            token.discord_id, self._t.c.claimed_until == token.claimed_until, claimed_until=None
        )
        if released is None:
            return False
        await self._wake_listeners()  # it was made due meanwhile, most likely
        return True

    async def remove(self, token: RoleConnectionToken) -> bool:
        query = delete(self._t).where(
            self._t.c.discord_id == token.discord_id.value, self._t.c.version == token.version
        )
        return await self._count(query) > 0

    async def swap_sealed(
        self, token: RoleConnectionToken, sealed: str, expires_at: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        return await self._update(
            token.discord_id,
            self._t.c.sealed == token.sealed,
            sealed=sealed,
            expires_at=expires_at,
            updated_at=now,
        )

    async def remove_sealed(self, discord_id: DiscordId, sealed: str) -> bool:
        query = delete(self._t).where(
            self._t.c.discord_id == discord_id.value, self._t.c.sealed == sealed
        )
        return await self._count(query) > 0

    async def mark_due(self, discord_id: DiscordId, now: datetime) -> bool:
        if await self._update(discord_id, next_push_at=now, failures=0) is None:
            return False
        await self._wake_listeners()
        return True

    async def mark_all_due(self, now: datetime) -> int:
        return await self._count(
            update(self._t).values(next_push_at=now, version=self._t.c.version + 1)
        )

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[RoleConnectionToken]:
        held = self._t.c.claimed_until
        due = (
            select(self._t.c.discord_id)
            .where(self._t.c.next_push_at <= now, or_(held.is_(None), held <= now))
            .order_by(self._t.c.next_push_at, self._t.c.discord_id)
            .limit(limit)
        )
        claim = update(self._t).values(claimed_until=until, version=self._t.c.version + 1)
        claim = _claiming(claim, due, self._t.c.discord_id, postgres=self._postgres)
        rows = await self._run(claim.returning(*self._t.c))
        return sorted((_role_token(row) for row in rows), key=lambda t: t.discord_id)

    async def counts(self, now: datetime) -> RoleConnectionCounts:
        t = self._t.c
        lost = exists().where(
            user_links.c.discord_id == t.discord_id,
            user_links.c.role_connection_lost_at.is_not(None),
            user_links.c.role_connection_lost_why == RoleConnectionLoss.UNREADABLE.value,
        )
        standing = case(
            (and_(t.claimed_until.is_not(None), t.claimed_until > now), "pushing"),
            (lost, "unreadable"),
            (t.next_push_at <= now, "due"),
            (t.failures > 0, "retrying"),
            else_="current",
        ).label("standing")
        query = select(standing, func.count().label("rows")).group_by(standing)
        found = {row.standing: int(row.rows) for row in await self._run(query)}
        return RoleConnectionCounts(**found)

    async def page(self, after: DiscordId | None, limit: int) -> Sequence[RoleConnectionToken]:
        query = select(self._t).order_by(self._t.c.discord_id).limit(limit)
        if after is not None:
            query = query.where(self._t.c.discord_id > after.value)
        return [_role_token(row) for row in await self._run(query)]
