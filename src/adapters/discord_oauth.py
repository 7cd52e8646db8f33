"""Discord's OAuth2 over HTTP, on one shared httpx client.

What we use of OAuth2 is small and Discord-specific (an authorize URL, the code grant with
PKCE, ``/users/@me``, revocation), so it is written here against Discord's documentation rather
than through a generic OAuth library: one ``httpx.AsyncClient`` per process (connections and
its TLS context reused across sign-ins), Discord's ``User-Agent``, timeouts, and every failure
turned into the domain's ``DiscordDenied`` (Discord said no) or ``DiscordUnavailable`` (Discord
broke, or rate limited us).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from domain import errors
from domain.model import EMAIL_MAX, DiscordProfile, DiscordUser, RoleConnection, clean_text
from domain.ports import DiscordTokens

log = logging.getLogger(__name__)

# Answers from the token endpoint that mean "this grant is not good", not "Discord is down".
_REFUSALS = {"invalid_grant", "invalid_request", "access_denied", "unauthorized_client"}


class DiscordCallObserver(Protocol):
    """Told about every call to Discord's API (the metrics): the endpoint's name, never its URL
    (webhook URLs carry tokens)."""

    def discord_call(self, endpoint: str, seconds: float, failure: str | None) -> None: ...

    def discord_failure(self, endpoint: str, failure: str) -> None: ...


def failure_of(status: int) -> str | None:
    """How an HTTP answer from Discord failed: ``rate_limited`` (429), ``4xx``, ``5xx``..."""
    if status < 300:
        return None
    return "rate_limited" if status == 429 else f"{status // 100}xx"


class DiscordHttp:
    """The process's one HTTP client for Discord, made on first use and closed at shutdown.

    Creating an ``httpx.AsyncClient`` builds a TLS context (tens of milliseconds of CPU): a
    client per call made Sign in with Discord CPU-bound at a handful of logins a second.
    """

    def __init__(
        self, *, user_agent: str, timeout: float, observer: DiscordCallObserver | None = None
    ) -> None:
        self._user_agent = user_agent
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        # httpx's timeouts bound each phase (pool, connect, write, read); this bounds the call.
        # A role change's claim (two minutes) must outlast any call made under it.
        self._deadline = timeout
        self._client: httpx.AsyncClient | None = None
        self._observer = observer

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": self._user_agent},
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
        return self._client

    async def request(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call, timed and its failure (if any) told to the observer under ``endpoint``."""
        started = time.perf_counter()
        failure: str | None = None
        try:
            try:
                async with asyncio.timeout(self._deadline):
                    response = await self.client.request(method, url, **kwargs)
            except TimeoutError:
                raise httpx.TimeoutException(f"no answer within {self._deadline} s") from None
            failure = failure_of(response.status_code)
        except httpx.TimeoutException:
            failure = "timeout"
            raise
        except httpx.HTTPError:
            failure = "transport"
            raise
        finally:
            if self._observer is not None:
                self._observer.discord_call(endpoint, time.perf_counter() - started, failure)
        return response

    def unreadable(self, endpoint: str) -> None:
        """Discord answered, but not with what its documentation promises."""
        if self._observer is not None:
            self._observer.discord_failure(endpoint, "invalid_response")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _rate_limited(response: httpx.Response, what: str) -> bool:
    """Discord's 429 (JSON with ``retry_after`` and ``global``, or Cloudflare's HTML page)."""
    if response.status_code != 429:
        return False
    try:
        body = response.json()
        log.warning(
            "Discord rate limited %s: retry after %s s%s",
            what,
            body.get("retry_after"),
            " (global)" if body.get("global") else "",
        )
    except ValueError:
        log.warning("Discord rate limited %s (not JSON: Cloudflare?)", what)
    return True


