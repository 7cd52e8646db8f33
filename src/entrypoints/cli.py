"""The ``taskflow-link`` command. Heavy imports happen inside commands, not at start."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy.exc import DBAPIError

from domain.errors import DomainError
from entrypoints.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from adapters.sql import SqlDatabase

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskflow-link")
def cli() -> None:
    """Link Discord accounts to TaskFlow accounts; sign in to TaskFlow with Discord.

    Settings come from TASKFLOW_LINK_* environment variables or a .env file
    (see the README's configuration table).
    """


@cli.command("config")
def show_config() -> None:
    """Check the configuration and print it (secrets hidden)."""
    settings = load_settings()
    for name, value in settings.model_dump().items():
        shown = "(set)" if "secret" in name or "token" in name else value
        if value is None:
            shown = "(not set)"
        click.echo(f"TASKFLOW_LINK_{name.upper()} = {shown}")


@cli.group()
def db() -> None:
    """Database schema migrations (Alembic, shipped inside the package)."""


def _run_with_database(action: Callable[[SqlDatabase], Awaitable[T]]) -> T:
    from adapters.sql import SqlDatabase  # noqa: PLC0415

    settings = load_settings()

    async def run() -> T:
        database = SqlDatabase(settings.database_url)
        try:
            return await action(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except (OSError, DBAPIError) as exc:
        raise click.ClickException(
            f"Cannot use the database at {_safe_url(settings.database_url)}: {exc}"
        ) from None


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from adapters.sql import migrate  # noqa: PLC0415

    current = _run_with_database(lambda d: _upgrade_then_current(migrate, d, revision))
    click.echo(f"Database at revision {current}.")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (`base` removes every table)."""
    from adapters.sql import migrate  # noqa: PLC0415

    current = _run_with_database(lambda d: _downgrade_then_current(migrate, d, revision))
    click.echo(f"Database at revision {current or 'base (empty)'}.")


@db.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from adapters.sql import migrate  # noqa: PLC0415

    current = _run_with_database(migrate.current_revision)
    click.echo(current or "base (empty)")


async def _upgrade_then_current(migrate: Any, database: SqlDatabase, revision: str) -> str | None:
    await migrate.upgrade(database, revision)
    result: str | None = await migrate.current_revision(database)
    return result


async def _downgrade_then_current(migrate: Any, database: SqlDatabase, revision: str) -> str | None:
    await migrate.downgrade(database, revision)
    result: str | None = await migrate.current_revision(database)
    return result


@cli.command("purge-expired")
def purge_expired() -> None:
    """Delete expired pending logins, /link tickets and sessions."""
    from entrypoints.container import build_container  # noqa: PLC0415

    container = build_container(load_settings())

    async def run() -> None:
        try:
            report = await container.purge_expired().execute()
        finally:
            if container.settings().storage == "sql":
                await container.sql_db().dispose()
        click.echo(
            f"Purged {report.pending_logins} pending login(s), {report.link_tickets} "
            f"ticket(s), {report.sessions} session(s)."
        )

    asyncio.run(run())


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except DomainError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
