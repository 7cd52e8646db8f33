"""Ports: what the core needs from the outside world, one role per Protocol.

Repositories never commit; a ``UnitOfWork`` owns the transaction and rolls back unless
``commit()`` was called. Uniqueness violations surface as ``errors.Conflict``, an
unreachable store as ``errors.StorageError``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.model import (
    Account,
    AccountId,
    ApiKey,
    AuditEvent,
    AuditKind,
    DiscordId,
    DiscordProfile,
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
    RoleChange,
    RoleChangeCount,
    RoleConnection,
    RoleConnectionCounts,
    RoleConnectionLoss,
    RoleConnectionLossCount,
    RoleConnectionToken,
    Session,
    SignInMethod,
)
from domain.webhooks import (
    GoneEndpoint,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSummary,
    WebhookEvent,
)


class AccountRepository(Protocol):
    async def add(self, account: Account) -> None:
        """Insert; ``Conflict`` when the username is taken (case-insensitive)."""

    async def update(self, account: Account) -> None: ...

    async def get(self, account_id: AccountId) -> Account | None: ...

    async def lock(self, account_id: AccountId) -> Account | None:
        """Read and hold the account until the transaction ends (``SELECT … FOR UPDATE``), so
        a read-modify-write cannot overwrite a concurrent change. Lock the account before
        anything else the transaction touches (one order, no deadlocks)."""

    async def lock_if_free(self, account_id: AccountId) -> Account | None:
        """As ``lock``, without waiting: ``None`` when another transaction holds the account
        (``SKIP LOCKED``) or there is none. For a lock taken out of the one order."""

    async def get_by_username(self, username: str) -> Account | None: ...

    async def find_by_email(self, email: str) -> Sequence[Account]:
        """All accounts whose email equals ``email`` case-insensitively."""

    async def usernames_starting_with(self, prefix: str) -> set[str]: ...


class LinkRepository(Protocol):
    async def add(self, link: Link) -> None:
        """Insert; ``Conflict`` if the Discord id or the account is already linked."""

    async def get_by_discord_id(self, discord_id: DiscordId) -> Link | None: ...

    async def hold_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        """``get_by_discord_id``, the link kept from being removed until the transaction
        ends; an unlink under way (not committed) is waited for, and then read."""

    async def get_by_account(self, account_id: AccountId) -> Link | None: ...

    async def remove(self, link: Link) -> bool:
        """Delete exactly this link (same Discord id *and* account); ``True`` if removed.

        Matching both columns means a link replaced concurrently is never deleted by mistake.
        """

    async def set_role_connection_lost(
        self, discord_id: DiscordId, at: datetime | None, why: RoleConnectionLoss | None
    ) -> None:
        """Record (``at`` and ``why``) or clear (``None``) the loss of the Linked Roles
        connection of the link of ``discord_id``; nothing when it is not linked."""

    async def role_connection_losses(self) -> Sequence[RoleConnectionLossCount]:
        """How many linked members' connections are lost, by why and by whether their
        tokens are still kept (no zero counts)."""

    async def lost_role_connections(self, limit: int) -> Sequence[LostRoleConnection]:
        """Up to ``limit`` linked members whose connection is lost, the longest lost first
        (then by Discord id)."""


class PendingLoginRepository(Protocol):
    async def add(self, pending: PendingLogin) -> None: ...

    async def consume(self, state_digest: str, now: datetime) -> PendingLogin | None:
        """Atomically mark as consumed and return it, or ``None`` if unknown or already used.

        Of any number of concurrent callers, at most one gets the row.
        """

    async def get(self, state_digest: str) -> PendingLogin | None: ...

    async def mark_failed(
        self, state_digest: str, now: datetime, failure: str | None = None
    ) -> None:
        """Record that the callback which spent it ended at ``now`` without its purpose done
        (``failed_at``), and why (``failure``: the refusal's code, or ``None``); nothing for
        an unknown or unspent one."""

    async def mark_signed_in(self, state_digest: str, account_id: AccountId) -> None:
        """Record the account that the callback which spent it signed in to (a plain Discord
        sign-in, in the transaction that starts the session): the same callback loaded again
        once that session has ended says so at once (see ``FinishDiscordConfirmation``);
        nothing for an unknown or unspent one."""

    async def lock(
        self, state_digest: str, browser_digests: Collection[str] = ()
    ) -> PendingLogin | None:
        """Read it and hold it for the rest of the transaction (a sign-in about to start its
        session): a ``mark_signed_out`` of it either committed before (and is seen here) or
        waits for this transaction to end. ``None`` when unknown. ``browser_digests``: the
        ones bound to these are held too (the browser's other round trips, which the sign-in
        ``supersede``s), all in one order (the states'), as ``mark_signed_out`` holds them:
        no two transactions wait for each other in a circle."""

    async def mark_signed_out(self, browser_digests: Collection[str], now: datetime) -> int:
        """Record ``now`` as ``signed_out_at`` of the ones bound to these browser digests
        (their binding values) that have none yet; how many. It waits for a sign-in that
        holds one (``lock``) to end."""

    async def supersede(
        self, browser_digests: Collection[str], account_id: AccountId, *, but: str
    ) -> int:
        """Record ``account_id`` as ``superseded_by`` of the ones bound to these browser
        digests, but the one whose state digest is ``but`` (the sign-in that records it,
        which holds them all: ``lock``); how many changed."""

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete the rows expired at ``now`` (used or not); how many (``limit``: see
        ``Maintenance``)."""


class LinkTicketRepository(Protocol):
    async def add(self, ticket: LinkTicket) -> None: ...

    async def consume(self, digest: str, now: datetime) -> LinkTicket | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``."""

    async def consume_for_discord(self, discord_id: DiscordId, now: datetime) -> int:
        """Spend, in one statement, every ticket of ``discord_id`` still live at ``now``
        (unused, unexpired), as ``consume`` spends one; how many. A ticket that a concurrent
        transaction is spending may be left to it, never waited for."""

    async def add_replacing(self, ticket: LinkTicket) -> None:
        """``consume_for_discord(ticket.discord.id, ticket.created_at)``, then ``add(ticket)``
        (in one statement where the store can): the spend never sees the new ticket. Unlike
        ``consume_for_discord`` it waits for a ticket a concurrent transaction holds (a
        redemption that may yet roll back), and spends it if that one leaves it live."""

    async def replaced(self, ticket: LinkTicket) -> bool:
        """Whether ``ticket``'s Discord account has a newer ticket (a later ``created_at``, or
        the same one and a greater digest) that was not yet spent when ``ticket`` was made: only
        the newest /link button works, also when two /link commands ran at once and neither
        spent the other's ticket. One spent by then (two /link commands one after the other
        within one tick of the clock, the later one spending the earlier) replaces nothing."""

    async def get(self, digest: str) -> LinkTicket | None: ...

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete the rows expired at ``now`` (used or not); how many (``limit``: see
        ``Maintenance``)."""


