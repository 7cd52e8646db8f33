"""The ``taskflow-link`` command. Heavy imports happen inside commands, not at start."""

from __future__ import annotations

import sys

import click

from entrypoints.settings import SettingsError


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
    from entrypoints.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    for name, value in settings.model_dump().items():
        shown = "(set)" if "secret" in name or "token" in name else value
        if value is None:
            shown = "(not set)"
        click.echo(f"TASKFLOW_LINK_{name.upper()} = {shown}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
