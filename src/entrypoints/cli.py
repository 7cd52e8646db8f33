"""The ``taskflow-link`` command. Heavy imports happen inside commands, not at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from adapters.loopback import is_loopback
from domain.errors import (
    DomainError,
    StorageContention,
    StorageError,
    StorageFault,
    StorageNotReady,
)
from domain.model import (
    MAX_API_KEY_LIFETIME,
    AccountId,
    ApiScope,
    has_format_characters,
    normalize_email,
    scopes_to_text,
)
from domain.names import has_hidden_characters
from entrypoints.heap import settle_start_up_objects
from entrypoints.listening import url_host
from entrypoints.settings_errors import MAX_SHARD_COUNT, SettingsError

if TYPE_CHECKING:
    from adapters.sql import SqlDatabase
    from entrypoints.settings import Settings

T = TypeVar("T")
_PORT = click.IntRange(1, 65535)


class _Seconds(click.FloatRange):
    """A number of seconds within a range. ``nan`` is not one, though FloatRange takes it
    (every comparison with it is false): ``roles sync --wait nan`` waited with no end."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


def load_settings(**overrides: Any) -> Settings:
    """The settings, read when a command needs them: pydantic-settings and SQLAlchemy (which
    reads the database URL) are loaded then, not for ``--help``."""
    from entrypoints import settings  # noqa: PLC0415

    return settings.load_settings(**overrides)


_HELP_OPTIONS = ("-h", "--help")


class _Commands(click.Group):
    """The command group, noting whether the command line asks a command's help (click
    clears what follows the command's name before the group's callback runs)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["taskflow_link.help"] = _asks_help(self, ctx, args)
        return super().parse_args(ctx, args)


def _asks_help(command: click.Command, ctx: click.Context, args: list[str]) -> bool:
    """Whether ``command``'s ``args`` ask a command's help as click parses them: the help
    option among the options of the command named (or of ``command``, or of a group on the
    way), not an option's value nor an argument (after ``--``): any ``-h`` after the
    command's name counted, and the command ran without its warnings. Parsed only, nothing
    converted nor run; a usage error asks no help (click says it when it parses)."""
    while True:
        help_option = command.get_help_option(ctx)
        try:
            opts, args, _ = command.make_parser(ctx).parse_args(list(args))  # (it pops them)
        except click.UsageError:
            return False
        if help_option is not None and help_option.name in opts:
            return True
        if not isinstance(command, click.Group) or not args:
            return False
        name, args = args[0], args[1:]
        found = command.get_command(ctx, name)
        if found is None:
            return False
        command = found
        ctx = command.context_class(command, info_name=name, parent=ctx, **command.context_settings)


@click.group(cls=_Commands, context_settings={"help_option_names": list(_HELP_OPTIONS)})
@click.version_option(package_name="taskflow-link")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Link Discord accounts to TaskFlow accounts; sign in to TaskFlow with Discord.

    Settings come from TASKFLOW_LINK_* environment variables or a .env file
    (see the README's configuration table).
    """
    # `serve` and the gateway bot log them once their logging is set up (JSON lines, maybe).
    # A command's help reads no settings (nor loads what reads them).
    asks_help = ctx.meta.get("taskflow_link.help", False)
    if ctx.invoked_subcommand not in {"serve", "bot"} and not asks_help:
        _say_unknown_variables()


def _say_unknown_variables(log: logging.Logger | None = None) -> None:
    """Name the TASKFLOW_LINK_* variables that are no setting (a misspelt one is otherwise
    ignored, its setting left at its default), on stderr or in ``log``; never their values."""
    from entrypoints.settings import unknown_variables  # noqa: PLC0415

    for warning in unknown_variables():
        if log is None:
            click.echo(f"warning: {warning}", err=True)
        else:
            log.warning("%s", warning)


def _settings_for_service(load: Callable[[], T]) -> T:
    """``load`` the settings of a command that logs (``serve``, ``bot``): should they be
    wrong, the variables that are no setting are said with the error (a misspelt name is
    often why), since the log that would have named them is not set up."""
    try:
        return load()
    except SettingsError:
        _say_unknown_variables()
        raise


@cli.command("config")
def show_config() -> None:
    """Check the configuration and print it (secrets hidden)."""
    settings = load_settings()
    for name, shown in settings.shown().items():
        click.echo(f"{name} = {shown}")
    from entrypoints.container import outgoing_proxies  # noqa: PLC0415
    from entrypoints.settings import without_password  # noqa: PLC0415

    for what, proxy in outgoing_proxies(settings):  # the proxy's password hidden
        click.echo(f"proxy for {what} = {without_password(proxy) if proxy else '(none)'}")
    for warning in settings.warnings():
        click.echo(f"warning: {warning}", err=True)


@cli.group()
def db() -> None:
    """Database schema migrations (Alembic, shipped inside the package)."""


def _run_with_database(action: Callable[[SqlDatabase], Awaitable[T]], *, create: bool = False) -> T:
    """Run ``action`` on the configured database. Only with ``create`` (``db upgrade``) may
    an SQLite file that does not exist be made (empty)."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from adapters.sql import SqlDatabase  # noqa: PLC0415

    settings = load_settings()
    if not create:
        _require_database_file(settings.database_url)

    async def run() -> T:
        database = SqlDatabase(settings.database_url)
        try:
            return await action(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except (OSError, DBAPIError) as exc:
        raise _database_failure(settings.database_url, exc) from None


# The exit status of a command whose transaction the database rolled back to let another one
# through (Postgres broke a deadlock, or a serialization failure): nothing is wrong, and the
# same command run again works. EX_TEMPFAIL (sysexits.h): a script or a cron wrapper tells
# "run it again" from a failure a person must look at (1).
BUSY_EXIT_STATUS = 75


class _DatabaseBusy(click.ClickException):
    exit_code = BUSY_EXIT_STATUS


def _database_failure(url: str, exc: BaseException) -> click.ClickException:
    """What a command says of the database's failure ``exc`` (a driver's error, or the
    domain's ``StorageError`` with the driver's as its cause): a transaction rolled back for
    another one is the database being busy, to run again; anything else "cannot use" it, in
    the driver's words. The URL is shown without its password."""
    from adapters.sql.errors import contention  # noqa: PLC0415 - SQL storage only

    cause = exc.__cause__ if isinstance(exc, DomainError) else exc
    if isinstance(exc, StorageContention) or (cause is not None and contention(cause)):
        said = f" ({_failure(cause)})" if cause is not None else ""
        return _DatabaseBusy(
            "The database was busy: it rolled this command's transaction back to let another "
            f"one through{said}. Nothing is wrong, and what that transaction did was undone: "
            "run the command again."
        )
    said = f"Cannot use the database at {_safe_url(url)}: {_failure(cause or exc)}"
    if not url.startswith("sqlite") and _unreachable(cause or exc):
        said += (
            ". Nothing answered there: check TASKFLOW_LINK_DATABASE_URL and that the database "
            "is running and takes connections from here"
        )
    return click.ClickException(said)


def _unreachable(exc: BaseException) -> bool:
    """Whether the database's address answered nothing (refused, no such host, no answer in
    time): a mistyped URL or a database not started, rather than one that said no."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, TimeoutError | ConnectionError | socket.gaierror):
        return True
    return isinstance(cause, OSError) and type(cause) is OSError  # asyncpg's "Connect call failed"


def _failure(exc: BaseException) -> str:
    """What the database (or the way to it) said, in the driver's words: never SQLAlchemy's
    text, which adds the statement (a whole CREATE TABLE) and a link to its documentation. A
    timeout, which has no words, is named."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, TimeoutError):
        return (
            "no answer in time (TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS, "
            "TASKFLOW_LINK_DB_STATEMENT_TIMEOUT_SECONDS)"
        )
    words = str(cause).strip()
    return words.splitlines()[0] if words else type(cause).__name__


_NEWEST = frozenset({"head", "heads"})  # what names this version's newest revision


