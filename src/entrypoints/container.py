"""The composition root: the only module that names concrete adapters."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from importlib.metadata import version as package_version

from dependency_injector import containers, providers

from adapters.api_key_cache import CachedApiKeyLookup
from adapters.api_key_usage import ThrottledApiKeyUsage
from adapters.attempts import StorePasswordAttempts
from adapters.clock import SystemClock
from adapters.discord_oauth import DiscordHttp, HttpDiscordOAuth
from adapters.email import OutboxEmailSender, SmtpEmailSender
from adapters.memory import MemoryDatabase
from adapters.metrics import MetricsDirectoryError, PrometheusMetrics, process_metrics
from adapters.passwords import Argon2PasswordHasher, ZxcvbnPasswordPolicy
from adapters.queue_listener import NoQueueListener
from adapters.shared_state import SharedState
from adapters.sql import SqlDatabase
from adapters.sql.notifications import PostgresQueueListener
from adapters.tokens import SecretsTokenIssuer
from domain import use_cases as uc
from domain.ports import LinkDirectory, QueueListener, Storage, UnitOfWorkFactory
from domain.use_cases._passwords import Passwords
from entrypoints.health import Check
from entrypoints.instrumentation import observed
from entrypoints.settings import Settings, SettingsError

log = logging.getLogger("taskflow_link")


def _uow_factory(storage: Storage) -> UnitOfWorkFactory:
    return storage.unit_of_work


def _directory(storage: Storage) -> LinkDirectory:
    return storage.directory


def _sql_database(settings: Settings) -> SqlDatabase:
    return SqlDatabase(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    )


def _shared_state(settings: Settings) -> SharedState:
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    return SharedState(url, timeout=settings.redis_timeout_seconds)


def _email_queue_listener(settings: Settings, storage: Storage) -> QueueListener:
    """Postgres tells every instance's worker about a new email; elsewhere workers poll."""
    on_postgres = isinstance(storage, SqlDatabase) and storage.dialect == "postgresql"
    if on_postgres and settings.email_listen:
        return PostgresQueueListener(settings.database_url)
    return NoQueueListener()


def _callback_url(settings: Settings) -> str:
    return str(settings.public_url).rstrip("/") + "/auth/discord/callback"


def _metrics(settings: Settings) -> PrometheusMetrics | None:
    if not settings.metrics:
        return None
    try:
        return process_metrics()
    except MetricsDirectoryError as exc:
        raise SettingsError(str(exc)) from None


def _discord_http(settings: Settings, metrics: PrometheusMetrics | None) -> DiscordHttp:
    # Discord asks every client to say who it is: "DiscordBot (url, version)".
    url = str(settings.public_url).rstrip("/")
    return DiscordHttp(
        user_agent=f"DiscordBot ({url}, {package_version('taskflow-link')})",
        timeout=settings.discord_timeout_seconds,
        observer=metrics,
    )


def _discord_oauth(settings: Settings, http: DiscordHttp) -> HttpDiscordOAuth:
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