class HttpDiscordOAuth:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        api_url: str,
        authorize_url: str,
        http: DiscordHttp,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._api = api_url.rstrip("/")
        self._authorize_url = authorize_url
        self._http = http

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

    async def _post_form(self, endpoint: str, path: str, data: dict[str, str]) -> httpx.Response:
        # client_secret_basic: the client credentials in the Authorization header.
        return await self._http.request(
            endpoint,
            "POST",
            f"{self._api}{path}",
            data=data,
            auth=(self._client_id, self._client_secret),
        )

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens:
        try:
            response = await self._post_form(
                "token",
                "/oauth2/token",
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self._redirect_uri,
                    "code_verifier": code_verifier,
                },
            )
        except httpx.HTTPError as exc:
            log.warning("Discord token endpoint failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        if _rate_limited(response, "the token exchange"):
            raise errors.DiscordUnavailable()
        body = _json_object(response)
        if response.status_code != 200:
            error = body.get("error") if body else None
            log.info("Discord refused the code exchange: %s (HTTP %s)", error, response.status_code)
            if response.status_code == 400 and error in _REFUSALS:
                raise errors.DiscordDenied(
                    "Discord did not accept this sign-in (it may have expired). Start again."
                )
            raise errors.DiscordUnavailable()  # 401 invalid_client is our misconfiguration
        access_token = body.get("access_token") if body else None
        if not isinstance(access_token, str) or not access_token:
            log.warning("Discord token response had no access token")
            self._http.unreadable("token")
            raise errors.DiscordUnavailable()
        return _tokens(body, access_token)

    async def fetch_profile(self, tokens: DiscordTokens) -> DiscordProfile:
        try:
            response = await self._http.request(
                "users_me",
                "GET",
                f"{self._api}/users/@me",
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
        except httpx.HTTPError as exc:
            log.warning("Discord /users/@me failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        if _rate_limited(response, "/users/@me"):
            raise errors.DiscordUnavailable()
        if response.status_code in (401, 403):
            raise errors.DiscordDenied()
        if response.status_code != 200:
            log.warning("Discord /users/@me answered %s", response.status_code)
            raise errors.DiscordUnavailable()
        try:
            return _profile(response.json())
        except (ValueError, TypeError, KeyError, errors.InvalidInput) as exc:
            log.warning("Discord /users/@me sent an unexpected body: %s", type(exc).__name__)
            self._http.unreadable("users_me")
            raise errors.DiscordUnavailable() from None

    async def revoke(self, tokens: DiscordTokens) -> None:
        """Best effort: a failure is logged, never shown (the token expires anyway)."""
        try:
            response = await self._post_form(
                "token_revoke",
                "/oauth2/token/revoke",
                {"token": tokens.access_token, "token_type_hint": "access_token"},
            )
            if _rate_limited(response, "the token revocation"):
                return
            if response.status_code >= 400:
                log.warning("Discord token revocation answered %s", response.status_code)
        except httpx.HTTPError as exc:
            log.warning("Discord token revocation failed: %s", type(exc).__name__)


def _tokens(body: dict[str, Any] | None, access_token: str) -> DiscordTokens:
    """The token endpoint's answer; the refresh token and lifetime only when well formed."""
    body = body or {}
    refresh, lifetime = body.get("refresh_token"), body.get("expires_in")
    return DiscordTokens(
        access_token,
        frozenset(str(body.get("scope") or "").split()),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=lifetime if type(lifetime) is int and lifetime >= 0 else None,
    )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


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


class HttpDiscordRoleConnections:
    """Linked Roles with a user's own tokens: the refresh grant, and pushing the role
    connection. Neither token ever reaches a log line (nor does a URL carrying one)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_url: str,
        http: DiscordHttp,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._api = api_url.rstrip("/")
        self._http = http

    async def refresh(self, refresh_token: str) -> DiscordTokens:
        try:
            response = await self._http.request(
                "token_refresh",
                "POST",
                f"{self._api}/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                auth=(self._client_id, self._client_secret),
            )
        except httpx.HTTPError as exc:
            log.warning("Discord token refresh failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        if _rate_limited(response, "a token refresh"):
            raise errors.DiscordUnavailable()
        body = _json_object(response)
        if response.status_code != 200:
            error = body.get("error") if body else None
            if response.status_code == 400 and error == "invalid_grant":
                raise errors.DiscordGrantRevoked()
            log.warning(
                "Discord refused a token refresh: %s (HTTP %s)", error, response.status_code
            )
            raise errors.DiscordUnavailable()  # invalid_client: our misconfiguration
        access_token = body.get("access_token") if body else None
        if not isinstance(access_token, str) or not access_token:
            log.warning("Discord's refresh answer had no access token")
            self._http.unreadable("token_refresh")
            raise errors.DiscordUnavailable()
        return _tokens(body, access_token)

    async def push(self, access_token: str, connection: RoleConnection) -> None:
        body: dict[str, Any] = {
            "platform_name": connection.platform_name,
            "metadata": dict(connection.metadata),
        }
        if connection.platform_username is not None:
            body["platform_username"] = connection.platform_username
        try:
            response = await self._http.request(
                "role_connection",
                "PUT",
                f"{self._api}/users/@me/applications/{self._client_id}/role-connection",
                json=body,
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except httpx.HTTPError as exc:
            log.warning("Discord role connection update failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        if _rate_limited(response, "a role connection update"):
            raise errors.DiscordUnavailable()
        if response.status_code in (401, 403):
            raise errors.DiscordDenied()  # this access token is no longer good: refresh it
        if response.status_code >= 300:
            answer = _json_object(response) or {}
            log.warning(
                "Discord refused a role connection update: HTTP %s, code %s%s",
                response.status_code,
                answer.get("code"),
                " (are the metadata records registered? run `taskflow-link bot sync`)"
                if response.status_code == 400
                else "",
            )
            raise errors.DiscordUnavailable()
