"""The composition root: the only module that names concrete adapters.

An adapter whose libraries take long to load (aiohttp, Litestar's stores, SQLAlchemy's
engine, Prometheus's client, the SMTP client) is imported by the function that makes it,
when it is first asked for: a CLI command loads only what it uses (``api-key list`` no HTTP
client, ``config`` no database), and none is made only to be closed (``close_resources``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, TypeVar

from dependency_injector import containers, providers

from adapters.api_key_cache import CachedApiKeyLookup
from adapters.api_key_usage import ThrottledApiKeyUsage
from adapters.clock import SystemClock
from adapters.passwords import Argon2PasswordHasher, ZxcvbnPasswordPolicy
from adapters.proxies import proxy_for
from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    ROLE_QUEUE_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
    BellListener,
    QueueBell,
)
from adapters.secret_box import AesGcmSecretBox
from adapters.tokens import SecretsTokenIssuer
from adapters.webhook_targets import endpoint_for
from domain import use_cases as uc
from domain.ports import Clock, LinkDirectory, QueueListener, Storage, UnitOfWorkFactory
from domain.use_cases._passwords import Passwords
from entrypoints.settings import Settings, SettingsError, origin

if TYPE_CHECKING:
    from adapters.attempts import StorePasswordAttempts
    from adapters.discord_oauth import DiscordHttp, HttpDiscordOAuth, HttpDiscordRoleConnections
    from adapters.discord_roles import HttpDiscordGuildRoles
    from adapters.email import OutboxEmailSender, SmtpEmailSender
    from adapters.memory import MemoryDatabase
    from adapters.metrics import PrometheusMetrics
    from adapters.shared_state import SharedState
    from adapters.sql import SqlDatabase
    from adapters.sql.instances import SqlPurgePeers
    from adapters.webhooks import HttpWebhookSender
    from entrypoints.health import Check

log = logging.getLogger("taskflow_link")
T = TypeVar("T")


def _uow_factory(storage: Storage) -> UnitOfWorkFactory:
    return storage.unit_of_work


def _directory(storage: Storage) -> LinkDirectory:
    return storage.directory


def _memory_database(bell: QueueBell) -> MemoryDatabase:
    """TASKFLOW_LINK_STORAGE=memory's store, loaded only then: a process on SQL never needs
    it (some 1,300 lines of code kept in memory for nothing)."""
    from adapters.memory import MemoryDatabase  # noqa: PLC0415

    return MemoryDatabase(bell)


def _sql_database(settings: Settings, bell: QueueBell) -> SqlDatabase:
    from adapters.sql import SqlDatabase  # noqa: PLC0415

    return SqlDatabase(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
        bell=bell,
    )


class Opened:
    """The resources ``close_resources`` releases that this container made (those it never
    made are neither made nor imported only to be closed): one per container."""

    def __init__(self) -> None:
        self.discord_http: DiscordHttp | None = None
        self.webhook_sender: HttpWebhookSender | None = None
        self.shared_state: SharedState | None = None


def _shared_state(settings: Settings, opened: Opened) -> SharedState:
    from adapters.shared_state import SharedState  # noqa: PLC0415 - Litestar's stores

    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    opened.shared_state = SharedState(
        url, timeout=settings.redis_timeout_seconds, prefix=settings.redis_key_prefix
    )
    return opened.shared_state


def _password_attempts(shared: SharedState) -> StorePasswordAttempts:
    from adapters.attempts import StorePasswordAttempts  # noqa: PLC0415

    return StorePasswordAttempts(shared.store("password-attempts"))


def _listens(settings: Settings, storage: Storage) -> bool:
    from adapters.sql import SqlDatabase  # noqa: PLC0415

    on_postgres = isinstance(storage, SqlDatabase) and storage.dialect == "postgresql"
    return on_postgres and settings.email_listen


def _queue_listener(
    settings: Settings, storage: Storage, bell: QueueBell, channel: str
) -> QueueListener:
    """What wakes a queue's worker: work committed by this process (the bell), and on
    Postgres work queued by any instance (LISTEN/NOTIFY); the worker's poll catches the rest.
    """
    across = None
    if _listens(settings, storage):
        from adapters.sql import notifications  # noqa: PLC0415

        application_name = {
            EMAIL_QUEUE_CHANNEL: notifications.LISTENER_APPLICATION_NAME,
            ROLE_QUEUE_CHANNEL: notifications.ROLE_LISTENER_APPLICATION_NAME,
            WEBHOOK_QUEUE_CHANNEL: notifications.WEBHOOK_LISTENER_APPLICATION_NAME,
            ROLE_CONNECTION_CHANNEL: notifications.ROLE_CONNECTION_LISTENER_APPLICATION_NAME,
        }[channel]
        across = notifications.PostgresQueueListener(
            settings.database_url, channel, application_name=application_name
        )
    return BellListener(bell, channel, across)


def _webhook_outbox(settings: Settings) -> uc.WebhookOutbox:
    return uc.WebhookOutbox(tuple(endpoint_for(url) for url in settings.webhook_url_list))


def _webhook_sender(settings: Settings, opened: Opened) -> HttpWebhookSender:
    from adapters.webhooks import HttpWebhookSender  # noqa: PLC0415 - aiohttp

    # Its proxies were checked when the container was built (outgoing_proxies).
    opened.webhook_sender = HttpWebhookSender(
        settings.webhook_targets,
        timeout=settings.webhook_timeout_seconds,
        user_agent=f"taskflow-link/{package_version('taskflow-link')} (webhooks)",
    )
    return opened.webhook_sender


def _audit_retention(settings: Settings) -> timedelta | None:
    days = settings.audit_retention_days
    return timedelta(days=days) if days else None  # 0: keep forever


def _purge_peers(storage: Storage, clock: Clock) -> SqlPurgePeers | None:
    """The serving processes the purge defers to: those announced in a database others can
    share (none on the memory storage, or an in-memory SQLite database)."""
    from adapters.sql import SqlDatabase  # noqa: PLC0415
    from adapters.sql.instances import SqlPurgePeers  # noqa: PLC0415

    if not isinstance(storage, SqlDatabase) or not storage.shared_between_processes:
        return None
    return SqlPurgePeers(storage, clock)


def _callback_url(settings: Settings) -> str:
    return str(settings.public_url).rstrip("/") + "/auth/discord/callback"


def _metrics(settings: Settings) -> PrometheusMetrics | None:
    if not settings.metrics:
        return None
    from adapters.metrics import MetricsDirectoryError, process_metrics  # noqa: PLC0415

    try:
        return process_metrics()
    except MetricsDirectoryError as exc:
        raise SettingsError(str(exc)) from None


def discord_proxy(settings: Settings) -> str | None:
    """The proxy for every call to Discord's API (this client's and hikari's)."""
    try:
        return proxy_for(str(settings.discord_api_url))
    except ValueError as exc:
        raise SettingsError(f"Discord's API: {exc}") from None


