"""Discord's OAuth2 over HTTP, on one shared aiohttp session.

What we use of OAuth2 is small and Discord-specific (an authorize URL, the code grant with
PKCE, ``/users/@me``, revocation), so it is written here against Discord's documentation rather
than through a generic OAuth library: one ``aiohttp.ClientSession`` per process (connections
reused across sign-ins; aiohttp is hikari's HTTP client, so no second HTTP package is loaded),
Discord's ``User-Agent``, timeouts, no cookie jar, and every failure
turned into the domain's ``DiscordDenied`` (Discord said no) or ``DiscordUnavailable`` (Discord
broke, or rate limited us).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from adapters.discord_limits import error_code, limit_of, used_up_for
from domain import errors
from domain.model import (
    EMAIL_MAX,
    DiscordProfile,
    DiscordUser,
    RoleConnection,
    clean_text,
    has_encoded_word,
    has_format_characters,
)
from domain.names import has_hidden_characters
from domain.ports import DiscordTokens, UsedUp

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


# Discord's answers are a few kilobytes; anything far larger is not Discord (nor read whole).
ANSWER_MAX = 1024 * 1024


class HttpFailure(Exception):
    """No usable answer: the connection failed, or what came back was not an HTTP answer
    Discord would send (too large, cut short)."""


class HttpTimeout(HttpFailure):
    """No whole answer within the call's deadline."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole (the connection is back in the pool by the time callers see it)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not JSON (or not UTF-8)."""
        return json.loads(self.content)