def _revision_argument(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A revision named: an empty one (`db upgrade "$REVISION"` with the variable unset)
    reached Alembic, whose assertion came out as a traceback."""
    if not value.strip():
        raise click.BadParameter("give a revision (such as head, base or 0016), not an empty one")
    return value


@db.command("upgrade")
@click.argument("revision", default="head", callback=_revision_argument)
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    done = _migrate("upgrade", revision)
    if done.later_release:
        pass  # said on stderr
    elif done.before != done.after:
        click.echo(f"Upgraded the database from {done.before or 'base (empty)'} to {done.after}.")
    elif revision in _NEWEST or (done.after or "").startswith(revision):
        click.echo(f"Nothing to do: the database was at {done.after} already.")
    else:  # Alembic goes nowhere when asked up to a revision behind the database's
        click.echo(
            f"Nothing to do: the database is at {done.after}, past {revision}. To take it back "
            f"there: `taskflow-link db downgrade {revision} --yes` (it drops what the later "
            "revisions added)."
        )
    click.echo(f"Database at revision {done.after}.")


@db.command("downgrade")
@click.argument("revision", callback=_revision_argument)
@click.option(
    "--yes",
    is_flag=True,
    help="Do it: the tables and columns of later revisions are dropped with their data.",
)
def db_downgrade(revision: str, yes: bool) -> None:
    """Migrate the database down to REVISION (`base` removes every table). Deletes data: needs
    --yes, and no instance may be serving the database meanwhile."""
    if not yes:
        target = "base (every table)" if revision == "base" else f"revision {revision}"
        raise click.ClickException(
            f"Downgrading {_safe_url(load_settings().database_url)} to {target} deletes data: "
            "the tables and columns added after it are dropped with what they hold. Stop every "
            "instance serving this database first (none may run meanwhile), then run again "
            "with --yes."
        )
    done = _migrate("downgrade", revision)
    after = done.after or "base (empty)"
    if done.before != done.after:
        click.echo(f"Downgraded the database from {done.before} to {after}.")
    else:
        click.echo(f"Nothing to do: the database was at {after} already.")
    click.echo(f"Database at revision {after}.")


@db.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from adapters.sql import migrate  # noqa: PLC0415
    from entrypoints.schema import unknown_revision  # noqa: PLC0415

    url = load_settings().database_url

    async def current(database: SqlDatabase) -> tuple[str, str | None]:
        revision = await migrate.current_revision(database)
        if revision is None:
            ours, others = await _tables_without_revision(database)
            if ours:
                also = f"; others: {', '.join(others)}" if others else ""
                return (
                    "base (no schema revision, yet tables named as taskflow-link's: "
                    f"{', '.join(ours)}{also})"
                ), None
            if others:
                return f"base (no taskflow-link tables; it has others: {', '.join(others)})", None
            return "base (empty)", None
        unknown = await unknown_revision(database, url)
        return revision, unknown.message if unknown else None

    revision, unknown = _run_with_database(current)
    click.echo(revision)
    if unknown is not None:
        click.echo(f"note: {unknown}", err=True)


async def _tables_without_revision(database: SqlDatabase) -> tuple[list[str], list[str]]:
    """The tables of a database without a schema revision: (those named as taskflow-link's,
    the others)."""
    from sqlalchemy import inspect  # noqa: PLC0415

    from adapters.sql.tables import metadata  # noqa: PLC0415

    async with database.engine.connect() as conn:
        names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    names.discard("alembic_version")
    return sorted(names & set(metadata.tables)), sorted(names - set(metadata.tables))


def _not_taking_over(where: str, tables: list[str]) -> str:
    """What to do about a database without a schema revision that has tables named as
    taskflow-link's: another program's, or taskflow-link's whose ``alembic_version`` lost
    its row (a partial restore, a hand-made ``stamp``). Either way no migration takes them."""
    return (
        f"The database at {where} has tables named as taskflow-link's ({', '.join(tables)}) "
        "but no schema revision, so `taskflow-link db upgrade` will not take them over. If it "
        "is another program's database, give taskflow-link one of its own "
        "(TASKFLOW_LINK_DATABASE_URL); if it is taskflow-link's and only lost its revision, "
        "write the revision back into its alembic_version table."
    )


class _LaterRelease(Exception):
    """The database is a later release's: ``db upgrade`` has nothing to do."""


@dataclass(frozen=True)
class _Migrated:
    before: str | None  # the revision the migration found (None: base, empty)
    after: str | None  # and the one it left
    later_release: bool = False  # a later release's schema, left as it is


def _migrate(direction: str, revision: str) -> _Migrated:
    """Run ``migrate.upgrade`` or ``migrate.downgrade``: the revisions before and after.
    A database at a revision this version does not know is left as it is: a later
    release's is as new as ``db upgrade`` can make it (said, not refused: a rollback's
    release step runs it), and only that release can take it down; another program's
    is refused."""
    from adapters.sql import migrate, revisions  # noqa: PLC0415
    from entrypoints.schema import rollback_advice, unknown_revision  # noqa: PLC0415

    url = load_settings().database_url

    async def refuse_unknown(database: SqlDatabase) -> None:
        unknown = await unknown_revision(database, url)
        if unknown is not None:
            if not unknown.later_release:
                raise click.ClickException(unknown.message)
            # `heads` is Alembic's every head: this history has one, so it is `head`.
            if direction == "upgrade" and revision in _NEWEST:
                click.echo(
                    f"warning: {unknown.message} Nothing to do: this version serves on it, as "
                    f"an older release does during a rolling upgrade. {rollback_advice()}",
                    err=True,
                )
                raise _LaterRelease(await migrate.current_revision(database))
            raise click.ClickException(
                f"{unknown.message} Run that release's `taskflow-link db downgrade "
                f"{revisions.head_revision()} --yes` to bring it back to this version's schema."
            )

    async def step(database: SqlDatabase) -> _Migrated:
        await refuse_unknown(database)
        try:
            before = await getattr(migrate, direction)(database, revision)
        except migrate.RevisionRefused as exc:
            # Looked at again: a later release's `db upgrade` may have migrated the database
            # between the look above and the migration's lock (Alembic then "Can't locate
            # revision identified by …").
            await refuse_unknown(database)
            at = await migrate.current_revision(database) or "base (empty)"
            raise click.ClickException(
                f"Cannot {direction} the database to {revision}: {exc}. It is at {at}; this "
                f"version's revisions go from {min(revisions.known_revisions())} to "
                f"{revisions.head_revision()} (also: head, base, and steps such as +1 or -1)."
            ) from None
        return _Migrated(before, await migrate.current_revision(database))

    try:
        return _run_with_database(step, create=direction == "upgrade")
    except _LaterRelease as later:
        return _Migrated(str(later), str(later), later_release=True)
    except migrate.TablesOfAnother as exc:
        raise click.ClickException(_not_taking_over(_safe_url(url), exc.tables)) from None


@cli.command("purge-expired")
def purge_expired() -> None:
    """Delete expired pending logins, /link tickets, sessions, emailed links, link proposals,
    old emails and webhook deliveries (a pending one only when its URL is no longer in
    TASKFLOW_LINK_WEBHOOK_URLS, which must then name the others), the role changes of members
    unlinked with nothing left to do, and audit events older than
    TASKFLOW_LINK_AUDIT_RETENTION_DAYS (0: kept forever). In batches of 2,000 rows per
    transaction. The web instances and gateway bots do it themselves every
    TASKFLOW_LINK_PURGE_INTERVAL_SECONDS (run this from cron when that is 0); this command
    waits for a batch of theirs under way, and their purge then gives way to it. While some
    of them run, it deletes only what every one of them would (the longest audit retention;
    no pending webhook delivery while one names other URLs than this command's settings)."""

    def waiting() -> None:
        click.echo(
            "Another purge (a web instance's or gateway bot's) is deleting a batch; waiting "
            "for it to end…",
            err=True,
        )

    report = _run_use_case(lambda c: c.purge_expired().execute(waiting=waiting))
    click.echo(
        f"Purged {report.pending_logins} pending login(s), {report.link_tickets} "
        f"ticket(s), {report.sessions} session(s), {report.email_tokens} email link(s), "
        f"{report.link_proposals} link proposal(s), {report.emails} old email(s), "
        f"{report.webhook_deliveries} old webhook delivery(ies), "
        f"{report.role_changes} old role change(s), "
        f"{report.audit_events} audit event(s)."
    )
    days = report.audit_retention_held
    if days is not None:
        click.echo(
            "Kept audit events "
            + ("forever" if days == 0 else f"for {days} days")
            + ": a running web instance or gateway bot keeps them that long "
            "(TASKFLOW_LINK_AUDIT_RETENTION_DAYS), and the purge deletes only what every one "
            "of them would."
        )
    if report.webhooks_held:
        click.echo(
            f"Kept {report.webhook_pending_kept} pending webhook delivery(ies): a running web "
            "instance or gateway bot names other TASKFLOW_LINK_WEBHOOK_URLS than this process, "
            "so it cannot tell a removed URL from one of theirs."
        )
    elif report.webhook_pending_kept:
        click.echo(
            f"Kept {report.webhook_pending_kept} pending webhook delivery(ies): this process "
            "has no TASKFLOW_LINK_WEBHOOK_URLS, so it cannot tell a removed URL from a live "
            "one (run purge-expired with the service's settings to drop those of removed URLs)."
        )


@cli.group("webhooks")
def webhooks() -> None:
    """The webhook outbox (TASKFLOW_LINK_WEBHOOK_URLS)."""


@webhooks.command("status")
def webhooks_status() -> None:
    """Deliveries per endpoint (by host; a URL's path may hold a token, so it is never
    shown): how many in each state, whether the endpoint answered 410 Gone, and the last
    error."""
    from entrypoints.cli_output import webhook_status_lines  # noqa: PLC0415

    statuses = _run_use_case(lambda c: c.show_webhook_status().execute())
    for line in webhook_status_lines(statuses):
        click.echo(line)


@webhooks.command("retry")
@click.option(
    "--id",
    "delivery_id",
    type=click.UUID,
    default=None,
    help="Only the delivery with this id (as logged when it was given up).",
)
def webhooks_retry(delivery_id: uuid.UUID | None) -> None:
    """Send again the webhook deliveries that were given up or refused with 410 Gone (all of
    them, or one with --id), with a fresh round of attempts; endpoints that answered 410 Gone
    (all of them, or the one of that delivery when it is the one refused) are sent to again
    (a given-up delivery named alone waits behind its endpoint's refused one)."""
    requeued = _run_use_case(lambda c: c.requeue_webhooks().execute(delivery_id))
    click.echo(f"Requeued {requeued} webhook delivery(ies).")


@cli.command("audit")
@click.option("--account", "account", metavar="ID", help="Only events of this TaskFlow account.")
@click.option("--discord-id", "discord_id", metavar="ID", help="Only events of this Discord id.")
@click.option(
    "--login",
    "login",
    metavar="LOGIN",
    help="Only the failed sign-ins tried with this login (a username or an email address, any "
    "case), found under TASKFLOW_LINK_SECRET_KEY; '-' reads it from standard input (asks for it "
    "without echo at a terminal), keeping it out of the shell's history and the process list.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Only events from then on: a date (2026-11-01, UTC), a time (2026-11-01T12:00Z) or "
    "how long ago (30m, 12h, 7d, 2w).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="At most this many events (the newest).",
)
def audit(
    account: str | None, discord_id: str | None, login: str | None, since: str | None, limit: int
) -> None:
    """Print the audit trail, one event per line, oldest first: time, kind, account, Discord
    id and detail (never a secret). With --login, the login's HMAC is not printed, nor the
    login itself (a login field sometimes holds a password typed into the wrong box)."""
    from entrypoints.cli_output import (  # noqa: PLC0415
        audit_line,
        parse_account,
        parse_discord_id,
        parse_login,
        parse_since,
    )

    if account is not None and discord_id is not None:
        raise click.UsageError("Give --account or --discord-id, not both.")
    wanted_account = parse_account(account) if account is not None else None
    wanted_discord = parse_discord_id(discord_id) if discord_id is not None else None
    if login == "-":  # asked for without echo at a terminal, else one line of the input
        login = (
            click.prompt("Login", hide_input=True, err=True)
            if sys.stdin.isatty()
            else sys.stdin.readline()
        )
    wanted_login = parse_login(login) if login is not None else None
    wanted_since = parse_since(since) if since is not None else None
    events = _run_use_case(
        lambda c: c.read_audit_trail().execute(
            account_id=wanted_account,
            discord_id=wanted_discord,
            login=wanted_login,
            since=wanted_since,
            limit=limit,
        )
    )
    for event in events:
        click.echo(audit_line(event, login_given=wanted_login is not None))
    if not events:
        click.echo("No audit events match.", err=True)
        if wanted_login is not None:
            click.echo(
                "A login is found under the secret key its failed sign-ins were recorded with: "
                "run this with the service's TASKFLOW_LINK_SECRET_KEY (events recorded before "
                "the key changed, or before migration 0020, name no login it finds).",
                err=True,
            )


@cli.group("email")
def email() -> None:
    """The email queue, and the addresses declined for an account."""


@email.command("retry")
@click.option(
    "--id",
    "email_id",
    type=click.UUID,
    default=None,
    help="Only the email with this id (as logged when it was given up).",
)
def email_retry(email_id: uuid.UUID | None) -> None:
    """Send again the emails that were given up after their last retry (all of them, or one
    with --id): they go back in the queue with a fresh round of attempts."""
    requeued = _run_use_case(lambda c: c.requeue_failed_emails().execute(email_id))
    click.echo(f"Requeued {requeued} email(s).")


def _decline_account_argument(
    _ctx: click.Context, _param: click.Parameter, value: str
) -> AccountId | str:
    """ACCOUNT: an account id (a UUID, as the audit trail shows it) or a username (none is as
    long as a UUID)."""
    text = value.strip()
    if not text:
        raise click.BadParameter("give the account's username or id, not an empty one")
    try:
        return AccountId.parse(text)
    except DomainError:
        return text


def _decline_address_argument(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if "@" not in value or normalize_email(value) is None:
        raise click.BadParameter(f"{value!r} is not an email address")
    if has_hidden_characters(value.strip()) or has_format_characters(value):
        # It would be echoed as another address ("vic\u3164tim@..." as victim@...). No
        # account may take such an address (``validate_email``), so no decline of it keeps
        # anything from one: nothing to lift.
        raise click.BadParameter(
            f"{value.strip()!a} holds characters that show as nothing or as others "
            "(escaped here); no account may take such an address, so no decline of it needs "
            "lifting: type the address by hand"
        )
    return value


@email.command("lift-decline")
@click.argument("account", callback=_decline_account_argument)
@click.argument("address", callback=_decline_address_argument)
def email_lift_decline(account: AccountId | str, address: str) -> None:
    """Let ACCOUNT (a username, or an account id) claim ADDRESS again, which its holder
    declined with "This is not my account" (matched however it is written). Only on the word
    of the address's holder (an email from that address, say), never on the account's: for
    the owner who declined their own account by mistake. Audited (email_decline_lifted).
    Exits 1 when there was no such decline."""
    lifted = _run_use_case(lambda c: c.lift_email_decline().execute(account, address))
    click.echo(
        f"Lifted the decline of {lifted.address} for the account {lifted.account.username} "
        f"(id {lifted.account.id}): it may claim that address again (an email change, "
        "confirmed by the emailed link)."
    )


@cli.group("roles")
def roles() -> None:
    """The role for linked members (TASKFLOW_LINK_DISCORD_LINKED_ROLES)."""


@roles.command("sync")
@click.option(
    "--every",
    is_flag=True,
    help="Ask again for every linked member, not only those missing the role (brings back "
    "roles someone removed by hand in Discord).",
)
@click.option(
    "--wait",
    type=_Seconds(0, 3600),
    default=60,
    show_default=True,
    help="Seconds to keep applying changes Discord asked to retry later (rate limits, "
    "outages); what is left then is applied by the service's role workers.",
)
def roles_sync(every: bool, wait: float) -> None:
    """Give the role to every linked member missing it: members linked before the role was
    configured, and those Discord refused before (not in the server then, a permission or
    the role missing then); take it from unlinked members who may still have it (a removal
    refused, given up, or never asked for). Prints counts, never a token: of the changes it
    asked for, whoever applied them (the service's role workers take their share of the
    queue, and what they met counts as if this run had met it). Exits with status 1
    when Discord refused a change for a reason the operator can fix (a permission, a role or
    server that is not there, the token) or one was given up: a cron job then fails (not for
    a member who is not in the server, which is routine, nor for what is still queued)."""
    settings = load_settings()
    if not settings.linked_roles:
        raise click.ClickException(
            "TASKFLOW_LINK_DISCORD_LINKED_ROLES is empty: there is no role to give."
        )
    from entrypoints.role_worker import NEWER, UNSENT, apply_until_done  # noqa: PLC0415

    async def sync(container: Any) -> tuple[Any, Any]:
        since = container.clock().now()  # the changes asked for from here on are counted
        asked = await container.request_roles_for_links().execute(every=every)
        return asked, await apply_until_done(container, since=since, wait=wait)

    listed = ", ".join(str(role) for role in settings.linked_roles)
    asked, totals = _run_use_case(sync)
    click.echo(
        f"Role(s) {listed}: asked to add {asked.additions} for linked members and to remove "
        f"{asked.removals} from unlinked members."
    )
    click.echo(
        f"Added {totals['add:done']}, removed {totals['remove:done']}. "
        f"Refused by Discord (not retried): {totals['not_a_member']} not in the server, "
        f"{totals['missing_permissions']} missing permissions, {totals['unknown_role']} "
        f"unknown role, {totals['unknown_guild']} unknown server, {totals['rejected']} other. "
        f"Given up: {totals['given_up']}."
    )
    if totals[UNSENT]:
        click.echo(
            f"Of those refused, {totals[UNSENT]} were not sent: Discord had just refused the "
            "same for the whole role (or the token), so they are taken as refused for that "
            "reason. Fix it in Discord, then run this again."
        )
    if totals["not_configured"]:
        click.echo(
            f"Not sent: {totals['not_configured']} queued add(s) of a role that the "
            "TASKFLOW_LINK_DISCORD_LINKED_ROLES of the instance that took them does not name "
            "(not added); run this again once every instance has this setting."
        )
    if totals["still_queued"]:
        click.echo(
            f"Still queued: {totals['still_queued']} (Discord asked to wait; the service's "
            "role workers apply them, or run this again)."
        )
    if totals[NEWER]:
        told = ", ".join(
            f"{key.removeprefix(NEWER + ':')}: {totals[key]}"
            for key in sorted(totals)
            if key.startswith(NEWER + ":")
        )
        click.echo(
            f"Left to a newer release: {totals[NEWER]} change(s) of an action or status this "
            f"version does not know ({told}); its instances apply them."
        )
    to_fix = ("missing_permissions", "unknown_role", "unknown_guild", "rejected", "given_up")
    if any(totals[reason] for reason in to_fix):
        sys.exit(1)


def _run_use_case(call: Callable[[Any], Awaitable[T]]) -> T:
    """Build the container, run one use case, and release the database afterwards. On SQL
    storage, a database without this version's schema stops it first, saying so. Storage
    that no other process sees (memory) is refused: the command would read an empty store
    of its own and lose what it wrote when it exits, as an API key it printed to keep."""
    from entrypoints.container import close_resources  # noqa: PLC0415

    container = _container_for_command()
    settings = container.settings()
    if not container.storage().shared_between_processes:
        raise click.ClickException(
            "This command would work on storage of its own, which no other process sees and "
            "which is gone when it exits (TASKFLOW_LINK_STORAGE=memory, or an in-memory SQLite "
            "database): run it with the service's settings, TASKFLOW_LINK_STORAGE=sql and its "
            "TASKFLOW_LINK_DATABASE_URL."
        )
    if settings.storage == "sql":
        _require_database_file(settings.database_url)

    async def run() -> T:
        try:
            if settings.storage == "sql":
                await _check_schema(container.sql_db(), settings.database_url)
            return await call(container)
        finally:
            await close_resources(container)

    try:
        return asyncio.run(run())
    except (StorageError, StorageFault) as exc:
        # In the database's words: "cannot reach its database right now, try again shortly"
        # (the words for a person on a page) was said of a database that refused a write
        # (read-only: a replica, a file this user may not write), which no wait mends. A
        # transaction rolled back for another one is said as such: "Cannot use the database
        # at …: deadlock detected" read as an outage.
        if isinstance(exc, StorageNotReady) or (
            exc.__cause__ is None and not isinstance(exc, StorageContention)
        ):
            raise
        raise _database_failure(settings.database_url, exc) from None


def _require_database_file(url: str) -> None:
    """Refuse an SQLite file that does not exist (a mistyped path, another working
    directory), before SQLite creates it empty: only ``db upgrade`` (and ``serve``) make one."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from adapters.sql.database import sqlite_file  # noqa: PLC0415

    parsed = make_url(url)
    path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not Path(path).exists():
        raise click.ClickException(
            f"There is no database at {_safe_url(url)} (no such file): check "
            "TASKFLOW_LINK_DATABASE_URL and the working directory, or run `taskflow-link db "
            "upgrade` to create it."
        )


async def _check_schema(database: SqlDatabase, url: str) -> None:
    """Refuse a database that has no tables or an older schema: the commands' queries would
    fail on a missing table or column, which reads as an outage ("cannot reach its
    database"). A revision this version does not know (a newer release's) is let through
    with a warning."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from adapters.sql import revisions  # noqa: PLC0415
    from entrypoints.schema import unknown_revision  # noqa: PLC0415

    try:
        found = await revisions.found_revisions(database)
    except (OSError, DBAPIError) as exc:
        raise _database_failure(url, exc) from None
    head = revisions.head_revision()
    if found == [head]:
        return
    upgrade = "run `taskflow-link db upgrade` first"
    if not found and (ours := (await _tables_without_revision(database))[0]):
        raise click.ClickException(_not_taking_over(_safe_url(url), ours))
    if not found:
        raise click.ClickException(
            f"The database at {_safe_url(url)} has no tables yet: {upgrade}."
        )
    listed = ", ".join(found)
    if set(found) <= revisions.known_revisions():
        raise click.ClickException(
            f"The database at {_safe_url(url)} is at revision {listed}, this version needs "
            f"{head}: {upgrade}."
        )
    unknown = await unknown_revision(database, url)
    if unknown is None:
        return
    if not unknown.later_release:
        raise click.ClickException(unknown.message)
    click.echo(f"warning: {unknown.message}", err=True)


def _container_for_command(
    overrides: dict[str, Any] | None = None, *, counted: bool = False
) -> Any:
    """The container of a command. Only a service (``counted``: the gateway bot) counts
    what it does: a one-off command serves no /metrics, its counts would be gone at its
    exit (or, with PROMETHEUS_MULTIPROC_DIR, added to the web app's), and Prometheus's
    client is not even loaded."""
    from entrypoints.container import build_container  # noqa: PLC0415

    return build_container(load_settings(**(overrides or {})), counted=counted)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=_PORT, help="Port to listen on.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving the port. More than one needs TASKFLOW_LINK_REDIS_URL, SQL "
    "storage and TASKFLOW_LINK_EMAIL_BACKEND=smtp.",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the web app (pages, OAuth callback, JSON API, interactions) with uvicorn."""
    import uvicorn  # noqa: PLC0415

    settings = _settings_for_service(load_settings)
    _configure_logging(settings.log_level, settings.log_format)
    _say_unknown_variables(logging.getLogger("taskflow_link.web"))
    if settings.email_outbox_page and not settings.development and not is_loopback(host):
        raise click.UsageError(
            f"--host {host} would let other machines reach the outbox page, which shows "
            "everyone's links (TASKFLOW_LINK_EMAIL_OUTBOX_PAGE): listen on 127.0.0.1, or turn "
            "the page off"
        )
    from entrypoints.asgi import make_app  # noqa: PLC0415

    if workers > 1:
        # Each worker builds its own app; a missing setting stops us here, once, naming it.
        from entrypoints.container import build_container  # noqa: PLC0415

        container = build_container(settings)
        _check_shareable(settings, container.storage().shared_between_processes)
        container.discord_oauth()
    # Built (not started) first: a missing setting (the Discord client) is said before a
    # port in use, as the workers' are above; it was said only once the port was freed.
    app: Any = "entrypoints.asgi:make_worker_app" if workers > 1 else make_app()
    # Said before the app starts: uvicorn found a port in use only after the app's start-up,
    # logged it amid the start-up and shutdown lines, and exited with its own status 3.
    _require_listening(host, port, workers)
    if workers > 1:  # said here once, not by each worker (``make_worker_app``)
        from entrypoints.schema import schema_check_in_thread  # noqa: PLC0415

        log = logging.getLogger("taskflow_link.web")
        for warning in settings.warnings():
            log.warning("%s", warning)
        schema_check_in_thread(container, log)
    click.echo(
        f"taskflow-link on http://{url_host(host)}:{port} (public URL {settings.public_url})"
        + (f", {workers} worker processes" if workers > 1 else "")
    )
    from entrypoints.http11 import with_timeouts  # noqa: PLC0415

    with _metrics_shared_by(workers, settings), _started_or_said(), _sigterm_ends_with_0():
        uvicorn.run(
            app,
            factory=workers > 1,
            host=host,
            port=port,
            # httptools (HTTP_PARSER), its head bounded in size and in time, a body in time.
            http=with_timeouts(
                settings.request_head_timeout_seconds, settings.request_body_timeout_seconds
            ),
            workers=workers if workers > 1 else None,
            # The app has no WebSocket route (the emulator's gateway is its own server's):
            # no upgrade is made, an Upgrade request answered as a plain one, then closed.
            ws="none",
            # uvicorn's own access log would print query strings (OAuth codes and states).
            access_log=False,
            log_config=None,
            # The app reads X-Forwarded-* itself, from TASKFLOW_LINK_FORWARDED_ALLOW_IPS only.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),
        )


def _require_listening(host: str, port: int, workers: int = 1) -> None:
    from entrypoints.listening import http_parser_problem, listen_problem  # noqa: PLC0415

    parser_problem = http_parser_problem()
    if parser_problem:
        raise click.ClickException(f"{parser_problem}.")
    problem = listen_problem(host, port, workers=workers)
    if problem == "in use":
        raise click.ClickException(
            f"Port {port} on {host} is in use (another process listens there): stop it, or "
            "choose another port with --port."
        )
    if problem:
        raise click.ClickException(f"Cannot listen on {host} port {port}: {problem}.")


@contextlib.contextmanager
def _started_or_said(what: str = "The web app") -> Iterator[None]:
    """uvicorn ends a server that could not start (its port taken meanwhile, the app's
    start-up failed) with ``sys.exit(3)``: the command's own status, 1, and a sentence."""
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise click.ClickException(f"{what} could not start (see the messages above).") from None


@contextlib.contextmanager
def _sigterm_ends_with_0() -> Iterator[None]:
    """SIGTERM is a server's usual end, status 0 as for Ctrl-C. uvicorn shuts down cleanly at
    SIGTERM, then raises the signal again for the handler it found: the default one killed
    the process (status 143 in a shell, a container "exited (143)") after a clean stop."""

    def stopped(_signal: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _metrics_shared_by(workers: int, settings: Any) -> Iterator[None]:
    """Several workers: ``/metrics`` of any of them must answer for all. prometheus_client
    does it with files in ``PROMETHEUS_MULTIPROC_DIR``; when that is unset, a fresh directory
    for this run (the workers inherit the variable), removed at the end."""
    from adapters.metrics import MULTIPROCESS_VARIABLES, multiprocess_directory  # noqa: PLC0415

    if workers == 1 or not settings.metrics or multiprocess_directory() is not None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="taskflow-link-metrics-") as directory:
        os.environ[MULTIPROCESS_VARIABLES[0]] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_VARIABLES[0]]


def _check_shareable(settings: Any, shared_storage: bool) -> None:
    """Several processes must share what one keeps in memory, or refuse to start."""
    if not shared_storage:
        raise click.UsageError(
            "--workers needs storage every worker sees (TASKFLOW_LINK_STORAGE=sql with a "
            "database server or file): memory is per process."
        )
    if settings.redis_url is None:
        raise click.UsageError(
            "--workers above 1 needs TASKFLOW_LINK_REDIS_URL: without Redis, each worker "
            "would keep its own rate limits, sign-in throttles and interaction replay guard "
            "(a client would get N times the budget, and a replayed interaction could reach "
            "another worker)."
        )
    if settings.email_backend == "outbox":
        raise click.UsageError(
            "--workers above 1 needs TASKFLOW_LINK_EMAIL_BACKEND=smtp: the outbox keeps "
            "emails in one process's memory."
        )


@cli.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for both servers.")
@click.option("--port", default=8000, show_default=True, type=_PORT, help="The web app's port.")
@click.option(
    "--emulator-port", default=8001, show_default=True, type=_PORT, help="The emulator's port."
)
@click.option(
    "--database",
    default="taskflow-link-demo.db",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file (created and migrated if needed).",
)
def demo(host: str, port: int, emulator_port: int, database: Path) -> None:
    """Run everything locally: web app + Discord emulator on SQLite. Ctrl-C stops it.

    It reads no .env file; the settings it does not set itself (webhooks, Linked Roles, limits)
    come from TASKFLOW_LINK_* environment variables, named at start."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from entrypoints.demo import (  # noqa: PLC0415
        DemoUrls,
        run_demo,
        settings_from_environment,
    )
    from entrypoints.listening import http_parser_problem, listen_problem  # noqa: PLC0415

    parser_problem = http_parser_problem()
    if parser_problem:
        raise click.ClickException(f"{parser_problem}.")
    if port == emulator_port:
        raise click.BadParameter("must differ from --port", param_hint="--emulator-port")
    if not is_loopback(host):
        raise click.BadParameter(
            f"{host!r} is not this machine: the demo runs over plain http and shows every "
            "email it sends (sign-in and reset links too) at /outbox, so it listens on a "
            "loopback address only (127.0.0.1, ::1, localhost)",
            param_hint="'--host'",
        )
    if not database.resolve().parent.is_dir():
        raise click.BadParameter(
            f"{database.resolve().parent} is not a directory (the file is created in one that "
            "exists)",
            param_hint="'--database'",
        )
    taken = settings_from_environment(os.environ)
    if taken:
        click.echo(
            f"note: The demo takes these settings from the environment: {', '.join(taken)} "
            "(unset them to run it with its own).",
            err=True,
        )
    for option, number in (("--port", port), ("--emulator-port", emulator_port)):
        problem = listen_problem(host, number)
        if problem == "in use":
            raise click.ClickException(
                f"Port {number} on {host} is in use. Choose another with {option}, e.g. "
                f'make demo DEMO_ARGS="{option} {number + 10}".'
            )
        if problem:
            raise click.ClickException(f"Cannot listen on {host} port {number}: {problem}.")
    _configure_logging("WARNING")

    def ready(urls: DemoUrls) -> None:
        click.echo(
            "\nTaskFlow Link demo is running. Open:\n"
            f"  1. Discord (emulated channel):  {urls.channel}\n"
            "     pick a test user, type /link, click the button\n"
            f"  2. TaskFlow (the web app):      {urls.app}\n"
            '     "Sign in with Discord", your account page\n'
            f"  3. Outbox (emails it sent):     {urls.outbox}\n"
            f"Data: {urls.database} (SQLite). Press Ctrl-C to stop.\n"
        )

    try:
        asyncio.run(
            run_demo(
                host=host,
                port=port,
                emulator_port=emulator_port,
                database=database.resolve(),
                on_ready=ready,
            )
        )
    except SystemExit:
        raise click.ClickException("The demo could not start (see the messages above).") from None
    except (OSError, DBAPIError) as exc:  # a database file it may not create or write
        raise click.ClickException(
            f"Cannot use the database {database.resolve()}: {_failure(exc)}"
        ) from None
    click.echo("Demo stopped.")


@cli.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=_PORT)
@click.option(
    "--client-id",
    default="1100000000000000001",
    show_default=True,
    help="The application's id (a snowflake), also its OAuth2 client id.",
)
@click.option("--client-secret", default="emulator-secret", show_default=True)
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    default=["http://127.0.0.1:8000/auth/discord/callback"],
    show_default=True,
    help="Registered OAuth2 redirect URI (repeatable).",
)
@click.option(
    "--interactions-url",
    default="http://127.0.0.1:8000/interactions",
    show_default=True,
    help="The service's Interactions Endpoint URL, where slash commands are sent. Empty for "
    "none, as for a gateway bot (`taskflow-link bot`): Discord then sends them over the "
    "gateway, and never there while one is set.",
)
def emulator(  # noqa: PLR0917 - click passes each option
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    redirect_uris: tuple[str, ...],
    interactions_url: str,
) -> None:
    """Run the Discord emulator: OAuth2, bot API, signed slash commands, test users."""
    import uvicorn  # noqa: PLC0415

    from entrypoints.demo import (  # noqa: PLC0415
        LINKED_ROLE_ID,
        LINKED_ROLE_NAME,
        linked_role_setting,
    )
    from entrypoints.emulator import EmulatorState, create_emulator_app  # noqa: PLC0415

    if not client_id.isdecimal():
        raise click.BadParameter("must be a Discord snowflake (digits)", param_hint="--client-id")
    _require_listening(host, port)  # before printing settings as if it ran
    state = EmulatorState(client_id, client_secret, set(redirect_uris))
    state.interactions_url = interactions_url or None
    state.add_user("alice", global_name="Alice", email="alice@example.com", verified=True)
    state.add_user("bob", global_name="Bob", email="bob@example.com", verified=False)
    state.add_role(LINKED_ROLE_NAME, role_id=LINKED_ROLE_ID, color=0x23A559)
    base = f"http://{url_host(host)}:{port}"
    click.echo(f"Discord emulator on {base} with test users alice (verified email) and bob.")
    click.echo("Point the service at it with:")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_API_URL={base}/api/v10")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_AUTHORIZE_URL={base}/oauth2/authorize")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_CDN_URL={base}")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_CLIENT_ID={client_id}")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_CLIENT_SECRET={client_secret}")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_BOT_TOKEN={state.bot_token}")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_PUBLIC_KEY={state.public_key}")
    click.echo(f"  export TASKFLOW_LINK_DISCORD_LINKED_ROLES={linked_role_setting()}")
    if interactions_url:
        click.echo(f"Slash commands go to {interactions_url}; run one as a test user:")
    else:
        click.echo(
            "Slash commands go over the gateway to `taskflow-link bot`; run one as a test user:"
        )
    click.echo(
        f"  curl -X POST {base}/_emulator/interactions -H 'content-type: application/json' "
        '-d \'{"user_id": "USER_ID", "command": "link"}\'   (user ids: '
        f"curl {base}/_emulator/users)"
    )
    click.echo(
        f"Create more users: curl -X POST {base}/_emulator/users -H 'content-type: "
        'application/json\' -d \'{"username": "carol", "email": "c@example.com", '
        '"verified": true}\''
    )
    from entrypoints.http11 import BoundedHttpToolsProtocol  # noqa: PLC0415

    with _started_or_said("The emulator"), _sigterm_ends_with_0():
        uvicorn.run(
            create_emulator_app(state),
            host=host,
            port=port,
            http=BoundedHttpToolsProtocol,
            log_level="warning",
        )


def _shard_ids_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    from entrypoints.settings import parse_shard_ids  # noqa: PLC0415

    if value is None:
        return None
    try:
        ids = parse_shard_ids(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not ids:
        raise click.BadParameter("give at least one shard number, such as 0 or 0,1")
    return ids


@cli.group("bot", invoke_without_command=True)
@click.option(
    "--shard-ids",
    metavar="IDS",
    callback=_shard_ids_option,
    help="The gateway shards this copy runs, comma-separated (e.g. 0,1); needs --shard-count. "
    "Default: TASKFLOW_LINK_DISCORD_SHARD_IDS, else every shard.",
)
@click.option(
    "--shard-count",
    type=click.IntRange(1, MAX_SHARD_COUNT),
    help="How many shards all copies of the bot run together. Default: "
    "TASKFLOW_LINK_DISCORD_SHARD_COUNT, else Discord's recommendation (not sharded).",
)
@click.pass_context
def bot(ctx: click.Context, shard_ids: tuple[int, ...] | None, shard_count: int | None) -> None:
    """Run the Discord bot over the gateway (the usual way to run a bot).

    HTTP interactions need no bot process: set TASKFLOW_LINK_DISCORD_PUBLIC_KEY and `serve`
    answers them at /interactions. Use one or the other, not both.

    Several copies share the work as gateway shards: run each with its own --shard-ids and the
    same --shard-count. A sharded bot does not register the commands at start: run
    `taskflow-link bot sync` once per release.
    """
    if ctx.invoked_subcommand is not None:
        _say_unknown_variables()
        if shard_ids is not None or shard_count is not None:
            raise click.UsageError(
                "--shard-ids and --shard-count are for running the bot, not for "
                f"`bot {ctx.invoked_subcommand}`."
            )
        return
    import aiohttp  # noqa: PLC0415
    import hikari  # noqa: PLC0415

    from entrypoints.bot.runtime import build_gateway_bot  # noqa: PLC0415

    container = _settings_for_service(
        lambda: _container_for_command(_shard_overrides(shard_ids, shard_count), counted=True)
    )
    settings = container.settings()
    # Said alone, before the warnings of a start (with the variables that are no setting: a
    # misspelt token's name is often why).
    _settings_for_service(lambda: settings.require("discord_bot_token"))
    _configure_logging(settings.log_level, settings.log_format)
    _say_unknown_variables(logging.getLogger("taskflow_link.bot"))
    for warning in settings.warnings():  # as `serve` does (a shared webhook secret, say)
        logging.getLogger("taskflow_link.bot").warning("%s", warning)
    if not container.storage().shared_between_processes:  # the bot is a process of its own
        logging.getLogger("taskflow_link.bot").warning(
            "This bot keeps its data in its own memory (TASKFLOW_LINK_STORAGE=memory, or an "
            "in-memory SQLite database), which no web app sees: the /link buttons it gives "
            "lead to a page that does not know them, and what it holds is gone when it stops. "
            "Give it the web app's TASKFLOW_LINK_STORAGE=sql and TASKFLOW_LINK_DATABASE_URL."
        )
    shards = f" as {settings.shards}" if settings.shards else ""
    try:
        # Built before saying "connecting": a missing setting (the bot token) is said alone.
        runner = build_gateway_bot(container)
        click.echo(
            f"taskflow-link bot: connecting to Discord's gateway ({settings.discord_api_url})"
            f"{shards}"
        )
        settle_start_up_objects()
        runner.run()
    except (hikari.HikariError, aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: hikari reads the application id out of the token before connecting.
        said = f"The bot could not connect to Discord: {exc}"
        unanswered = (aiohttp.ClientConnectionError, OSError)
        if isinstance(exc, unanswered) or (
            isinstance(exc, hikari.HTTPError)
            and not isinstance(exc, hikari.HTTPResponseError)
            and isinstance(exc.__cause__, unanswered)
        ):
            said += (
                f". Nothing answered there: check TASKFLOW_LINK_DISCORD_API_URL "
                f"({settings.discord_api_url}) and that this machine reaches it"
            )
        raise click.ClickException(said) from None
    if runner.failed:
        raise click.ClickException("The bot stopped: it could not serve its commands (see above).")


def _shard_overrides(shard_ids: tuple[int, ...] | None, shard_count: int | None) -> dict[str, Any]:
    """The command line's shards over the settings', checked together: a mistake is a usage
    error naming the options (and the variables, when one half came from there)."""
    from entrypoints.settings import parse_shard_ids, shard_problem  # noqa: PLC0415

    if shard_ids is None and shard_count is None:
        return {}
    settings = load_settings()
    ids = shard_ids if shard_ids is not None else parse_shard_ids(settings.discord_shard_ids)
    count = shard_count if shard_count is not None else settings.discord_shard_count
    if count is None:  # none anywhere: name the option to add (the variable too)
        raise click.BadParameter(
            "the shard ids need the shard count (how many shards all copies run): give "
            "--shard-count (or set TASKFLOW_LINK_DISCORD_SHARD_COUNT)",
            param_hint="'--shard-ids'",
        )
    problem = shard_problem(ids, count)
    if problem:
        given = (
            "'--shard-ids'" if shard_ids is not None else "TASKFLOW_LINK_DISCORD_SHARD_IDS",
            "'--shard-count'" if shard_count is not None else "TASKFLOW_LINK_DISCORD_SHARD_COUNT",
        )
        raise click.BadParameter(problem, param_hint=" with ".join(given))
    return {"discord_shard_ids": ",".join(map(str, ids)), "discord_shard_count": count}


@bot.command("sync")
def bot_sync() -> None:
    """Register the slash commands with Discord (and, with Linked Roles, the role connection
    metadata records), then exit (no bot is started)."""
    import aiohttp  # noqa: PLC0415
    import hikari  # noqa: PLC0415

    from entrypoints.bot.runtime import register_role_metadata, sync_commands  # noqa: PLC0415

    container = _container_for_command()
    url = container.settings().discord_api_url
    try:
        listed = asyncio.run(sync_commands(container))
    except (hikari.HikariError, aiohttp.ClientError, OSError) as exc:
        raise click.ClickException(f"Could not register the commands with {url}: {exc}") from None
    for scope, names in listed.items():
        click.echo(f"{scope}: " + (", ".join(f"/{n}" for n in names) or "(none)"))
    if not container.settings().discord_role_connections:
        return
    try:
        keys = asyncio.run(register_role_metadata(container))
    except (hikari.HikariError, aiohttp.ClientError, OSError) as exc:
        raise click.ClickException(
            f"Could not register the Linked Roles metadata with {url}: {exc}"
        ) from None
    click.echo("linked roles metadata: " + ", ".join(keys))


@cli.group("role-connections")
def role_connections() -> None:
    """Discord Linked Roles (with TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS=true)."""


@role_connections.command("refresh")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Push every kept role connection now, not only those due.",
)
def role_connections_refresh(everything: bool) -> None:
    """Push the role connections that are due to Discord: days linked that changed, unlinks
    (then their tokens are deleted), earlier failures. The web app and the bot do this in the
    background; this is for cron, or to push at once. Stops at Discord's rate limit or a block
    of the address, leaving the rest due (exit status 1). Prints counts, never a token."""
    from entrypoints.role_connection_worker import (  # noqa: PLC0415
        gone_note,
        log_report,
        paused_reason,
    )

    _require_role_connections()
    report = _run_use_case(lambda c: c.refresh_role_connections().execute(everything=everything))
    log_report(report)
    click.echo(
        f"Pushed {report.pushed}, cleared {report.cleared} after an unlink, dropped "
        f"{report.revoked} (access revoked in Discord), failed {report.failed} (retried "
        f"later), unreadable {report.unreadable}, given up {report.given_up} (unlinked; "
        f"Discord failed every push for about a week){gone_note(report)}."
        + (
            f" {report.key_missing} sealed with a key not configured here (in "
            "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY): left to an instance that has it."
            if report.key_missing
            else ""
        )
    )
    if report.paused:
        click.echo(
            f"Stopped: {paused_reason(report)}. {report.paused} left due, for the workers (or "
            "a run after that)."
        )
    if report.failed or report.unreadable or report.key_missing or report.paused:
        sys.exit(1)


@role_connections.command("status")
@click.option(
    "--lost",
    is_flag=True,
    help="Also list the linked members whose connection is lost: Discord id, since when, why, "
    "and whether their tokens are kept.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="With --lost: at most this many (the longest lost).",
)
@click.option(
    "--since",
    metavar="WHEN",
    default="30d",
    show_default=True,
    help="Count the tokens given up from then on (as far back as the audit trail keeps): a "
    "date (2026-11-01, UTC), a time (2026-11-01T12:00Z) or how long ago (12h, 7d, 2w).",
)
def role_connections_status(lost: bool, limit: int, since: str) -> None:
    """How the kept role connections stand: current, due, retrying, being pushed, unreadable,
    sealed with a key not configured here; the members whose connection is lost, by why;
    and the tokens given up. Reads only; prints counts and Discord ids, never a token."""
    from entrypoints.cli_output import parse_since, role_connection_status_lines  # noqa: PLC0415

    wanted_since = parse_since(since)
    status = _run_use_case(
        lambda c: c.show_role_connection_status().execute(
            since=wanted_since, lost=limit if lost else 0
        )
    )
    for line in role_connection_status_lines(status, listed=lost):
        click.echo(line)
    if status.counts.kept and not load_settings().discord_role_connections:
        click.echo(
            "Linked Roles are off here (TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS): run this with "
            "the service's settings, or `role-connections forget` to tell Discord and delete "
            "what is kept."
        )


@role_connections.command("forget")
@click.option("--yes", is_flag=True, help="Do it (without this, only say what it would do).")
@click.option(
    "--drop-unreadable",
    is_flag=True,
    help="Also delete tokens no configured key decrypts (the key is gone for good).",
)
def role_connections_forget(yes: bool, drop_unreadable: bool) -> None:
    """After turning Linked Roles off: tell Discord that everyone whose tokens are kept is no
    longer connected (the role that needs the connection goes), then delete their tokens.
    Those Discord does not take now, and those no configured key decrypts, are kept for
    another run (exit status 1; --drop-unreadable deletes the latter); at Discord's rate
    limit or a block of the address it stops (exit status 1: run it again later). Run it
    with Linked Roles off on every instance, so that no worker pushes them again meanwhile.
    Prints counts, never a token."""
    from entrypoints.role_connection_worker import GONE, paused_reason  # noqa: PLC0415

    settings = load_settings()
    if settings.discord_role_connections:
        raise click.ClickException(
            "Linked Roles are on: turn them off first (TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS="
            "false, every process restarted), or the workers keep pushing what this clears."
        )
    # To decrypt the tokens, and to refresh an expired one (the application's credentials).
    settings.require("token_encryption_key", "discord_client_id", "discord_client_secret")
    if not yes:
        preview = _run_use_case(lambda c: c.forget_role_connections().preview())
        if not preview.kept:
            click.echo("No user's tokens are kept: there is nothing to forget.")
            return
        users = f"{preview.kept} user{'s' if preview.kept != 1 else ''}"
        held = (
            f" ({preview.held} held by a worker now: left for a later run)" if preview.held else ""
        )
        click.echo(
            f"This tells Discord that the {users} whose tokens are kept{held} are no longer "
            "connected to TaskFlow, and deletes their tokens (those no configured key "
            "decrypts are kept, unless --drop-unreadable). Run again with --yes to do it."
        )
        return
    report = _run_use_case(
        lambda c: c.forget_role_connections().execute(drop_unreadable=drop_unreadable)
    )
    unreadable = report.unreadable + report.key_missing  # with a key not configured here
    what = "deleted" if drop_unreadable else "kept: the key may come back"
    click.echo(
        f"Told Discord and deleted the tokens of {report.cleared}; {report.revoked} had "
        f"revoked the access already (deleted); {unreadable} no configured key "
        f"decrypts ({what}); {report.given_up} given up (deleted); {report.failed} "
        "failed (kept: run again)."
        + (
            f" {report.held} held by a worker (stopped within the last 5 minutes, or still "
            "running somewhere with Linked Roles on): run again in 5 minutes."
            if report.held
            else ""
        )
        # Taken over: by an instance with Linked Roles still on, which may have kept (and
        # pushed "linked" with) the tokens; or deleted, and the next run finds nothing.
        + (f" {report.gone} {GONE}: run again." if report.gone else "")
    )
    if report.paused:
        click.echo(
            f"Stopped: {paused_reason(report)}. {report.paused} not told yet (kept): run it "
            "again after that."
        )
    if report.waiting:
        click.echo(
            f"{report.waiting} not told yet (kept): Discord's limit of their pushes (or of "
            "the token refreshes) has no call left; run it again in a minute."
        )
    failed = report.failed or report.held or report.gone or report.paused or report.waiting
    if failed or (unreadable and not drop_unreadable):
        sys.exit(1)


@cli.group("tokens")
def tokens() -> None:
    """The Discord tokens kept for Linked Roles (encrypted at rest)."""


@tokens.command("rotate")
@click.option(
    "--drop-unreadable",
    is_flag=True,
    help="Delete the tokens no configured key decrypts (their key is gone for good; run it "
    "with every key the instances have).",
)
def tokens_rotate(drop_unreadable: bool) -> None:
    """Re-encrypt every kept token with the newest TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY (the first
    one listed), so that older keys can be removed. Tokens no configured key decrypts are kept,
    in case their key comes back, unless --drop-unreadable (audited with each Discord id:
    those members connect again through the verification URL). Prints counts, never a token."""
    load_settings().require("token_encryption_key")
    report = _run_use_case(lambda c: c.rotate_token_keys().execute(drop_unreadable=drop_unreadable))
    unreadable = (
        "deleted"
        if drop_unreadable
        else "kept: the key may come back; --drop-unreadable deletes them"
    )
    click.echo(
        f"Re-encrypted {report.rotated} token set(s) with the newest key; {report.current} "
        f"already were; {report.unreadable} could not be decrypted with any configured key"
        + (f" ({unreadable})" if report.unreadable else "")
        + (f"; {report.skipped} being pushed (run again)" if report.skipped else "")
        + "."
    )
    if (report.unreadable and not drop_unreadable) or report.skipped:
        sys.exit(1)


def _require_role_connections() -> None:
    if not load_settings().discord_role_connections:
        raise click.ClickException(
            "Linked Roles are off: set TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS=true (and "
            "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY)."
        )


@cli.group("api-key")
def api_key() -> None:
    """Keys for services that call the JSON API."""


# What each scope lets a key do, for the command line's help and errors.
_SCOPES_DONE = {ApiScope.LINKS_READ: "look links up", ApiScope.LINKS_WRITE: "unlink"}


def _scopes_choice() -> str:
    return " or ".join(f"{scope.value} ({what})" for scope, what in _SCOPES_DONE.items())


def _scopes_option(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Every ``--scope`` together, each a scope or several separated by commas or spaces, as
    ``api-key list`` (commas) and ``api-key create`` (spaces) show them. A scope named twice
    is a slip (another was meant, perhaps), so it is refused rather than taken once."""
    known = {scope.value for scope in ApiScope}
    names: list[str] = []
    for given in value:
        listed = [name for name in re.split(r"[\s,]+", given) if name]
        if not listed:
            raise click.BadParameter(f"give a scope: {_scopes_choice()}")
        for name in listed:
            if name not in known:
                raise click.BadParameter(
                    f"{name!r} is not a scope: give {_scopes_choice()}; several: repeat "
                    "--scope, or separate them with commas"
                )
            if name in names:
                raise click.BadParameter(f"{name} is named twice: name each scope once")
            names.append(name)
    return tuple(names)


def _api_key_name_argument(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """NAME checked as the key is (a usage error, before the database is opened)."""
    from domain.use_cases.api_keys import api_key_name  # noqa: PLC0415 - every use case

    try:
        api_key_name(value)
    except DomainError as exc:
        raise click.BadParameter(f"{value!r}: {exc.message}") from None
    return value


@api_key.command("create")
@click.argument("name", callback=_api_key_name_argument)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    callback=_scopes_option,
    metavar="SCOPE[,SCOPE]",
    help="What the key may do: links:read looks links up, links:write unlinks (several: "
    "repeat --scope, or separate them with commas or spaces). Default: links:read only.",
)
@click.option(
    "--expires-in",
    "expires_in_days",
    type=click.IntRange(1, MAX_API_KEY_LIFETIME.days),
    default=None,
    metavar="DAYS",
    help="The key stops working after this many days (default: never; revoke it instead).",
)
def api_key_create(name: str, scopes: tuple[str, ...], expires_in_days: int | None) -> None:
    """Create a key called NAME; it is shown once, only its hash is stored."""
    expires_in = timedelta(days=expires_in_days) if expires_in_days is not None else None
    created = _run_use_case(lambda c: c.create_api_key().execute(name, scopes, expires_in))
    key = created.key
    expiry = f"expires {_when(key.expires_at)}" if key.expires_at else "never expires"
    click.echo(f"API key {key.name!r}: {scopes_to_text(key.scopes)}; {expiry}.")
    click.echo("Shown once; store it now:")
    click.echo(created.token)


def _when(moment: datetime | None, never: str = "never") -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else never


@api_key.command("list")
def api_key_list() -> None:
    """List keys: scopes, created, last used (to the minute), expiry and status. The keys
    themselves are never stored."""
    keys = _run_use_case(lambda c: c.list_api_keys().execute())
    if not keys:
        click.echo("No API keys. Create one with: taskflow-link api-key create NAME")
        return
    now = datetime.now(UTC)
    rows = [("NAME", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "STATUS")]
    for key in keys:
        if key.revoked_at is not None:
            status = f"revoked {key.revoked_at:%Y-%m-%d}"
        elif key.expired(now):
            status = "expired"
        else:
            status = "active"
        rows.append(
            (
                key.name,
                ",".join(sorted(key.scopes)) or "-",
                _when(key.created_at),
                _when(key.last_used_at),
                _when(key.expires_at),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


@api_key.command("revoke")
@click.argument("name", callback=_api_key_name_argument)  # no key can have another
def api_key_revoke(name: str) -> None:
    """Revoke the active key called NAME."""
    revoked = _run_use_case(lambda c: c.revoke_api_key().execute(name))
    click.echo(f"API key {revoked.name!r} revoked.")  # as stored: " crm " revokes 'crm'


def _configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    from entrypoints.logs import configure_logging  # noqa: PLC0415

    configure_logging(level, log_format)


def _safe_url(url: str) -> str:
    """The database URL without its password (as the driver reads it), for messages."""
    from entrypoints.settings import database_url_without_password  # noqa: PLC0415

    return database_url_without_password(url)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except SettingsError as exc:  # "Error: " as click's own errors and the others below
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except StorageNotReady as exc:  # passed the schema check: a later release's schema
        click.echo(
            f"Error: The database has not got what this version needs ({exc.missing}): run "
            "`taskflow-link db upgrade`, or the release that migrated it.",
            err=True,
        )
        sys.exit(1)
    except DomainError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    except click.exceptions.Abort as exc:
        # Ctrl-C: as a shell reports SIGINT. Click's prompt raises its Abort "from None",
        # which hides the cause but keeps the context.
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            # What the loop left half done (a database connection cut mid-handshake) reports
            # its loss as the process exits ("Future exception was never retrieved"): no news.
            logging.getLogger("asyncio").disabled = True
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        click.echo("Aborted.", err=True)  # the end of the input where one was read
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # python -m entrypoints.cli
    main()
