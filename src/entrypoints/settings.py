"""Configuration from ``TASKFLOW_LINK_*`` environment variables (and a ``.env`` file).

Nothing is read at import time: ``load_settings()`` is called by the command being run.
A missing or invalid setting stops start-up with ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import contextlib
import email.errors
import email.policy
import email.utils
import ipaddress
import logging
import os
import re
import ssl
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SettingsConfigDict
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import URL as SqlUrl
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SAWarning
from yarl import URL

from adapters.loopback import is_loopback
from adapters.secret_box import not_random, parse_keys
from adapters.webhook_targets import WebhookTarget, decode_secret, endpoint_for
from domain.errors import InvalidDiscordId
from domain.model import DiscordId, EmailLinking, LinkedRole

# Re-exported: where the settings are read, their error is looked for here.
from entrypoints.settings_errors import MAX_SHARD_COUNT as MAX_SHARD_COUNT  # noqa: PLC0414
from entrypoints.settings_errors import SettingsError as SettingsError  # noqa: PLC0414

ENV_PREFIX = "TASKFLOW_LINK_"
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
# Per Discord URL setting: why it may hold no user part (who is sent to it, with what), and
# what the service adds to it (why it may hold no query or fragment).
_DISCORD_URL_USES = {
    "discord_api_url": (
        "the service's own calls to Discord's API go to it, with their own credentials (the "
        "client secret, the bot token, members' tokens)",
        "the service adds the paths of its calls to it (/oauth2/token, /users/@me, …)",
    ),
    "discord_authorize_url": (
        "browsers are sent to it (every sign-in with Discord is redirected there, the URL in "
        "its Location header)",
        "the service adds the sign-in's own query to it (?client_id=…&state=…)",
    ),
    "discord_cdn_url": (
        "browsers load the avatars from it (its URL is in every page that shows one)",
        "the service adds the avatars' paths and query to it (/avatars/…?size=…)",
    ),
}
# The end of the API URL's path: the version hikari (and the service's own calls) speak.
_DISCORD_API_VERSION = "/api/v10"
# A host name as resolvers take it: labels of letters, digits, `-` and `_` (some internal
# names have one), dots between, and perhaps the root's after the last.
_HOST_NAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"
)


# SMTP with implicit TLS (RFC 8314); 25 and 587 speak plain SMTP and STARTTLS.
IMPLICIT_TLS_SMTP_PORT = 465

# Discord drops a first answer to an interaction that comes later than this (network included).
DISCORD_ANSWER_LIMIT_SECONDS = 3.0
# An interaction's token lives this long from its creation: no reply or edit is taken later.
DISCORD_INTERACTION_TOKEN_SECONDS = 15 * 60


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    storage: Literal["sql", "memory"] = Field(
        default="sql",
        description="Adapter set for storage: `sql` (the database below) or `memory` (tests).",
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///taskflow-link.db",
        description="SQLAlchemy async URL: postgresql+asyncpg://… or sqlite+aiosqlite:///file.db",
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Postgres connections for changes; the lookup API has a pool as large "
        "(opened on first use), and each worker that listens (up to four) one more.",
    )
    db_max_overflow: int = Field(
        default=0,
        ge=0,
        le=200,
        description="Connections allowed beyond the pool under load, each opened and closed "
        "again per use (0: requests wait for a pooled one, which is cheaper).",
    )
    db_pool_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds to wait for a pooled connection."
    )
    db_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="Seconds to wait for a new database connection."
    )
    db_statement_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Postgres: a statement that has not answered by then is cut off (on the "
        "server, and by the client when the server itself hangs): the request gets a 503.",
    )
    db_idle_in_transaction_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Postgres: a transaction left silent this long is ended (rolled back) by "
        "the server, its row locks with it: the service's own never wait for anything but the "
        "database, so it is an instance that froze or lost its network (Postgres would "
        "otherwise notice only through TCP keepalives, hours later, every other instance "
        "waiting for those rows meanwhile).",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://[:password@]host:port/db (Redis 7 or Valkey): rate limits, sign-in "
        "throttles and interaction replay protection shared by every instance. Unset: they "
        "live in this process (one instance only).",
    )
    redis_key_prefix: str = Field(
        default="taskflow-link",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="What every Redis key of this deployment starts with: deployments that "
        "share one Redis database (staging and production, two tenants) each need their own, "
        "or they share their rate-limit budgets and replay guard. Letters, digits, `.`, `_`, "
        "`-`.",
    )
    redis_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Each Redis call's connect and answer timeout; past it this process uses its "
        "own memory until Redis answers again. Each Discord interaction waits for one such "
        "call before its command starts: with the defer delay (or the reply deadline), 3 s or "
        "more is warned about at start.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated addresses or networks of the reverse proxies in front of "
        "the app (e.g. `10.0.0.0/8`): only from them are X-Forwarded-For and X-Forwarded-Proto "
        "believed. Empty: nobody (the client is the connection's peer). `*` trusts everyone: "
        "only when nothing but the proxy can reach the app; the client is then the last "
        "address of X-Forwarded-For, the one that proxy wrote (so too from a peer trusted by "
        "a network of every address, `0.0.0.0/0` or `::/0`).",
    )
    readiness_timeout_seconds: float = Field(
        default=1.5,
        gt=0,
        le=30,
        description="`/readyz` answers 503 when the database or its schema has not answered "
        'by then (Redis: "degraded", still 200).',
    )
    instance_check_seconds: float = Field(
        default=60.0,
        gt=0,
        le=60,
        description="How often each web instance and gateway bot announces itself in the "
        "database and looks at the others: one that shares no Redis with another that must "
        "share its state (one without Redis beside another, or two Redises) says so after two "
        "looks.",
    )
    shutdown_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="On SIGTERM, requests in flight get this long to finish, then the bot's "
        "commands under way as long again, and beside them the background queues' calls under "
        "way (what the queue workers claimed and never started is let go at once, for the "
        "other instances; a Linked Roles refresh under way ends first, its answer stored: up "
        "to the Discord timeout and this more), then releasing the database and Redis as long "
        "again; the process then exits regardless.",
    )
    request_head_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="`serve`: a connection's request line and header fields must all come "
        "within this long of its start (or of the answer before, on a kept-alive one); past "
        "it the connection is closed (with a 408 when part of them came), or a client that "
        "sends nothing or a head that never ends would hold it for ever.",
    )
    request_body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="`serve`: a request's body must keep coming, no longer than this between "
        "two reads of it (nginx's client_body_timeout), or the connection is closed (with a "
        "408 when no answer began) and the app told the client left; time the server holds "
        "the body back (its app not reading it yet) is not counted.",
    )
    public_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="URL people reach the web app at; links and the OAuth redirect URI use it. "
        "Scheme, host and port only: the app serves at the root of its host.",
    )
    secret_key: SecretStr = Field(
        min_length=32,
        description="At least 32 random characters (one that looks guessable is refused); "
        "keys CSRF tokens, PKCE verifiers, trusted-device cookies and API keys' seals. "
        "Required.",
    )
    discord_client_id: str | None = Field(default=None, description="OAuth2 client id.")
    discord_client_secret: SecretStr | None = Field(default=None, description="OAuth2 secret.")
    discord_bot_token: SecretStr | None = Field(default=None, description="Bot token.")
    discord_public_key: str | None = Field(
        default=None, description="Hex Ed25519 public key that signs interactions."
    )
    discord_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://discord.com/api/v10"), description="Discord API base URL."
    )
    discord_authorize_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://discord.com/oauth2/authorize"),
        description="Discord OAuth2 authorize page.",
    )
    discord_cdn_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://cdn.discordapp.com"),
        description="Discord's CDN, where pages load avatars from (the emulator serves one).",
    )
    discord_command_guilds: str = Field(
        default="",
        description="Where the slash commands live: empty for every server and DM (global), or "
        "comma-separated server (guild) ids, which Discord updates at once (handy in development).",
    )
    discord_sync_commands: bool = Field(
        default=True,
        description="Register the slash commands with Discord when the bot or web app starts. "
        "Off: run `taskflow-link bot sync` after upgrades instead.",
    )
    discord_linked_roles: str = Field(
        default="",
        description="A role for linked members: comma-separated `server_id:role_id` pairs. "
        "The bot adds the role when a Discord account is linked and removes it when it is "
        "unlinked (it needs Manage Roles, and its own role above this one). Empty: no role.",
    )
    discord_roles_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the queue of role changes is checked (a change is also sent at "
        "once after the request that made it, and on Postgres every instance's worker is woken "
        "through LISTEN/NOTIFY).",
    )
    discord_shard_ids: str = Field(
        default="",
        description="Gateway bot: the shards this process runs, comma-separated (`0,1`); "
        "needs the shard count. Empty: every shard of the count (or Discord's recommendation).",
    )
    discord_shard_count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SHARD_COUNT,
        description="Gateway bot: how many shards all copies of the bot run together. Set on "
        "every copy; a sharded bot does not register the commands at start.",
    )
    discord_interaction_max_age_seconds: int = Field(
        default=300,
        ge=5,
        le=3600,
        description="HTTP interactions whose signed timestamp is further than this from now "
        "are refused (replay protection).",
    )
    discord_late_interaction_seconds: float = Field(
        default=5.0,
        ge=DISCORD_ANSWER_LIMIT_SECONDS,
        le=900,
        description="An interaction (over the gateway or HTTP) that reaches the service more "
        "than this long after Discord created it (the time in its id) is not run: Discord "
        "takes its first answer for 3 s only, so a late one's effects (an /unlink) would come "
        "unannounced. Discord's 3 s plus 2 for the difference between this host's clock and "
        "Discord's: keep the clock synchronised (NTP).",
    )
    discord_reply_deadline_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description='A command that has neither finished nor answered "thinking…" by then '
        'answers "something went wrong". Keep it well under Discord\'s 3 s (tests set larger '
        "values on a busy machine).",
    )
    discord_defer_after_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description='A command that has not replied by then answers "thinking…" (deferred, '
        "private), and its reply edits that message when it comes. Only when it is below the "
        "reply deadline. Counted from when Discord created the interaction (or from its "
        "arrival, when that comes first).",
    )
    discord_deferred_deadline_seconds: float = Field(
        default=15.0,
        gt=0,
        le=840,
        description='A command that answered "thinking…" and has not finished by then (from '
        "when Discord created the interaction, or from its arrival when that comes first) "
        'edits it to "something went wrong"; never before the reply deadline. At most 14 '
        "minutes: Discord takes edits for 15 from the interaction; with the late-interaction "
        "setting, at most 900 s together.",
    )
    discord_answer_deadline_seconds: float = Field(
        default=2.5,
        gt=0,
        le=30,
        description="HTTP interactions: when no reply went out through Discord's callback by "
        "then (from the request's arrival: its replay check counts), the fallback reply travels "
        "in the HTTP response. Must be above the reply "
        "deadline and, in production, leave a margin for the network before Discord's 3 s.",
    )
    auth_rate_limit_per_minute: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Requests per client address per minute to everything that checks a "
        "password or starts a Discord round trip (sign-in, sign-up, confirming identity, "
        "password and email changes, linking, password reset).",
    )
    api_rate_limit_per_second: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Requests per second each API key may make to `/api/` (0: no limit). "
        "Shared by every instance through Redis.",
    )
    discord_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Timeout for each call to Discord's API."
    )
    session_ttl_days: int = Field(default=14, ge=1, le=365, description="Web session lifetime.")
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a process trusts what it read about an API key: a revoked key "
        "stops working within this time (0: read it on every request).",
    )
    email_linking: EmailLinking = Field(
        default=EmailLinking.VERIFIED,
        description="Sign in with Discord and an existing account with the same email: "
        "`verified` links when both addresses are verified; `confirm` asks the person to prove "
        "the account first (its password, or a link emailed to it); `off` never links by email.",
    )
    discord_signup: bool = Field(
        default=True,
        description="Sign in with Discord may create a new account for someone unknown; "
        "`false`: only existing (linked) accounts sign in with Discord.",
    )
    discord_role_connections: bool = Field(
        default=False,
        description="Discord Linked Roles: `/discord/linked-role` is the application's "
        "verification URL, and each connected user's role connection (linked, days linked) is "
        "kept current. Keeps those users' Discord tokens, encrypted with "
        "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY (required then). `false`: no Discord token is ever "
        "stored.",
    )
    token_encryption_key: SecretStr | None = Field(
        default=None,
        description="Keys that encrypt the Discord tokens kept for Linked Roles (AES-256-GCM): "
        "comma-separated, newest first, each 32 random bytes in URL-safe base64. The first "
        "encrypts; the others only decrypt (key rotation: `taskflow-link tokens rotate`).",
    )
    role_connections_poll_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often a serving process looks for role connections due to be pushed "
        "to Discord (an unlink or password reset wakes it at once: in this process, and on "
        "Postgres in every instance through LISTEN/NOTIFY).",
    )
    email_backend: Literal["outbox", "smtp"] = Field(
        default="outbox",
        description="`smtp` sends through the server below; `outbox` keeps messages in the "
        "process (development and the demo only: nothing is delivered).",
    )
    email_outbox_page: bool = Field(
        default=False,
        description="Show the outbox's messages at `/outbox` (needs the `outbox` backend). "
        "The demo turns it on. Never in production: the page shows everyone's links.",
    )
    email_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How often the email queue is checked. Whatever queues an email (a form, "
        "a bot command, the API) also wakes its own process's worker at once, and on Postgres "
        "every instance's worker is woken through LISTEN/NOTIFY (see below), so there the poll "
        "is only a safety net and can be long.",
    )
    email_listen: bool = Field(
        default=True,
        description="On Postgres, each worker listens for new emails, role changes, "
        "webhooks and Linked Roles made due (LISTEN/NOTIFY on a connection of its own) and "
        "sends them at once, whichever instance queued them. "
        "`false` behind a connection pooler in transaction mode (PgBouncer), where LISTEN "
        "does not work: workers then find other instances' work by polling.",
    )
    email_from: str = Field(
        default="TaskFlow Link <no-reply@localhost>",
        description="The From address of emails: one mailbox, `Name <address>` or the address "
        "alone (quote a name with a comma).",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server host name.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    smtp_tls: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="`starttls` (port 587), `tls` (implicit TLS, port 465) or `none` "
        "(local relays).",
    )
    smtp_username: str | None = Field(
        default=None, description="SMTP user, if the server needs one."
    )
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="SMTP timeout.")
    # Secret like a password: a receiver's URL may carry its token (in the path or query), and
    # an item its own signing secret, so printing the settings must not show it. (`config`
    # shows each URL's origin.)
    webhook_urls: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated URLs that receive signed webhooks (Standard Webhooks: "
        "link.created, link.deleted, account.created). https, or http on this machine "
        "(loopback) only. Each URL may be followed, after a space, by its own signing secret "
        "(and during its rotation, after another space, the one being replaced); the others "
        "are signed with WEBHOOK_SECRET. Empty: no webhooks.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The signing secret of the webhook URLs without one of their own: "
        "`whsec_` + base64 of 24 to 64 random bytes. Required when such a URL is listed.",
    )
    webhook_secret_previous: SecretStr | None = Field(
        default=None,
        description="During a rotation of WEBHOOK_SECRET, the secret being replaced: the "
        "webhooks it signs are signed with both until this is removed.",
    )
    webhook_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=60,
        description="How long a webhook endpoint has to answer; no answer counts as a failure "
        "(retried).",
    )
    webhook_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How often the webhook queue is checked (on Postgres, workers are also "
        "woken through LISTEN/NOTIFY, so there it is a safety net).",
    )
    audit_retention_days: int = Field(
        default=365,
        ge=0,
        le=36_500,
        description="The purge (every PURGE_INTERVAL_SECONDS, and `taskflow-link "
        "purge-expired`) deletes audit events older than this many days; 0 keeps them forever. "
        "Every web instance and gateway bot needs the same: none goes that a running one keeps "
        "longer, and one whose value differs is named in the others' logs.",
    )
    purge_interval_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=7 * 86400,
        description="How often each web instance and gateway bot deletes expired rows (sign-ins "
        "and /link tickets, sessions, emailed links, old emails, webhook deliveries and role "
        "changes, audit events past their retention), as `taskflow-link purge-expired` does; "
        "the first time a minute or so after it starts. Several instances take turns: one "
        "purge at a time, the others skip. 0: never (run `purge-expired` from cron instead).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: one readable line per record; `json`: one JSON object per line "
        "(time, level, logger, message, request_id) for a log collector.",
    )
    metrics: bool = Field(
        default=True,
        description="Serve Prometheus metrics at /metrics (requests by route, links, sign-ins, "
        "tickets, emails, Discord API errors and latency). `false`: no /metrics, nothing counted.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="When set, /metrics answers only `Authorization: Bearer <this token>` "
        "(401 otherwise); unset, only a scrape straight from this machine or a private network "
        "(403 through a proxy or from the internet). At least 16 characters.",
    )
    development: bool = Field(
        default=False,
        description="Allow development settings with a public URL that is not loopback: "
        "plain http, the `outbox` email backend (nothing is delivered) and its page. Never "
        "in production.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _utf8(cls, value: object) -> object:
        """A byte that is not UTF-8 in the environment (Python keeps it as a lone surrogate):
        a secret key holding one was accepted, and `serve` stopped with a UnicodeEncodeError's
        traceback when it first encoded it."""
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("is not UTF-8 text (it holds a byte that is not)") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "must start with postgresql+asyncpg:// or sqlite+aiosqlite:// (async drivers)"
            )
        try:
            parsed = make_url(value)
            port = parsed.port  # read as the driver is given it, not as urllib would
        except Exception:
            raise ValueError("is not a database URL") from None
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(_BAD_PORT)
        if parsed.get_backend_name() == "postgresql":
            _postgres_query(parsed)
        else:
            _sqlite_url(parsed)
        return value

    @field_validator("public_url")
    @classmethod
    def _a_base_for_paths(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        """Every link is this URL with a path added (the /link button, the OAuth redirect
        URI, emailed links): after a query or a fragment, the path is none, and each of them
        opens the home page instead."""
        for part, present in (("query", value.query), ("fragment", value.fragment)):
            if present is not None:
                raise ValueError(
                    f"must have no {part} ('?…' or '#…'): links are built by adding a path "
                    "to it, such as /link/… and /auth/discord/callback"
                )
        # Never the value in the message: it holds a password.
        if value.username is not None or value.password is not None:
            raise ValueError(
                "must have no user name or password ('user:password@'): every link built "
                "from it (emailed, the /link button, the OAuth redirect URI) would carry them"
            )
        # The app serves at the root of its host: its pages, redirects and forms name
        # absolute paths (/account, /signin, /link/…), and its cookies are __Host- cookies,
        # which are for the path / only. Behind a proxy serving it under a prefix, every
        # link built from the URL opened a page whose next step left the prefix.
        if value.path not in (None, "/"):
            raise ValueError(
                "must have no path (such as /taskflow): the app serves at the root of its "
                "host; give it a host name of its own (https://link.example.com)"
            )
        return value

    @field_validator("discord_api_url", "discord_authorize_url", "discord_cdn_url")
    @classmethod
    def _discord_base(cls, value: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        """Paths are added to the API's and the CDN's URLs (/oauth2/token, /avatars/…) and
        the authorize URL gets the service's own query: after a query or a fragment, every
        call, avatar or sign-in with Discord was broken. A user part went to every browser
        (the authorize redirect, the pages' avatars) or with the bot token to that host.
        Each message says what its own setting is used for (the API's URL is no browser's),
        and names the one part found. Never the value in the message: it holds a password."""
        used, added = _DISCORD_URL_USES[str(info.field_name)]
        if value.username is not None or value.password is not None:
            raise ValueError(f"must have no user name or password ('user:password@'): {used}")
        for part, sign, present in (
            ("query", "?", value.query),
            ("fragment", "#", value.fragment),
        ):
            if present is not None:
                raise ValueError(f"must have no {part} ('{sign}…'): {added}")
        # The service adds its calls' paths to the API's URL and hikari speaks version 10 to
        # it: without /api/v10 they reached Discord's site (or its default, retired, version;
        # the emulator's 404), found at the first sign-in. The authorize URL is where browsers
        # are sent with the sign-in's query: without a path, a site's home page.
        path = (value.path or "").rstrip("/")
        if info.field_name == "discord_api_url" and not path.endswith(_DISCORD_API_VERSION):
            raise ValueError(
                f"must end in {_DISCORD_API_VERSION}, the version of Discord's API the service "
                f"speaks (https://discord.com{_DISCORD_API_VERSION}; the emulator's too): {added}"
            )
        if info.field_name == "discord_authorize_url" and not path:
            raise ValueError(
                f"must have a path (Discord's is /oauth2/authorize): {used}, and a site's home "
                "page signs no one in"
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _random_enough(cls, value: SecretStr) -> SecretStr:
        if guessable_key(value.get_secret_value()):
            raise ValueError(
                "looks guessable (too few different characters, or a piece repeated): "
                "it keys CSRF tokens, PKCE verifiers, device cookies and API keys' seals. "
                "Make one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return value

    @field_validator("metrics_token")
    @classmethod
    def _unguessable_token(cls, value: SecretStr | None) -> SecretStr | None:
        """The only thing between anyone and /metrics (which moves when an address gets a
        reset email): `aaaaaaaaaaaaaaaa` was taken."""
        if value is not None and guessable_key(value.get_secret_value()):
            raise ValueError(
                "looks guessable (too few different characters, or a piece repeated): it is "
                f"all that keeps /metrics from anyone. Make one with {_RANDOM_TEXT}"
            )
        return value

    @field_validator("discord_public_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_KEY.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (an Ed25519 public key)")
        return value

    @field_validator("discord_client_id")
    @classmethod
    def _application_id(cls, value: str | None) -> str | None:
        """The application's id, a Discord id: anything else failed every sign-in with
        Discord (Discord refuses the client) and every Linked Roles push, not the start."""
        if value is not None:
            try:
                DiscordId.parse(value)
            except InvalidDiscordId:
                raise ValueError(
                    "must be the application's id, a Discord id (digits, such as "
                    "1100000000000000001): Developer Portal, OAuth2, Client ID"
                ) from None
        return value.strip() if value is not None else None

    @field_validator("discord_command_guilds")
    @classmethod
    def _guild_ids(cls, value: str) -> str:
        for part in value.split(","):
            text = part.strip()
            if text and not (text.isascii() and text.isdecimal() and 0 < int(text) < 2**63):
                raise ValueError("must be empty or comma-separated Discord server (guild) ids")
        return value

    @field_validator("discord_linked_roles")
    @classmethod
    def _linked_roles(cls, value: str) -> str:
        parse_linked_roles(value)
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if "*" in parts and len(parts) > 1:
            # uvicorn's middleware reads a lone "*" only: beside addresses it trusted them alone.
            raise ValueError(
                "'*' trusts every address and stands alone: give either '*' or the proxies' "
                "addresses and networks"
            )
        for text in parts:
            if text == "*":
                continue
            if "%" in text:
                # Python reads fe80::1%eth0, but a network matches an address whatever its
                # zone: the proxy was trusted on every interface, not on the one named.
                raise ValueError(
                    f"{text!r} has an IPv6 zone ('%…'), which is not taken: an address is "
                    "trusted on every interface alike; write it without the zone (fe80::1)"
                )
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not an address or network (e.g. 10.0.0.5, 10.0.0.0/8, *)"
                ) from None
        return value

    @field_validator("token_encryption_key")
    @classmethod
    def _token_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # left blank (as in .env.example): unset
        parse_keys(value.get_secret_value())  # its ValueError never shows a key
        return value

    @model_validator(mode="after")
    def _role_connections_need_a_key(self) -> Settings:
        if self.discord_role_connections and self.token_encryption_key is None:
            raise ValueError(
                "TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS=true keeps Discord tokens, encrypted: set "
                "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY to 32 random bytes in URL-safe base64 (python3 "
                '-c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())")'
            )
        return self

    @property
    def token_keys(self) -> list[bytes]:
        """The token encryption keys, newest first (none when unset)."""
        if self.token_encryption_key is None:
            return []
        return parse_keys(self.token_encryption_key.get_secret_value())

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if value is not None:
            _valid_port(value.get_secret_value())
            _redis_query(value.get_secret_value())
        return value

    @field_validator("email_from")
    @classmethod
    def _one_sender(cls, value: str) -> str:
        problem = sender_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("smtp_host")
    @classmethod
    def _smtp_host_alone(cls, value: str | None) -> str | None:
        """aiosmtplib looks the whole text up as a host name: `mail.example.com:25` or
        `smtp://mail.example.com` failed every email (retried every few seconds, a DNS error in
        the log), not the start."""
        if value is None or not value.strip():
            return value  # blank: unset (see _blank_is_unset)
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(value)
            return value
        try:  # a name beyond ASCII as the resolver is given it (IDNA)
            ascii_name = value.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_name = ""
        if not _HOST_NAME.fullmatch(ascii_name):
            raise ValueError(
                "must be the server's host name or address alone (mail.example.com, "
                "192.0.2.25, 2001:db8::25): no scheme (smtp://), user, path or space, and its "
                "port is TASKFLOW_LINK_SMTP_PORT (TLS: TASKFLOW_LINK_SMTP_TLS)"
            )
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: SecretStr) -> SecretStr:
        # Messages name the item, never the URL (its path may carry a token) or a secret.
        urls = parse_webhook_urls(value.get_secret_value())
        if len(set(urls)) != len(urls):
            raise ValueError("a URL is listed twice")
        return value

    @field_validator(
        "webhook_secret",
        "webhook_secret_previous",
        "discord_client_id",
        "discord_client_secret",
        "discord_bot_token",
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "redis_url",
        "discord_public_key",
        "discord_shard_count",
        "metrics_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``TASKFLOW_LINK_WEBHOOK_SECRET=`` left blank in a .env file (as .env.example
        leaves the secrets): no secret. `config` said "(set)" for a blank Discord secret or
        bot token, and a blank SMTP user name was sent to the server as one. The settings
        .env.example shows commented out and blank (unset by default) mean their default
        uncommented as they stand: blank, they stopped every command."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_bot_token", "discord_client_secret", "metrics_token", mode="before")
    @classmethod
    def _token_as_copied(cls, value: object) -> object:
        """A token read from a file into the variable (a Kubernetes or Docker secret) ends
        with its line break: the bot token failed every call to Discord ("Forbidden control
        character" in its header), the client secret every sign-in with Discord (Discord
        refused the client), and the metrics token every scrape (the header's token, read
        without it, never matched). None of them holds a space or a control character."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        # (A byte that is not UTF-8 is _utf8's to name.)
        if any(char.isspace() or unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("holds a space or a control character, which a token has none of")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_key(value.get_secret_value())
        return value

    @field_validator("webhook_secret_previous")
    @classmethod
    def _webhook_secret_replaced(cls, value: SecretStr | None) -> SecretStr | None:
        """The secret a rotation replaces: its shape only. A guessable one is what a rotation
        is for (refused, it could not be rotated away without a gap at the receivers): said
        at start (``warnings``) until it goes."""
        if value is not None:
            decode_secret(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Settings:
        targets = parse_webhook_targets(self.webhook_urls.get_secret_value())
        without = [str(n) for n, (_, own) in enumerate(targets, start=1) if not own]
        if without and self.webhook_secret is None:
            raise ValueError(
                "TASKFLOW_LINK_WEBHOOK_URLS needs TASKFLOW_LINK_WEBHOOK_SECRET for the URLs "
                f"without a secret of their own (item {', '.join(without)}), or one after each "
                "such URL (whsec_ + base64 of 24 to 64 random bytes, one per URL): "
                + _WEBHOOK_KEY_RECIPE
            )
        if self.webhook_secret_previous is not None and self.webhook_secret is None:
            raise ValueError(
                "TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS is for a rotation: it needs the new "
                "TASKFLOW_LINK_WEBHOOK_SECRET too"
            )
        return self

    @property
    def webhook_url_list(self) -> list[str]:
        return parse_webhook_urls(self.webhook_urls.get_secret_value())

    @property
    def webhook_keys(self) -> list[bytes]:
        """The signing keys of the URLs without their own, the current secret's first."""
        secrets = (self.webhook_secret, self.webhook_secret_previous)
        return [decode_secret(s.get_secret_value()) for s in secrets if s is not None]

    @property
    def webhook_targets(self) -> list[WebhookTarget]:
        """Each webhook URL with the keys it is signed with: its own secrets', else the
        default ones (WEBHOOK_SECRET and, during a rotation, WEBHOOK_SECRET_PREVIOUS)."""
        return [
            WebhookTarget(url, tuple(decode_secret(s) for s in own) or tuple(self.webhook_keys))
            for url, own in parse_webhook_targets(self.webhook_urls.get_secret_value())
        ]

    def _webhooks_sharing_a_secret(self) -> list[list[int]]:
        """Groups of webhook URLs (their item numbers) signed with a secret in common."""
        sharing: dict[bytes, list[int]] = {}
        for number, target in enumerate(self.webhook_targets, start=1):
            for key in dict.fromkeys(target.keys):
                sharing.setdefault(key, []).append(number)
        groups = {tuple(items) for items in sharing.values() if len(items) > 1}
        return [list(items) for items in sorted(groups)]

    @property
    def trusted_proxies(self) -> list[str]:
        return [p.strip() for p in self.forwarded_allow_ips.split(",") if p.strip()]

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_ids(cls, value: str) -> str:
        parse_shard_ids(value)
        return value

    @model_validator(mode="after")
    def _shards_within_count(self) -> Settings:
        problem = shard_problem(parse_shard_ids(self.discord_shard_ids), self.discord_shard_count)
        if problem:
            raise ValueError(
                f"TASKFLOW_LINK_DISCORD_SHARD_IDS and TASKFLOW_LINK_DISCORD_SHARD_COUNT: {problem}"
            )
        return self

    @model_validator(mode="after")
    def _answer_after_reply(self) -> Settings:
        if self.discord_answer_deadline_seconds <= self.discord_reply_deadline_seconds:
            raise ValueError(
                "TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS must be above "
                "TASKFLOW_LINK_DISCORD_REPLY_DEADLINE_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _deferred_within_the_token(self) -> Settings:
        late = self.discord_late_interaction_seconds
        deferred = max(self.discord_deferred_deadline_seconds, self.discord_reply_deadline_seconds)
        if late + deferred > DISCORD_INTERACTION_TOKEN_SECONDS:
            raise ValueError(
                f"TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS ({late:g}) plus "
                f"TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS ({deferred:g}) must stay within "
                f"{DISCORD_INTERACTION_TOKEN_SECONDS} s, the 15 minutes an interaction's token "
                "lives from its creation: a command of an interaction that came that late "
                "would answer (or say that something went wrong) when Discord takes nothing"
            )
        return self

    @model_validator(mode="after")
    def _linked_roles_need_the_bot(self) -> Settings:
        if self.discord_linked_roles.strip() and _blank(self.discord_bot_token):
            raise ValueError(
                "TASKFLOW_LINK_DISCORD_LINKED_ROLES needs TASKFLOW_LINK_DISCORD_BOT_TOKEN: the "
                "bot adds and removes the role"
            )
        return self

    @model_validator(mode="after")
    def _smtp_needs_a_host(self) -> Settings:
        if self.email_backend == "smtp" and _blank(self.smtp_host):
            raise ValueError(
                "TASKFLOW_LINK_EMAIL_BACKEND=smtp needs TASKFLOW_LINK_SMTP_HOST: the server "
                "that sends the emails"
            )
        return self

    @model_validator(mode="after")
    def _smtp_password_needs_a_user(self) -> Settings:
        """aiosmtplib logs in only with a user name: a password alone was never sent, and the
        emails went unauthenticated (refused by a server that wants a login)."""
        if self.smtp_password is not None and _blank(self.smtp_username):
            raise ValueError(
                "TASKFLOW_LINK_SMTP_PASSWORD needs TASKFLOW_LINK_SMTP_USERNAME: without a user "
                "name the password is never sent, and no email is sent logged in"
            )
        return self

    @model_validator(mode="after")
    def _outbox_page_needs_outbox(self) -> Settings:
        if self.email_outbox_page and self.email_backend != "outbox":
            raise ValueError(
                "TASKFLOW_LINK_EMAIL_OUTBOX_PAGE needs TASKFLOW_LINK_EMAIL_BACKEND=outbox"
            )
        return self

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        """Settings that are fine on a laptop and dangerous on the internet are refused there."""
        if (
            self.email_backend == "outbox"
            and not is_loopback(self.public_url.host)
            and not self.development
        ):
            raise ValueError(
                "TASKFLOW_LINK_EMAIL_BACKEND=outbox (the default) delivers no email, and "
                "TASKFLOW_LINK_EMAIL_OUTBOX_PAGE would show everyone's links: they are for "
                "development. With a TASKFLOW_LINK_PUBLIC_URL that is not loopback, set "
                "TASKFLOW_LINK_EMAIL_BACKEND=smtp (and the SMTP settings), or "
                "TASKFLOW_LINK_DEVELOPMENT=true on a development machine."
            )
        if (
            self.public_url.scheme != "https"
            and not is_loopback(self.public_url.host)
            and not self.development
        ):
            raise ValueError(
                "TASKFLOW_LINK_PUBLIC_URL must use https when it is not this machine: over "
                "plain http, passwords, session cookies and Discord's codes travel in clear "
                "(and cookies lose Secure and __Host-, and no HSTS is sent). Put a TLS proxy "
                "in front and name its https URL, or set TASKFLOW_LINK_DEVELOPMENT=true on a "
                "development machine."
            )
        for name in ("discord_api_url", "discord_authorize_url", "discord_cdn_url"):
            url: AnyHttpUrl = getattr(self, name)
            if url.scheme != "https" and not is_loopback(url.host):
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} must use https: plain http is only for a "
                    "stand-in on this machine (a loopback address, such as the emulator)."
                )
        return self

    def _replaced_webhook_secret_warnings(self) -> list[str]:
        """A secret being rotated away that looks guessable (or is published): taken, so the
        receivers go on verifying while they move to the new one, but whoever guesses it can
        sign events they take until the rotation ends. Never the value."""
        where = []
        previous = self.webhook_secret_previous
        if previous is not None and _weak_webhook_key(previous.get_secret_value()):
            where.append(f"{ENV_PREFIX}WEBHOOK_SECRET_PREVIOUS")
        targets = parse_webhook_targets(self.webhook_urls.get_secret_value())
        for number, (_, own) in enumerate(targets, start=1):
            if len(own) > 1 and _weak_webhook_key(own[1]):
                where.append(f"the second secret after item {number} of {ENV_PREFIX}WEBHOOK_URLS")
        return [
            f"{name} looks guessable (or is a published example): events are still signed "
            "with it, so anyone who guesses it can sign events the receivers take until they "
            "stop accepting it; finish the rotation and remove it"
            for name in where
        ]

    def _sender_warnings(self) -> list[str]:
        """The From address left at its default (no-reply@localhost), or another whose domain
        is no domain of the internet, in production: mail servers refuse such a sender or
        file its mail as spam, and reset and confirmation links never arrived."""
        if self.email_backend != "smtp" or is_loopback(self.public_url.host):
            return []
        address = email.utils.parseaddr(self.email_from)[1]
        domain = address.rpartition("@")[2].rstrip(".").lower()
        if "." in domain and not domain.endswith(".localhost"):
            return []
        return [
            f"{ENV_PREFIX}EMAIL_FROM: {address} is not an address of a domain on the internet: "
            "mail servers refuse its mail or file it as spam (password resets and "
            "confirmations never arrive); set it to an address of your domain "
            "('TaskFlow <no-reply@example.com>')"
        ]

    def _smtp_port_warnings(self) -> list[str]:
        """A TLS mode the SMTP port does not speak, by the ports' registered use: implicit TLS
        to 25 or 587 (STARTTLS's) failed every email at the handshake; plain SMTP or STARTTLS
        to 465 (implicit TLS's) waited for a greeting the server never sends, every email until
        the timeout. Allowed (a server may listen where it likes), but said at start."""
        if self.email_backend != "smtp":
            return []
        tls, port = self.smtp_tls, self.smtp_port
        if tls == "tls" and port in {25, 587}:
            why = f"port {port} speaks plain SMTP and STARTTLS, implicit TLS is port 465"
            fix = "SMTP_TLS=starttls, or SMTP_PORT=465"
        elif tls != "tls" and port == IMPLICIT_TLS_SMTP_PORT:
            why = "port 465 speaks implicit TLS only (the server waits for a TLS handshake)"
            fix = "SMTP_TLS=tls, or SMTP_PORT=587"
        else:
            return []
        return [
            f"{ENV_PREFIX}SMTP_TLS={tls} with {ENV_PREFIX}SMTP_PORT={port}: {why}, so every "
            f"email would fail unless this server is set up otherwise; set {ENV_PREFIX}{fix}"
        ]

    def _url_timeout_warnings(self) -> list[str]:
        """Timeouts in the database's or Redis's URL: taken, but what they do is not what the
        settings say (named, never with their values); and TLS to Redis that checks no
        certificate."""
        found = []
        database = make_url(self.database_url)
        if database.get_backend_name() == "postgresql":
            for name in sorted(POSTGRES_IGNORED_TIMEOUTS & set(database.query)):
                found.append(
                    f"{ENV_PREFIX}DATABASE_URL: ?{name}= is not used (the service passes "
                    f"{ENV_PREFIX}DB_CONNECT_TIMEOUT_SECONDS and "
                    f"{ENV_PREFIX}DB_STATEMENT_TIMEOUT_SECONDS over it): drop it, set those"
                )
        if self.redis_url is not None:
            query = urlsplit(self.redis_url.get_secret_value()).query
            for name in sorted({n for n, _ in parse_qsl(query)} & set(REDIS_URL_TIMEOUTS)):
                found.append(
                    f"{ENV_PREFIX}REDIS_URL: ?{name}= wins over what the service sets ("
                    f"{ENV_PREFIX}REDIS_TIMEOUT_SECONDS, no retry after a timeout): a Redis "
                    "that is slow to answer holds requests that long before they count in "
                    "this process's memory"
                )
            found.extend(_redis_tls_warnings(self.redis_url.get_secret_value()))
        return found

    def _discord_deadline_warnings(self) -> list[str]:
        """Deadlines that answer after Discord stopped waiting (3 s from the interaction,
        network included): allowed, as tests on a busy machine raise them, but in production
        a slow command would then get "The application did not respond"."""
        found = []
        defers = self.discord_defer_after_seconds < self.discord_reply_deadline_seconds
        name = "DEFER_AFTER" if defers else "REPLY_DEADLINE"
        first = getattr(self, f"discord_{name.lower()}_seconds")
        if first >= DISCORD_ANSWER_LIMIT_SECONDS:
            found.append(
                f"{ENV_PREFIX}DISCORD_{name}_SECONDS={first:g}: a command slower than "
                f"{DISCORD_ANSWER_LIMIT_SECONDS:g} s gives its first answer"
                + (' ("thinking…")' if defers else "")
                + " after Discord stopped waiting for one (3 s, network included), and the "
                "person sees 'The application did not respond'; keep it well under 3"
            )
        if self.discord_answer_deadline_seconds >= DISCORD_ANSWER_LIMIT_SECONDS:
            found.append(
                f"{ENV_PREFIX}DISCORD_ANSWER_DEADLINE_SECONDS="
                f"{self.discord_answer_deadline_seconds:g}: the fallback answer to an HTTP "
                "interaction no command answered comes after Discord stopped waiting for one "
                "(3 s, network included); keep it well under 3"
            )
        redis = self._redis_call_seconds()
        if redis is not None and first < DISCORD_ANSWER_LIMIT_SECONDS <= redis[0] + first:
            seconds, named = redis
            found.append(
                f"{named}={seconds:g} with {ENV_PREFIX}DISCORD_{name}_SECONDS={first:g}: every "
                "interaction is checked against Redis (its replay guard, or which copy of the "
                "bot runs it) before its command starts, and a Redis that stops answering "
                "holds it that long; its first answer"
                + (' ("thinking…")' if defers else "")
                + " then comes after Discord stopped waiting for one (3 s, network included), "
                "and the person sees 'The application did not respond'; keep the two together "
                "well under 3"
            )
        return found

    def _redis_call_seconds(self) -> tuple[float, str] | None:
        """How long one Redis call may wait for a Redis that does not answer, and the setting
        that says so: a timeout in the URL's query wins over ``redis_timeout_seconds`` (the
        longer of the two it may hold). ``None`` without Redis."""
        if self.redis_url is None:
            return None
        query = dict(parse_qsl(urlsplit(self.redis_url.get_secret_value()).query))
        in_url = []
        for name in ("socket_timeout", "socket_connect_timeout"):
            with contextlib.suppress(KeyError, ValueError):
                in_url.append((float(query[name]), f"{ENV_PREFIX}REDIS_URL's ?{name}"))
        if in_url:
            return max(in_url)
        return self.redis_timeout_seconds, f"{ENV_PREFIX}REDIS_TIMEOUT_SECONDS"

    def warnings(self) -> list[str]:
        """Allowed but worth a line in the log at start."""
        found = []
        for name in ("discord_api_url", "discord_authorize_url"):
            host = getattr(self, name).host or ""
            if host != "discord.com" and not host.endswith(".discord.com"):
                found.append(
                    f"{ENV_PREFIX}{name.upper()} points at {host}, not discord.com: that "
                    "service decides who is who (and its 'verified: true' links accounts by "
                    "email). Right for the emulator, wrong in production."
                )
        found.extend(self._replaced_webhook_secret_warnings())
        weak = [n for n, key in enumerate(self.token_keys, start=1) if not_random(key)]
        if weak:
            found.append(
                f"{ENV_PREFIX}TOKEN_ENCRYPTION_KEY: older key(s) {', '.join(map(str, weak))} "
                "are not random (zeros, a word repeated), and the Discord tokens they sealed "
                "are protected from nobody: run `taskflow-link tokens rotate`, then remove them"
            )
        if self.metrics and self.metrics_token is None and not is_loopback(self.public_url.host):
            found.append(
                "/metrics answers anyone who scrapes it straight from a private network or this "
                "machine (TASKFLOW_LINK_METRICS_TOKEN is unset or blank): set a token (16+ "
                "characters), keep /metrics from the internet at the proxy, or "
                "TASKFLOW_LINK_METRICS=false"
            )
        urls = self.webhook_url_list
        for items in self._webhooks_sharing_a_secret():
            found.append(
                f"{ENV_PREFIX}WEBHOOK_URLS: the URLs of items {', '.join(map(str, items))} ("
                + ", ".join(origin(urls[n - 1]) for n in items)
                + ") are signed with the same secret, so each of their receivers can sign "
                "events the others accept (a made-up link.created, say): give each URL its "
                "own secret, after it in the list"
            )
        if (
            self.email_backend == "smtp"
            and self.smtp_tls == "none"
            and not is_loopback(self.smtp_host)
        ):
            found.append(
                f"TASKFLOW_LINK_SMTP_TLS=none: emails to {self.smtp_host} (their reset and "
                "sign-in links) and the SMTP password travel in clear; use starttls or tls "
                "unless that server is on a network only you can read"
            )
        found.extend(self._smtp_port_warnings())
        found.extend(self._sender_warnings())
        found.extend(self._url_timeout_warnings())
        found.extend(self._discord_deadline_warnings())
        if self.email_backend == "outbox":
            found.append(
                "email backend is the outbox: emails are kept in this process, not delivered"
                + (" (shown at /outbox)" if self.email_outbox_page else "")
            )
        return found

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """What ``repr`` and ``str`` show (a log line, a traceback that prints the settings):
        the secrets are ``SecretStr`` already; the database URL is plain text for the
        driver, so it is shown without its password, as ``config`` shows it."""
        for name, value in super().__repr_args__():
            hidden = name == "database_url" and isinstance(value, str)
            yield name, database_url_without_password(value) if hidden else value

    def shown(self) -> dict[str, str]:
        """Every setting as ``taskflow-link config`` prints it: secrets hidden, and the
        database URL without its password."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                text = "(not set)"
            elif name == "redis_url":
                text = without_password(value.get_secret_value())
            elif name == "webhook_urls":
                # Where webhooks go, not what their paths and queries may carry (tokens).
                text = ", ".join(origin(url) + "/…" for url in self.webhook_url_list)
            elif isinstance(value, SecretStr):
                text = "(set)"
            elif name == "database_url":
                text = database_url_without_password(value)
            else:
                text = str(value)
            shown[ENV_PREFIX + name.upper()] = text
        return shown

    @property
    def command_guild_ids(self) -> tuple[int, ...]:
        """Empty: the commands are global."""
        return tuple(int(p) for p in self.discord_command_guilds.split(",") if p.strip())

    @property
    def linked_roles(self) -> tuple[LinkedRole, ...]:
        """The roles linked members get (empty: none)."""
        return parse_linked_roles(self.discord_linked_roles)

    @property
    def shards(self) -> ShardPlan | None:
        """The gateway bot's shards, or ``None`` when it is not sharded."""
        if self.discord_shard_count is None:
            return None
        ids = parse_shard_ids(self.discord_shard_ids) or tuple(range(self.discord_shard_count))
        return ShardPlan(ids, self.discord_shard_count)

    def require(self, *names: str) -> None:
        """Fail with the variables' names when a command needs settings that are unset, and
        where each value comes from."""
        missing = [n for n in names if _blank(getattr(self, n))]
        if missing:
            listed = ", ".join(ENV_PREFIX + n.upper() for n in missing)
            sources = [_WHERE_FROM[n] for n in missing if n in _WHERE_FROM]
            if any(n.startswith("discord_") for n in missing):
                sources.append(_TRY_WITHOUT_DISCORD)
            said = (
                f"Missing setting(s) needed by this command: {listed}. Set them in the "
                "environment or in a .env file in the working directory (the README's "
                "configuration table says what each is). " + " ".join(sources)
            )
            raise SettingsError(said.strip())


# Where the value of a setting that a command requires comes from, said when it is missing.
_DISCORD_PORTAL = "your application in the Discord Developer Portal"
_WHERE_FROM = {
    "discord_client_id": f"The client id is the Application ID on the General Information page "
    f"of {_DISCORD_PORTAL}.",
    "discord_client_secret": f"The client secret is on the OAuth2 page of {_DISCORD_PORTAL}.",
    "discord_bot_token": f"The bot token is on the Bot page of {_DISCORD_PORTAL} (Reset Token).",
    "discord_public_key": f"The public key is on the General Information page of "
    f"{_DISCORD_PORTAL}.",
    "token_encryption_key": 'Make a token encryption key with python3 -c "import base64, os; '
    'print(base64.urlsafe_b64encode(os.urandom(32)).decode())".',
}
_TRY_WITHOUT_DISCORD = (
    "To try the service without Discord, `taskflow-link demo` runs it with an emulated one."
)


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """The shards one copy of the gateway bot runs (``ids``) out of ``count`` in all."""

    ids: tuple[int, ...]
    count: int

    def __str__(self) -> str:
        listed = ", ".join(map(str, self.ids))
        return f"shard{'s' if len(self.ids) > 1 else ''} {listed} of {self.count}"


def parse_shard_ids(text: str) -> tuple[int, ...]:
    """``"0,1"`` as ``(0, 1)``; empty text gives ``()``. Raises ``ValueError`` saying what is
    wrong: a part that is not a shard number, or a shard listed twice."""
    if not text.strip():
        return ()
    ids: list[int] = []
    for part in text.split(","):
        item = part.strip()
        if not (item.isascii() and item.isdecimal()):
            raise ValueError(
                f"{item!r} is not a shard number: give comma-separated numbers such as 0,1"
                if item
                else "an empty item: give comma-separated numbers such as 0,1"
            )
        if int(item) in ids:
            raise ValueError(f"shard {int(item)} is listed twice")
        ids.append(int(item))
    return tuple(ids)


def parse_linked_roles(text: str) -> tuple[LinkedRole, ...]:
    """``"1:2,3:4"`` as ``(LinkedRole(1, 2), LinkedRole(3, 4))``; empty text gives ``()``.
    Raises ``ValueError`` saying which item is wrong and how."""
    roles: list[LinkedRole] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            if text.strip():
                raise ValueError("an empty item: give server_id:role_id pairs separated by commas")
            continue
        guild, colon, role = (half.strip() for half in item.partition(":"))
        try:
            if not colon:
                raise InvalidDiscordId(item)
            pair = LinkedRole(DiscordId.parse(guild), DiscordId.parse(role))
        except InvalidDiscordId:
            shown = item if len(item) <= 45 else item[:42] + "..."
            raise ValueError(
                f"{shown!r} is not server_id:role_id (two Discord ids, such as "
                "1300000000000000001:1300000000000000099)"
            ) from None
        if pair.role_id == pair.guild_id:
            raise ValueError(
                f"{item!r} names the server's @everyone role (its id is the server's): every "
                "member has it and nobody can give it; name the role for linked members"
            )
        if pair in roles:
            raise ValueError(f"{item!r} is listed twice")
        roles.append(pair)
    return tuple(roles)


def shard_problem(ids: tuple[int, ...], count: int | None) -> str | None:
    """What is wrong with running shards ``ids`` out of ``count``, or ``None``."""
    if count is None:
        return (
            "the shard ids need the shard count (how many shards all copies run)" if ids else None
        )
    if count < 1:
        return "the shard count is at least 1"
    outside = [i for i in ids if i >= count]
    if outside:
        return (
            f"shard {outside[0]} does not exist with {count} shard{'s' if count > 1 else ''}: "
            f"shard ids run from 0 to {count - 1}"
        )
    return None


def guessable_key(key: str | bytes) -> bool:
    """A key no random generator would make: fewer than 8 different characters (or bytes),
    one in more than a third of it, or a piece of 8 that comes twice ("changeme" * 4,
    "taskflow" * 4 + "-2024", 32 zero bytes). ``secrets.token_urlsafe``, ``token_bytes`` and
    ``openssl rand -hex`` pass (a random 32-digit hex key fails once in about 30,000 draws);
    so does a passphrase of a few words. (No dictionary: zxcvbn's would cost every process
    14 MB.) Shorter than 32 (a metrics token may have 16), the bars are lower, since random
    ones have fewer different characters: a quarter of its length different, none in more
    than half of it (16 random digits held fewer than 8 different once in 4 draws)."""
    counts = Counter(key)
    short = len(key) < 32
    different, share = (len(key) // 4, 2) if short else (8, 3)
    if len(counts) < different or max(counts.values()) * share > len(key):
        return True
    pieces = [key[i : i + 8] for i in range(len(key) - 7)]
    return len(set(pieces)) < len(pieces)


# Webhook secrets printed where anyone reads them (the README's receiver example, which is
# Standard Webhooks' own): a receiver keyed with one takes link events anyone can sign.
_PUBLISHED_WEBHOOK_KEYS = frozenset({decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")})
_WEBHOOK_KEY_RECIPE = (
    "python3 -c 'import base64, secrets; "
    'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
)


def _weak_webhook_key(text: str) -> bool:
    try:
        webhook_key(text)
    except ValueError:
        return True
    return False


def webhook_key(text: str) -> bytes:
    """The key of a ``whsec_…`` secret (``decode_secret``), refused (``ValueError``, never
    the value) when it looks guessable or is a published example: whoever guesses it signs
    events the receivers take for ours."""
    key = decode_secret(text)
    if guessable_key(key) or key in _PUBLISHED_WEBHOOK_KEYS:
        raise ValueError(
            "looks guessable (too few different bytes, or a piece repeated) or is a published "
            "example: anyone who knows it can sign link events the receivers would take. "
            f"Make one with {_WEBHOOK_KEY_RECIPE}"
        )
    return key


def sender_problem(text: str) -> str | None:
    """What keeps ``text`` from being one From mailbox (``Name <address>``, or the address
    alone), as the email it goes into reads it; ``None`` when it is one. The envelope's sender
    is the first address of the From line: a comma in an unquoted name made it the name's
    first word, and the From line two mailboxes, which mail servers refuse or file as spam."""
    if "\r" in text or "\n" in text:
        return "holds a line break: one line, as 'TaskFlow <no-reply@example.com>'"
    try:
        header = email.policy.default.header_factory("From", text)
        addresses = getattr(header, "addresses", ())
    except (ValueError, IndexError, email.errors.HeaderParseError):
        addresses = ()
    if len(addresses) > 1:
        return (
            f"names {len(addresses)} addresses: one, as 'TaskFlow <no-reply@example.com>' "
            "(quote a name with a comma: '\"TaskFlow, Inc.\" <no-reply@example.com>')"
        )
    # As the parser read them: a quoted local part may hold an "@" ('"Name <a@b>"', the
    # whole value in quotes, as `docker run --env-file` passes a quoted line) with no domain.
    if not addresses or not addresses[0].username or not addresses[0].domain:
        if len(text) > 1 and text[0] == text[-1] == '"':
            return (
                "has no address, only one quoted string (a .env line's quotes, which "
                "`docker run --env-file` keeps?): write it without the outer quotes"
            )
        return "has no address: one, as 'TaskFlow <no-reply@example.com>'"
    return None


def parse_webhook_urls(text: str) -> list[str]:
    """The webhook URLs (without their own secrets); see ``parse_webhook_targets``."""
    return [url for url, _ in parse_webhook_targets(text)]


# A URL's own secrets: the current one, and during its rotation the one being replaced.
MAX_OWN_WEBHOOK_SECRETS = 2
# What the outbox keeps of an endpoint for people (webhook_deliveries.host, host[:port]): a
# longer one would fail every link and unlink on Postgres.
MAX_WEBHOOK_HOST = 255


def parse_webhook_targets(text: str) -> list[tuple[str, list[str]]]:
    """The comma-separated webhook endpoints, each a URL and, after spaces, its own secrets
    (none: it is signed with the default ones). ``ValueError`` naming the item (by position)
    whose URL is not an absolute http(s) URL, is plain http to another machine, is read with
    another host or port (or refused) by yarl, as the sender reads it, or has a host and port
    longer than the outbox keeps (255 characters), or whose secrets are not ``whsec_``
    secrets; never the URL or a secret."""
    targets: list[tuple[str, list[str]]] = []
    for number, part in enumerate(text.split(","), start=1):
        if not part.strip():
            if text.strip():
                raise ValueError(f"item {number} is empty")
            continue
        url, *own = part.split()
        if len(own) > MAX_OWN_WEBHOOK_SECRETS:
            raise ValueError(
                f"item {number} has more than a URL and two secrets (its own, then during a "
                "rotation the one being replaced)"
            )
        for position, secret in enumerate(own):
            try:
                # The second is the one a rotation replaces: its shape only (see
                # _webhook_secret_replaced).
                (decode_secret if position else webhook_key)(secret)
            except ValueError as exc:
                raise ValueError(f"item {number}: the secret after the URL {exc}") from None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError:
            raise ValueError(f"item {number} is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError(f"item {number} is not an absolute http(s) URL without a #fragment")
        if parts.scheme != "https" and not is_loopback(parts.hostname):
            raise ValueError(
                f"item {number} must use https: plain http is only for a receiver on this "
                "machine (a loopback address)"
            )
        # The sender reads the URL with yarl, which may read another host or port than
        # urllib (whose reading the checks above went by) or refuse the URL (a '\' in its
        # authority): every attempt would fail, or go elsewhere than these checks allowed.
        try:
            sent = URL(url, encoded=True)
            same = (sent.raw_host or "").lower() == parts.hostname and (
                sent.explicit_port == parts.port
            )
        except (ValueError, UnicodeError):
            same = False
        if not same:
            raise ValueError(
                f"item {number} is not a URL the sender reads as these checks do: write its "
                "host and port plainly (no '\\' before them)"
            )
        if len(endpoint_for(url).host) > MAX_WEBHOOK_HOST:
            raise ValueError(
                f"item {number} has a host (with its port) longer than {MAX_WEBHOOK_HOST} "
                "characters"
            )
        targets.append((url, own))
    return targets


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (never its user, password, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


# Query parameters that carry a secret in the URLs we are given (redis-py and asyncpg take
# the password there too: ``?password=``, ``?sslpassword=``).
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)


_BAD_PORT = "has a port that is not a number from 0 to 65535"


# The query parameters of a Postgres URL that asyncpg takes as text (each is passed to
# ``asyncpg.connect`` as a keyword argument, as the name says), and SQLAlchemy's own
# ``prepared_statement_cache_size`` (its engine's cache of statements per connection, which it
# reads as a number: 0 turns it off, as for PgBouncer). Any other name stopped every command
# with a traceback at its first connection (libpq's ``sslmode``, say), or was given as text
# where asyncpg wants a number or a flag; the timeouts are settings of their own.
POSTGRES_URL_PARAMETERS = frozenset(
    {
        "prepared_statement_cache_size",
        "ssl",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "passfile",
        "service",
        "servicefile",
        "host",
        "port",
        "user",
        "password",
        "database",
    }
)


# asyncpg's own timeouts in a URL's query: taken (they started before), but never used, the
# engine passes its settings over them (a warning at start says so). libpq's connect_timeout
# is not asyncpg's: it stopped every command at its first connection.
POSTGRES_IGNORED_TIMEOUTS = frozenset({"timeout", "command_timeout"})
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The values asyncpg documents for these (checked when it connects: a ClientConfigurationError
# at every connection, after `config` had shown the URL).
_POSTGRES_CHOICES = {
    "target_session_attrs": (
        "any",
        "primary",
        "standby",
        "prefer-standby",
        "read-write",
        "read-only",
    ),
    "gsslib": ("gssapi", "sspi"),
}


def _postgres_query(url: SqlUrl) -> None:
    """``ValueError`` naming the first query parameter of a Postgres URL asyncpg does not
    take as text (never a value: ``?password=`` is one of them), or saying that the hosts and
    ports the query names cannot be read."""
    for name in url.query:
        if name in POSTGRES_URL_PARAMETERS or name in POSTGRES_IGNORED_TIMEOUTS:
            continue
        if name == "sslmode":
            raise ValueError(
                "has ?sslmode=, libpq's name, which asyncpg does not take: write ?ssl= "
                "(ssl=require, verify-full, ...)"
            )
        if name == "connect_timeout":
            raise ValueError(
                "has ?connect_timeout=, libpq's name, which asyncpg does not take: set "
                "TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS instead"
            )
        shown = name if len(name) <= 40 and name.isprintable() else name[:37] + "..."
        raise ValueError(
            f"has a query parameter asyncpg does not take: {shown!r} (it takes "
            + ", ".join(sorted(POSTGRES_URL_PARAMETERS))
            + ")"
        )
    _postgres_values(url)
    # asyncpg reads ?ssl= by its TLS modes only (ssl=true failed every connection).
    ssl = url.query.get("ssl")
    if ssl is not None and (not isinstance(ssl, str) or ssl.replace("_", "-") not in _SSL_MODES):
        raise ValueError(
            "has an ?ssl= that asyncpg does not take (give it once, one of "
            + ", ".join(_SSL_MODES)
            + "; ssl=require for TLS)"
        )
    cache = url.query.get("prepared_statement_cache_size")
    if cache is not None and not (isinstance(cache, str) and cache.isascii() and cache.isdigit()):
        raise ValueError(
            "has a prepared_statement_cache_size that is not a number of statements (0 or more)"
        )
    try:  # the hosts and ports of the query (a Unix socket's directory, several servers)
        _, args = asyncpg_dialect().create_connect_args(url)  # type: ignore[no-untyped-call]
    except (ArgumentError, ValueError):
        raise ValueError(
            "has hosts or ports in its query that cannot be read: one host=…&port=…, or "
            "host=h1:p1&host=h2:p2, or host=h1,h2&port=p1,p2"
        ) from None
    ports = args.get("port")
    for port in ports if isinstance(ports, list) else [ports]:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(_BAD_PORT)


def _postgres_values(url: SqlUrl) -> None:
    """``ValueError`` naming a query parameter asyncpg would refuse at every connection: a
    ``target_session_attrs`` or ``gsslib`` it does not take, or one given more than once
    (SQLAlchemy then passes a tuple where asyncpg wants text). Never shows a value."""
    for name, choices in _POSTGRES_CHOICES.items():
        value = url.query.get(name)
        if value is not None and (not isinstance(value, str) or value not in choices):
            raise ValueError(
                f"has a ?{name}= that asyncpg does not take (give it once, one of "
                + ", ".join(choices)
                + ")"
            )
    # The hosts and ports (which may be several), ?ssl= and the statement cache are said by
    # _postgres_query, with what they take.
    said_there = {"host", "port", "ssl", "prepared_statement_cache_size"}
    for name, value in url.query.items():
        if not isinstance(value, str) and name in POSTGRES_URL_PARAMETERS - said_there:
            raise ValueError(f"has ?{name}= more than once (give it once)")


# The parameters of a SQLite URL whose values SQLAlchemy converts for the driver.
_SQLITE_TYPED_PARAMETERS = ("timeout", "detect_types", "check_same_thread", "cached_statements")


def _sqlite_url(url: SqlUrl) -> None:
    """``ValueError`` for a SQLite URL SQLAlchemy cannot read: a host, user or port (SQLite
    opens a file), or a value of one of its typed parameters that is not one (or given
    twice). Each stopped every command at its first connection with a traceback. Never shows
    a value."""
    if not _sqlite_readable(url):
        if url.host or url.username or url.port:
            raise ValueError(
                "is not a SQLite URL: a file has no host, user or port "
                "(sqlite+aiosqlite:///relative/file.db, sqlite+aiosqlite:////absolute/file.db)"
            )
        for name in _SQLITE_TYPED_PARAMETERS:
            if name in url.query and not _sqlite_readable(url.set(query={name: url.query[name]})):
                wanted = "true or false" if name == "check_same_thread" else "a number"
                raise ValueError(
                    f"has a ?{name}= whose value the SQLite driver cannot read (give it once, "
                    f"{wanted})"
                )
        raise ValueError("is not a SQLite URL the SQLite driver can read")


def _sqlite_readable(url: SqlUrl) -> bool:
    with warnings.catch_warnings():
        # A parameter the driver does not take: SQLAlchemy says so when it connects (a
        # SAWarning). Only that is silenced here: a deprecation of the dialect's is not.
        warnings.simplefilter("ignore", SAWarning)
        try:
            aiosqlite_dialect().create_connect_args(url)
        except (ArgumentError, ValueError, TypeError):  # TypeError: a parameter given twice
            return False
    return True


# Taken in a Redis URL (they started before), and used: redis-py lets the URL's values win over
# TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS and the service's choice not to retry a call that timed
# out (a warning at start says so).
REDIS_URL_TIMEOUTS = ("socket_timeout", "socket_connect_timeout", "retry_on_timeout")


# The query parameters of a Redis URL this service takes (redis-py gives each to its
# connections by name): the database, TLS and who connects. Any other stopped `serve` at start
# with a traceback (a name the connection does not take, as 'foo', or a value that is not a
# number where one is wanted), or changed what other settings say (the timeouts are
# TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS).
REDIS_URL_PARAMETERS = frozenset(
    {
        "db",
        # How the connections talk and are kept, none what the other settings say: RESP3, a
        # PING before using a connection idle that long (this service's default: 30 s), TCP
        # keep-alives, and a cap on the connections (past it, a call falls back to memory).
        "protocol",
        "health_check_interval",
        "socket_keepalive",
        "max_connections",
        "username",
        "password",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
        "socket_read_size",
        *REDIS_URL_TIMEOUTS,
    }
)


def _redis_query(url: str) -> None:
    """``ValueError`` naming the first query parameter of a Redis URL this service does not
    take, or whose value redis-py cannot read (never the value)."""
    for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name not in REDIS_URL_PARAMETERS:
            shown = name if len(name) <= 40 and name.isprintable() else name[:37] + "..."
            raise ValueError(
                f"has a query parameter this service does not take: {shown!r} (it takes "
                + ", ".join(sorted(REDIS_URL_PARAMETERS))
                + "; the timeouts are TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS)"
            )
    from redis.asyncio.connection import parse_url  # noqa: PLC0415 - only with Redis

    try:
        parsed = parse_url(url)
    except ValueError as exc:
        named = re.search(r"'(\w+)'", str(exc))
        raise ValueError(
            "has a query parameter whose value redis-py cannot read"
            + (f": {named[1]!r}" if named else "")
        ) from None
    parts = urlsplit(url)
    # redis-py reads a path that is not a number as no database at all (database 0): two
    # deployments at redis://cache/staging and redis://cache/production shared one.
    path = unquote(parts.path).replace("/", "")
    if parts.scheme != "unix" and path and not (path.isascii() and path.isdecimal()):
        raise ValueError(
            "has a path that is not a database number (redis://cache:6379/2): redis-py "
            "would use database 0"
        )
    if int(parsed.get("db", 0)) < 0:
        raise ValueError("has a database number below 0")
    # What redis-py checks only when it makes a connection: at start (a traceback, for
    # ?max_connections=-1) or on every call (?protocol=9: "unreachable" for good).
    if not _redis_can_use(url):
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if not _redis_can_use(urlunsplit(parts._replace(query=urlencode([(name, value)])))):
                raise ValueError(f"has a query parameter whose value redis-py cannot use: {name!r}")
        raise ValueError("is not a URL redis-py can use")
    if parts.scheme == "rediss":
        _redis_tls_files(parsed)


def _redis_tls_warnings(url: str) -> list[str]:
    """A ``rediss://`` URL whose TLS checks no certificate, or not its name (never its
    values): whoever is on the way to Redis can pass for it."""
    if urlsplit(url).scheme != "rediss":
        return []
    from redis.asyncio.connection import parse_url  # noqa: PLC0415 - only with Redis

    parsed = parse_url(url)
    unchecked = [
        f"?{name}={value}"
        for name, value, weak in (
            ("ssl_cert_reqs", "none", parsed.get("ssl_cert_reqs") == "none"),
            ("ssl_check_hostname", "false", parsed.get("ssl_check_hostname") is False),
        )
        if weak
    ]
    if not unchecked:
        return []
    return [
        f"{ENV_PREFIX}REDIS_URL: {' and '.join(unchecked)}: TLS that does not check Redis' "
        "certificate (or the name in it), so whoever is on the way to Redis can pass for it, "
        "read its password and answer for the rate limits, sign-in throttles and replay guard; "
        "give it ssl_ca_certs instead, unless that network is only yours"
    ]


def _redis_tls_files(parsed: Mapping[str, object]) -> None:
    """``ValueError`` naming the first TLS file of a ``rediss://`` URL that cannot be read or
    used (the file's name, never the password). redis-py reads them only when it connects:
    a CA file, certificate or key that was not there showed only as "unreachable" in /readyz
    and a log line per call, every instance in its own memory."""

    def named(value: object) -> str | None:
        return value if isinstance(value, str) and value else None

    def readable(parameter: str, path: str) -> None:
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ValueError(f"its {parameter} file {path!r} cannot be read ({reason})") from None

    ca_certs = named(parsed.get("ssl_ca_certs"))
    certfile = named(parsed.get("ssl_certfile"))
    keyfile = named(parsed.get("ssl_keyfile"))
    ca_path = named(parsed.get("ssl_ca_path"))
    for parameter, path in (
        ("ssl_ca_certs", ca_certs),
        ("ssl_certfile", certfile),
        ("ssl_keyfile", keyfile),
    ):
        if path is not None:
            readable(parameter, path)
    if ca_path is not None and not (
        os.path.isdir(ca_path) and os.access(ca_path, os.R_OK | os.X_OK)
    ):
        raise ValueError(f"its ssl_ca_path folder {ca_path!r} is not a folder that can be read")
    for parameter, path in (("ssl_ca_certs", ca_certs), ("ssl_certfile", certfile)):
        if path is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=path)
            except (ssl.SSLError, OSError):
                raise ValueError(
                    f"its {parameter} file {path!r} holds no certificate in PEM"
                ) from None
    if certfile is not None:
        password = named(parsed.get("ssl_password"))
        try:
            ssl.create_default_context().load_cert_chain(certfile, keyfile, password)
        except (ssl.SSLError, OSError):
            shown = "ssl_keyfile" if keyfile is not None else "ssl_certfile"
            raise ValueError(
                f"its {shown} file {keyfile or certfile!r} holds no key of the ssl_certfile's "
                "certificate in PEM (or ssl_password does not open it)"
            ) from None


def _redis_can_use(url: str) -> bool:
    """Whether redis-py makes a connection of the URL (connecting to nothing)."""
    from redis.asyncio import ConnectionPool  # noqa: PLC0415 - only with Redis
    from redis.exceptions import RedisError  # noqa: PLC0415

    try:
        ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, RedisError):
        return False
    return True


def _valid_port(url: str) -> None:
    try:
        urlsplit(url).port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        raise ValueError(_BAD_PORT) from None


def without_password(url: str) -> str:
    """The URL with its password (if any) shown as ``***``, in the user part or in a query
    parameter named like a secret. Any URL, a malformed one too (a port out of range).

    The user part is read as urllib reads it (redis-py and the HTTP clients do), and more
    widely still: everything from the first ``:`` after ``//`` up to the last ``@`` before the
    query is hidden, so a password holding ``/`` or ``#`` (which urllib reads as the end of
    the host) is not shown either. For a database URL, see ``database_url_without_password``."""
    head, question, tail = url.partition("?")
    scheme, slashes, rest = head.partition("//")
    user_part, at, host_part = rest.rpartition("@")
    if at and ":" in user_part:
        url = f"{scheme}{slashes}{user_part.partition(':')[0]}:***@{host_part}{question}{tail}"
    # The query by hand: urllib's urlunsplit would also rewrite what it does not need to (an
    # empty host: sqlite:///x.db became sqlite:/x.db).
    base, question, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_SECRET_PARAMETER.search(name) for name, _ in pairs):
        return url
    hidden = [(k, "***" if _SECRET_PARAMETER.search(k) else v) for k, v in pairs]
    return f"{base}{question}{urlencode(hidden, safe='*')}{hash_mark}{fragment}"


def database_url_without_password(url: str) -> str:
    """A database URL without its password, read as SQLAlchemy reads it (what the driver is
    given): ``user:1234/pw@host`` is user ``user``, password ``1234/pw``, where urllib reads
    ``1234`` as a port and shows the rest. A URL SQLAlchemy cannot read shows its scheme only."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _scheme_only(url)
    if parsed.password is not None:
        url = parsed.render_as_string(hide_password=True)
    return without_password(url)  # and the query's secrets (asyncpg takes ?password=)


def _scheme_only(url: str) -> str:
    scheme, slashes, _ = url.partition("://")
    if slashes and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return f"{scheme}://(not shown: not a URL that can be read)"
    return "(not shown: not a URL that can be read)"


def _blank(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is None or (isinstance(value, str) and not value.strip())


# The test suite's own variables (which container images to start, and the like): they
# share the prefix, but are no setting of the service.
_TEST_VARIABLES = ENV_PREFIX + "TEST_"
# How much of an unknown name is shown: up to its first character no setting's name has (a
# line of a .env file such as TASKFLOW_LINK_SMTP_PASSWORD:hunter2=… is read as a name holding
# the password), and at most this long.
_SHOWN_NAME = re.compile(r"[A-Za-z0-9_]{1,80}")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """What to warn about at start: each ``TASKFLOW_LINK_*`` variable of the environment and
    of the ``.env`` file in the working directory that is no setting (a misspelling, such as
    ``TASKFLOW_LINK_DATABSE_URL``, is otherwise ignored without a word, and the setting it
    meant keeps its default), with the setting it most looks like. Names only, never a value:
    it may be a secret. Names are matched without regard to case, as the settings are read."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    found: dict[str, list[str]] = {}
    for where, names in (
        ("in the environment", (os.environ if environ is None else environ).keys()),
        ("in the .env file", _dotenv_names()),
    ):
        for name in names:
            upper = name.upper()
            ours = upper.startswith(ENV_PREFIX) and not upper.startswith(_TEST_VARIABLES)
            if ours and upper not in known:
                found.setdefault(upper, []).append(where)
    warnings = []
    for name, places in sorted(found.items()):
        shown = _SHOWN_NAME.match(name)
        text = shown.group() if shown else ENV_PREFIX
        where = " and ".join(places)
        if text != name:
            where = f"a name going on with a character no setting's name has, {where}"
        import difflib  # noqa: PLC0415 - only when a variable is no setting (rare)

        guess = difflib.get_close_matches(
            text.removeprefix(ENV_PREFIX),
            [k.removeprefix(ENV_PREFIX) for k in sorted(known)],
            n=1,
            cutoff=0.75,
        )
        hint = (
            f"did you mean {ENV_PREFIX}{guess[0]}?"
            if guess
            else "see the README's configuration table for the settings there are"
        )
        ellipsis = "…" if text != name else ""
        warnings.append(
            f"{text}{ellipsis} ({where}) is not a setting of taskflow-link and is ignored: {hint}"
        )
    return warnings


def _dotenv_names() -> list[str]:
    """The names the ``.env`` file in the working directory sets, as the settings read them
    (pydantic-settings' own reader); none when it cannot be read, which ``load_settings``
    says. python-dotenv's warning about a line it cannot parse is left to that reading."""
    parser_log = logging.getLogger("dotenv.main")
    was_disabled, parser_log.disabled = parser_log.disabled, True
    try:
        return list(DotEnvSettingsSource(Settings).env_vars)
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    finally:
        parser_log.disabled = was_disabled


def load_settings(**overrides: Any) -> Settings:
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    # pydantic-settings skips one that is not a file without a word; Docker makes a directory
    # of a bind mount's missing source (`-v ./.env:…` before the file was written).
    if (
        isinstance(env_file, str | os.PathLike)
        and os.path.exists(env_file)
        and not os.path.isfile(env_file)
    ):
        what = "a directory" if os.path.isdir(env_file) else "not a regular file"
        raise SettingsError(
            f"The .env in the working directory is not a file ({what}): its settings would "
            "be ignored. Make it the file of settings, or remove it"
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except UnicodeDecodeError as exc:  # the .env file, read as UTF-8
        raise SettingsError(
            f"The .env file in the working directory is not UTF-8 text (byte {exc.start} is "
            "not): save it as UTF-8"
        ) from None
    except OSError as exc:  # the .env file, unreadable
        raise SettingsError(
            f"Cannot read the .env file in the working directory: {exc.strerror or exc}"
        ) from None


# How to make a value for the settings that want random characters (as the README says).
_RANDOM_TEXT = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
_HOW_TO_MAKE = {"secret_key": _RANDOM_TEXT, "metrics_token": _RANDOM_TEXT}


def _describe(exc: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for error in exc.errors():
        reason = _reason(error)
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"  {reason}")
            continue
        name = ENV_PREFIX + ".".join(str(part) for part in error["loc"]).upper()
        # Never echo the offending value: it may be a secret.
        lines.append(f"  {name}: {reason}")
    return "\n".join(lines)


def _reason(error: Mapping[str, Any]) -> str:
    """What is wrong with one setting, in words about text where the setting is text: pydantic
    counts a secret's length in "items" ("at least 32 items after validation, not 0")."""
    field = str(error["loc"][0]) if error["loc"] else ""
    how = f"; make one with {_HOW_TO_MAKE[field]}" if field in _HOW_TO_MAKE else ""
    if error["type"] == "missing":
        return f"is required but not set{how}"
    if error["type"] in {"too_short", "string_too_short"} and isinstance(error["input"], str):
        # The value's own length is not shown: it tells something about a secret.
        wanted = error.get("ctx", {}).get("min_length")
        empty = "is empty" if not error["input"] else "is too short"
        return f"{empty}: it needs at least {wanted} characters{how}"
    return str(error["msg"]).removeprefix("Value error, ")  # pydantic's prefix for our own rules