def outgoing_proxies(settings: Settings) -> list[tuple[str, str | None]]:
    """Each kind of call out (Discord's API; webhooks, by origin: a path may carry a token)
    with the environment's proxy for it (``None``: direct). ``SettingsError`` naming the
    variable for a proxy these calls cannot use: checked when the container is built, so
    every command stops before it does anything (not at its end, when what it made is
    closed); shown by ``taskflow-link config``."""
    found = [("Discord's API", discord_proxy(settings))]
    for url in settings.webhook_url_list:
        try:
            found.append((f"webhooks to {origin(url)}", proxy_for(url)))
        except ValueError as exc:
            raise SettingsError(f"Webhooks: {exc}") from None
    return found


def refresh_finish_seconds(settings: Settings) -> float:
    """How long a Linked Roles refresh cut off by a stop may still take: Discord's answer
    (its call ends within the Discord timeout), then storing it (as long as a stop gives the
    database). The worker's stop waits that long on top of its own, before the process
    closes the database."""
    return settings.discord_timeout_seconds + settings.shutdown_timeout_seconds


def _discord_http(
    settings: Settings, metrics: PrometheusMetrics | None, opened: Opened
) -> DiscordHttp:
    from adapters.discord_oauth import DiscordHttp  # noqa: PLC0415 - aiohttp

    # Discord asks every client to say who it is: "DiscordBot (url, version)".
    url = str(settings.public_url).rstrip("/")
    opened.discord_http = DiscordHttp(
        user_agent=f"DiscordBot ({url}, {package_version('taskflow-link')})",
        timeout=settings.discord_timeout_seconds,
        observer=metrics,
        proxy=discord_proxy(settings),
    )
    return opened.discord_http


