"""``taskflow-link demo``: the whole thing on one machine, in one process.

The Discord emulator and the web app (with HTTP interactions), each under uvicorn on localhost,
SQLite in the working directory (migrated at start), a fresh Ed25519 key pair and OAuth client
for the session, and the email outbox shown as a page. Ctrl-C stops both servers cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from adapters.sql import migrate
from domain.model import DiscordId
from entrypoints.bot.runtime import register_role_metadata
from entrypoints.container import build_container
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TEST_GUILD_ID
from entrypoints.listening import url_host
from entrypoints.settings import ENV_PREFIX, Settings, load_settings
from entrypoints.web import create_app

ALICE_ID, BOB_ID = "1000000000000000101", "1000000000000000102"
# The role linked members get in the emulated server (TASKFLOW_LINK_DISCORD_LINKED_ROLES).
LINKED_ROLE_ID, LINKED_ROLE_NAME = "1300000000000000010", "Linked to TaskFlow"


# The settings the demo sets itself. It reads no .env file, but every other setting comes from
# the TASKFLOW_LINK_* variables of the environment, as for any command (the browser test raises
# the sign-in rate limit so): `settings_from_environment` names those it takes.
DEMO_OWN_SETTINGS = frozenset(
    {
        "storage",
        "database_url",
        "public_url",
        "secret_key",
        "discord_client_id",
        "discord_client_secret",
        "discord_bot_token",
        "discord_public_key",
        "discord_api_url",
        "discord_authorize_url",
        "discord_cdn_url",
        "discord_command_guilds",
        "discord_sync_commands",
        "discord_linked_roles",
        "email_backend",
        "email_outbox_page",
    }
)


def settings_from_environment(environ: Mapping[str, str]) -> list[str]:
    """The ``TASKFLOW_LINK_*`` variables of ``environ`` that the demo takes as settings (not
    blank, not one it sets itself), by name: run from a shell holding a deployment's settings,
    the demo would send its link events to that deployment's webhook receivers, keep its rate
    limits in its Redis... Names only, never a value."""
    taken = set()
    for name, value in environ.items():
        field = name.upper().removeprefix(ENV_PREFIX).lower()
        if (
            name.upper().startswith(ENV_PREFIX)
            and field in Settings.model_fields
            and field not in DEMO_OWN_SETTINGS
            and value.strip()
        ):
            taken.add(name.upper())
    return sorted(taken)


class _Server(uvicorn.Server):
    """The demo handles Ctrl-C itself, for both servers at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: Any, host: str, port: int, settings: Settings | None = None) -> _Server:
    # Here, not at the top: the demo command checks that httptools is installed first.
    from entrypoints.http11 import HEAD_TIMEOUT_SECONDS, with_timeouts  # noqa: PLC0415

    timeouts = (
        with_timeouts(settings.request_head_timeout_seconds, settings.request_body_timeout_seconds)
        if settings is not None
        else with_timeouts(HEAD_TIMEOUT_SECONDS)
    )

    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=timeouts,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=5,  # an open connection cannot hold the demo up
        )
    )


@dataclass(frozen=True)
class DemoUrls:
    channel: str
    app: str
    outbox: str
    database: Path


def emulator_for(app_url: str) -> EmulatorState:
    """A fresh emulated Discord application: new OAuth client and interaction key pair."""
    client_id = str(1_100_000_000_000_000_000 + secrets.randbelow(10**17))
    state = EmulatorState(
        client_id, secrets.token_urlsafe(24), {f"{app_url}/auth/discord/callback"}
    )
    state.interactions_url = f"{app_url}/interactions"
    state.service_links = {
        "TaskFlow (the web app)": app_url,
        "Outbox (emails)": f"{app_url}/outbox",
    }
    # The database outlives the session: the seeded users keep their ids, and new ones get
    # ids made from the time (as Discord's are), after every earlier run's, so a link made in
    # an earlier run never points at a different person.
    state.add_user(
        "alice", global_name="Alice", email="alice@example.com", verified=True, user_id=ALICE_ID
    )
    state.add_user(
        "bob", global_name="Bob", email="bob@example.com", verified=False, user_id=BOB_ID
    )
    state.add_role(LINKED_ROLE_NAME, role_id=LINKED_ROLE_ID, color=0x23A559)
    return state


