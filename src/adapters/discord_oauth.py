"""Discord's OAuth2 over HTTP, built on Authlib's httpx client.

Authlib does the protocol (authorize URL, token request with client authentication, RFC 7009
revocation); this adapter adds Discord's base URLs, timeouts, and turns every failure into the
domain's ``DiscordDenied`` (Discord said no) or ``DiscordUnavailable`` (Discord broke).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from domain import errors
from domain.model import EMAIL_MAX, DiscordProfile, DiscordUser, clean_text
from domain.ports import DiscordTokens

log = logging.getLogger(__name__)

# Answers from the token endpoint that mean "this grant is not good", not "Discord is down".
_REFUSALS = {"invalid_grant", "invalid_request", "access_denied", "unauthorized_client"}


class HttpDiscordOAuth:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        api_url: str,
        authorize_url: str,
        timeout: float = 10.0,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._api = api_url.rstrip("/")
        self._authorize_url = authorize_url
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))

    def _client(self, token: dict[str, Any] | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            redirect_uri=self._redirect_uri,
            token=token,
            timeout=self._timeout,
            follow_redirects=False,
        )

    def authorization_url(
        self, *, state: str, code_challenge: str, scopes: Sequence[str], ask_again: bool = False
    ) -> str:
        # Only query parameters: no client (nor TLS context) is needed to build them.
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": self._redirect_uri,
                "scope": " ".join(scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                # none: a returning person who already granted these scopes is sent straight
                # back; someone new still sees the consent screen. consent: always show it.
                "prompt": "consent" if ask_again else "none",
            }
        )
        return f"{self._authorize_url}?{query}"

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens:
        async with self._client() as client:
            try:
                token = await client.fetch_token(
                    f"{self._api}/oauth2/token",
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            except AuthlibBaseError as exc:
                log.info("Discord refused the code exchange: %s", exc.error)
                if exc.error in _REFUSALS:
                    raise errors.DiscordDenied(
                        "Discord did not accept this sign-in (it may have expired). Start again."
                    ) from None
                raise errors.DiscordUnavailable() from None
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("Discord token endpoint failed: %s", type(exc).__name__)
                raise errors.DiscordUnavailable() from None
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            log.warning("Discord token response had no access token")
            raise errors.DiscordUnavailable()
        scope = token.get("scope")
        return DiscordTokens(access_token, frozenset(str(scope or "").split()))

    async def fetch_profile(self, tokens: DiscordTokens) -> DiscordProfile:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            try:
                response = await client.get(
                    f"{self._api}/users/@me",
                    headers={"Authorization": f"Bearer {tokens.access_token}"},
                )
            except httpx.HTTPError as exc:
                log.warning("Discord /users/@me failed: %s", type(exc).__name__)
                raise errors.DiscordUnavailable() from None
        if response.status_code in (401, 403):
            raise errors.DiscordDenied()
        if response.status_code != 200:
            log.warning("Discord /users/@me answered %s", response.status_code)
            raise errors.DiscordUnavailable()
        try:
            return _profile(response.json())
        except (ValueError, TypeError, KeyError, errors.InvalidInput) as exc:
            log.warning("Discord /users/@me sent an unexpected body: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None

    async def revoke(self, tokens: DiscordTokens) -> None:
        """Best effort: a failure is logged, never shown (the token expires anyway)."""
        async with self._client() as client:
            try:
                response = await client.revoke_token(
                    f"{self._api}/oauth2/token/revoke",
                    token=tokens.access_token,
                    token_type_hint="access_token",  # noqa: S106 - a hint name
                )
                if response.status_code >= 400:
                    log.warning("Discord token revocation answered %s", response.status_code)
            except (httpx.HTTPError, AuthlibBaseError) as exc:
                log.warning("Discord token revocation failed: %s", type(exc).__name__)


def _profile(body: Any) -> DiscordProfile:
    """Discord's user object (https://discord.com/developers/docs/resources/user), made safe
    to store: names cut to their columns, control characters dropped, an email that cannot be
    one (too long, control characters) treated as none."""
    if not isinstance(body, dict):
        raise TypeError("user object is not a JSON object")
    user = DiscordUser.from_discord(
        body["id"], body.get("username"), body.get("global_name"), body.get("avatar")
    )
    email = body.get("email")
    usable_email = (
        isinstance(email, str)
        and 0 < len(email) <= EMAIL_MAX
        and clean_text(email, EMAIL_MAX) == email
    )
    return DiscordProfile(
        id=user.id,
        username=user.username,
        global_name=user.global_name,
        avatar=user.avatar,
        email=email if usable_email else None,
        # Absent without the email scope; only an explicit true counts.
        verified=body.get("verified") is True,
    )
