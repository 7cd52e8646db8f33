"""The demo's emulated Discord server is new at every run, its SQLite database is not: a test
user linked in an earlier run was linked (``/whoami`` said so) without the role for linked
members that the README shows next to linked test users."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.sql import migrate
from entrypoints.container import build_container, close_resources
from entrypoints.demo import ALICE_ID, LINKED_ROLE_ID, DemoUrls, run_demo
from entrypoints.emulator.state import TEST_GUILD_ID
from tests.contracts.repositories import account, link
from tests.fakes.role_connections import KEY_A
from tests.harness import make_settings
from tests.servers import bound_socket, port_of

DEADLINE = 60  # seconds; a deadline only


async def _alice_linked_in_an_earlier_run(database: Path) -> None:
    container = build_container(
        make_settings(storage="sql", database_url=f"sqlite+aiosqlite:///{database}")
    )
    try:
        await migrate.upgrade(container.sql_db())
        owner = account("alicetf", "alice@example.org")
        async with container.uow()() as uow:
            await uow.accounts.add(owner)
            await uow.links.add(link(int(ALICE_ID), owner.id))
            await uow.commit()
    finally:
        await close_resources(container)


@contextlib.asynccontextmanager
async def _demo(database: Path) -> AsyncIterator[int]:
    """The demo on ``database`` until the block ends; yields the emulator's port."""
    # Bound here and handed over: no other process can take a port before the demo listens.
    app_socket, emulator_socket = bound_socket(), bound_socket()
    ready: asyncio.Future[DemoUrls] = asyncio.get_running_loop().create_future()
    demo = asyncio.create_task(
        run_demo(
            host="127.0.0.1",
            port=port_of(app_socket),
            emulator_port=port_of(emulator_socket),
            database=database,
            on_ready=ready.set_result,
            sockets=(app_socket, emulator_socket),
        )
    )
    try:
        await asyncio.wait_for(asyncio.shield(ready), DEADLINE)
        yield port_of(emulator_socket)
    finally:
        if ready.done():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the demo's own handler stops it
        else:
            demo.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(demo, DEADLINE)
        finally:
            app_socket.close()  # (the servers closed them as they stopped, if they started)
            emulator_socket.close()


async def test_a_member_linked_in_an_earlier_run_has_the_role_in_the_new_emulated_server(
    tmp_path: Path,
) -> None:
    database = tmp_path / "demo.db"
    await _alice_linked_in_an_earlier_run(database)
    async with _demo(database) as emulator_port:
        member = f"http://127.0.0.1:{emulator_port}/_emulator/guilds/{TEST_GUILD_ID}/members/"
        roles: object = None
        async with httpx.AsyncClient() as client:
            for _ in range(DEADLINE * 10):
                roles = (await client.get(member + ALICE_ID)).json()
                if LINKED_ROLE_ID in str(roles):
                    break
                await asyncio.sleep(0.1)
        assert LINKED_ROLE_ID in str(roles), roles


async def test_linked_roles_turned_on_for_the_demo_have_their_metadata_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo takes Linked Roles from the environment, but nothing registered the metadata
    records with its emulated Discord (a new application at every run, whose bot token no
    `taskflow-link bot sync` can be given): every push was refused, "are the metadata records
    registered? run `taskflow-link bot sync`", and the account page said "later" for ever."""
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS", "true")
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", KEY_A)
    async with _demo(tmp_path / "demo.db") as emulator_port, httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{emulator_port}/_emulator/role-connections")
    assert [record["key"] for record in answer.json()["metadata"]] == ["linked", "linked_days"]