def _smtp_sender(settings: Settings) -> SmtpEmailSender:
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
            from adapters.sql import migrate  # noqa: PLC0415 - alembic only when probed

            if not await migrate.is_current(sql):
                return "not the newest revision: run `taskflow-link db upgrade`"
            return None

        checks["schema"] = schema
    if shared.shared:

        async def redis() -> str | None:
            return None if await shared.ping() else "unreachable"

        checks["redis"] = redis
    return checks


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    tokens = providers.Singleton(
        SecretsTokenIssuer, providers.Callable(lambda s: s.secret_key.get_secret_value(), settings)
    )
    # State that is not in the database (throttles, Litestar's rate limits, the interaction
    # replay guard): the process's memory, or Redis when several instances must share it.
    shared_state = providers.Singleton(_shared_state, settings)
    password_hasher = providers.Singleton(Argon2PasswordHasher)
    password_policy = providers.Singleton(ZxcvbnPasswordPolicy)
    password_attempts = providers.Singleton(
        StorePasswordAttempts,
        providers.Callable(lambda shared: shared.store("password-attempts"), shared_state),
    )
    passwords = providers.Singleton(
        Passwords, password_hasher, password_attempts, password_policy, clock
    )
    session_ttl = providers.Callable(lambda s: timedelta(days=s.session_ttl_days), settings)
    public_base_url = providers.Callable(lambda s: str(s.public_url).rstrip("/"), settings)

    # Where the data lives, chosen by TASKFLOW_LINK_STORAGE.
    memory_db = providers.Singleton(MemoryDatabase)
    sql_db = providers.Singleton(_sql_database, settings)
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
    discord_http = providers.Singleton(_discord_http, settings, metrics)
    discord_oauth = providers.Singleton(_discord_oauth, settings, discord_http)
    email_sender = providers.Selector(
        providers.Callable(lambda s: s.email_backend, settings),
        outbox=providers.Singleton(OutboxEmailSender, clock),
        smtp=providers.Singleton(_smtp_sender, settings),
    )
    # One per email worker: it holds a connection of its own while the worker runs.
    email_queue_listener = providers.Factory(_email_queue_listener, settings, storage)

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
    )
    show_link_proposal = providers.Factory(uc.ShowLinkProposal, uow, tokens, clock)
    confirm_link_with_password = providers.Factory(
        uc.ConfirmLinkWithPassword, uow, tokens, clock, passwords, session_ttl
    )
    email_link_confirmation = providers.Factory(uc.EmailLinkConfirmation, uow, tokens, clock)
    confirm_link_with_email = providers.Factory(
        uc.ConfirmLinkWithEmail, uow, tokens, clock, session_ttl
    )
    unlink_account = providers.Factory(uc.UnlinkAccount, uow, tokens, clock, passwords)
    unlink_discord = providers.Factory(uc.UnlinkDiscord, uow, clock)
    unlink_with_api_key = providers.Factory(uc.UnlinkWithApiKey, uow, clock)
    who_am_i = providers.Factory(uc.WhoAmI, uow)
    look_up_link = providers.Factory(uc.LookUpLink, directory)
    look_up_links = providers.Factory(uc.LookUpLinks, directory)
    link_of_account = providers.Factory(uc.LinkOfAccount, uow)
    sign_up = providers.Factory(uc.SignUp, uow, tokens, clock, passwords, session_ttl)
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
    set_password = providers.Factory(uc.SetPassword, uow, tokens, clock, passwords)
    purge_expired = providers.Factory(uc.PurgeExpired, uow, clock)
    deliver_emails = providers.Factory(
        uc.DeliverEmails, uow, tokens, clock, email_sender, public_base_url
    )
    requeue_failed_emails = providers.Factory(uc.RequeueFailedEmails, uow, clock)
    verify_email = providers.Factory(uc.VerifyEmail, uow, tokens, clock)
    show_email_link = providers.Factory(uc.ShowEmailLink, uow, tokens, clock)
    resend_verification = providers.Factory(uc.ResendVerification, uow, clock)
    show_email_status = providers.Factory(uc.ShowEmailStatus, uow)
    change_email = providers.Factory(uc.ChangeEmail, uow, tokens, clock, passwords)
    request_password_reset = providers.Factory(uc.RequestPasswordReset, uow, clock)
    reset_password = providers.Factory(uc.ResetPassword, uow, tokens, clock, passwords, session_ttl)
    create_api_key = providers.Factory(uc.CreateApiKey, uow, tokens, clock)
    authenticate_api_key = providers.Factory(
        uc.AuthenticateApiKey, api_keys, tokens, clock, api_key_usage
    )
    list_api_keys = providers.Factory(uc.ListApiKeys, uow)
    revoke_api_key = providers.Factory(uc.RevokeApiKey, uow, clock)


def is_use_case(provider: object) -> bool:
    cls = getattr(provider, "cls", None)
    return isinstance(cls, type) and cls.__module__.startswith("domain.use_cases")


def build_container(settings: Settings) -> Container:
    container = Container(settings=settings)
    container.check_dependencies()
    _observe_use_cases(container)
    return container


def _observe_use_cases(container: Container) -> None:
    """Every use case, whoever runs it (web, bot, CLI, email worker), has its outcome counted:
    its factory makes the use case wrapped in ``Observed`` (see ``entrypoints.instrumentation``).
    """
    metrics = container.metrics()
    if metrics is None:
        return
    for name, provider in container.providers.items():
        if isinstance(provider, providers.Factory) and is_use_case(provider):
            provider.set_provides(observed(name, provider.cls, metrics))


async def close_resources(container: Container) -> None:
    """Everything a process opened, released in one place (the web app's shutdown, the bot's,
    a CLI command's end): the database's connections, Redis's and the HTTP client for Discord.
    A database or Redis that hangs cannot hold the process: past the shutdown timeout this
    gives up (the connections die with the process)."""
    timeout = container.settings().shutdown_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            try:
                await container.api_key_usage().close()  # its last writes, then the pool
                await container.discord_http().aclose()
                await container.shared_state().close()
            finally:
                await container.storage().dispose()
    except TimeoutError:
        log.warning("releasing the database and Redis took over %s s; exiting without", timeout)
