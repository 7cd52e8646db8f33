"""An in-memory stand-in for Discord's OAuth2, for unit tests.

It keeps Discord's rules that matter to us: a code is bound to the PKCE challenge and the
scopes it was granted with, works once, and ``/users/@me`` only shows the email when the
``email`` scope was granted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlencode, urlsplit

from domain import errors
from domain.model import DiscordId, DiscordProfile
from domain.policies import constant_time_equals, pkce_challenge
from domain.ports import DiscordTokens


@dataclass(frozen=True, slots=True)
class _Grant:
    discord_id: DiscordId
    scopes: frozenset[str]
    code_challenge: str


@dataclass(frozen=True, slots=True)
class Approval:
    """What Discord would put on the callback URL after the person clicks "Authorize"."""

    code: str
    state: str


class InMemoryDiscordOAuth:
    AUTHORIZE_URL = "https://discord.invalid/oauth2/authorize"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        redirect_uri: str = "http://testserver/auth/discord/callback",
    ) -> None:
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.users: dict[DiscordId, DiscordProfile] = {}
        self.outage: errors.DomainError | None = None  # set to make every call fail
        self.revoked: set[str] = set()
        self.issued_tokens: set[str] = set()
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, _Grant] = {}

    def add_user(self, profile: DiscordProfile) -> DiscordProfile:
        self.users[profile.id] = profile
        return profile

    def authorization_url(
        self, *, state: str, code_challenge: str, scopes: Sequence[str], ask_again: bool = False
    ) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": " ".join(scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                "prompt": "consent" if ask_again else "none",
            }
        )
        return f"{self.AUTHORIZE_URL}?{query}"

    def approve(self, authorize_url: str, discord_id: DiscordId) -> Approval:
        """The consent screen: the person ``discord_id`` authorises the request."""
        query = parse_qs(urlsplit(authorize_url).query)
        if query["code_challenge_method"] != ["S256"]:
            raise AssertionError("Discord flows must use PKCE S256")
        if discord_id not in self.users:
            raise KeyError(discord_id)
        code = secrets.token_urlsafe(16)
        self._codes[code] = _Grant(
            discord_id, frozenset(query["scope"][0].split()), query["code_challenge"][0]
        )
        return Approval(code, query["state"][0])

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens:
        if self.outage is not None:
            raise self.outage
        grant = self._codes.pop(code, None)  # a code works once
        if grant is None or not constant_time_equals(
            grant.code_challenge, pkce_challenge(code_verifier)
        ):
            raise errors.DiscordDenied("Discord refused the authorisation code. Start again.")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = grant
        self.issued_tokens.add(token)
        return DiscordTokens(token, grant.scopes)

    async def fetch_profile(self, tokens: DiscordTokens) -> DiscordProfile:
        if self.outage is not None:
            raise self.outage
        grant = self._tokens.get(tokens.access_token)
        if grant is None:  # Discord answers 401: unknown, expired or revoked
            raise errors.DiscordDenied()
        profile = self.users[grant.discord_id]
        if "email" not in grant.scopes:
            profile = replace(profile, email=None, verified=False)
        return profile

    async def revoke(self, tokens: DiscordTokens) -> None:
        """As Discord: revoking a token revokes the whole grant (the user's other tokens)."""
        grant = self._tokens.get(tokens.access_token)
        if grant is not None:
            for token in [t for t, g in self._tokens.items() if g.discord_id == grant.discord_id]:
                del self._tokens[token]
        self.revoked.add(tokens.access_token)