class LinkProposalRepository(Protocol):
    async def add(self, proposal: LinkProposal) -> None: ...

    async def consume(self, digest: str, now: datetime) -> LinkProposal | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``."""

    async def get(self, digest: str) -> LinkProposal | None: ...

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete the rows expired at ``now`` (used or not); how many (``limit``: see
        ``Maintenance``)."""


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def get(self, digest: str) -> Session | None: ...

    async def touch(self, digest: str, now: datetime) -> None:
        """Record a use (only ``last_seen_at``: a concurrent proof is never overwritten)."""

    async def renew(
        self, digest: str, new_digest: str, now: datetime, proved_with: SignInMethod | None
    ) -> bool:
        """The session under ``new_digest`` from now on (the rest of it kept: its handle,
        expiry, method), last seen ``now`` and, when ``proved_with`` says how, proved now.
        In place, in one statement: whatever ends sessions meanwhile (by account, by handle)
        ends this one too. ``False`` when there is no session ``digest`` (any more)."""

    async def list_for_account(self, account_id: AccountId) -> Sequence[Session]:
        """The account's sessions, newest first (expired ones included until purged)."""

    async def remove(self, digest: str) -> bool: ...

    async def remove_by_id(self, account_id: AccountId, session_id: uuid.UUID) -> bool:
        """End one of the account's sessions by its public id (another account's: ``False``)."""

    async def remove_for_account(self, account_id: AccountId, *, keep: str | None = None) -> int:
        """End every session of an account, except the one whose digest is ``keep``."""

    async def lock(
        self, digests: Collection[str], *, account_id: AccountId | None = None
    ) -> Sequence[Session]:
        """Hold the sessions ``digests`` name (whoever's) and, given ``account_id``, every
        session of that account, all in one order (the digests'), until the transaction
        ends; return them in that order (digests naming none left out). "Sign out
        everywhere", a password reset and "Sign out" on the account page end some of the
        account's sessions and those the browser's cookies name (a copied cookie may name
        another account's): taken one set (or one row) first, two of them crossing each held
        a row the other waited for."""

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete the rows expired at ``now`` (used or not); how many (``limit``: see
        ``Maintenance``)."""


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None:
        """Insert; ``Conflict`` when an active key already has this name."""

    async def get_by_digest(self, digest: str) -> ApiKey | None: ...

    async def list(self) -> Sequence[ApiKey]: ...

    async def revoke(self, key_id: uuid.UUID, now: datetime) -> bool: ...

    async def record_use(self, key_id: uuid.UUID, at: datetime, *, unless_since: datetime) -> bool:
        """Set the key's last use to ``at``, unless a use after ``unless_since`` is already
        recorded (another process wrote it): ``True`` when the row changed."""


class EmailTokenRepository(Protocol):
    async def add(self, token: EmailToken) -> None: ...

    async def consume(self, digest: str, purpose: EmailPurpose, now: datetime) -> EmailToken | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``; a token of
        another purpose is neither returned nor consumed."""

    async def get(self, digest: str) -> EmailToken | None: ...

    async def remove(self, digest: str) -> bool: ...

    async def consume_all(self, account_id: AccountId, purpose: EmailPurpose, now: datetime) -> int:
        """Use up every unused token of the account for ``purpose`` (older links stop working)."""

    async def purge_expired(self, now: datetime, limit: int | None = None) -> int:
        """Delete the rows expired at ``now`` (used or not); how many (``limit``: see
        ``Maintenance``)."""


