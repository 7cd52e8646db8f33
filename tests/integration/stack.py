"""The running stack for end-to-end tests: the web app (with HTTP interactions) and the Discord
emulator, each under uvicorn, on Postgres, over real HTTP; and a browser-like client that
follows redirects and keeps cookies."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import outgoing_emails
from entrypoints.container import Container, build_container
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.web import create_app
from tests.fakes.clock import ManualClock
from tests.harness import PASSWORD, cheap_argon2, make_settings
from tests.integration.mailbox import Mailbox, link_path
from tests.integration.postgres import PostgresServer
from tests.servers import bound_socket, port_of, serve

APP_ID = "1200000000000000042"  # the emulated application's id, also its OAuth2 client id


CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@dataclass
class Stack:
    app_url: str
    emulator_url: str
    emulator: EmulatorState
    container: Container
    clock: ManualClock
    db: SqlDatabase
    mailbox: Mailbox


# For a test of Discord not answering (the emulator's "timeout" fault answers after 3 s):
# ``@pytest.mark.parametrize("stack", [SHORT_DISCORD_TIMEOUT], indirect=True)``.
SHORT_DISCORD_TIMEOUT: dict[str, Any] = {"discord_timeout_seconds": 1.0}


@dataclass
class ServedEmulator:
    state: EmulatorState
    url: str


# How long a test's set-up waits for the gateway bots of the one before to have left the
# shared emulator (they closed their connections as that test ended).
GATEWAY_LEFT_WITHIN = 30.0


@pytest.fixture(scope="module")
def stack_emulator() -> Iterator[ServedEmulator]:
    """The Discord emulator the module's stacks share (started and stopped once, not once a
    test): ``stack`` resets it before each test."""
    emulator = EmulatorState(APP_ID, "secret-e2e", set())
    with serve(create_emulator_app(emulator)) as url:
        yield ServedEmulator(emulator, url)


async def _reset_for(served: ServedEmulator, app_url: str) -> EmulatorState:
    """The shared emulator as new (nothing an earlier test left: users, servers, members,
    messages, faults, commands, role connections, tokens), once that test's gateway bots
    have left, set up for this test's app."""
    emulator = served.state
    deadline = time.monotonic() + GATEWAY_LEFT_WITHIN
    while emulator.gateway_sessions:
        if time.monotonic() > deadline:
            raise RuntimeError("an earlier test's gateway bot is still connected")
        await asyncio.sleep(0.02)
    emulator.reset()
    # Generous deadlines: a busy machine must never make a normal command late.
    emulator.response_deadline = 60.0
    emulator.fault_delay = 3.0
    emulator.redirect_uris.add(f"{app_url}/auth/discord/callback")
    emulator.interactions_url = f"{app_url}/interactions"
    return emulator


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    """More settings for the stack's app (a test module overrides this fixture)."""
    return {}


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest,
    postgres: PostgresServer,
    pg_db: SqlDatabase,
    smtp_server: tuple[Mailbox, int],
    stack_settings: dict[str, Any],
    *,
    stack_emulator: ServedEmulator,  # shared by the module's tests
) -> AsyncIterator[Stack]:
    """The service's settings change through the ``stack_settings`` fixture (a whole module)
    or ``@pytest.mark.parametrize("stack", [{setting: value}], indirect=True)`` (a test)."""
    extra: dict[str, object] = getattr(request, "param", {})
    mailbox, smtp_port = smtp_server
    app_socket = bound_socket()  # its port known now: the app's URL is in its settings
    app_url = f"http://127.0.0.1:{port_of(app_socket)}"
    with app_socket:
        emulator = await _reset_for(stack_emulator, app_url)
        emulator_url = stack_emulator.url
        settings = make_settings(
            storage="sql",
            database_url=postgres.url,
            public_url=app_url,
            discord_client_id=APP_ID,
            discord_client_secret="secret-e2e",
            discord_api_url=f"{emulator_url}/api/v10",
            discord_authorize_url=f"{emulator_url}/oauth2/authorize",
            discord_cdn_url=emulator_url,
            discord_bot_token=emulator.bot_token,
            discord_public_key=emulator.public_key,
            discord_reply_deadline_seconds=20.0,
            discord_answer_deadline_seconds=25.0,
            # /readyz: a database that answers is ready, however busy the machine (a test of
            # a frozen one sets a short deadline).
            readiness_timeout_seconds=30.0,
            # Email goes through the SMTP adapter to the test's aiosmtpd server.
            email_backend="smtp",
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_tls="none",
            smtp_timeout_seconds=30.0,
            email_poll_seconds=0.2,
            # Generous: the app's calls to the emulator are retried at the manual clock's
            # pace, so one spurious timeout on a busy machine would never be made up for.
            # The tests of the "timeout" fault shorten it.
            **{"discord_timeout_seconds": 30.0, **stack_settings, **extra},
        )
        clock = ManualClock()
        clock.set(clock.now().replace(year=2030))
        # The server runs its own event loop in a thread, so it gets its own container (and
        # engine); the test's set-up steps use another one on the same database and clock.
        server, setup = build_container(settings), build_container(settings)
        for container in (server, setup):
            container.clock.override(clock)
            container.password_hasher.override(cheap_argon2())
        mailbox.while_waiting = _to_next_retry(pg_db, clock)
        try:
            with serve(create_app(server), app_socket):
                try:
                    yield Stack(app_url, emulator_url, emulator, setup, clock, pg_db, mailbox)
                finally:
                    # Lifted before the app stops: it waits for its calls under way, and a
                    # "timeout" fault holds them for seconds.
                    emulator.faults.clear()
        finally:
            mailbox.while_waiting = None
            await setup.discord_http().aclose()  # a test's own calls to Discord opened it
            await setup.sql_db().dispose()


