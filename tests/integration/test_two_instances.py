"""Two `taskflow-link serve` processes on one Postgres and one Redis (both in containers), behind
one public URL, as a load balancer would spread one person's requests over them: limits are
shared, a replayed interaction is refused by the other instance, a /link ticket links once, and
an email is sent once with both instances' workers polling."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import outgoing_emails, user_links, web_instances
from entrypoints.emulator import EmulatorState, create_emulator_app
from tests.bot_support import run_command, signed_request, wait_until
from tests.fakes.clock import ManualClock
from tests.harness import PASSWORD
from tests.integration import conftest
from tests.integration.instances import Instance, PortTaken, environment, serving
from tests.integration.mailbox import Mailbox, running_smtp_server
from tests.integration.postgres import PostgresServer
from tests.integration.redis_server import RedisServer
from tests.integration.stack import (
    APP_ID,
    CSRF,
    Browser,
    Stack,
    consent_form,
    count,
    sign_up,
)
from tests.servers import PORT_TRIES, free_port, serve

BUDGET = 4  # sign-in tries per client per minute, across both instances


@dataclass
class Pair:
    a: Instance
    b: Instance
    stack: Stack  # its app_url is the public URL (instance a), for the browser helpers


@dataclass
class _Running:
    """The two instances the module's tests share, and what they talk to."""

    a: Instance
    b: Instance
    public: str
    emulator: EmulatorState
    emulator_url: str
    mailbox: Mailbox
    commands: dict[str, list[dict[str, Any]]]  # the slash commands they registered


@pytest.fixture(scope="module")
def running_pair(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Running]:
    """The instances, started once for the module (not once a test: two processes each time);
    ``pair`` empties what they share before each test."""
    asyncio.run(_schema_made(postgres))
    tmp_path = tmp_path_factory.mktemp("instances")
    # Instance a's URL is the public one, in every setting and the emulator's redirect: when
    # another process took its port before it bound it, all start again on another port.
    for attempt in range(1, PORT_TRIES + 1):
        port_a = free_port()
        public = f"http://127.0.0.1:{port_a}"
        emulator = EmulatorState(APP_ID, "secret-pair", set())
        _set_up(emulator, public)
        with contextlib.ExitStack() as stack_of_servers:
            mailbox, smtp_port = stack_of_servers.enter_context(running_smtp_server())
            emulator_url = stack_of_servers.enter_context(serve(create_emulator_app(emulator)))
            env = environment(
                storage="sql",
                database_url=postgres.url,
                redis_url=redis_server.url,
                redis_timeout_seconds=10,  # past it an instance stops sharing (a busy machine)
                public_url=public,
                auth_rate_limit_per_minute=BUDGET,
                discord_client_id=APP_ID,
                discord_client_secret="secret-pair",
                discord_api_url=f"{emulator_url}/api/v10",
                discord_authorize_url=f"{emulator_url}/oauth2/authorize",
                discord_bot_token=emulator.bot_token,
                discord_public_key=emulator.public_key,
                discord_reply_deadline_seconds=20,
                discord_answer_deadline_seconds=25,
                email_backend="smtp",
                smtp_host="127.0.0.1",
                smtp_port=smtp_port,
                smtp_tls="none",
                email_poll_seconds=0.2,
                instance_check_seconds=0.5,
            )
            try:
                a = stack_of_servers.enter_context(serving(tmp_path, env, port=port_a))
            except PortTaken:
                if attempt == PORT_TRIES:
                    raise
                continue  # another process took instance a's port: all again, on another
            b = stack_of_servers.enter_context(serving(tmp_path, env))
            commands = copy.deepcopy(emulator.commands)  # registered as they started
            yield _Running(a, b, public, emulator, emulator_url, mailbox, commands)
            return


async def _schema_made(postgres: PostgresServer) -> None:
    """The schema, made as ``pg_db`` makes it, before the instances start on it (``pg_db``
    then only empties the tables: it never takes the schema down under them)."""
    database = SqlDatabase(postgres.url)
    try:
        if postgres.url not in conftest._migrated:
            await conftest._up_down_up(database)
            conftest._migrated.add(postgres.url)
    finally:
        await database.dispose()


def _set_up(emulator: EmulatorState, public: str) -> None:
    emulator.response_deadline = 60.0
    emulator.redirect_uris.add(f"{public}/auth/discord/callback")
    emulator.interactions_url = f"{public}/interactions"


@pytest.fixture
async def pair(running_pair: _Running, pg_db: SqlDatabase, redis_url: str) -> AsyncIterator[Pair]:
    """The shared instances, on a database and a Redis emptied for this test (``pg_db``,
    ``redis_url``), with the emulator and the mailbox as new."""
    running = running_pair
    running.emulator.reset()
    _set_up(running.emulator, running.public)
    running.emulator.commands = copy.deepcopy(running.commands)
    running.mailbox.clear()
    stack = Stack(
        running.public,
        running.emulator_url,
        running.emulator,
        None,  # type: ignore[arg-type]
        ManualClock(),
        pg_db,
        running.mailbox,
    )
    yield Pair(running.a, running.b, stack)
    # Every email this test queued sent before the next test's mailbox: none arrives there.
    async with asyncio.timeout(60):  # a guard against a hang, not a measure
        while await _emails_pending(pg_db):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _emails_pending(db: SqlDatabase) -> int:
    pending = select(func.count()).where(outgoing_emails.c.status == "pending")
    async with db.engine.connect() as conn:
        return int((await conn.execute(pending)).scalar_one())