class DeclinedAddressRepository(Protocol):
    """The addresses whose holder declined an account ("This is not my account", proved with
    our emailed link): that account may not claim them again. Kept as long as the account."""

    async def add(self, account_id: AccountId, email: str, at: datetime) -> None:
        """Remember that the holder of ``email`` declined the account (matched as
        ``normalize_email``); declined again, the first decline stays. ``Conflict`` when
        there is no such account."""

    async def declined(self, account_id: AccountId, email: str) -> bool:
        """Whether the holder of ``email`` (matched as ``normalize_email``) declined the
        account."""

    async def remove(self, account_id: AccountId, email: str) -> bool:
        """Forget the decline of ``email`` (matched as ``normalize_email``) for the account
        (the operator lifts it); ``True`` when there was one."""


class OutgoingEmailRepository(Protocol):
    """The email queue: written in the transaction of the change, emptied by ``DeliverEmails``."""

    async def add(self, email: OutgoingEmail) -> None: ...

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[OutgoingEmail]:
        """Take up to ``limit`` pending emails due at ``now``, the longest-waiting first, in
        one statement: their next attempt moves to ``until`` (a lease; a sender that dies lets
        them go then). Concurrent callers get disjoint sets, and on Postgres they never wait
        for each other (``FOR UPDATE SKIP LOCKED``). Returned in the order they were
        queued."""

    async def renew_claim(self, email: OutgoingEmail, until: datetime) -> OutgoingEmail | None:
        """Extend the lease of an email this sender claimed (``email`` as ``claim_due``
        returned it) to ``until``; ``None`` when it is no longer this sender's: the lease ran
        out and another sender claimed it (a new claim always moves the lease further), or it
        is no longer pending."""

    async def release(self, email: OutgoingEmail, now: datetime) -> bool:
        """Let go of the lease this sender holds (``email`` as claimed or last renewed): the
        email is due again at ``now``, for any sender, and the workers are woken. ``False``,
        and nothing written, when it is no longer this sender's (as ``renew_claim``)."""

    async def requeue_failed(self, now: datetime, email_id: uuid.UUID | None = None) -> int:
        """Put emails that were given up (all of them, or the one with ``email_id``) back in
        the queue: pending, due at ``now``, counting attempts from zero. How many."""

    async def save(self, email: OutgoingEmail, *, leased_until: datetime) -> bool:
        """Write back status, attempts, next attempt, error, while the email is still this
        sender's: pending, its lease (``next_attempt_at``) still ending at ``leased_until``.
        ``False``, and nothing written, when it is no longer (the lease ran out and another
        sender took it over: its outcome stands, a stale one must not undo it)."""

    async def latest(self, account_id: AccountId, kind: EmailKind) -> OutgoingEmail | None: ...

    async def count_since(self, account_id: AccountId, kind: EmailKind, since: datetime) -> int:
        """How many emails of ``kind`` were queued for the account at or after ``since``."""

    async def lock_recipient(self, to: str) -> None:
        """Until the transaction ends, another transaction that locks the same recipient
        waits (on Postgres an advisory lock; SQLite and the memory store run writers one at
        a time already), so that each counts what the one before it queued. Taken last:
        after every account lock of the transaction (see ``_email_links.within_limits``),
        and after writing the address to an account (its unique index makes another writer
        of the address wait): a transaction holding it waits for nothing else."""

    async def count_to_since(self, to: str, kinds: Collection[EmailKind], since: datetime) -> int:
        """How many emails of ``kinds`` were queued to the address ``to`` (as stored: the
        normalized form), for any account or none, at or after ``since``."""

    async def count_to_since_from(
        self, to: str, kinds: Collection[EmailKind], since: datetime, client: str | None
    ) -> int:
        """As ``count_to_since``, of those that ``client`` asked for (``OutgoingEmail.client``;
        ``None``: those that no client asked for)."""

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        """Forget sent, failed and cancelled emails finished before ``before``; how many.
        ``limit``: see ``Maintenance``."""