def _discord_oauth(settings: Settings, http: DiscordHttp) -> HttpDiscordOAuth:
    from adapters.discord_oauth import HttpDiscordOAuth  # noqa: PLC0415

    settings.require("discord_client_id", "discord_client_secret")
    assert settings.discord_client_id  # noqa: S101 - checked by require()
    assert settings.discord_client_secret  # noqa: S101
    return HttpDiscordOAuth(
        client_id=settings.discord_client_id,
        client_secret=settings.discord_client_secret.get_secret_value(),
        redirect_uri=_callback_url(settings),
        api_url=str(settings.discord_api_url),
        authorize_url=str(settings.discord_authorize_url),
        http=http,
    )


def _discord_roles(settings: Settings, http: DiscordHttp) -> HttpDiscordGuildRoles:
    from adapters.discord_roles import HttpDiscordGuildRoles  # noqa: PLC0415

    settings.require("discord_bot_token")
    assert settings.discord_bot_token  # noqa: S101 - checked by require()
    return HttpDiscordGuildRoles(
        bot_token=settings.discord_bot_token.get_secret_value(),
        api_url=str(settings.discord_api_url),
        http=http,
    )


def _discord_role_connections(settings: Settings, http: DiscordHttp) -> HttpDiscordRoleConnections:
    from adapters.discord_oauth import HttpDiscordRoleConnections  # noqa: PLC0415

    settings.require("discord_client_id", "discord_client_secret")
    assert settings.discord_client_id  # noqa: S101 - checked by require()
    assert settings.discord_client_secret  # noqa: S101
    return HttpDiscordRoleConnections(
        client_id=settings.discord_client_id,
        client_secret=settings.discord_client_secret.get_secret_value(),
        api_url=str(settings.discord_api_url),
        http=http,
    )


def _secret_box(settings: Settings) -> AesGcmSecretBox:
    settings.require("token_encryption_key")
    return AesGcmSecretBox(settings.token_keys)


def _only_with_role_connections(
    settings: Settings, flow: providers.Provider[uc.RoleConnectionFlow]
) -> uc.RoleConnectionFlow | None:
    """Without Linked Roles the callback gets nothing to keep a token with."""
    return flow() if settings.discord_role_connections else None


def _outbox_sender(clock: Clock) -> OutboxEmailSender:
    from adapters.email import OutboxEmailSender  # noqa: PLC0415

    return OutboxEmailSender(clock)


def _smtp_sender(settings: Settings) -> SmtpEmailSender:
    from adapters.email import SmtpEmailSender  # noqa: PLC0415

    settings.require("smtp_host")
    assert settings.smtp_host  # noqa: S101 - checked by require()
    return SmtpEmailSender(
        host=settings.smtp_host,
        port=settings.smtp_port,
        tls=settings.smtp_tls,
        sender=settings.email_from,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout_seconds,
    )