@pytest.fixture
async def browsers(pair: Pair) -> AsyncIterator[tuple[Browser, Browser]]:
    one, two = Browser(pair.stack), Browser(pair.stack)
    yield one, two
    await one.close()
    await two.close()


async def test_the_sign_in_budget_is_shared(pair: Pair) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        token = CSRF.search((await client.get(f"{pair.a.url}/signin")).text)
        assert token
        form = {"login": "nobody", "password": "wrong", "_csrf_token": token.group(1)}
        # All at once, half to each instance: only a shared count reaches the budget, and
        # only one counted in one step (not read, then written) holds it exactly.
        answers = await asyncio.gather(
            *(
                client.post(f"{instance.url}/signin", data=form)
                for instance in [pair.a, pair.b] * BUDGET
            )
        )
    assert sorted(a.status_code for a in answers) == [401] * BUDGET + [429] * BUDGET


async def test_an_interaction_replayed_to_the_other_instance_is_refused(pair: Pair) -> None:
    ping = {"id": "1300000000000000077", "application_id": APP_ID, "type": 1, "token": "t" * 40}
    body, headers = signed_request(pair.stack.emulator, ping)
    async with httpx.AsyncClient(timeout=60) as client:
        first = await client.post(f"{pair.a.url}/interactions", content=body, headers=headers)
        replayed = await client.post(f"{pair.b.url}/interactions", content=body, headers=headers)
        again = await client.post(f"{pair.a.url}/interactions", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"type": 1}
    assert replayed.status_code == 401
    assert "already received" in replayed.json()["detail"]
    assert again.status_code == 401


async def _start_at(browser: Browser, instance: Instance, path: str) -> str:
    """Press "Continue with Discord" on a ticket page served by ``instance``, approve at
    Discord, and stop before the callback: its URL."""
    shown = await browser.go("GET", f"{instance.url}{path}")
    assert shown.status_code == 200, shown.text
    token = CSRF.search(shown.text)
    assert token
    at_discord = await browser.go(
        "POST", f"{instance.url}{path}", data={"_csrf_token": token.group(1)}
    )
    url, form = consent_form(at_discord, browser.discord_user or "", "approve")
    approved = await browser.client.post(url, **form)
    assert approved.status_code in (302, 303), approved.text
    return str(approved.headers["location"])


async def test_a_link_ticket_links_once_across_both(
    pair: Pair, browsers: tuple[Browser, Browser]
) -> None:
    """Alice runs /link once and presses the button in two browsers, one served by each
    instance; both approve at Discord and both callbacks arrive together: one links, and the
    other finds it linked (the same Discord account, the same TaskFlow account)."""
    one, two = browsers
    alice_d = pair.stack.emulator.add_user("alice_d")
    reply = await run_command(pair.stack.emulator_url, alice_d.id, "link")
    path = urlsplit(reply.button["url"]).path

    await sign_up(one, "alice", "alice@example.com", verify=False)
    signed_in = await two.submit(
        f"{pair.b.url}/signin", f"{pair.b.url}/signin", {"login": "alice", "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    one.discord_user = two.discord_user = alice_d.id
    callbacks = [await _start_at(one, pair.a, path), await _start_at(two, pair.b, path)]

    answers = await asyncio.gather(one.go("GET", callbacks[0]), two.go("GET", callbacks[1]))
    assert all(a.status_code == 200 and a.url.path == "/account" for a in answers), [
        (a.status_code, a.url, a.text[:200]) for a in answers
    ]
    notices = sorted(a.url.params["notice"] for a in answers)
    assert notices == ["already_linked", "linked_from_discord"]
    assert await count(pair.stack.db, user_links) == 1


async def test_an_email_is_sent_once_with_both_instances_polling(
    pair: Pair, browsers: tuple[Browser, Browser]
) -> None:
    one, _ = browsers
    await sign_up(one, "alice", "alice@example.com", verify=False)
    await sign_up(Browser(pair.stack), "bob", "bob@example.com", verify=False)

    async def all_sent() -> bool:
        async with pair.stack.db.engine.connect() as conn:
            statuses = (await conn.execute(select(outgoing_emails.c.status))).scalars().all()
        return len(statuses) == 2 and set(statuses) == {"sent"}

    deadline = asyncio.get_running_loop().time() + 60
    while not await all_sent():
        assert asyncio.get_running_loop().time() < deadline, "the emails were not sent"
        await asyncio.sleep(0.1)
    # Once an email is marked sent no worker can claim it again: the count is final.
    await wait_until(lambda: len(pair.stack.mailbox.received) >= 2)
    assert len(pair.stack.mailbox.to("alice@example.com")) == 1
    assert len(pair.stack.mailbox.to("bob@example.com")) == 1


async def test_instances_on_one_redis_do_not_name_each_other(pair: Pair) -> None:
    # Each row's sightings, once both are there: four looks each, then nothing was said.
    sightings: dict[str, set[object]] = {}

    async def looked() -> bool:
        async with pair.stack.db.engine.connect() as conn:
            rows = (await conn.execute(select(web_instances))).all()
        if len(rows) == 2:
            for row in rows:
                sightings.setdefault(row.id, set()).add(row.seen_at)
        return len(sightings) == 2 and all(len(s) >= 4 for s in sightings.values())

    async with asyncio.timeout(120):  # a guard against a hang, not a measure
        done = False
        while not done:
            await asyncio.sleep(0.1)
            done = await looked()
    async with pair.stack.db.engine.connect() as conn:
        states = (await conn.execute(select(web_instances.c.shared_state))).scalars().all()
    assert len(set(states)) == 1
    assert states[0].startswith("redis ")
    for instance in (pair.a, pair.b):
        assert "Another web instance uses this database" not in instance.output()
