"""Repositories over one ``AsyncSession``. They never commit (the unit of work does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Delete,
    Executable,
    Insert,
    Result,
    Table,
    Update,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.sql.errors import translate
from adapters.sql.notifications import EMAIL_QUEUE_CHANNEL
from adapters.sql.tables import (
    accounts,
    api_keys,
    audit_events,
    email_tokens,
    link_proposals,
    link_tickets,
    outgoing_emails,
    pending_login,
    sessions,
    user_links,
)
from domain.model import (
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
    LinkProposal,
    LinkTicket,
    OutgoingEmail,
    PendingLogin,
    Session,
    SignInMethod,
    normalize_email,
    scopes_from_text,
    scopes_to_text,
)


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _run(self, statement: Executable) -> Result[Any]:
        try:
            return await self._session.execute(statement)
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
    }


def _link(row: Any) -> Link:
    return Link(
        DiscordId(row.discord_id),
        AccountId(row.taskflow_user_id),
        row.linked_at,
        row.discord_username,
        row.discord_global_name,
        row.discord_avatar,
    )


def _pending(row: Any) -> PendingLogin:
    return PendingLogin(
        state_digest=row.state_hash,
        purpose=AuthPurpose(row.purpose),
        browser_digest=row.browser_hash,
        destination=row.destination,
        created_at=row.created_at,
        expires_at=row.expires_at,
        account_id=AccountId(row.account_id) if row.account_id else None,
        ticket_digest=row.ticket_hash,
        consumed_at=row.consumed_at,
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
        method=SignInMethod(row.method),
        last_seen_at=row.last_seen_at,
        proved_at=row.proved_at,
        proved_with=SignInMethod(row.proved_with) if row.proved_with else None,
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
        kind=AuditKind(row.kind),
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
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        finished_at=row.finished_at,
        last_error=row.last_error,
        detail=dict(row.detail),
    )


def _outgoing_values(email: OutgoingEmail) -> dict[str, Any]:
    return {
        "id": email.id,
        "kind": email.kind.value,
        "recipient": email.to,
        "account_id": email.account_id.value if email.account_id else None,
        "created_at": email.created_at,
        "status": email.status.value,
        "next_attempt_at": email.next_attempt_at,
        "attempts": email.attempts,
        "finished_at": email.finished_at,
        "last_error": email.last_error,
        "detail": dict(email.detail),
    }


# -- repositories ------------------------------------------------------------------------------


class SqlAccounts(_Repo):
    async def add(self, account: Account) -> None:
        await self._run(insert(accounts).values(**_account_values(account)))

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
            insert(user_links).values(
                discord_id=link.discord_id.value,
                taskflow_user_id=link.account_id.value,
                linked_at=link.linked_at,
                discord_username=link.discord_username,
                discord_global_name=link.discord_global_name,
                discord_avatar=link.discord_avatar,
            )
        )

    async def get_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        query = select(user_links).where(user_links.c.discord_id == discord_id.value)
        row = (await self._run(query)).first()
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


class SqlPendingLogins(_Repo):
    async def add(self, pending: PendingLogin) -> None:
        await self._run(
            insert(pending_login).values(
                state_hash=pending.state_digest,
                purpose=pending.purpose.value,
                account_id=pending.account_id.value if pending.account_id else None,
                browser_hash=pending.browser_digest,
                ticket_hash=pending.ticket_digest,
                destination=pending.destination,
                created_at=pending.created_at,
                expires_at=pending.expires_at,
                consumed_at=pending.consumed_at,
            )
        )

    async def consume(self, state_digest: str, now: datetime) -> PendingLogin | None:
        row = await self._consume(pending_login, pending_login.c.state_hash, state_digest, now)
        return _pending(row) if row else None

    async def get(self, state_digest: str) -> PendingLogin | None:
        query = select(pending_login).where(pending_login.c.state_hash == state_digest)
        row = (await self._run(query)).first()
        return _pending(row) if row else None

    async def purge_expired(self, now: datetime) -> int:
        return await self._count(delete(pending_login).where(pending_login.c.expires_at <= now))


class SqlLinkTickets(_Repo):
    async def add(self, ticket: LinkTicket) -> None:
        await self._run(
            insert(link_tickets).values(
                token_hash=ticket.digest,
                discord_id=ticket.discord.id.value,
                discord_username=ticket.discord.username,
                discord_global_name=ticket.discord.global_name,
                discord_avatar=ticket.discord.avatar,
                created_at=ticket.created_at,
                expires_at=ticket.expires_at,
                consumed_at=ticket.consumed_at,
            )
        )

    async def consume(self, digest: str, now: datetime) -> LinkTicket | None:
        row = await self._consume(link_tickets, link_tickets.c.token_hash, digest, now)
        return _ticket(row) if row else None

    async def get(self, digest: str) -> LinkTicket | None:
        row = (
            await self._run(select(link_tickets).where(link_tickets.c.token_hash == digest))
        ).first()
        return _ticket(row) if row else None

    async def purge_expired(self, now: datetime) -> int:
        return await self._count(delete(link_tickets).where(link_tickets.c.expires_at <= now))


class SqlLinkProposals(_Repo):
    async def add(self, proposal: LinkProposal) -> None:
        await self._run(
            insert(link_proposals).values(
                token_hash=proposal.digest,
                account_id=proposal.account_id.value,
                discord_id=proposal.discord.id.value,
                discord_username=proposal.discord.username,
                discord_global_name=proposal.discord.global_name,
                discord_avatar=proposal.discord.avatar,
                destination=proposal.destination,
                created_at=proposal.created_at,
                expires_at=proposal.expires_at,
                consumed_at=proposal.consumed_at,
            )
        )

    async def consume(self, digest: str, now: datetime) -> LinkProposal | None:
        row = await self._consume(link_proposals, link_proposals.c.token_hash, digest, now)
        return _proposal(row) if row else None

    async def get(self, digest: str) -> LinkProposal | None:
        query = select(link_proposals).where(link_proposals.c.token_hash == digest)
        row = (await self._run(query)).first()
        return _proposal(row) if row else None

    async def purge_expired(self, now: datetime) -> int:
        return await self._count(delete(link_proposals).where(link_proposals.c.expires_at <= now))


class SqlSessions(_Repo):
    async def add(self, session: Session) -> None:
        await self._run(
            insert(sessions).values(
                token_hash=session.digest,
                account_id=session.account_id.value,
                created_at=session.created_at,
                expires_at=session.expires_at,
                id=session.id,
                method=session.method.value,
                last_seen_at=session.last_seen_at,
                proved_at=session.proved_at,
                proved_with=session.proved_with.value if session.proved_with else None,
            )
        )

    async def get(self, digest: str) -> Session | None:
        row = (await self._run(select(sessions).where(sessions.c.token_hash == digest))).first()
        return _session_row(row) if row else None

    async def touch(self, digest: str, now: datetime) -> None:
        await self._run(
            update(sessions).where(sessions.c.token_hash == digest).values(last_seen_at=now)
        )

    async def record_proof(self, digest: str, now: datetime, method: SignInMethod) -> None:
        await self._run(
            update(sessions)
            .where(sessions.c.token_hash == digest)
            .values(proved_at=now, proved_with=method.value)
        )

    async def list_for_account(self, account_id: AccountId) -> Sequence[Session]:
        query = (
            select(sessions)
            .where(sessions.c.account_id == account_id.value)
            .order_by(sessions.c.created_at.desc(), sessions.c.id)
        )
        return [_session_row(row) for row in await self._run(query)]

    async def remove(self, digest: str) -> bool:
        return await self._count(delete(sessions).where(sessions.c.token_hash == digest)) > 0

    async def remove_by_id(self, account_id: AccountId, session_id: uuid.UUID) -> bool:
        query = delete(sessions).where(
            sessions.c.account_id == account_id.value, sessions.c.id == session_id
        )
        return await self._count(query) > 0

    async def remove_for_account(self, account_id: AccountId, *, keep: str | None = None) -> int:
        query = delete(sessions).where(sessions.c.account_id == account_id.value)
        if keep is not None:
            query = query.where(sessions.c.token_hash != keep)
        return await self._count(query)

    async def purge_expired(self, now: datetime) -> int:
        return await self._count(delete(sessions).where(sessions.c.expires_at <= now))


class SqlApiKeys(_Repo):
    async def add(self, key: ApiKey) -> None:
        await self._run(
            insert(api_keys).values(
                id=key.id,
                name=key.name,
                key_hash=key.digest,
                created_at=key.created_at,
                revoked_at=key.revoked_at,
                scopes=scopes_to_text(key.scopes),
                expires_at=key.expires_at,
                last_used_at=key.last_used_at,
            )
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
            insert(audit_events).values(
                id=event.id,
                kind=event.kind.value,
                at=event.at,
                account_id=event.account_id.value if event.account_id else None,
                discord_id=event.discord_id.value if event.discord_id else None,
                detail=dict(event.detail),
            )
        )

    async def for_account(self, account_id: AccountId) -> Sequence[AuditEvent]:
        query = (
            select(audit_events)
            .where(audit_events.c.account_id == account_id.value)
            .order_by(audit_events.c.at, audit_events.c.seq)
        )
        return [_audit(row) for row in await self._run(query)]


class SqlEmailTokens(_Repo):
    async def add(self, token: EmailToken) -> None:
        await self._run(
            insert(email_tokens).values(
                token_hash=token.digest,
                purpose=token.purpose.value,
                account_id=token.account_id.value,
                email=token.email,
                created_at=token.created_at,
                expires_at=token.expires_at,
                consumed_at=token.consumed_at,
                proposal_hash=token.proposal_digest,
            )
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
        query = select(email_tokens).where(email_tokens.c.token_hash == digest)
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

    async def purge_expired(self, now: datetime) -> int:
        return await self._count(delete(email_tokens).where(email_tokens.c.expires_at <= now))


class SqlOutgoingEmails(_Repo):
    def __init__(self, session: AsyncSession, *, postgres: bool = False) -> None:
        super().__init__(session)
        self._postgres = postgres

    async def _wake_listeners(self) -> None:
        """On Postgres, tell every listening worker (``PostgresQueueListener``) that there
        is work. A NOTIFY is part of the transaction: delivered at commit, dropped by a
        rollback, and repeated ones in one transaction arrive as one."""
        if self._postgres:
            await self._run(select(func.pg_notify(EMAIL_QUEUE_CHANNEL, "")))

    async def add(self, email: OutgoingEmail) -> None:
        await self._run(insert(outgoing_emails).values(**_outgoing_values(email)))
        await self._wake_listeners()

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[OutgoingEmail]:
        due = (
            select(outgoing_emails.c.seq)
            .where(
                outgoing_emails.c.status == DeliveryStatus.PENDING.value,
                outgoing_emails.c.next_attempt_at <= now,
            )
            .order_by(outgoing_emails.c.next_attempt_at, outgoing_emails.c.seq)
            .limit(limit)
        )
        claim = update(outgoing_emails).values(next_attempt_at=until)
        if self._postgres:
            # The subquery locks the rows it picks and skips the rows another claimer holds,
            # so concurrent workers take disjoint batches without waiting for each other; a
            # row claimed (and committed) meanwhile is checked against the WHERE clause again
            # and left out. MATERIALIZED: the locking subquery runs exactly once (a planner
            # that re-ran it inside a join could lock and update more than ``limit`` rows).
            picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
            claim = claim.where(outgoing_emails.c.seq == picked.c.seq)
        else:
            # SQLite has no row locks, and needs none: its writers run one at a time
            # (BEGIN IMMEDIATE), so of concurrent claimers each sees the others' claims.
            claim = claim.where(outgoing_emails.c.seq.in_(due.scalar_subquery()))
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

    async def save(self, email: OutgoingEmail) -> None:
        values = _outgoing_values(email)
        del values["id"]
        await self._run(
            update(outgoing_emails).where(outgoing_emails.c.id == email.id).values(**values)
        )

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

    async def purge_finished(self, before: datetime) -> int:
        query = delete(outgoing_emails).where(
            outgoing_emails.c.finished_at.is_not(None), outgoing_emails.c.finished_at < before
        )
        return await self._count(query)