class RoleChangeRepository(Protocol):
    """The queue of Discord role changes (one row per member and role): written in the
    transaction of the link or unlink, worked by ``ApplyRoleChanges``."""

    async def request(self, change: RoleChange) -> None:
        """Queue ``change``; when this member and role already have a row, make it say what
        ``change`` says (action, account, requested and due at its time, pending, attempts
        and error cleared) and raise its version by one. A worker's claim on the row stays:
        the newer change waits until the one in flight has finished."""

    async def request_for_links(self, role: LinkedRole, now: datetime, *, every: bool) -> int:
        """Ask for ``role`` to be added to every linked member, in one statement: all of
        them (``every``), or those without an add that is pending or done. How many."""

    async def retry_removals(self, role: LinkedRole, now: datetime) -> int:
        """Ask again for every removal of ``role`` that Discord refused or that was given up
        (the member unlinked, but may still have the role), due at ``now``; not one refused
        because the member was not in the server (leaving drops the roles). How many."""

    async def request_for_unlinked(self, role: LinkedRole, now: datetime) -> int:
        """Ask for ``role`` to be removed, due at ``now``, wherever the row's last action was
        an add, finished, and its Discord account is no longer linked: an unlink that queued
        no removal (made by an instance whose settings named no role). An add done or given
        up may have gone through; one refused may have followed one that did (the row keeps
        its last action only: ``roles sync --every`` refused for a missing permission, say),
        unless it was refused because the member was not in the server (leaving a server
        drops its roles). Removing a role the member does not hold is a no-op for Discord.
        How many."""

    async def claim_due(
        self,
        now: datetime,
        until: datetime,
        limit: int,
        *,
        skip_guilds: Collection[DiscordId] = (),
        roles: Collection[LinkedRole] | None = None,
    ) -> Sequence[RoleChange]:
        """Take up to ``limit`` pending changes due at ``now`` and not held by another worker
        (no claim, or one that ran out), the longest-waiting first, none for a server of
        ``skip_guilds`` (rate limited), only of ``roles`` when given: their claim runs to
        ``until``. Concurrent callers
        get disjoint sets and never wait for each other on Postgres (``FOR UPDATE SKIP
        LOCKED``)."""

    async def renew_claim(self, change: RoleChange, until: datetime) -> RoleChange | None:
        """Extend the claim of a change this worker holds (``change`` as claimed) to
        ``until``; ``None`` when it is no longer this worker's (its claim ran out and another
        took it) or no longer pending."""

    async def release(self, change: RoleChange) -> bool:
        """Let go of the claim this worker holds (``change`` as claimed or last renewed),
        leaving the change as it was (due when it was due), and wake the workers. ``False``,
        and nothing written, when it is no longer this worker's or no longer pending."""

    async def finish(self, change: RoleChange) -> bool:
        """Write back what this worker did with a change it holds (``change`` with its new
        status, action, attempts, next attempt, error; ``claimed_until`` as held) and release
        it. ``False``, and only the claim released, when a newer request came meanwhile (it
        is applied next) or the claim is no longer this worker's."""

    async def refuse_queued(
        self, role: LinkedRole, now: datetime, reason: str
    ) -> Sequence[RoleChange]:
        """Finish as refused (``reason``, at ``now``) every pending change of ``role`` that no
        worker holds (no claim, or one that ran out at ``now``), whenever it is due; the
        changes as written. Never waits: on Postgres a row another transaction holds (one
        being claimed, or asked for again, at this moment) is left as it is."""

    async def get(self, discord_id: DiscordId, role: LinkedRole) -> RoleChange | None: ...

    async def added(self, discord_id: DiscordId) -> Sequence[LinkedRole]:
        """The roles Discord may have taken an add of for this member, whatever the setting
        names now: those an unlink must take away. The row's action an add, done, or given
        up (``model.ADD_MAY_HAVE_GIVEN``: a timeout or a 5xx says nothing of what Discord did, and
        removing a role the member does not hold is a no-op for Discord); not one pending
        (the worker decides from the link when it sends it), nor one refused."""

    async def pending(
        self, roles: Collection[LinkedRole] | None = None
    ) -> tuple[int, datetime | None]:
        """How many changes are pending (of ``roles``, when given), and the earliest next
        attempt among them."""

    async def counts_since(self, since: datetime) -> Sequence[RoleChangeCount]:
        """The rows asked for at ``since`` or later (``requested_at``), counted by role,
        action, status and last error, as they are now: done, refused or given up by
        whichever worker took them, or still pending."""

    async def purge_finished(self, before: datetime, limit: int | None = None) -> int:
        """Delete the rows of Discord accounts no longer linked that finished before
        ``before`` with nothing left to do: a removal done, or any change refused because
        the member was not in the server (leaving a server drops its roles). A removal
        refused otherwise or given up, and an add finished for someone no longer linked,
        stay for ``roles sync`` to ask again; a linked member's row stays. How many
        (``limit``: see ``Maintenance``)."""


