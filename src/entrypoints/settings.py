"""Configuration from ``TASKFLOW_LINK_*`` environment variables (and a ``.env`` file).

Nothing is read at import time: ``load_settings()`` is called by the command being run.
A missing or invalid setting stops start-up with ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from domain.model import EmailLinking

ENV_PREFIX = "TASKFLOW_LINK_"
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class SettingsError(Exception):
    """Start-up configuration problem; the message names every offending variable."""


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
    db_pool_size: int = Field(default=10, ge=1, le=200, description="Postgres pool size.")
    db_max_overflow: int = Field(default=10, ge=0, le=200, description="Extra connections.")
    db_pool_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for a pooled connection."
    )
    public_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="URL people reach the web app at; links and the OAuth redirect URI use it.",
    )
    secret_key: SecretStr = Field(
        min_length=32,
        description="At least 32 random characters; signs CSRF tokens. Required.",
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
    discord_interaction_max_age_seconds: int = Field(
        default=300,
        ge=5,
        le=3600,
        description="HTTP interactions whose signed timestamp is further than this from now "
        "are refused (replay protection).",
    )
    discord_reply_deadline_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description='A command that has not finished by then answers "something went wrong". '
        "Keep it well under Discord's 3 s (tests set larger values on a busy machine).",
    )
    discord_defer_after_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="HTTP interactions: a command that has not replied by then is answered "
        '"thinking…" (deferred, private), and its reply edits that message when it comes.',
    )
    discord_answer_deadline_seconds: float = Field(
        default=2.5,
        gt=0,
        le=30,
        description="HTTP interactions: when no reply went out through Discord's callback by "
        "then, the fallback reply travels in the HTTP response. Must be above the reply "
        "deadline and, in production, leave a margin for the network before Discord's 3 s.",
    )
    auth_rate_limit_per_minute: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Sign-in, sign-up and Discord sign-in starts allowed per client per minute.",
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
        description="How often the email queue is checked. Forms that queue an email also "
        "wake their own process's worker at once, and on Postgres every instance's worker is "
        "woken through LISTEN/NOTIFY (see below), so there the poll is only a safety net and "
        "can be long.",
    )
    email_listen: bool = Field(
        default=True,
        description="On Postgres, each worker listens for new emails (LISTEN/NOTIFY on a "
        "connection of its own) and sends them at once, whichever instance queued them. "
        "`false` behind a connection pooler in transaction mode (PgBouncer), where LISTEN "
        "does not work: workers then find other instances' emails by polling.",
    )
    email_from: str = Field(
        default="TaskFlow Link <no-reply@localhost>", description="The From address of emails."
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    development: bool = Field(
        default=False,
        description="Allow development settings with a public URL that is not loopback: the "
        "`outbox` email backend (nothing is delivered) and its page. Never in production.",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "must start with postgresql+asyncpg:// or sqlite+aiosqlite:// (async drivers)"
            )
        try:
            make_url(value)
        except Exception:
            raise ValueError("is not a database URL") from None
        return value

    @field_validator("discord_public_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_KEY.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (an Ed25519 public key)")
        return value

    @field_validator("discord_command_guilds")
    @classmethod
    def _guild_ids(cls, value: str) -> str:
        for part in value.split(","):
            text = part.strip()
            if text and not (text.isascii() and text.isdecimal() and 0 < int(text) < 2**63):
                raise ValueError("must be empty or comma-separated Discord server (guild) ids")
        return value

    @model_validator(mode="after")
    def _answer_after_reply(self) -> Settings:
        if self.discord_answer_deadline_seconds <= self.discord_reply_deadline_seconds:
            raise ValueError(
                "TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS must be above "
                "TASKFLOW_LINK_DISCORD_REPLY_DEADLINE_SECONDS"
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
            and not _loopback(self.public_url.host)
            and not self.development
        ):
            raise ValueError(
                "TASKFLOW_LINK_EMAIL_BACKEND=outbox (the default) delivers no email, and "
                "TASKFLOW_LINK_EMAIL_OUTBOX_PAGE would show everyone's links: they are for "
                "development. With a TASKFLOW_LINK_PUBLIC_URL that is not loopback, set "
                "TASKFLOW_LINK_EMAIL_BACKEND=smtp (and the SMTP settings), or "
                "TASKFLOW_LINK_DEVELOPMENT=true on a development machine."
            )
        for name in ("discord_api_url", "discord_authorize_url"):
            url: AnyHttpUrl = getattr(self, name)
            if url.scheme != "https" and not _loopback(url.host):
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} must use https: plain http is only for a "
                    "stand-in on this machine (a loopback address, such as the emulator)."
                )
        return self

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
        if self.email_backend == "outbox":
            found.append(
                "email backend is the outbox: emails are kept in this process, not delivered"
                + (" (shown at /outbox)" if self.email_outbox_page else "")
            )
        return found

    def shown(self) -> dict[str, str]:
        """Every setting as ``taskflow-link config`` prints it: secrets hidden, and the
        database URL without its password."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                text = "(not set)"
            elif isinstance(value, SecretStr):
                text = "(set)"
            elif name == "database_url":
                text = make_url(value).render_as_string(hide_password=True)
            else:
                text = str(value)
            shown[ENV_PREFIX + name.upper()] = text
        return shown

    @property
    def command_guild_ids(self) -> tuple[int, ...]:
        """Empty: the commands are global."""
        return tuple(int(p) for p in self.discord_command_guilds.split(",") if p.strip())

    def require(self, *names: str) -> None:
        """Fail with the variables' names when a command needs settings that are unset."""
        missing = [n for n in names if _blank(getattr(self, n))]
        if missing:
            listed = ", ".join(ENV_PREFIX + n.upper() for n in missing)
            raise SettingsError(f"Missing setting(s) needed by this command: {listed}")


def _loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): this machine only."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _blank(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is None or (isinstance(value, str) and not value.strip())


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for error in exc.errors():
        reason = "is required but not set" if error["type"] == "missing" else error["msg"]
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"  {reason.removeprefix('Value error, ')}")
            continue
        name = ENV_PREFIX + ".".join(str(part) for part in error["loc"]).upper()
        # Never echo the offending value: it may be a secret.
        lines.append(f"  {name}: {reason}")
    return "\n".join(lines)
