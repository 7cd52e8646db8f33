"""Linked Roles for unit tests: the in-memory Discord OAuth fake, plus what Discord does with a
user's own tokens. It keeps Discord's rules that matter here: refresh tokens rotate (a used or
revoked one is ``invalid_grant``), an access token stops working when it expires or its grant
is removed, a role connection needs ``role_connections.write``."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import (
    ROLE_CONNECTIONS_SCOPE,
    AccountId,
    DiscordId,
    RoleConnection,
    RoleConnectionToken,
    RoleSync,
)
from domain.ports import DiscordTokens, UsedUp
from domain.use_cases import AuthCompleted, AuthOutcome, RoleSyncReport
from entrypoints.container import build_container
from tests.fakes.clock import ManualClock
from tests.fakes.discord_oauth import InMemoryDiscordOAuth
from tests.harness import Browser, Harness, make_settings

LIFETIME = 7 * 24 * 3600  # Discord's access tokens live 7 days
# Two token encryption keys (32 bytes, URL-safe base64), for the tests only.
KEY_A = base64.urlsafe_b64encode(bytes(range(32))).decode()
KEY_B = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()


@dataclass
class _Held:
    discord_id: DiscordId
    scopes: frozenset[str]


class InMemoryDiscordWithRoles(InMemoryDiscordOAuth):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.access: dict[str, tuple[_Held, float]] = {}  # token -> (grant, expires at)
        self.refresh_tokens: dict[str, _Held] = {}
        self.connections: dict[DiscordId, RoleConnection] = {}
        self.pushes: list[tuple[DiscordId, RoleConnection]] = []
        self.refreshes = 0
        self.denied = 0  # pushes refused for a dead or expired access token
        self.calls: list[str] = []  # "push" / "refresh", every call, answered or not
        # What every push (or refresh) raises until set back to None (Discord down, a 429).
        self.push_outage: errors.DomainError | None = None
        self.refresh_outage: errors.DomainError | None = None
        # Called inside a push or a refresh, before it answers (to interleave another writer).
        self.during_push: Callable[[], Awaitable[None]] | None = None
        self.during_refresh: Callable[[], Awaitable[None]] | None = None
        # Discord's rate limits (None: none): this many calls per window, the refresh's for
        # every user, the push's per user; the windows under way, and the 429s answered.
        self.refresh_limit: int | None = None
        self.push_limit: int | None = None
        self.limit_window = timedelta(seconds=10)
        self.windows: dict[object, tuple[datetime, int]] = {}
        self.limited = 0
        # Users whose token met Discord's global limit (a user's own, per token): each push
        # with it is answered a global 429 with this retry_after, until removed.
        self.globally_limited: dict[DiscordId, float] = {}

    def _issue(self, held: _Held) -> DiscordTokens:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = (held, self.clock.now().timestamp() + LIFETIME)
        self.refresh_tokens[refresh] = held
        return DiscordTokens(access, held.scopes, refresh_token=refresh, expires_in=LIFETIME)

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens:
        tokens = await super().exchange_code(code=code, code_verifier=code_verifier)
        grant = self._tokens[tokens.access_token]  # the parent's record of the code's grant
        issued = self._issue(_Held(grant.discord_id, grant.scopes))
        self._tokens[issued.access_token] = grant  # /users/@me works with it too
        return issued

    def _limit(self, key: object, calls: int | None, used_up: UsedUp | None) -> None:
        """Count a call in ``key``'s window of ``calls`` per ``limit_window`` (``None``: no
        limit), as Discord does: one past the limit is a 429 (counted in ``limited``); the
        answer that uses the last call says so (``used_up``)."""
        if calls is None:
            return
        now = self.clock.now()
        ends, made = self.windows.get(key, (now, 0))
        if ends <= now:
            ends, made = now + self.limit_window, 0
        self.windows[key] = (ends, made + 1)
        left = (ends - now).total_seconds()
        if made >= calls:
            self.limited += 1
            raise errors.DiscordRateLimited(left)
        if made + 1 == calls and used_up is not None:
            used_up(left)

    async def refresh(self, refresh_token: str, *, used_up: UsedUp | None = None) -> DiscordTokens:
        await asyncio.sleep(0)  # a network call: others run meanwhile
        self.calls.append("refresh")
        self._limit("refresh", self.refresh_limit, used_up)
        if self.during_refresh is not None:
            hook, self.during_refresh = self.during_refresh, None
            await hook()
        if self.refresh_outage is not None:
            raise self.refresh_outage
        held = self.refresh_tokens.pop(refresh_token, None)  # a refresh token works once
        if held is None:
            raise errors.DiscordGrantRevoked()
        self.refreshes += 1
        return self._issue(held)

    async def push(
        self, access_token: str, connection: RoleConnection, *, used_up: UsedUp | None = None
    ) -> None:
        await asyncio.sleep(0)  # a network call: others run meanwhile
        self.calls.append("push")
        found = self.access.get(access_token)
        if found is not None:  # Discord's limit of the push is the token's user's
            self._limit(("push", found[0].discord_id), self.push_limit, used_up)
            wait = self.globally_limited.get(found[0].discord_id)
            if wait is not None:
                self.limited += 1
                raise errors.DiscordRateLimited(wait, global_limit=True)
        if self.during_push is not None:
            hook, self.during_push = self.during_push, None
            await hook()
        if self.push_outage is not None:
            raise self.push_outage
        found = self.access.get(access_token)
        if found is None or found[1] <= self.clock.now().timestamp():
            self.denied += 1
            raise errors.DiscordDenied()
        held = found[0]
        if ROLE_CONNECTIONS_SCOPE not in held.scopes:
            raise errors.DiscordDenied()
        self.connections[held.discord_id] = connection
        self.pushes.append((held.discord_id, connection))

    def tokens_of(self, discord_id: DiscordId) -> tuple[set[str], set[str]]:
        """Every access and refresh token Discord issued to this user (to look for them)."""
        access = {t for t, (held, _) in self.access.items() if held.discord_id == discord_id}
        refresh = {t for t, held in self.refresh_tokens.items() if held.discord_id == discord_id}
        return access, refresh

    def expire(self, discord_id: DiscordId) -> None:
        """Discord ends the user's access tokens early (refresh tokens still work)."""
        for token, (held, _) in list(self.access.items()):
            if held.discord_id == discord_id:
                self.access[token] = (held, 0.0)

    async def revoke(self, tokens: DiscordTokens) -> None:
        """As Discord: revoking a token revokes the whole grant, a deauthorization (the same
        APPLICATION_DEAUTHORIZED as removing the app): its tokens die, the connection goes."""
        found = self.access.get(tokens.access_token)
        held = found[0] if found is not None else self.refresh_tokens.get(tokens.access_token)
        await super().revoke(tokens)
        if held is not None:
            self.deauthorize(held.discord_id)

    def deauthorize(self, discord_id: DiscordId) -> None:
        """The user removes the app in Discord: every token of the grant dies."""
        for table in (self.access, self.refresh_tokens):
            for token in list(table):
                value = table[token]
                held = value[0] if isinstance(value, tuple) else value
                if held.discord_id == discord_id:
                    del table[token]
        self.connections.pop(discord_id, None)