def linked_role_setting() -> str:
    """TASKFLOW_LINK_DISCORD_LINKED_ROLES for the emulated server's role."""
    return f"{TEST_GUILD_ID}:{LINKED_ROLE_ID}"


async def run_demo(
    *,
    host: str,
    port: int,
    emulator_port: int,
    database: Path,
    on_ready: Callable[[DemoUrls], None],
    sockets: tuple[socket.socket, socket.socket] | None = None,
) -> None:
    """The demo until Ctrl-C. ``sockets``: the web app's and the emulator's, bound already to
    ``port`` and ``emulator_port`` (a test's: no other process can take those ports before
    the servers listen); without them, each server binds its port as it starts."""
    app_url = f"http://{url_host(host)}:{port}"
    emulator_url = f"http://{url_host(host)}:{emulator_port}"
    emulator = emulator_for(app_url)
    own: dict[str, Any] = {
        "storage": "sql",
        "database_url": f"sqlite+aiosqlite:///{database}",
        "public_url": app_url,
        "secret_key": secrets.token_urlsafe(32),
        "discord_client_id": emulator.client_id,
        "discord_client_secret": emulator.client_secret,
        "discord_bot_token": emulator.bot_token,
        "discord_public_key": emulator.public_key,
        "discord_api_url": f"{emulator_url}/api/v10",
        "discord_authorize_url": f"{emulator_url}/oauth2/authorize",
        "discord_cdn_url": emulator_url,  # avatars from the emulator's CDN
        "discord_command_guilds": "",
        "discord_sync_commands": True,
        "discord_linked_roles": linked_role_setting(),
        "email_backend": "outbox",
        "email_outbox_page": True,
    }
    assert own.keys() == DEMO_OWN_SETTINGS  # noqa: S101 - the list above names them
    settings = load_settings(**own, _env_file=None)
    container = build_container(settings)
    await migrate.upgrade(container.sql_db())
    await _roles_of_earlier_runs(container, emulator)

    emulator_server = _server(create_emulator_app(emulator), host, emulator_port)
    app_server = _server(create_app(container), host, port, settings)
    servers = (app_server, emulator_server)

    def stop() -> None:
        for server in servers:
            if server.should_exit:  # a second Ctrl-C: stop now
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        # The emulator first: the web app registers its commands with it when it starts.
        app_sockets, emulator_sockets = ([sockets[0]], [sockets[1]]) if sockets else (None, None)
        emulator_task = asyncio.create_task(emulator_server.serve(sockets=emulator_sockets))
        await _started(emulator_server, emulator_task)
        if settings.discord_role_connections:  # turned on from the environment
            # `taskflow-link bot sync` registers them with Discord; the emulated application is
            # new at every run, and its bot token the demo's own.
            await register_role_metadata(container)
        app_task = asyncio.create_task(app_server.serve(sockets=app_sockets))
        await _started(app_server, app_task)
        on_ready(DemoUrls(f"{emulator_url}/channel", app_url, f"{app_url}/outbox", database))
        await asyncio.gather(app_task, emulator_task)
    finally:
        stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _roles_of_earlier_runs(container: Any, emulator: EmulatorState) -> None:
    """Discord keeps a member's roles; the emulated server is new at every run, while the
    database keeps its links: a seeded test user linked in an earlier run holds the role for
    linked members again, as in Discord (users created in a run are gone with it)."""
    for user_id in (ALICE_ID, BOB_ID):
        if await container.who_am_i().execute(DiscordId.parse(user_id)) is not None:
            emulator.test_guild.members.setdefault(user_id, set()).add(LINKED_ROLE_ID)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            await task  # re-raise what stopped it
            raise SystemExit(1)  # uvicorn exits quietly when it cannot bind the port
        await asyncio.sleep(0.02)
