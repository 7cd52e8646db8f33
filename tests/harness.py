"""Drive the use cases the way the entrypoints will, through the real container.

Adapter-agnostic: set-up writes go through a unit of work, so the same harness serves the
in-memory adapters and the SQL ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from adapters.email import OutboxEmailSender
from adapters.passwords import Argon2PasswordHasher
from domain.model import Account, AccountId, DiscordId, DiscordProfile, SignInMethod
from domain.ports import EmailMessage, UnitOfWorkFactory
from domain.use_cases import AuthCompleted, AuthStarted, BrowserCookies, DeliveryReport, SignedIn
from domain.use_cases._shared import start_session
from entrypoints.container import Container, build_container
from entrypoints.settings import Settings
from tests.bot_support import wait_until
from tests.fakes.clock import ManualClock
from tests.fakes.discord_oauth import InMemoryDiscordOAuth
from tests.fakes.guild_roles import FakeGuildRoles

PASSWORD = "correct horse battery staple"
TEST_SECRET_KEY = "test-7YlQvv5GrVZkBBC20xoH3K9meYno16n68PB3mFU2x7Ibtf9p"  # random, as a real one


def webhook_secret(seed: str, size: int = 32) -> str:
    """A ``whsec_`` secret of ``size`` bytes that look random (start-up refuses guessable
    ones, such as one byte repeated), the same for the same ``seed``."""
    key = hashlib.shake_256(seed.encode()).digest(size)
    return "whsec_" + base64.b64encode(key).decode()


class _GivenSettings(Settings):
    """Settings from the arguments alone: no environment variable or ``.env`` file reaches a
    test that did not ask for it (and reading them made settings ten times as costly)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "secret_key": TEST_SECRET_KEY,
        "storage": "memory",
        # As generous as the emulators' deadlines (60 s): on a busy machine only a test of
        # late interactions (which sets its own) may find one late.
        "discord_late_interaction_seconds": 60.0,
        # /readyz: a database that answers is ready, however busy the machine (its 1.5 s
        # default let a first check that had to open a connection answer 503); a test of a
        # hung check sets a short deadline.
        "readiness_timeout_seconds": 30.0,
        # Past it an instance counts in its own memory, and a test of what instances share
        # through Redis failed on a busy machine for that alone (0.5 s by default). A test of
        # a Redis that does not answer sets its own.
        "redis_timeout_seconds": 10.0,
        # No purge behind a test's back (a server up for a minute would delete what a test's
        # clock expired): the purge's own tests turn it on.
        "purge_interval_seconds": 0,
    }
    values.update(overrides)
    return _GivenSettings(**values)  # type: ignore[arg-type]


@functools.cache
def cheap_argon2() -> Argon2PasswordHasher:
    """Real argon2id with tiny costs, so tests hash quickly (one hasher: it holds no state)."""
    return Argon2PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def fail_sign_ins(container: Container, *tries: tuple[str, str]) -> None:
    """A wrong password for each ``(login, client address)`` on ``container`` (whose password
    hasher is made cheap), outside any event loop; its resources are closed afterwards."""
    from domain import errors
    from entrypoints.container import close_resources

    container.password_hasher.override(cheap_argon2())

    async def fail() -> None:
        try:
            for login, client in tries:
                try:
                    await container.sign_in().execute(
                        login=login, password="wrong", client_address=client
                    )
                except errors.InvalidCredentials:
                    continue
                raise AssertionError(f"{login!r} signed in with a wrong password")
        finally:
            await close_resources(container)

    asyncio.run(fail())


@dataclass
class Browser:
    """Cookies a browser would hold: the OAuth binding values and the web session."""

    bindings: tuple[str, ...] = ()
    session: str | None = None


