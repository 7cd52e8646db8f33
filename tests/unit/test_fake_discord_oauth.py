"""The in-memory Discord OAuth fake passes the port's contract (as the HTTP adapter does
against the emulator), so unit tests that use it see what Discord would do."""

from __future__ import annotations

import pytest

from domain import errors
from domain.model import DiscordId, DiscordProfile
from domain.ports import DiscordOAuth
from tests.contracts.discord_oauth import Callback, DiscordOAuthContract
from tests.fakes.discord_oauth import InMemoryDiscordOAuth


class FakeSide:
    def __init__(self) -> None:
        self.fake = InMemoryDiscordOAuth()
        self._next_id = 4_000

    @property
    def oauth(self) -> DiscordOAuth:
        return self.fake

    @property
    def client_id(self) -> str:
        return self.fake.client_id

    @property
    def redirect_uri(self) -> str:
        return self.fake.redirect_uri

    def add_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        avatar: str | None = None,
        email: str | None = None,
        verified: bool = False,
    ) -> DiscordProfile:
        self._next_id += 1
        profile = DiscordProfile(
            DiscordId(self._next_id), username, global_name, avatar, email, verified
        )
        return self.fake.add_user(profile)

    async def approve(self, authorize_url: str, user: DiscordId) -> Callback:
        approval = self.fake.approve(authorize_url, user)
        return Callback(approval.code, approval.state)

    def break_discord(self) -> None:
        self.fake.outage = errors.DiscordUnavailable()


class TestInMemoryDiscordOAuth(DiscordOAuthContract):
    @pytest.fixture
    def discord(self) -> FakeSide:
        return FakeSide()