def _readiness_checks(
    settings: Settings, storage: Storage, shared: SharedState, sql: SqlDatabase | None
) -> dict[str, Check]:
    """What ``/readyz`` asks (each answers ``None`` when fine)."""

    async def database() -> str | None:
        return None if await storage.ping() else "unreachable"

    checks: dict[str, Check] = {"database": database}
    if sql is not None:

        async def schema() -> str | None:
            from adapters.sql import revisions  # noqa: PLC0415

            if not await revisions.is_current(sql):
                return "not the newest revision: run `taskflow-link db upgrade`"
            return None

        checks["schema"] = schema
    if shared.shared:

        async def redis() -> str | None:
            return await shared.problem()

        checks["redis"] = redis
    return checks


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    # This host's clock, which an interaction's age (the time Discord wrote into its id) is
    # measured by: tests that move ``clock`` (tickets expiring) leave it, and move it alone.
    interaction_clock = providers.Singleton(SystemClock)
    tokens = providers.Singleton(
        SecretsTokenIssuer, providers.Callable(lambda s: s.secret_key.get_secret_value(), settings)
    )
    # State that is not in the database (throttles, Litestar's rate limits, the interaction
    # replay guard): the process's memory, or Redis when several instances must share it.
    # What close_resources releases, of what this container made.
    opened = providers.Singleton(Opened)
    shared_state = providers.Singleton(_shared_state, settings, opened)
    password_hasher = providers.Singleton(Argon2PasswordHasher)
    password_policy = providers.Singleton(ZxcvbnPasswordPolicy)
    password_attempts = providers.Singleton(_password_attempts, shared_state)
    passwords = providers.Singleton(
        Passwords, password_hasher, password_attempts, password_policy, clock
    )
    session_ttl = providers.Callable(lambda s: timedelta(days=s.session_ttl_days), settings)
    discord_timeout = providers.Callable(
        lambda s: timedelta(seconds=s.discord_timeout_seconds), settings
    )
    public_base_url = providers.Callable(lambda s: str(s.public_url).rstrip("/"), settings)

    # Where the data lives, chosen by TASKFLOW_LINK_STORAGE.
    # This process's wake-ups: a transaction that queued work rings its queue's workers.
    queue_bell = providers.Singleton(QueueBell)
    memory_db = providers.Singleton(_memory_database, queue_bell)
    sql_db = providers.Singleton(_sql_database, settings, queue_bell)
    storage = providers.Selector(
        providers.Callable(lambda s: s.storage, settings), memory=memory_db, sql=sql_db
    )
    uow = providers.Singleton(_uow_factory, storage)
    readiness_checks = providers.Singleton(
        _readiness_checks,
        settings,
        storage,
        shared_state,
        providers.Callable(
            lambda s, db: db() if s.storage == "sql" else None, settings, sql_db.provider
        ),
    )
    directory = providers.Singleton(_directory, storage)
    api_keys = providers.Singleton(
        CachedApiKeyLookup,
        directory,
        ttl_seconds=providers.Callable(lambda s: s.api_key_cache_seconds, settings),
    )
    # When each key was last used: kept in memory, written at most once a minute per key.
    api_key_usage = providers.Singleton(ThrottledApiKeyUsage, uow)

    # The process's Prometheus metrics (None with TASKFLOW_LINK_METRICS=false).
    metrics = providers.Singleton(_metrics, settings)
    discord_http = providers.Singleton(_discord_http, settings, metrics, opened)
    discord_oauth = providers.Singleton(_discord_oauth, settings, discord_http)
    discord_roles = providers.Singleton(_discord_roles, settings, discord_http)
    # Discord's rate limits and Cloudflare's blocks, as this process met them, kept across
    # passes: the role for linked members and Linked Roles wait for them alike.
    # With Redis, the 429s that said how long are every instance's (they share the bot token
    # and the application): each tells the others of those it meets.
    discord_pauses = providers.Singleton(
        uc.DiscordPauses, providers.Callable(lambda shared: shared.discord_pauses, shared_state)
    )
    # The roles linked members get (TASKFLOW_LINK_DISCORD_LINKED_ROLES), for every use case
    # that links or unlinks.
    linked_roles = providers.Callable(lambda s: s.linked_roles, settings)
    email_sender = providers.Selector(
        providers.Callable(lambda s: s.email_backend, settings),
        outbox=providers.Singleton(_outbox_sender, clock),
        smtp=providers.Singleton(_smtp_sender, settings),
    )
    # One per email worker: it holds a connection of its own while the worker runs.
    email_queue_listener = providers.Factory(
        _queue_listener,
        settings,
        storage,
        queue_bell,
        EMAIL_QUEUE_CHANNEL,
    )
    role_queue_listener = providers.Factory(
        _queue_listener,
        settings,
        storage,
        queue_bell,
        ROLE_QUEUE_CHANNEL,
    )
    # Webhooks: where events go (the configured endpoints), how they are sent, and wake-ups.
    webhook_outbox = providers.Singleton(_webhook_outbox, settings)
    webhook_sender = providers.Singleton(_webhook_sender, settings, opened)
    webhook_queue_listener = providers.Factory(
        _queue_listener,
        settings,
        storage,
        queue_bell,
        WEBHOOK_QUEUE_CHANNEL,
    )
    # Linked Roles made due (an unlink, a password reset) by any instance.
    role_connection_listener = providers.Factory(
        _queue_listener,
        settings,
        storage,
        queue_bell,
        ROLE_CONNECTION_CHANNEL,
    )

    # Discord Linked Roles (TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS): the only Discord tokens
    # kept, sealed by the secret box. Made on first use: off, nothing here is ever built.
    secret_box = providers.Singleton(_secret_box, settings)
    discord_role_connections = providers.Singleton(
        _discord_role_connections, settings, discord_http
    )
    role_connection_pusher = providers.Singleton(
        uc.RoleConnectionPusher,
        uow,
        clock,
        secret_box,
        discord_role_connections,
        pauses=discord_pauses,
        finish_seconds=providers.Callable(refresh_finish_seconds, settings),
    )
    role_connection_flow = providers.Singleton(
        uc.RoleConnectionFlow,
        uow,
        tokens,
        clock,
        role_connection_pusher,
        session_ttl,
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
    )

    # Use cases: a new instance per call, ports injected.
    issue_link_ticket = providers.Factory(uc.IssueLinkTicket, uow, tokens, clock)
    show_link_ticket = providers.Factory(uc.ShowLinkTicket, uow, tokens, clock)
    start_ticket_link = providers.Factory(
        uc.StartTicketLink, uow, tokens, clock, discord_oauth, passwords
    )
    start_discord_login = providers.Factory(uc.StartDiscordLogin, uow, tokens, clock, discord_oauth)
    start_discord_link = providers.Factory(
        uc.StartDiscordLink, uow, tokens, clock, discord_oauth, passwords
    )
    complete_discord_auth = providers.Factory(
        uc.CompleteDiscordAuth,
        uow,
        tokens,
        clock,
        discord_oauth,
        session_ttl,
        email_linking=providers.Callable(lambda s: s.email_linking, settings),
        signup=providers.Callable(lambda s: s.discord_signup, settings),
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
        role_connections=providers.Callable(
            _only_with_role_connections, settings, role_connection_flow.provider
        ),
        discord_timeout=discord_timeout,
    )
    start_linked_role = providers.Factory(
        uc.StartLinkedRole, uow, tokens, clock, discord_oauth, passwords
    )
    refresh_role_connections = providers.Factory(
        uc.RefreshRoleConnections, uow, clock, role_connection_pusher
    )
    forget_role_connections = providers.Factory(
        uc.ForgetRoleConnections, uow, clock, role_connection_pusher
    )
    rotate_token_keys = providers.Factory(uc.RotateTokenKeys, uow, clock, secret_box)
    # Which key each kept row names (no key configured here: not known).
    show_role_connection_status = providers.Factory(
        uc.ShowRoleConnectionStatus,
        uow,
        clock,
        providers.Callable(
            lambda s: _secret_box(s) if s.token_encryption_key is not None else None, settings
        ),
    )
    show_link_proposal = providers.Factory(uc.ShowLinkProposal, uow, tokens, clock)
    confirm_link_with_password = providers.Factory(
        uc.ConfirmLinkWithPassword,
        uow,
        tokens,
        clock,
        passwords,
        session_ttl,
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
    )
    email_link_confirmation = providers.Factory(uc.EmailLinkConfirmation, uow, tokens, clock)
    confirm_link_with_email = providers.Factory(
        uc.ConfirmLinkWithEmail,
        uow,
        tokens,
        clock,
        session_ttl,
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
    )
    unlink_account = providers.Factory(
        uc.UnlinkAccount,
        uow,
        tokens,
        clock,
        passwords,
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
    )
    unlink_discord = providers.Factory(
        uc.UnlinkDiscord, uow, clock, linked_roles=linked_roles, webhooks=webhook_outbox
    )
    unlink_with_api_key = providers.Factory(
        uc.UnlinkWithApiKey, uow, clock, linked_roles=linked_roles, webhooks=webhook_outbox
    )
    who_am_i = providers.Factory(uc.WhoAmI, uow)
    look_up_link = providers.Factory(uc.LookUpLink, directory)
    look_up_links = providers.Factory(uc.LookUpLinks, directory)
    link_of_account = providers.Factory(
        uc.LinkOfAccount,
        uow,
        role_connections=providers.Callable(lambda s: s.discord_role_connections, settings),
    )
    sign_up = providers.Factory(
        uc.SignUp, uow, tokens, clock, passwords, session_ttl, webhooks=webhook_outbox
    )
    sign_in = providers.Factory(uc.SignIn, uow, tokens, clock, passwords, session_ttl)
    sign_out = providers.Factory(uc.SignOut, uow, tokens, clock)
    current_session = providers.Factory(uc.CurrentSession, uow, tokens, clock)
    list_sessions = providers.Factory(uc.ListSessions, uow, tokens, clock)
    end_session = providers.Factory(uc.EndSession, uow, tokens, clock)
    end_all_sessions = providers.Factory(uc.EndAllSessions, uow, tokens, clock)
    confirm_password = providers.Factory(uc.ConfirmPassword, uow, tokens, clock, passwords)
    start_discord_reauth = providers.Factory(
        uc.StartDiscordReauth, uow, tokens, clock, discord_oauth
    )
    finish_discord_confirmation = providers.Factory(
        uc.FinishDiscordConfirmation, uow, tokens, clock, discord_timeout=discord_timeout
    )
    set_password = providers.Factory(uc.SetPassword, uow, tokens, clock, passwords)
    purge_expired = providers.Factory(
        uc.PurgeExpired,
        uow,
        clock,
        webhook_outbox,
        providers.Callable(_audit_retention, settings),
        peers=providers.Callable(_purge_peers, storage, clock),
    )
    deliver_emails = providers.Factory(
        uc.DeliverEmails, uow, tokens, clock, email_sender, public_base_url
    )
    requeue_failed_emails = providers.Factory(uc.RequeueFailedEmails, uow, clock)
    # Discord's rate limits on role changes, kept across passes (this process's), and the
    # refusals that hold for a whole role.
    role_pauses = providers.Singleton(uc.RolePauses, discord_pauses)
    apply_role_changes = providers.Factory(
        uc.ApplyRoleChanges,
        uow,
        clock,
        discord_roles,
        linked_roles=linked_roles,
        pauses=role_pauses,
    )
    request_roles_for_links = providers.Factory(
        uc.RequestRolesForLinks, uow, clock, linked_roles=linked_roles
    )
    show_role_queue = providers.Factory(uc.ShowRoleQueue, uow, linked_roles=linked_roles)
    count_role_changes = providers.Factory(uc.CountRoleChanges, uow, linked_roles=linked_roles)
    verify_email = providers.Factory(uc.VerifyEmail, uow, tokens, clock)
    disown_email = providers.Factory(uc.DisownEmail, uow, tokens, clock)
    lift_email_decline = providers.Factory(uc.LiftEmailDecline, uow, clock)
    show_email_link = providers.Factory(uc.ShowEmailLink, uow, tokens, clock)
    resend_verification = providers.Factory(uc.ResendVerification, uow, clock)
    show_email_status = providers.Factory(uc.ShowEmailStatus, uow)
    change_email = providers.Factory(uc.ChangeEmail, uow, tokens, clock, passwords)
    request_password_reset = providers.Factory(uc.RequestPasswordReset, uow, clock)
    reset_password = providers.Factory(
        uc.ResetPassword,
        uow,
        tokens,
        clock,
        passwords,
        session_ttl,
        linked_roles=linked_roles,
        webhooks=webhook_outbox,
    )
    create_api_key = providers.Factory(uc.CreateApiKey, uow, tokens, clock)
    authenticate_api_key = providers.Factory(
        uc.AuthenticateApiKey, api_keys, tokens, clock, api_key_usage
    )
    identify_api_key = providers.Factory(uc.IdentifyApiKey, api_keys, tokens, clock)
    list_api_keys = providers.Factory(uc.ListApiKeys, uow)
    revoke_api_key = providers.Factory(uc.RevokeApiKey, uow, clock)
    deliver_webhooks = providers.Factory(
        uc.DeliverWebhooks, uow, clock, webhook_sender, webhook_outbox
    )
    requeue_webhooks = providers.Factory(uc.RequeueWebhooks, uow, clock)
    show_webhook_status = providers.Factory(uc.ShowWebhookStatus, uow, webhook_outbox)
    read_audit_trail = providers.Factory(uc.ReadAuditTrail, uow, clock, tokens)