class Harness:
    def __init__(
        self,
        container: Container,
        clock: ManualClock,
        discord: InMemoryDiscordOAuth,
        guild_roles: FakeGuildRoles,
    ):
        self.container = container
        self.clock = clock
        self.discord = discord
        self.guild_roles = guild_roles  # Discord's member roles, for the role for linked members
        self._outbox: OutboxEmailSender | None = None
        # The newest session token of each account the harness signed in (a browser's cookie).
        self.sessions: dict[AccountId, str] = {}

    @classmethod
    def build(cls, container: Container | None = None) -> Harness:
        container = container or build_container(make_settings())
        clock, discord, guild_roles = ManualClock(), InMemoryDiscordOAuth(), FakeGuildRoles()
        container.clock.override(clock)
        container.discord_oauth.override(discord)
        container.discord_roles.override(guild_roles)
        container.password_hasher.override(cheap_argon2())
        return cls(container, clock, discord, guild_roles)

    @property
    def uow(self) -> UnitOfWorkFactory:
        factory: UnitOfWorkFactory = self.container.uow()
        return factory

    # -- accounts ------------------------------------------------------------------------------

    async def sign_up(
        self, username: str, email: str, *, verified: bool = False, password: str = PASSWORD
    ) -> SignedIn:
        signed_in: SignedIn = await self.container.sign_up().execute(
            username=username, email=email, password=password
        )
        self.sessions[signed_in.account.id] = signed_in.session_token
        if verified:
            await self.mark_email_verified(signed_in.account.id)
        return signed_in

    async def session_for(
        self, account_id: AccountId, *, proved_with: SignInMethod | None = None
    ) -> str:
        """The session the harness holds for the account, or a new one (as after a sign-in
        with ``proved_with``, which then counts as a fresh proof of identity)."""
        async with self.uow() as uow:
            if proved_with is None and account_id in self.sessions:
                held = self.sessions[account_id]
                alive = await uow.sessions.get(self.container.tokens().digest(held))
                if alive is not None and self.clock.now() < alive.expires_at:
                    return held  # else it was ended (an unlink, a reset): sign in again
            token = await start_session(
                uow,
                self.container.tokens(),
                account_id,
                self.clock.now(),
                method=proved_with or SignInMethod.PASSWORD,
            )
            await uow.commit()
        self.sessions[account_id] = token
        return token

    async def mark_email_verified(self, account_id: AccountId) -> None:
        """Confirm the address the way a person does: through the emailed link."""
        account = await self.account(account_id)
        assert account.email is not None
        await self.deliver()
        token = self.link_token(self.last_email(account.email), "/verify-email/")
        await self.container.verify_email().execute(token, account_id)

    # -- email -----------------------------------------------------------------------------------

    @property
    def outbox(self) -> OutboxEmailSender:
        """The outbox (kept even if a test later puts another sender in front of it)."""
        if self._outbox is None:
            sender = self.container.email_sender()
            assert isinstance(sender, OutboxEmailSender)
            self._outbox = sender
        return self._outbox

    async def deliver(self) -> DeliveryReport:
        report: DeliveryReport = await self.container.deliver_emails().execute()
        return report

    def emails_to(self, address: str) -> list[EmailMessage]:
        return [sent.message for sent in self.outbox.messages(address)]

    def last_email(self, address: str) -> EmailMessage:
        emails = self.emails_to(address)
        assert emails, f"no email to {address}"
        return emails[-1]

    async def emailed_link(self, address: str, path: str) -> str:
        """``path`` with the token of the newest email to ``address`` that links there, once
        one is sent: through the web app, its own email worker sends it (a delivery of the
        test's own could find the message claimed by the worker and not sent yet)."""

        def emailed() -> list[EmailMessage]:
            return [m for m in self.emails_to(address) if path in m.text]

        await wait_until(lambda: bool(emailed()))
        return path + self.link_token(emailed()[-1], path)

    @staticmethod
    def link_token(message: EmailMessage, path: str) -> str:
        """The token of the one link to ``path`` in the message (exactly one is required)."""
        found = re.findall(re.escape(path) + r"([A-Za-z0-9_-]+)", message.text)
        assert len(found) == 1, message.text
        return str(found[0])

    async def legacy_account(
        self, username: str, email: str | None, *, verified: bool, password_hash: str | None = None
    ) -> Account:
        """An account as imported from TaskFlow, where emails were never unique: one that
        shares its address is marked so (as migration 0003 marks them)."""
        shares = bool(email) and bool(await self.all_accounts_with_email(email or ""))
        account = Account(
            AccountId.new(),
            username,
            email,
            verified,
            password_hash,
            self.clock.now(),
            email_shared=shares,
        )
        async with self.uow() as uow:
            if shares:  # the ones it shares with are marked too
                for other in await uow.accounts.find_by_email(email or ""):
                    await uow.accounts.update(replace(other, email_shared=True))
            await uow.accounts.add(account)
            await uow.commit()
        return account

    async def account(self, account_id: AccountId) -> Account:
        async with self.uow() as uow:
            account = await uow.accounts.get(account_id)
        assert account is not None
        return account

    async def all_accounts_with_email(self, email: str) -> list[Account]:
        async with self.uow() as uow:
            return list(await uow.accounts.find_by_email(email))

    # -- Discord ---------------------------------------------------------------------------------

    def discord_user(
        self,
        discord_id: int,
        *,
        username: str | None = None,
        email: str | None = None,
        verified: bool = True,
        global_name: str | None = None,
        avatar: str | None = None,
    ) -> DiscordProfile:
        return self.discord.add_user(
            DiscordProfile(
                id=DiscordId(discord_id),
                username=username or f"user{discord_id}",
                global_name=global_name,
                avatar=avatar,
                email=email,
                verified=verified,
            )
        )

    async def start_login(
        self, browser: Browser, next_path: str | None = None, *, ask_again: bool = False
    ) -> AuthStarted:
        started: AuthStarted = await self.container.start_discord_login().execute(
            next_path=next_path, browser_tokens=browser.bindings, ask_again=ask_again
        )
        browser.bindings = started.browser_tokens
        return started

    async def complete(
        self,
        browser: Browser,
        *,
        state: str | None,
        code: str | None,
        error: str | None = None,
        signed_in: AccountId | None = None,
    ) -> AuthCompleted:
        completed: AuthCompleted = await self.container.complete_discord_auth().execute(
            state=state,
            code=code,
            error=error,
            browser=BrowserCookies(
                session_token=await self.session_for(signed_in) if signed_in else browser.session,
                bindings=browser.bindings,
            ),
        )
        if completed.session_token:
            browser.session = completed.session_token
            self.sessions[completed.account_id] = completed.session_token
        return completed

    async def discord_login(
        self, profile: DiscordProfile, browser: Browser | None = None, next_path: str | None = None
    ) -> AuthCompleted:
        browser = browser or Browser()
        started = await self.start_login(browser, next_path)
        approval = self.discord.approve(started.authorize_url, profile.id)
        return await self.complete(browser, state=approval.state, code=approval.code)

    async def discord_link(
        self, account_id: AccountId, profile: DiscordProfile, browser: Browser | None = None
    ) -> AuthCompleted:
        browser = browser or Browser()
        session, password = await self._proof_for_linking(account_id)
        started: AuthStarted = await self.container.start_discord_link().execute(
            session_token=session, current_password=password, browser_tokens=browser.bindings
        )
        browser.bindings = started.browser_tokens
        approval = self.discord.approve(started.authorize_url, profile.id)
        return await self.complete(
            browser, state=approval.state, code=approval.code, signed_in=account_id
        )

    async def _proof_for_linking(self, account_id: AccountId) -> tuple[str, str | None]:
        """Linking is a sensitive change: the person types their password (the test one), or,
        for an account without one, has just proved themselves otherwise."""
        if (await self.account(account_id)).has_password:
            return await self.session_for(account_id), PASSWORD
        return await self.session_for(account_id, proved_with=SignInMethod.DISCORD), None

    async def start_ticket_link(
        self, token: str, account_id: AccountId, browser: Browser
    ) -> AuthStarted:
        session, password = await self._proof_for_linking(account_id)
        started: AuthStarted = await self.container.start_ticket_link().execute(
            token=token,
            session_token=session,
            current_password=password,
            browser_tokens=browser.bindings,
        )
        browser.bindings = started.browser_tokens
        return started

    async def confirm_ticket(
        self,
        token: str,
        account_id: AccountId,
        *,
        as_discord: DiscordId | None = None,
        browser: Browser | None = None,
    ) -> AuthCompleted:
        """The /link page's "Continue with Discord", signed in to ``account_id``, then Discord
        as ``as_discord`` (by default the account that ran /link, as the honest person does)."""
        browser = browser or Browser()
        ticket = await self.container.show_link_ticket().execute(token)
        who = as_discord or ticket.discord.id
        if who not in self.discord.users:
            name = ticket.discord.username if who == ticket.discord.id else f"user{who}"
            self.discord_user(who.value, username=name, global_name=ticket.discord.global_name)
        started = await self.start_ticket_link(token, account_id, browser)
        approval = self.discord.approve(started.authorize_url, who)
        return await self.complete(
            browser, state=approval.state, code=approval.code, signed_in=account_id
        )


@contextlib.asynccontextmanager
async def sql_harness(database_url: str, **settings: object) -> AsyncIterator[Harness]:
    """A harness on the SQL adapter set; its engine is disposed afterwards."""
    container = build_container(make_settings(storage="sql", database_url=database_url, **settings))
    try:
        yield Harness.build(container)
    finally:
        await container.sql_db().dispose()