class DiscordHttp:
    """The process's one HTTP session for Discord, made on first use and closed at shutdown.

    A client per call built a TLS context each time (tens of milliseconds of CPU), which made
    Sign in with Discord CPU-bound at a handful of logins a second.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: float,
        observer: DiscordCallObserver | None = None,
        proxy: str | None = None,
    ) -> None:
        self._user_agent = user_agent
        self._proxy = proxy  # http:// only (see adapters.proxies)
        # aiohttp's total bounds the request; the deadline below bounds the whole call,
        # reading the answer included. A role change's claim (two minutes) must outlast any
        # call made under it. sock_connect, not connect: aiohttp's connect also counts the
        # wait for a pooled connection, which the deadline bounds.
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0))
        self._deadline = timeout
        self._client: aiohttp.ClientSession | None = None
        self._observer = observer

    @property
    def client(self) -> aiohttp.ClientSession:
        """The session (made in the running event loop, on first use)."""
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100),
                timeout=self._timeout,
                headers={"User-Agent": self._user_agent},
                # No cookie jar: a cookie Discord (or Cloudflare) sets on one person's call is
                # never sent with another's.
                cookie_jar=aiohttp.DummyCookieJar(),
                # The proxy comes resolved (adapters.proxies); aiohttp's trust_env would
                # also read ~/.netrc in a thread before every call.
                trust_env=False,
            )
        return self._client

    async def request(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Answer:
        """One call, read whole, timed and its failure (if any) told to the observer under
        ``endpoint``. ``HttpFailure`` (``HttpTimeout``) when there is no usable answer."""
        started = time.perf_counter()
        failure: str | None = None
        try:
            try:
                async with asyncio.timeout(self._deadline):
                    answer = await self._call(method, url, headers=headers, data=data, json=json)
            except TimeoutError:  # asyncio's deadline, or aiohttp's (also an OSError)
                raise HttpTimeout(f"no answer within {self._deadline} s") from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                # ValueError: aiohttp refused what it was given (a control character in a
                # header, from a token setting with a trailing newline, say).
                raise HttpFailure(type(exc).__name__) from None
            failure = failure_of(answer.status_code)
        except HttpTimeout:
            failure = "timeout"
            raise
        except HttpFailure:
            failure = "transport"
            raise
        finally:
            if self._observer is not None:
                self._observer.discord_call(endpoint, time.perf_counter() - started, failure)
        return answer

    async def _call(self, method: str, url: str, **kwargs: Any) -> Answer:
        # encoded=True: the URL goes out exactly as built (callers quote what they put in it).
        async with self.client.request(
            method, URL(url, encoded=True), allow_redirects=False, proxy=self._proxy, **kwargs
        ) as response:
            if (response.content_length or 0) > ANSWER_MAX:
                raise HttpFailure("answer too large")
            chunks, size = [], 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > ANSWER_MAX:
                    raise HttpFailure("answer too large")
                chunks.append(chunk)
            return Answer(response.status, response.headers, b"".join(chunks))

    def unreadable(self, endpoint: str) -> None:
        """Discord answered, but not with what its documentation promises."""
        if self._observer is not None:
            self._observer.discord_failure(endpoint, "invalid_response")

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def basic_auth(client_id: str, client_secret: str) -> dict[str, str]:
    """client_secret_basic: the client's credentials in an ``Authorization`` header."""
    credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def _rate_limited(response: Answer, what: str) -> bool:
    """Discord's 429 (JSON with ``retry_after`` and ``global``, or Cloudflare's HTML page)."""
    if response.status_code != 429:
        return False
    body = _json_object(response)  # any JSON but an object is not Discord's either
    if body is None:
        log.warning("Discord rate limited %s (not Discord's JSON: Cloudflare?)", what)
    else:
        log.warning(
            "Discord rate limited %s: retry after %s s%s",
            what,
            body.get("retry_after"),
            " (global)" if body.get("global") else "",
        )
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
        self._credentials = basic_auth(client_id, client_secret)
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

    async def _post_form(self, endpoint: str, path: str, data: dict[str, str]) -> Answer:
        # client_secret_basic: the client credentials in the Authorization header.
        return await self._http.request(
            endpoint,
            "POST",
            f"{self._api}{path}",
            data=data,
            headers=self._credentials,
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
        except HttpFailure as exc:
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
        except HttpFailure as exc:
            log.warning("Discord /users/@me failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        if _rate_limited(response, "/users/@me"):
            raise errors.DiscordUnavailable()
        if response.status_code in (401, 403):
            # Only Discord's own JSON refuses the token; a block of our address (Cloudflare's
            # HTML 403, Discord's 40333, a proxy's page) refuses every sign-in alike: telling
            # each person that Discord "did not grant access" hid the outage (logged there).
            from_discord = error_code(response) is not None
            if limit_of(self._http, "users_me", response, from_discord=from_discord):
                raise errors.DiscordUnavailable()
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
        except HttpFailure as exc:
            log.warning("Discord token revocation failed: %s", type(exc).__name__)


def _tell_used_up(response: Answer, used_up: UsedUp | None) -> None:
    """Tell ``used_up`` when Discord's answer (not a 429: that one pauses by its own
    ``retry_after``) says the route's limit has no call left, as the bot's role calls read
    it (``adapters.discord_limits.used_up_for``)."""
    seconds = used_up_for(response)
    if used_up is not None and seconds is not None:
        used_up(seconds)


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


def _json_object(response: Answer) -> dict[str, Any] | None:
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
        and not has_format_characters(email)  # as validate_email: none typed in a form
        and not has_hidden_characters(email)  # nor a character that draws nothing
        and not has_encoded_word(email)
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
    connection. Neither token ever reaches a log line (nor does a URL carrying one).

    Discord's 429 and a block of the address (Cloudflare's HTML 429 or 403, Discord's 40333,
    a 401 or 403 that is not Discord's own answer) raise ``DiscordRateLimited``: the calls
    pause, as the bot's role calls do (``adapters.discord_limits``); only Discord's own
    refusal of the token is ``DiscordDenied`` (the push) or ``DiscordGrantRevoked``."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_url: str,
        http: DiscordHttp,
    ) -> None:
        self._client_id = client_id
        self._credentials = basic_auth(client_id, client_secret)
        self._api = api_url.rstrip("/")
        self._http = http

    async def refresh(self, refresh_token: str, *, used_up: UsedUp | None = None) -> DiscordTokens:
        try:
            response = await self._http.request(
                "token_refresh",
                "POST",
                f"{self._api}/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                headers=self._credentials,
            )
        except HttpFailure as exc:
            log.warning("Discord token refresh failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        body = _json_object(response)
        # The token endpoint answers OAuth's JSON (``error``), not the API's (``code``).
        self._limited("token_refresh", response, "a token refresh", from_discord=body is not None)
        _tell_used_up(response, used_up)
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

    async def push(
        self, access_token: str, connection: RoleConnection, *, used_up: UsedUp | None = None
    ) -> None:
        # Every field, platform_username too (null when not linked): Discord documents each
        # as optional without saying that leaving one out clears it, so an unlinked person's
        # profile could go on showing their TaskFlow username. null clears it, per the spec.
        body: dict[str, Any] = {
            "platform_name": connection.platform_name,
            "platform_username": connection.platform_username,
            "metadata": dict(connection.metadata),
        }
        try:
            response = await self._http.request(
                "role_connection",
                "PUT",
                # Quoted: the URL goes out exactly as built (a setting, but still).
                f"{self._api}/users/@me/applications/{quote(self._client_id, safe='')}"
                "/role-connection",
                json=body,
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except HttpFailure as exc:
            log.warning("Discord role connection update failed: %s", type(exc).__name__)
            raise errors.DiscordUnavailable() from None
        code = error_code(response)
        self._limited(
            "role_connection", response, "a role connection update", from_discord=code is not None
        )
        _tell_used_up(response, used_up)
        if response.status_code in (401, 403):
            raise errors.DiscordDenied()  # Discord's word: this access token is no longer good
        if code is None and response.status_code == 404:
            self._http.unreadable("role_connection")  # a wrong API address, a proxy's page
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

    def _limited(self, endpoint: str, response: Answer, what: str, *, from_discord: bool) -> None:
        """``DiscordRateLimited`` when ``response`` is a 429 or a block of the address."""
        limit = limit_of(self._http, endpoint, response, from_discord=from_discord)
        if limit is None:
            return
        if limit.status == 429:
            _rate_limited(response, what)  # the log line
        raise errors.DiscordRateLimited(
            limit.retry_after, global_limit=limit.global_limit, shared_limit=limit.shared_limit
        )
