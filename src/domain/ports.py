"""Ports: what the core needs from the outside world, one role per Protocol.

Repositories never commit; a ``UnitOfWork`` owns the transaction and rolls back unless
``commit()`` was called. Uniqueness violations surface as ``errors.Conflict``, an
unreachable store as ``errors.StorageError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.model import (
    Account,
    AccountId,
    ApiKey,
    AuditEvent,
    DiscordId,
    DiscordProfile,
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

    async def get_by_username(self, username: str) -> Account | None: ...

    async def find_by_email(self, email: str) -> Sequence[Account]:
        """All accounts whose email equals ``email`` case-insensitively."""

    async def usernames_starting_with(self, prefix: str) -> set[str]: ...


class LinkRepository(Protocol):
    async def add(self, link: Link) -> None:
        """Insert; ``Conflict`` if the Discord id or the account is already linked."""

    async def get_by_discord_id(self, discord_id: DiscordId) -> Link | None: ...

    async def get_by_account(self, account_id: AccountId) -> Link | None: ...

    async def remove(self, link: Link) -> bool:
        """Delete exactly this link (same Discord id *and* account); ``True`` if removed.

        Matching both columns means a link replaced concurrently is never deleted by mistake.
        """


class PendingLoginRepository(Protocol):
    async def add(self, pending: PendingLogin) -> None: ...

    async def consume(self, state_digest: str, now: datetime) -> PendingLogin | None:
        """Atomically mark as consumed and return it, or ``None`` if unknown or already used.

        Of any number of concurrent callers, at most one gets the row.
        """

    async def get(self, state_digest: str) -> PendingLogin | None: ...

    async def purge_expired(self, now: datetime) -> int: ...


class LinkTicketRepository(Protocol):
    async def add(self, ticket: LinkTicket) -> None: ...

    async def consume(self, digest: str, now: datetime) -> LinkTicket | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``."""

    async def get(self, digest: str) -> LinkTicket | None: ...

    async def purge_expired(self, now: datetime) -> int: ...


class LinkProposalRepository(Protocol):
    async def add(self, proposal: LinkProposal) -> None: ...

    async def consume(self, digest: str, now: datetime) -> LinkProposal | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``."""

    async def get(self, digest: str) -> LinkProposal | None: ...

    async def purge_expired(self, now: datetime) -> int: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def get(self, digest: str) -> Session | None: ...

    async def touch(self, digest: str, now: datetime) -> None:
        """Record a use (only ``last_seen_at``: a concurrent proof is never overwritten)."""

    async def record_proof(self, digest: str, now: datetime, method: SignInMethod) -> None:
        """Record a fresh proof of identity (only the proof columns)."""

    async def list_for_account(self, account_id: AccountId) -> Sequence[Session]:
        """The account's sessions, newest first (expired ones included until purged)."""

    async def remove(self, digest: str) -> bool: ...

    async def remove_by_id(self, account_id: AccountId, session_id: uuid.UUID) -> bool:
        """End one of the account's sessions by its public id (another account's: ``False``)."""

    async def remove_for_account(self, account_id: AccountId, *, keep: str | None = None) -> int:
        """End every session of an account, except the one whose digest is ``keep``."""

    async def purge_expired(self, now: datetime) -> int: ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None:
        """Insert; ``Conflict`` when an active key already has this name."""

    async def get_by_digest(self, digest: str) -> ApiKey | None: ...

    async def list(self) -> Sequence[ApiKey]: ...

    async def revoke(self, key_id: uuid.UUID, now: datetime) -> bool: ...


class EmailTokenRepository(Protocol):
    async def add(self, token: EmailToken) -> None: ...

    async def consume(self, digest: str, purpose: EmailPurpose, now: datetime) -> EmailToken | None:
        """Same single-winner contract as ``PendingLoginRepository.consume``; a token of
        another purpose is neither returned nor consumed."""

    async def get(self, digest: str) -> EmailToken | None: ...

    async def remove(self, digest: str) -> bool: ...

    async def consume_all(self, account_id: AccountId, purpose: EmailPurpose, now: datetime) -> int:
        """Use up every unused token of the account for ``purpose`` (older links stop working)."""

    async def purge_expired(self, now: datetime) -> int: ...


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

    async def requeue_failed(self, now: datetime, email_id: uuid.UUID | None = None) -> int:
        """Put emails that were given up (all of them, or the one with ``email_id``) back in
        the queue: pending, due at ``now``, counting attempts from zero. How many."""

    async def save(self, email: OutgoingEmail) -> None:
        """Write back status, attempts, next attempt, error."""

    async def latest(self, account_id: AccountId, kind: EmailKind) -> OutgoingEmail | None: ...

    async def count_since(self, account_id: AccountId, kind: EmailKind, since: datetime) -> int:
        """How many emails of ``kind`` were queued for the account at or after ``since``."""

    async def purge_finished(self, before: datetime) -> int:
        """Forget sent, failed and cancelled emails finished before ``before``."""


class AuditLog(Protocol):
    async def record(self, event: AuditEvent) -> None: ...

    async def for_account(self, account_id: AccountId) -> Sequence[AuditEvent]: ...


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
    def audit(self) -> AuditLog: ...

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

    async def links_by_discord_ids(self, discord_ids: Sequence[DiscordId]) -> Sequence[Link]:
        """The links of those ids that have one, in one query."""

    async def api_key_by_digest(self, digest: str) -> ApiKey | None: ...


class ApiKeyLookup(Protocol):
    async def by_digest(self, digest: str) -> ApiKey | None:
        """The API key with this digest (revoked ones too), maybe from a short-lived cache:
        a revocation takes effect within that cache's lifetime."""


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

    async def failures(self, key: str) -> tuple[int, datetime | None]:
        """How many wrong passwords in a row, and when the last one was."""

    async def record_failure(self, key: str, now: datetime, *, forget_after: timedelta) -> None:
        """One more (counting from zero again when the last one is older than
        ``forget_after``, after which the store may drop the key)."""

    async def clear(self, key: str) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


@dataclass(frozen=True, slots=True)
class DiscordTokens:
    access_token: str
    scopes: frozenset[str]


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


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """A plain-text email to one person."""

    to: str
    subject: str
    text: str


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand the message to the mail system; ``EmailNotSent`` when it cannot."""