def _to_next_retry(db: SqlDatabase, clock: ManualClock) -> Callable[[], Awaitable[None]]:
    """While a test waits for an email: if a send failed (seen once on a busy machine), move
    the stack's manual clock to its retry, as time would. A send that keeps failing still
    fails the test; a first send that works never moves the clock."""

    async def nudge() -> None:
        failed_once = (outgoing_emails.c.status == "pending") & (outgoing_emails.c.attempts > 0)
        async with db.engine.connect() as conn:
            retry_at = (
                await conn.execute(
                    select(func.min(outgoing_emails.c.next_attempt_at)).where(failed_once)
                )
            ).scalar_one()
        if retry_at is not None and retry_at > clock.now():
            logging.getLogger(__name__).warning("an email send failed; clock moved to its retry")
            clock.set(retry_at)

    return nudge


def consent_form(start: httpx.Response, user_id: str, decision: str) -> tuple[str, Any]:
    """The emulator's consent form as a browser would submit it: URL and form fields."""
    fields = {k: v.replace("&amp;", "&") for k, v in HIDDEN.findall(start.text)}
    data = {**fields, "user_id": user_id, "decision": decision}
    return str(start.url.copy_with(query=None)), {"data": data}


class Browser:
    """Follows redirects across the app and the emulator, keeping each one's cookies."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=30)
        # Who this browser is signed in to the emulated Discord as (after pressing Authorize).
        self.discord_user: str | None = None

    async def close(self) -> None:
        await self.client.aclose()

    async def go(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        url = urljoin(self.stack.app_url, url)
        response = await self.client.request(method, url, **kwargs)
        for _ in range(10):
            if response.status_code not in (301, 302, 303, 307):
                return response
            url = urljoin(url, response.headers["location"])
            response = await self.client.get(url)
        raise AssertionError("redirect loop")

    async def submit(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        shown = await self.go("GET", page)
        found = CSRF.search(shown.text)
        assert found, shown.text
        return await self.go("POST", action, data={**data, "_csrf_token": found.group(1)})

    async def consent(
        self, start: httpx.Response, user_id: str, decision: str = "approve"
    ) -> httpx.Response:
        """On the emulator's consent page, pick a test user and press a button."""
        assert start.url.path == "/oauth2/authorize", start.text
        assert f'value="{user_id}"' in start.text
        url, form = consent_form(start, user_id, decision)
        answer = await self.go("POST", url, **form)
        if decision == "approve":
            self.discord_user = user_id
        return answer

    async def through_discord(self, start: httpx.Response, user_id: str) -> httpx.Response:
        """Wherever a flow sent this browser: Discord's consent screen (pick ``user_id``), or,
        for someone who already granted access, straight back (as Discord does with
        prompt=none): then this browser must already be signed in to Discord as them."""
        if start.url.path == "/oauth2/authorize" and start.status_code == 200:
            return await self.consent(start, user_id)
        assert self.discord_user == user_id, "Discord skipped its screen for another user"
        return start

    async def sign_in_with_discord(
        self, user_id: str, next_path: str = "/account"
    ) -> httpx.Response:
        start = await self.go("GET", f"/auth/discord/login?next={next_path}")
        return await self.through_discord(start, user_id)

    async def confirm_link(self, link_url: str, user_id: str) -> httpx.Response:
        """Open a /link button's page (signed in), press "Continue with Discord", and be
        ``user_id`` at Discord."""
        path = urlsplit(link_url).path
        shown = await self.go("GET", path)
        assert shown.status_code == 200, shown.text
        found = CSRF.search(shown.text)
        assert found, shown.text
        start = await self.go("POST", path, data={"_csrf_token": found.group(1)})
        return await self.through_discord(start, user_id)


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    b = Browser(stack)
    yield b
    await b.close()


async def count(db: SqlDatabase, table: Any) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def sign_up(b: Browser, name: str, email: str, *, verify: bool) -> None:
    page = await b.submit(
        "/signup", "/signup", {"username": name, "email": email, "password": PASSWORD}
    )
    assert page.status_code == 200, page.text
    if verify:  # follow the emailed link, as the person would
        await confirm_email(b, email)


async def confirm_email(b: Browser, email: str, count: int = 1) -> httpx.Response:
    """Open the ``count``-th confirmation email's link and press its button."""
    path = link_path(await b.stack.mailbox.wait_for(email, count), "/verify-email/")
    confirmed = await b.submit(path, path, {})
    assert confirmed.status_code == 200, confirmed.text
    assert "Email confirmed" in confirmed.text
    return confirmed
