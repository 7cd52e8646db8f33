"""The schema, as SQLAlchemy Core tables. Migrations under ``migrations/`` must match it
(a test runs Alembic's autogenerate comparison and expects no difference)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)
PENDING_PURPOSES = "purpose IN ('login', 'link', 'ticket', 'reauth', 'roles', 'roles_link')"


class utc_now(FunctionElement[datetime]):
    """The current UTC time as a plain TIMESTAMP, whatever the server's time zone.

    Postgres' ``now()`` written into a column without time zone takes the session's
    TimeZone; code that inserts into ``user_links`` without ``linked_at`` must still get UTC.
    """

    type = DateTime(timezone=False)
    inherit_cache = True


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "timezone('utc', now())"


@compiles(utc_now)
def _utc_now_default(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"  # SQLite's is UTC


class UtcDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP`` without time zone holding UTC, read back as an aware UTC datetime.

    The guide's ``user_links.linked_at`` is a plain ``TIMESTAMP``; using the same
    convention everywhere keeps Postgres and SQLite identical.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # CURRENT_TIMESTAMP defaults on SQLite
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)  # noqa: S101 - the driver returns datetimes
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


accounts = Table(
    "accounts",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("username", String(32), nullable=False, unique=True),  # stored lower-cased
    Column("email", String(254), nullable=True),
    # normalize_email(email), written by the adapter: one matching rule on every database
    # (SQLite's lower() only folds ASCII).
    Column("email_normalized", String(254), nullable=True, index=True),
    Column("email_verified", Boolean(), nullable=False, server_default=false()),
    Column("password_hash", String(255), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    # Set only by migration 0003 on accounts that already shared an address (see Account).
    Column("email_shared", Boolean(), nullable=False, server_default=false()),
    # Account.device_epoch: "sign out everywhere" moves it on (migration 0009).
    Column("device_epoch", Integer(), nullable=False, server_default="0"),
    # Account.discord_unlinked_at (migration 0010).
    Column("discord_unlinked_at", UtcDateTime(), nullable=True),
)
# One account per confirmed address: concurrent confirmations of one address (links, password
# resets, first Discord sign-ins creating an account with it) cannot all win. Any number of
# accounts may hold an address unconfirmed (claims: the one that proves it by an emailed link
# takes it from the others, migration 0022). Accounts imported with a shared address are left
# out.
Index(
    "uq_accounts_email_confirmed",
    accounts.c.email_normalized,
    unique=True,
    postgresql_where=text("email_verified AND NOT email_shared"),
    sqlite_where=text("email_verified AND NOT email_shared"),
)
# Picking a free username for a new Discord account asks for every username starting with a
# prefix (LIKE 'x%'). Under a collation other than C (en_US.UTF-8 and the like) the unique
# index cannot serve that, and Postgres scans the table; a pattern-ops index can.
Index(
    "ix_accounts_username_prefix",
    accounts.c.username,
    postgresql_ops={"username": "text_pattern_ops"},
)

# The original guide's table, same name and columns, plus display fields for the web pages.
user_links = Table(
    "user_links",
    metadata,
    Column("discord_id", BigInteger(), primary_key=True, autoincrement=False),
    Column(
        "taskflow_user_id",
        Uuid(),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("linked_at", UtcDateTime(), nullable=False, server_default=utc_now()),
    Column("discord_username", String(64), nullable=False, server_default=""),
    Column("discord_global_name", String(64), nullable=True),
    Column("discord_avatar", String(128), nullable=True),
    # Linked Roles: when and why the connection kept for this link was lost (its tokens
    # deleted while linked: Discord's invalid_grant, or a key lost), until a new one is made.
    Column("role_connection_lost_at", UtcDateTime(), nullable=True),
    Column("role_connection_lost_why", String(16), nullable=True),
    CheckConstraint("discord_id > 0", name="discord_id_positive"),
)

# OAuth states waiting for Discord's callback. No live secret: digests only, and the PKCE
# verifier is derived again from the state with the server's key.
pending_login = Table(
    "pending_login",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),
    Column("account_id", Uuid(), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    # Indexed (migration 0028): a sign-out marks the ones of its browser's binding values.
    Column("browser_hash", String(64), nullable=False, index=True),
    Column("ticket_hash", String(64), nullable=True),  # the /link ticket being confirmed
    Column("destination", String(2048), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("consumed_at", UtcDateTime(), nullable=True),
    # Its callback ended without its purpose done (see PendingLogin.failed_at; migration 0024).
    Column("failed_at", UtcDateTime(), nullable=True),
    # Why (the refusal's code: see PendingLogin.failure; migration 0027).
    Column("failure", String(64), nullable=True),
    # The browser signed out after it started (see PendingLogin.signed_out_at; migration 0028).
    Column("signed_out_at", UtcDateTime(), nullable=True),
    # Whom a later Discord sign-in of the browser signed in (see PendingLogin.superseded_by;
    # migration 0029). No foreign key: only compared, and that account may be new.
    Column("superseded_by", Uuid(), nullable=True),
    CheckConstraint(PENDING_PURPOSES, name="purpose_known"),
)

link_tickets = Table(
    "link_tickets",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # Indexed: a new /link, a link and an unlink spend the Discord account's earlier tickets.
    Column("discord_id", BigInteger(), nullable=False, index=True),
    Column("discord_username", String(64), nullable=False),
    Column("discord_global_name", String(64), nullable=True),
    Column("discord_avatar", String(128), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("consumed_at", UtcDateTime(), nullable=True),
)

# Email linking "confirm": a Discord account proved by a sign-in, waiting for the person to
# prove the account with the same address. The token is in the browser's cookie only.
link_proposals = Table(
    "link_proposals",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "account_id",
        Uuid(),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("discord_id", BigInteger(), nullable=False),
    Column("discord_username", String(64), nullable=False),
    Column("discord_global_name", String(64), nullable=True),
    Column("discord_avatar", String(128), nullable=True),
    Column("destination", String(2048), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("consumed_at", UtcDateTime(), nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "account_id",
        Uuid(),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("id", Uuid(), nullable=False, unique=True),  # the public handle, never the digest
    Column("method", String(16), nullable=False, server_default="password"),
    Column("last_seen_at", UtcDateTime(), nullable=True),
    Column("proved_at", UtcDateTime(), nullable=True),
    Column("proved_with", String(16), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    # Space-separated scope names. A row written without them (by an older version during
    # an upgrade) may only read; keys that existed before scopes kept both (migration 0008).
    Column("scopes", String(255), nullable=False, server_default="links:read"),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("last_used_at", UtcDateTime(), nullable=True),  # to the minute, see ApiKeyUsage
)
# One active key per name; revoked keys keep their name for the record.
Index(
    "uq_api_keys_active_name",
    api_keys.c.name,
    unique=True,
    postgresql_where=api_keys.c.revoked_at.is_(None),
    sqlite_where=api_keys.c.revoked_at.is_(None),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("id", Uuid(), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False, index=True),  # `audit --since`, retention
    # No foreign keys: the trail outlives the accounts it mentions.
    Column("account_id", Uuid(), nullable=True, index=True),
    Column("discord_id", BigInteger(), nullable=True, index=True),  # `audit --discord-id`
    Column("detail", JSON(), nullable=False),
)

# The secrets behind emailed links (verification, password reset): digests only.
email_tokens = Table(
    "email_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("purpose", String(8), nullable=False),
    Column(
        "account_id",
        Uuid(),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("email", String(254), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("consumed_at", UtcDateTime(), nullable=True),
    Column("proposal_hash", String(64), nullable=True),  # purpose link: which proposal
    CheckConstraint("purpose IN ('verify', 'reset', 'link')", name="purpose_known"),
)

# The addresses whose holder declined an account ("This is not my account", proved with our
# emailed link): that account may not claim them again (migration 0023). Kept as long as the
# account: a decline that lapsed would let the account wait it out and write to the address
# again.
declined_addresses = Table(
    "declined_addresses",
    metadata,
    Column(
        "account_id",
        Uuid(),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("email_normalized", String(254), primary_key=True),
    Column("declined_at", UtcDateTime(), nullable=False),
)

# The email queue. It holds no secrets: links are issued when an email is sent.
outgoing_emails = Table(
    "outgoing_emails",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("id", Uuid(), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("recipient", String(254), nullable=False),
    # No foreign key: like the audit trail, the record outlives the account.
    Column("account_id", Uuid(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("last_error", String(64), nullable=True),
    Column("detail", JSON(), nullable=False),
    # OutgoingEmail.client: who asked, for the limits per unproved address (migration 0022).
    Column("client", String(64), nullable=True),
    CheckConstraint("status IN ('pending', 'sent', 'failed', 'cancelled')", name="status_known"),
)
Index("ix_outgoing_emails_due", outgoing_emails.c.status, outgoing_emails.c.next_attempt_at)
Index(
    "ix_outgoing_emails_account",
    outgoing_emails.c.account_id,
    outgoing_emails.c.kind,
    outgoing_emails.c.created_at,
)
# The emails to one address of late, whichever accounts asked (the limit per address nobody
# has proved, migration 0017): without it, each sign-up read the whole queue.
Index(
    "ix_outgoing_emails_recipient",
    outgoing_emails.c.recipient,
    outgoing_emails.c.created_at,
)
# The purge's batches of finished emails (``finished_at < cut-off``), migration 0025: without
# it each batch read the whole queue. Partial: the pending ones (no finished_at) stay out.
Index(
    "ix_outgoing_emails_finished",
    outgoing_emails.c.finished_at,
    postgresql_where=outgoing_emails.c.finished_at.is_not(None),
    sqlite_where=outgoing_emails.c.finished_at.is_not(None),
)

# The role for linked members: one row per member and role, the change Discord still has to
# make (or what it last did). Written in the transaction of the link or unlink, worked by the
# role workers. No foreign keys: the row outlives the link it was made for.
discord_role_changes = Table(
    "discord_role_changes",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("discord_id", BigInteger(), nullable=False),
    Column("guild_id", BigInteger(), nullable=False),
    Column("role_id", BigInteger(), nullable=False),
    Column("action", String(8), nullable=False),
    Column("account_id", Uuid(), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False),
    # Raised by every new request: a delivery in flight for an older one cannot finish it.
    Column("version", Integer(), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    # A worker's lease while it talks to Discord (NULL: nobody holds it).
    Column("claimed_until", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("last_error", String(32), nullable=True),
    UniqueConstraint("discord_id", "guild_id", "role_id"),
    CheckConstraint("action IN ('add', 'remove')", name="action_known"),
    CheckConstraint("status IN ('pending', 'done', 'refused', 'failed')", name="status_known"),
)
Index(
    "ix_discord_role_changes_due",
    discord_role_changes.c.status,
    discord_role_changes.c.next_attempt_at,
)
# The purge's batches of old finished changes (migration 0025), as for the emails.
Index(
    "ix_discord_role_changes_finished",
    discord_role_changes.c.finished_at,
    postgresql_where=discord_role_changes.c.finished_at.is_not(None),
    sqlite_where=discord_role_changes.c.finished_at.is_not(None),
)

# The webhook outbox: an event (its exact body) written in the transaction of the change, and
# one delivery per endpoint. Endpoints are named by the SHA-256 of their URL: a URL may carry
# a token, and stays in the settings. No secrets here: bodies are signed when sent.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("id", Uuid(), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("payload", Text(), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("id", Uuid(), nullable=False, unique=True),
    Column(
        "event_id",
        Uuid(),
        ForeignKey("webhook_events.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("endpoint", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("last_attempt_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("last_error", String(64), nullable=True),
    CheckConstraint("state IN ('pending', 'delivered', 'failed', 'gone')", name="state_known"),
)
Index("ix_webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.next_attempt_at)
# Each endpoint's queue, in order: a claim reads its first pending deliveries (a dead
# endpoint's backlog is not read at every pass).
Index(
    "ix_webhook_deliveries_queue",
    webhook_deliveries.c.endpoint,
    webhook_deliveries.c.state,
    webhook_deliveries.c.seq,
)
# The purge's batches of old delivered and given-up deliveries (migration 0025), as for the
# emails.
Index(
    "ix_webhook_deliveries_finished",
    webhook_deliveries.c.finished_at,
    postgresql_where=webhook_deliveries.c.finished_at.is_not(None),
    sqlite_where=webhook_deliveries.c.finished_at.is_not(None),
)

# Endpoints that answered 410 Gone: nothing is sent to them until `taskflow-link webhooks retry`.
gone_webhook_endpoints = Table(
    "gone_webhook_endpoints",
    metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("since", UtcDateTime(), nullable=False),
)

# Discord Linked Roles (only with TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS=true): a user's OAuth
# tokens, kept to push their role connection. ``sealed`` is AES-256-GCM ciphertext (never the
# tokens), bound to the Discord id. No foreign key to user_links: after an unlink the row
# stays until Discord has been told "not linked".
role_connection_tokens = Table(
    "role_connection_tokens",
    metadata,
    Column("discord_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("sealed", String(2048), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("next_push_at", UtcDateTime(), nullable=False, index=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("failures", Integer(), nullable=False),
    # The one pusher's lease (a worker's, the CLI's, the callback's); NULL: nobody's.
    Column("claimed_until", UtcDateTime(), nullable=True),
    CheckConstraint("discord_id > 0", name="discord_id_positive"),
)

# The web instances and gateway bots using this database, each announcing itself once a minute
# (see ``adapters.sql.instances``): one that keeps its rate limits and replay guard (or its
# claims on interactions) apart from another's (no Redis, or another Redis or key prefix), or
# that queues webhooks for other URLs, is told so. A row is deleted when
# its instance stops, and by any instance a day after it was last seen.
web_instances = Table(
    "web_instances",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer(), nullable=False),
    # "web", or "gateway" (the gateway bot), with the shards it runs: "gateway 0-3,8/16" (a
    # copy may run thousands).
    Column("kind", Text(), nullable=False),
    # "memory", or "redis " and the id its Redis (with the key prefix) gives its deployment.
    Column("shared_state", String(100), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("seen_at", UtcDateTime(), nullable=False),
    # A digest of the webhook URLs it queues a change's events for (NULL: a version before
    # 0019, which did not say): processes that differ leave holes in receivers' streams.
    Column("webhooks", String(64), nullable=True),
    # Its TASKFLOW_LINK_AUDIT_RETENTION_DAYS (0: forever; NULL: a version before 0026, which
    # did not say): every process purges, and deletes no audit event another one keeps.
    Column("audit_retention_days", Integer(), nullable=True),
)
