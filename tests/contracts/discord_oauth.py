"""The ``DiscordOAuth`` port's contract: the in-memory fake (unit tests) and the HTTP adapter
against the Discord emulator (integration) run the same tests, so the fake cannot drift from
what Discord does.

Subclass ``DiscordOAuthContract`` and provide a ``discord`` fixture: a ``DiscordSide``, the
adapter under test together with the Discord it talks to (to create users, press "Authorize"
as one of them, and break Discord).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import pytest

from domain import errors
from domain.model import DiscordId, DiscordProfile
from domain.policies import pkce_challenge
from domain.ports import DiscordOAuth, DiscordTokens

VERIFIER = "v" * 43
STATE = "s" * 43


@dataclass(frozen=True, slots=True)
class Callback:
    """What Discord puts on the redirect URI after the person presses "Authorize"."""

    code: str
    state: str


class DiscordSide(Protocol):
    @property
    def oauth(self) -> DiscordOAuth: ...

    @property
    def client_id(self) -> str: ...

    @property
    def redirect_uri(self) -> str: ...

    def add_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        avatar: str | None = None,
        email: str | None = None,
        verified: bool = False,
    ) -> DiscordProfile:
        """A Discord account; returns what ``/users/@me`` says with the ``email`` scope."""

    async def approve(self, authorize_url: str, user: DiscordId) -> Callback:
        """The consent screen: ``user`` presses "Authorize"."""

    def break_discord(self) -> None:
        """From now on, Discord's token and user endpoints fail (a 500)."""


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class DiscordOAuthContract:
    async def _tokens(
        self, discord: DiscordSide, user: DiscordProfile, scopes: tuple[str, ...]
    ) -> DiscordTokens:
        url = discord.oauth.authorization_url(
            state=STATE, code_challenge=pkce_challenge(VERIFIER), scopes=scopes
        )
        callback = await discord.approve(url, user.id)
        return await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)

    @pytest.mark.parametrize(("ask_again", "prompt"), [(False, "none"), (True, "consent")])
    def test_the_authorize_url_asks_for_a_code_with_pkce(
        self, discord: DiscordSide, ask_again: bool, prompt: str
    ) -> None:
        url = discord.oauth.authorization_url(
            state=STATE,
            code_challenge=pkce_challenge(VERIFIER),
            scopes=["identify", "email"],
            ask_again=ask_again,
        )
        assert _query(url) == {
            "response_type": "code",
            "client_id": discord.client_id,
            "redirect_uri": discord.redirect_uri,
            "scope": "identify email",
            "state": STATE,
            "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256",
            "prompt": prompt,
        }

    async def test_a_code_gives_the_profile_and_the_granted_scopes(
        self, discord: DiscordSide
    ) -> None:
        alice = discord.add_user(
            "alice",
            global_name="Alice",
            avatar="a_" + "0f" * 16,
            email="Alice@Example.com",
            verified=True,
        )
        url = discord.oauth.authorization_url(
            state=STATE, code_challenge=pkce_challenge(VERIFIER), scopes=["identify", "email"]
        )
        callback = await discord.approve(url, alice.id)
        assert callback.state == STATE

        tokens = await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)
        assert tokens.scopes == {"identify", "email"}
        assert await discord.oauth.fetch_profile(tokens) == alice

    async def test_without_the_email_scope_there_is_no_email(self, discord: DiscordSide) -> None:
        bob = discord.add_user("bob", email="bob@example.com", verified=True)
        tokens = await self._tokens(discord, bob, ("identify",))
        profile = await discord.oauth.fetch_profile(tokens)
        assert (profile.id, profile.username) == (bob.id, "bob")
        assert (profile.email, profile.verified) == (None, False)

    async def test_an_unverified_email_says_so(self, discord: DiscordSide) -> None:
        carol = discord.add_user("carol", email="carol@example.com", verified=False)
        profile = await discord.oauth.fetch_profile(
            await self._tokens(discord, carol, ("identify", "email"))
        )
        assert (profile.email, profile.verified) == ("carol@example.com", False)
        assert profile.verified_email is None

    async def test_a_code_works_once(self, discord: DiscordSide) -> None:
        dee = discord.add_user("dee")
        url = discord.oauth.authorization_url(
            state=STATE, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
        )
        callback = await discord.approve(url, dee.id)
        await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)
        with pytest.raises(errors.DiscordDenied):
            await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)

    async def test_a_wrong_verifier_spends_the_code(self, discord: DiscordSide) -> None:
        erin = discord.add_user("erin")
        url = discord.oauth.authorization_url(
            state=STATE, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
        )
        callback = await discord.approve(url, erin.id)
        with pytest.raises(errors.DiscordDenied):
            await discord.oauth.exchange_code(code=callback.code, code_verifier="w" * 43)
        with pytest.raises(errors.DiscordDenied):  # the right one comes too late
            await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)

    async def test_an_unknown_code_is_refused(self, discord: DiscordSide) -> None:
        with pytest.raises(errors.DiscordDenied):
            await discord.oauth.exchange_code(code="no-such-code", code_verifier=VERIFIER)

    async def test_a_token_discord_does_not_know_is_refused(self, discord: DiscordSide) -> None:
        with pytest.raises(errors.DiscordDenied):
            await discord.oauth.fetch_profile(DiscordTokens("no-such-token", frozenset()))

    async def test_revoking_a_token_ends_the_whole_grant(self, discord: DiscordSide) -> None:
        fred = discord.add_user("fred")
        first = await self._tokens(discord, fred, ("identify",))
        second = await self._tokens(discord, fred, ("identify",))
        await discord.oauth.revoke(first)
        for tokens in (first, second):
            with pytest.raises(errors.DiscordDenied):
                await discord.oauth.fetch_profile(tokens)
        await discord.oauth.revoke(first)  # again: best effort, never an error

    async def test_other_people_keep_their_grants(self, discord: DiscordSide) -> None:
        gus, hal = discord.add_user("gus"), discord.add_user("hal")
        gus_tokens = await self._tokens(discord, gus, ("identify",))
        hal_tokens = await self._tokens(discord, hal, ("identify",))
        await discord.oauth.revoke(gus_tokens)
        assert (await discord.oauth.fetch_profile(hal_tokens)).id == hal.id

    async def test_a_broken_discord_is_unavailable(self, discord: DiscordSide) -> None:
        ivy = discord.add_user("ivy")
        tokens = await self._tokens(discord, ivy, ("identify",))
        url = discord.oauth.authorization_url(
            state=STATE, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
        )
        callback = await discord.approve(url, ivy.id)
        discord.break_discord()
        with pytest.raises(errors.DiscordUnavailable):
            await discord.oauth.exchange_code(code=callback.code, code_verifier=VERIFIER)
        with pytest.raises(errors.DiscordUnavailable):
            await discord.oauth.fetch_profile(tokens)
        await discord.oauth.revoke(tokens)  # best effort: a failure is never raised