class RoleConnectionTokenRepository(Protocol):
    """The Discord tokens kept for Linked Roles, one row per Discord user. Every write moves
    the row's ``version`` on; the writes that take a row compare its version first, so of
    concurrent writers of one row exactly one wins and the others see ``None``/``False``."""

    async def add(self, token: RoleConnectionToken) -> None:
        """Insert; ``Conflict`` when the Discord user already has a row."""

    async def get(self, discord_id: DiscordId) -> RoleConnectionToken | None: ...

    async def replace(self, token: RoleConnectionToken) -> RoleConnectionToken | None:
        """Write ``token`` over the row (its claim too) if the row's version is still
        ``token.version``; the row as written (version + 1), or ``None`` when someone wrote
        it meanwhile."""

    async def take(
        self, token: RoleConnectionToken, until: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        """Claim the row until ``until`` if nobody holds it (no claim, or one run out at
        ``now``) or ``token`` does (its ``claimed_until``: a renewal): the row as it is now,
        written (version + 1), whatever else changed. ``None``: another pusher holds it, or
        it is gone. A pusher takes the row before each call to Discord, so one whose lease
        ran out never pushes beside the one that took over."""

    async def release(self, token: RoleConnectionToken) -> bool:
        """Let go of the claim held as ``token.claimed_until``, whatever else changed (a
        claimant whose last write lost to another writer); ``False``: not held any more.
        Wakes the workers when the row is due."""

    async def remove(self, token: RoleConnectionToken) -> bool:
        """Delete the row if its version is still ``token.version``."""

    async def swap_sealed(
        self, token: RoleConnectionToken, sealed: str, expires_at: datetime, now: datetime
    ) -> RoleConnectionToken | None:
        """Store refreshed (or re-encrypted) tokens if the row still holds ``token.sealed``,
        whatever else changed (an unlink's ``mark_due`` must not lose the refresh: the old
        refresh token is spent). The row as written (version + 1), or ``None``."""

    async def remove_sealed(self, discord_id: DiscordId, sealed: str) -> bool:
        """Delete the row if it still holds ``sealed`` (tokens Discord declared dead)."""

    async def mark_due(self, discord_id: DiscordId, now: datetime) -> bool:
        """Push this user's role connection at ``now`` (their link changed: an unlink, a new
        link), with a fresh failure count: moves the version on, so a push (or a deletion)
        under way for the old state is done again, by its claimant (the claim stays).
        ``False``: no row."""

    async def mark_all_due(self, now: datetime) -> int: ...

    async def claim_due(
        self, now: datetime, until: datetime, limit: int
    ) -> Sequence[RoleConnectionToken]:
        """Take up to ``limit`` rows due at ``now`` and claimed by no one (or by a lease run
        out), the longest-waiting first: claimed until ``until``, their version moved on.
        Concurrent callers get disjoint sets."""

    async def page(self, after: DiscordId | None, limit: int) -> Sequence[RoleConnectionToken]:
        """Rows in Discord id order, after ``after`` (key rotation walks them all)."""

    async def counts(self, now: datetime) -> RoleConnectionCounts:
        """Every row counted once by where it stands at ``now``: held by a pusher (a claim
        not run out), else unreadable (its link says the connection is lost so), else due
        (``next_push_at`` reached), else retrying (failures), else current."""


class AuditLog(Protocol):
    async def record(self, event: AuditEvent) -> None: ...

    async def for_account(self, account_id: AccountId) -> Sequence[AuditEvent]: ...

    async def search(
        self,
        *,
        account_id: AccountId | None = None,
        discord_id: DiscordId | None = None,
        login: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        """The newest ``limit`` events matching every filter given (``login``: the detail's
        ``login`` is this, as recorded; ``since``: at or after it), newest first."""

    async def count_since(self, account_id: AccountId, kind: AuditKind, since: datetime) -> int:
        """How many events of ``kind`` the account has at or after ``since``."""

    async def reasons_since(self, kind: AuditKind, since: datetime) -> Mapping[str, int]:
        """How many events of ``kind`` there are at or after ``since``, by their detail's
        ``reason`` (``""``: none recorded)."""

    async def purge_before(self, before: datetime, limit: int | None = None) -> int:
        """Forget the events recorded before ``before``; how many (``limit``: see
        ``Maintenance``)."""


class WebhookRepository(Protocol):
    """The webhook outbox: events written in the transaction of the change, one delivery per
    endpoint, emptied by ``DeliverWebhooks``."""

    async def add(self, event: WebhookEvent, deliveries: Sequence[WebhookDelivery]) -> None: ...

    async def claim_due(
        self, now: datetime, until: datetime, limit: int, endpoints: Sequence[str]
    ) -> Sequence[WebhookDelivery]:
        """Per endpoint of ``endpoints`` (keys), its first pending deliveries in the order
        they were queued, up to ``limit``, from the first on and for as long as they are due
        at ``now``, moving their next attempt to ``until`` (a lease). An endpoint whose first
        pending delivery is not due (under another claim's lease, or waiting for its retry)
        gives nothing: its deliveries go one after another, never side by side. Concurrent
        callers never take the same endpoint's deliveries (Postgres: the first one's row
        lock, waited for). Returned in the order they were queued."""

    async def renew_claim(
        self, delivery: WebhookDelivery, until: datetime
    ) -> WebhookDelivery | None:
        """Extend this sender's lease (as ``OutgoingEmailRepository.renew_claim``); ``None``
        when the delivery is no longer this sender's."""

    async def release(self, delivery: WebhookDelivery, now: datetime) -> bool:
        """Let go of this sender's lease (as ``OutgoingEmailRepository.release``): due again
        at ``now`` (still behind its endpoint's earlier deliveries), the workers woken."""

    async def save(self, delivery: WebhookDelivery, *, leased_until: datetime) -> bool:
        """Write back state, attempts, times and error, while the delivery is still this
        sender's (as ``OutgoingEmailRepository.save``): ``False``, and nothing written,
        when another sender took it over (a stale retry would send it again after later
        events)."""

    async def get(self, delivery_id: uuid.UUID) -> WebhookDelivery | None: ...

    async def requeue(self, now: datetime, delivery_id: uuid.UUID | None = None) -> int:
        """Put failed and gone deliveries (all, or the one with ``delivery_id``) back in the
        queue: pending, due at ``now``, counting attempts from zero. How many."""

    async def mark_gone(self, endpoint: WebhookEndpoint, since: datetime) -> None:
        """Remember that the endpoint answered 410 Gone (once: a second call changes
        nothing)."""

    async def gone_endpoints(self) -> Sequence[GoneEndpoint]: ...

    async def forget_gone(self, endpoint: str | None = None) -> int:
        """Send to the endpoint again (``None``: every gone endpoint); how many."""

    async def summary(self) -> Sequence[WebhookEndpointSummary]:
        """Per endpoint that has deliveries: how many in each state, and the newest error."""

    async def purge_finished(
        self, before: datetime, configured: Sequence[str] | None, limit: int | None = None
    ) -> int:
        """Forget deliveries that finished before ``before`` (but one refused with 410 by an
        endpoint still stopped, unless ``configured`` leaves the endpoint out: `webhooks
        retry` sends it first, before the queue behind it), and pending ones queued before
        then (by ``created_at``: the oldest part of their queue, never a stretch in its
        middle) of endpoints not in ``configured`` (keys; ``None``: no pending one goes),
        a queue only when none of it was attempted, delivered, let go or requeued since
        ``before`` (an instance that still names the endpoint is sending it), from its head
        up to its first younger delivery (its oldest ``limit`` when there are more), then
        events left without a delivery (at most ``limit`` of them). How many deliveries
        (``limit``, see ``Maintenance``: finished ones first, then pending ones in what is
        left of it). A pending delivery of a configured endpoint is never forgotten: its
        receiver would miss it with no trace, and ``webhooks retry`` could not send it
        again. On Postgres a delivery row another transaction holds (a claim, a sender) is
        never waited for: its queue is left for the next purge."""


class Maintenance(Protocol):
    """What keeps purges apart. A purge (``PurgeExpired``) deletes in batches, one transaction
    each, so that a first run after months holds no lock for long: each repository's purge
    takes a ``limit`` and deletes at most that many rows (``None``: all), and deleting fewer
    than ``limit`` means none is left to delete now. Each batch first takes the purge's turn."""

    async def take_purge_turn(self, *, wait: bool) -> bool:
        """Until this transaction ends, no other purge batch runs, in any process (on
        Postgres an advisory lock; SQLite and the memory store run writers one at a time
        already). ``wait``: wait for another purge's batch under way to end; otherwise
        ``False`` at once when one is under way (the caller leaves the work to it)."""


@dataclass(frozen=True, slots=True)
class PurgeTerms:
    """What a serving process's settings say the purge may delete, as it announced them
    (``None``: a version that did not say)."""

    # TASKFLOW_LINK_AUDIT_RETENTION_DAYS: audit events older than this many days go; 0: none.
    audit_retention_days: int | None
    # A digest of the webhook URLs it names (``endpoints_digest``): the pending deliveries of
    # an endpoint it does not name may go once abandoned.
    webhooks: str | None


class PurgePeers(Protocol):
    """The serving processes that use this storage (web instances, gateway bots), by what
    they announced lately: a purge deletes only what every one of them would."""

    async def live(self) -> Sequence[PurgeTerms]:
        """The terms of each process seen running lately (the caller's own among them, if it
        serves). A storage failure is ``StorageError``."""


class UnitOfWork(Protocol):
    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def links(self) -> LinkRepository: ...

    @property
    def pending_logins(self) -> PendingLoginRepository: ...

    @property
    def link_tickets(self) -> LinkTicketRepository: ...

    @property
    def link_proposals(self) -> LinkProposalRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def email_tokens(self) -> EmailTokenRepository: ...

    @property
    def outgoing_emails(self) -> OutgoingEmailRepository: ...

    @property
    def declined_addresses(self) -> DeclinedAddressRepository: ...

    @property
    def role_changes(self) -> RoleChangeRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def role_connection_tokens(self) -> RoleConnectionTokenRepository: ...

    @property
    def maintenance(self) -> Maintenance: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed."""

    async def commit(self) -> None:
        """Make the changes durable; ``Conflict`` when a uniqueness rule was hit."""

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work. ``read_only``: the transaction only reads, so it may run
        beside writers (on SQLite it then takes no write lock); it must not write."""


class LinkDirectory(Protocol):
    """The JSON API's hot reads: each one statement, outside any transaction (one round trip
    to the database), on committed data."""

    async def link_by_discord_id(self, discord_id: DiscordId) -> Link | None: ...

    async def link_rows_by_discord_ids(self, discord_ids: Sequence[int]) -> Sequence[LinkRow]:
        """The links of those ids (Discord ids' numbers, each once) that have one, as rows, in
        one query, in any order."""

    async def api_key_by_digest(self, digest: str) -> ApiKey | None: ...


class ApiKeyLookup(Protocol):
    async def by_digest(self, digest: str) -> ApiKey | None:
        """The API key with this digest (revoked ones too), maybe from a short-lived cache:
        a revocation takes effect within that cache's lifetime."""

    async def known(self, digest: str) -> ApiKey | None:
        """The API key with this digest if this process knows it already (a cache's entry,
        even a lapsed one), without asking the database; ``None`` otherwise, and for a digest
        known to be no key. Without a cache, the same as ``by_digest``."""


class ApiKeyUsage(Protocol):
    """Remembers when keys were last used, off the request path."""

    def used(self, key: ApiKey, at: datetime) -> None:
        """``key`` authenticated a request at ``at``. Returns at once and never fails the
        request: the use is written later, at most once per ``API_KEY_LAST_USED_EVERY`` per
        key."""


class Storage(Protocol):
    """Where the data lives (a database, or the process's memory), as the entry points see it:
    units of work, the hot reads, whether it answers, and closing it."""

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork: ...

    @property
    def directory(self) -> LinkDirectory: ...

    @property
    def shared_between_processes(self) -> bool:
        """Whether other processes with the same settings see the same data (a database),
        or only this one does (its memory)."""

    async def ping(self) -> bool:
        """``True`` when the data can be reached."""

    async def dispose(self) -> None:
        """Release connections (at shutdown)."""


class QueueListener(Protocol):
    """Tells a worker in this process that some process (this one or another instance) has
    just queued work for it, so it need not wait for its next poll."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever work was queued, and once each time listening (re)starts
        (for what was queued while nobody listened). Runs until cancelled and survives
        outages (it keeps trying, and the worker polls meanwhile); returns at once when
        nothing can tell across processes (the worker then relies on polling)."""


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A fresh secret: ``token`` goes to the person once, ``digest`` is what we store."""

    token: str
    digest: str


class TokenIssuer(Protocol):
    def issue(self) -> IssuedSecret:
        """A new random secret of at least 256 bits."""

    def digest(self, token: str) -> str:
        """The digest stored for ``token`` (deterministic, one-way)."""

    def derive(self, token: str, purpose: str) -> str:
        """A secret derived from ``token`` with the server's key (an HMAC): a value a flow
        needs again later (a PKCE verifier) without storing it. URL-safe, 43 characters."""


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """``True`` only for the right password; never raises for a wrong one."""

    async def burn(self, password: str) -> None:
        """Spend the time of a verification, for unknown users (no account enumeration)."""

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than today's (rehash at sign-in)."""


class PasswordPolicy(Protocol):
    def weakness(self, password: str, *, related: Sequence[str] = ()) -> str | None:
        """Why the password is too easy to guess (a sentence for the person), or ``None``.
        ``related``: words an attacker would try first (the username, the email)."""


class PasswordAttempts(Protocol):
    """Wrong passwords per account (or per unknown login), for the sign-in throttle. Shared by
    every instance when it is backed by a shared store."""

    def one_at_a_time(self, key: str) -> AbstractAsyncContextManager[None]:
        """This process's turn to check a password for ``key``: its checks of one key run
        one after another (a burst of right passwords all pass, of wrong ones five do).
        Not reentrant: a check must not check the same key again inside its turn."""

    async def reserve(
        self,
        key: str,
        now: datetime,
        *,
        forget_after: timedelta,
        wait_for: Callable[[int, datetime | None], timedelta | None],
    ) -> timedelta | None:
        """A try, before the password is checked: ``wait_for(failures, last)`` says how long
        the key must wait (nothing is recorded then); otherwise the try is counted as one
        more failure (from zero again when the last one is older than ``forget_after``,
        after which the store may drop the key) until ``clear`` says it was right. Tries
        reserved at the same time, by any instance, are counted one after the other."""

    async def clear(self, key: str) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


@dataclass(frozen=True, slots=True)
class DiscordTokens:
    """What Discord's token endpoint answered. The tokens never show in a ``repr`` (a log)."""

    access_token: str = field(repr=False)
    scopes: frozenset[str]
    refresh_token: str | None = field(default=None, repr=False)
    expires_in: int | None = None  # seconds the access token lives, as Discord said


class DiscordOAuth(Protocol):
    """Discord's OAuth2 endpoints. Failures raise ``DiscordUnavailable``/``DiscordDenied``."""

    def authorization_url(
        self, *, state: str, code_challenge: str, scopes: Sequence[str], ask_again: bool = False
    ) -> str:
        """Where to send the browser; PKCE S256 with ``code_challenge``. Discord skips its
        consent screen for someone who already granted these scopes (``prompt=none``), unless
        ``ask_again`` (``prompt=consent``: the screen, with its account switcher)."""

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens: ...

    async def fetch_profile(self, tokens: DiscordTokens) -> DiscordProfile: ...

    async def revoke(self, tokens: DiscordTokens) -> None:
        """Best effort: the service keeps no Discord tokens."""


class RoleCallOutcome(enum.StrEnum):
    """What Discord answered to adding or removing a member's role."""

    DONE = "done"  # 204
    NOT_A_MEMBER = "not_a_member"  # 10007 Unknown Member (or 10013 Unknown User)
    UNKNOWN_ROLE = "unknown_role"  # 10011: the role was deleted
    MISSING_PERMISSIONS = "missing_permissions"  # 50013 (no Manage Roles, role above the bot's)
    UNKNOWN_GUILD = "unknown_guild"  # 10004, or 50001 Missing Access: the bot left the server
    REJECTED = "rejected"  # any other 4xx (a bad bot token: 401)
    # 429: try again after ``retry_after``; also a 403 that blocks the address (Cloudflare's
    # HTML page, or Discord's 40333), which, as Cloudflare's 429, says no ``retry_after``
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # 5xx, a timeout, no connection, an unreadable answer


@dataclass(frozen=True, slots=True)
class RoleCallResult:
    outcome: RoleCallOutcome
    retry_after: float | None = None  # seconds, with RATE_LIMITED (None: Discord did not say)
    status: int | None = None  # the HTTP status, when there was an answer
    global_limit: bool = False  # with RATE_LIMITED: Discord's global limit (every route waits)
    # With any other answer: the route's limit has no call left for this server (Discord's
    # X-RateLimit-Remaining: 0) until this many seconds from now (X-RateLimit-Reset-After).
    reset_after: float | None = None


class DiscordGuildRoles(Protocol):
    """Discord's guild member roles, with the bot's token. Never raises for what Discord
    answers (or fails to answer): every outcome is a ``RoleCallResult``."""

    async def add_role(
        self, role: LinkedRole, member: DiscordId, *, reason: str
    ) -> RoleCallResult: ...

    async def remove_role(
        self, role: LinkedRole, member: DiscordId, *, reason: str
    ) -> RoleCallResult: ...


# The longest pause a 429's retry_after (or an instance's shared pause) makes.
DISCORD_PAUSE_MAX = timedelta(days=1)


class SharedDiscordPauses(Protocol):
    """Discord's rate limits every instance must keep, not only the one that met them: the
    instances share the bot token and the application, so a 429 with ``retry_after`` (a
    server's member roles, the bot's global limit, Linked Roles) answers each of them alike.
    Each pause by its name, with the seconds left (not a time: hosts' clocks differ). Never
    raises: when the shared store is away, each process keeps its own pauses."""

    async def publish(self, pauses: Mapping[str, float]) -> None:
        """No call under each name for its seconds (a longer pause there is kept)."""

    async def read(self, names: Sequence[str]) -> dict[str, float]:
        """The seconds left of those of ``names`` paused now, ``DISCORD_PAUSE_MAX`` at most
        (what the store holds beyond it is shortened to it: none of ours)."""


# Told, with any answer but a 429, that Discord said the route's limit has no call left for
# this caller (``X-RateLimit-Remaining: 0``) until this many seconds from now
# (``X-RateLimit-Reset-After``): a call before then would be answered 429.
UsedUp = Callable[[float], None]


class DiscordRoleConnections(Protocol):
    """Discord's Linked Roles, with a user's own tokens. Failures raise
    ``DiscordUnavailable`` (try again later), ``DiscordDenied`` (this access token is not
    accepted) or ``DiscordGrantRevoked`` (the refresh token is dead). ``used_up``: told when
    the answer, whatever it was, said the route's limit is used up (see ``UsedUp``)."""

    async def refresh(self, refresh_token: str, *, used_up: UsedUp | None = None) -> DiscordTokens:
        """The refresh grant: a new access token and a new refresh token (the old one is
        spent). Its limit is the application's (its credentials), for every user."""

    async def push(
        self, access_token: str, connection: RoleConnection, *, used_up: UsedUp | None = None
    ) -> None:
        """``PUT /users/@me/applications/{app}/role-connection``. Its limit is the user's
        (their token)."""


class SecretBox(Protocol):
    """Authenticated encryption of secrets kept at rest (the Discord tokens of Linked Roles),
    with the newest of the configured keys; older keys only open."""

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt; ``context`` is bound to the result: it opens only with the same one."""

    def open(self, sealed: str, *, context: str) -> str:
        """Decrypt; ``SecretUnreadable`` when no configured key opens it (or it was altered,
        or it belongs to another context)."""

    def is_current(self, sealed: str) -> bool:
        """Sealed with the newest key (nothing to re-encrypt)."""

    def has_key(self, sealed: str) -> bool:
        """Sealed with one of the keys configured here (whether it then opens or not): a value
        that names another key may open where that key is configured (a rotation's rollout)."""


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """A plain-text email to one person."""

    to: str
    subject: str
    text: str


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand the message to the mail system; ``EmailNotSent`` when it cannot."""


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One attempt: the event's id and body, and the attempt's time (``webhook-timestamp``)."""

    message_id: str
    timestamp: datetime
    body: str


class WebhookSender(Protocol):
    async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
        """POST the signed message to the endpoint's URL and return the HTTP status (no
        redirect is followed); ``WebhookNotDelivered`` when no answer came (timeout,
        connection refused, an endpoint that is not configured)."""