def is_use_case(provider: object) -> bool:
    cls = getattr(provider, "cls", None)
    return isinstance(cls, type) and cls.__module__.startswith("domain.use_cases")


def build_container(settings: Settings, *, counted: bool = True) -> Container:
    """The process's container. ``counted=False``: nothing is counted, whatever
    TASKFLOW_LINK_METRICS says, and Prometheus's client is not loaded (a one-off command,
    which serves no /metrics and whose counts would be gone at its exit)."""
    outgoing_proxies(settings)
    container = Container(settings=settings)
    container.check_dependencies()
    if not counted:
        container.metrics.override(providers.Object(None))
    _observe_use_cases(container)
    return container


def _observe_use_cases(container: Container) -> None:
    """Every use case, whoever runs it (web, bot, CLI, email worker), has its outcome counted:
    its factory makes the use case wrapped in ``Observed`` (see ``entrypoints.instrumentation``).
    """
    metrics = container.metrics()
    if metrics is None:
        return
    from entrypoints.instrumentation import observed  # noqa: PLC0415

    for name, provider in container.providers.items():
        if name in _COUNTED_AS_REQUESTS:
            continue
        if isinstance(provider, providers.Factory) and is_use_case(provider):
            provider.set_provides(observed(name, provider.cls, metrics))