def fake(h: Harness) -> InMemoryDiscordWithRoles:
    """The harness's Discord, as ``role_harness`` made it."""
    assert isinstance(h.discord, InMemoryDiscordWithRoles)
    return h.discord


def rows(h: Harness) -> dict[DiscordId, RoleConnectionToken]:
    """The kept tokens' rows, by Discord id."""
    database: MemoryDatabase = h.container.memory_db()
    return dict(database.tables.role_connection_tokens)


async def refresh_pass(h: Harness, *, everything: bool = False) -> RoleSyncReport:
    """One pass of ``role-connections refresh`` (of a worker) in the harness's process."""
    report: RoleSyncReport = await h.container.refresh_role_connections().execute(
        everything=everything
    )
    return report


def linked(connection: RoleConnection | None) -> tuple[str, str] | None:
    """(linked, linked_days) as pushed, for short assertions."""
    if connection is None:
        return None
    return connection.metadata["linked"], connection.metadata["linked_days"]


def role_harness(keys: str = KEY_A, **settings: object) -> Harness:
    """The unit harness with Linked Roles on, and this fake as Discord."""
    container = build_container(
        make_settings(discord_role_connections=True, token_encryption_key=keys, **settings)
    )
    h = Harness.build(container)
    fake = InMemoryDiscordWithRoles(h.clock)
    container.discord_oauth.override(fake)
    container.discord_role_connections.override(fake)
    h.discord = fake
    return h


async def verify(
    h: Harness,
    discord_id: DiscordId,
    *,
    signed_in: AccountId | None = None,
    password: str | None = None,
    browser: Browser | None = None,
) -> AuthCompleted:
    """Discord sends the person to the verification URL; they authorise as ``discord_id``."""
    browser = browser or Browser()
    session = await h.session_for(signed_in) if signed_in else None
    started = await h.container.start_linked_role().execute(
        session_token=session, browser_tokens=browser.bindings, current_password=password
    )
    browser.bindings = started.browser_tokens
    scope = parse_qs(urlsplit(started.authorize_url).query)["scope"][0]
    assert scope.split() == ["identify", "role_connections.write"]
    approval = h.discord.approve(started.authorize_url, discord_id)
    return await h.complete(browser, state=approval.state, code=approval.code, signed_in=signed_in)


async def connected(h: Harness, discord_id: int, username: str = "alice") -> AccountId:
    """An account linked to ``discord_id`` through the verification URL."""
    account = (await h.sign_up(username, f"{username}@example.com")).account
    h.discord_user(discord_id, username=f"d_{username}")
    done = await verify(h, DiscordId(discord_id), signed_in=account.id)
    assert done.outcome is AuthOutcome.LINKED
    assert done.role_sync is RoleSync.PUSHED
    return account.id