# The JSON API's hot path: each run is one HTTP request, which the request metrics count by
# route and status already; counting it again would cost a lookup a fifth of its time.
_COUNTED_AS_REQUESTS = frozenset(
    {"authenticate_api_key", "identify_api_key", "look_up_link", "look_up_links"}
)


async def close_resources(container: Container) -> None:
    """Everything a process opened, released in one place (the web app's shutdown, the bot's,
    a CLI command's end): the database's connections, Redis's and the HTTP client for Discord.
    A database or Redis that hangs cannot hold the process: past the shutdown timeout this
    gives up (the connections die with the process)."""
    timeout = container.settings().shutdown_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            try:
                opened = container.opened()
                await container.api_key_usage().close()  # its last writes, then the pool
                if (http := _made(container.discord_http, opened.discord_http)) is not None:
                    await http.aclose()
                # A stand-in sender (tests) may hold nothing to close.
                sender = _made(container.webhook_sender, opened.webhook_sender)
                if (close_sender := getattr(sender, "aclose", None)) is not None:
                    await close_sender()
                if (shared := _made(container.shared_state, opened.shared_state)) is not None:
                    await shared.close()
                await container.api_keys().close()  # its reads under way, before the pool
            finally:
                await container.storage().dispose()
    except TimeoutError:
        log.warning("releasing the database and Redis took over %s s; exiting without", timeout)


def _made(provider: providers.Provider[T], made: T | None) -> T | None:
    """What ``provider`` gave, if it gave anything: its stand-in when overridden (tests),
    else what the container ``made`` of it (``None``: never asked for)."""
    return provider() if provider.overridden else made
