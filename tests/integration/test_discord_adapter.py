"""The real Discord OAuth adapter against the emulator, over real HTTP: the port's contract
(which the in-memory fake passes too), then what only the HTTP adapter does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from adapters.discord_oauth import (
    ANSWER_MAX,
    DiscordCallObserver,
    DiscordHttp,
    HttpDiscordOAuth,
    HttpDiscordRoleConnections,
)
from domain import errors
from domain.model import DiscordId, DiscordProfile, RoleConnection
from domain.policies import pkce_challenge, role_connection
from domain.ports import DiscordOAuth, DiscordTokens
from entrypoints.emulator import EmulatorState, create_emulator_app
from tests.contracts.discord_oauth import Callback, DiscordOAuthContract
from tests.servers import serve

REDIRECT = "http://127.0.0.1:9/auth/discord/callback"
VERIFIER = "v" * 43


# Every session the tests make, closed after each test (an aiohttp session is bound to its loop).
_SESSIONS: list[DiscordHttp] = []


@pytest.fixture(autouse=True)
async def _close_sessions() -> AsyncIterator[None]:
    yield
    while _SESSIONS:
        await _SESSIONS.pop().aclose()


def session(
    user_agent: str = "DiscordBot (https://test.invalid, 1)",
    *,
    timeout: float,
    observer: DiscordCallObserver | None = None,
) -> DiscordHttp:
    _SESSIONS.append(DiscordHttp(user_agent=user_agent, timeout=timeout, observer=observer))
    return _SESSIONS[-1]


@pytest.fixture
def emulator() -> Iterator[tuple[EmulatorState, str]]:
    state = EmulatorState("client-1", "secret-1", {REDIRECT}, fault_delay=3.0)
    with serve(create_emulator_app(state)) as url:
        try:
            yield state, url
        finally:
            # Lifted before the server stops: it waits for the requests under way, and a
            # "timeout" fault holds the calls a test gave up on for seconds.
            state.faults.clear()


def adapter(
    url: str,
    *,
    secret: str = "secret-1",  # noqa: S107
    timeout: float = 30.0,  # generous: a busy machine must not make a normal call time out
    http: DiscordHttp | None = None,
) -> HttpDiscordOAuth:
    return HttpDiscordOAuth(
        client_id="client-1",
        client_secret=secret,
        redirect_uri=REDIRECT,
        api_url=f"{url}/api/v10",
        authorize_url=f"{url}/oauth2/authorize",
        http=http or session(timeout=timeout),
    )


class EmulatorSide:
    """The HTTP adapter and the emulator it talks to, for the contract."""

    def __init__(self, state: EmulatorState, url: str) -> None:
        self.state = state
        self._oauth = adapter(url)

    @property
    def oauth(self) -> DiscordOAuth:
        return self._oauth

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def redirect_uri(self) -> str:
        return REDIRECT

    def add_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        avatar: str | None = None,
        email: str | None = None,
        verified: bool = False,
    ) -> DiscordProfile:
        user = self.state.add_user(
            username, global_name=global_name, avatar=avatar, email=email, verified=verified
        )
        return DiscordProfile(
            DiscordId(int(user.id)), username, global_name, avatar, email, verified
        )

    async def approve(self, authorize_url: str, user: DiscordId) -> Callback:
        """A fresh browser on the consent page: pick the user, press Authorize."""
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as browser:
            page = await browser.get(authorize_url)
            assert page.status_code == 200, page.text
            answer = await browser.post(
                authorize_url.split("?", maxsplit=1)[0],
                data={**_query(authorize_url), "user_id": str(user.value), "decision": "approve"},
            )
        assert answer.status_code == 302, answer.text
        callback = _query(answer.headers["location"])
        return Callback(callback["code"], callback["state"])

    def break_discord(self) -> None:
        for endpoint in ("token", "users_me", "token_revoke"):
            self.state.faults[endpoint] = "500"


class TestHttpDiscordOAuth(DiscordOAuthContract):
    @pytest.fixture
    def discord(self, emulator: tuple[EmulatorState, str]) -> EmulatorSide:
        return EmulatorSide(*emulator)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def consent(authorize_url: str, user_id: str, decision: str = "approve") -> dict[str, str]:
    """What a person does on the consent page: load it, pick a user, press a button."""
    page = httpx.get(authorize_url, timeout=30)
    assert page.status_code == 200
    assert f'value="{user_id}"' in page.text
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    answer = httpx.post(
        authorize_url.split("?", maxsplit=1)[0],
        data={**params, "user_id": user_id, "decision": decision},
        follow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_full_oauth_dance_with_pkce_and_email_scope(
    emulator: tuple[EmulatorState, str],
) -> None:
    state, url = emulator
    user = state.add_user("alice", global_name="Alice", email="Alice@Example.com", verified=True)
    discord = adapter(url)

    authorize_url = discord.authorization_url(
        state="st" * 20, code_challenge=pkce_challenge(VERIFIER), scopes=["identify", "email"]
    )
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["identify email"]
    callback = consent(authorize_url, user.id)
    assert callback["state"] == "st" * 20

    tokens = await discord.exchange_code(code=callback["code"], code_verifier=VERIFIER)
    profile = await discord.fetch_profile(tokens)
    assert (profile.id.value, profile.username, profile.global_name) == (
        int(user.id),
        "alice",
        "Alice",
    )
    assert (profile.email, profile.verified) == ("Alice@Example.com", True)

    await discord.revoke(tokens)
    assert tokens.access_token in state.revoked
    assert user.id not in state.authorizations  # Discord revokes the whole grant
    with pytest.raises(errors.DiscordDenied):
        await discord.fetch_profile(tokens)


async def test_identify_scope_hides_the_email(emulator: tuple[EmulatorState, str]) -> None:
    state, url = emulator
    user = state.add_user("bob", email="bob@example.com", verified=True)
    discord = adapter(url)
    authorize_url = discord.authorization_url(
        state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
    )
    tokens = await discord.exchange_code(
        code=consent(authorize_url, user.id)["code"], code_verifier=VERIFIER
    )
    profile = await discord.fetch_profile(tokens)
    assert (profile.email, profile.verified) == (None, False)


async def test_wrong_verifier_reused_code_and_wrong_secret_are_refused(
    emulator: tuple[EmulatorState, str],
) -> None:
    state, url = emulator
    user = state.add_user("carol")
    discord = adapter(url)

    def new_code() -> str:
        authorize_url = discord.authorization_url(
            state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
        )
        return consent(authorize_url, user.id)["code"]

    with pytest.raises(errors.DiscordDenied):
        await discord.exchange_code(code=new_code(), code_verifier="w" * 43)
    code = new_code()
    await discord.exchange_code(code=code, code_verifier=VERIFIER)
    with pytest.raises(errors.DiscordDenied):
        await discord.exchange_code(code=code, code_verifier=VERIFIER)
    with pytest.raises(errors.DiscordUnavailable):  # our misconfiguration, not the person's
        await adapter(url, secret="wrong").exchange_code(code=new_code(), code_verifier=VERIFIER)


async def test_deny_on_the_consent_page_sends_access_denied(
    emulator: tuple[EmulatorState, str],
) -> None:
    state, url = emulator
    user = state.add_user("dave")
    authorize_url = adapter(url).authorization_url(
        state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
    )
    callback = consent(authorize_url, user.id, decision="deny")
    assert callback["error"] == "access_denied"
    assert "code" not in callback


def test_unregistered_redirect_uri_is_refused_without_redirecting(
    emulator: tuple[EmulatorState, str],
) -> None:
    _, url = emulator
    page = httpx.get(
        f"{url}/oauth2/authorize",
        timeout=30,
        params={
            "client_id": "client-1",
            "redirect_uri": "https://evil.example/cb",
            "response_type": "code",
            "scope": "identify",
        },
    )
    assert page.status_code == 400
    assert "redirect_uri" in page.text


@pytest.mark.parametrize("mode", ["500", "garbage", "timeout"])
async def test_discord_failures_become_discord_unavailable(
    emulator: tuple[EmulatorState, str], mode: str
) -> None:
    state, url = emulator
    user = state.add_user("erin")
    # The emulator's "timeout" answers after 3 s. Only the calls that must fail have 1 s: a
    # call that must succeed on a busy machine gets 30.
    failing = adapter(url, timeout=1.0 if mode == "timeout" else 30.0)
    discord = adapter(url, timeout=30.0)
    authorize_url = discord.authorization_url(
        state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
    )
    code = consent(authorize_url, user.id)["code"]
    state.faults["token"] = mode
    with pytest.raises(errors.DiscordUnavailable):
        await failing.exchange_code(code=code, code_verifier=VERIFIER)

    state.faults.clear()
    tokens = await discord.exchange_code(
        code=consent(authorize_url, user.id)["code"], code_verifier=VERIFIER
    )
    state.faults["users_me"] = mode
    with pytest.raises(errors.DiscordUnavailable):
        await failing.fetch_profile(tokens)


def test_the_emulator_remembers_a_grant_like_discord(emulator: tuple[EmulatorState, str]) -> None:
    """prompt=none sends a returning user (this browser, these scopes) straight back; someone
    new, more scopes, prompt=consent or a revoked grant show the consent screen."""
    state, url = emulator
    user = state.add_user("gwen", email="gwen@example.com", verified=True)
    discord = adapter(url)

    def authorize(scopes: list[str], *, ask_again: bool = False) -> str:
        return discord.authorization_url(
            state="s" * 43,
            code_challenge=pkce_challenge(VERIFIER),
            scopes=scopes,
            ask_again=ask_again,
        )

    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        first = browser.get(authorize(["identify"]))
        assert first.status_code == 200  # a first-time user sees the screen, even with none
        assert "wants to access your Discord account" in first.text
        params = {k: v[0] for k, v in parse_qs(urlsplit(authorize(["identify"])).query).items()}
        approved = browser.post(
            f"{url}/oauth2/authorize", data={**params, "user_id": user.id, "decision": "approve"}
        )
        assert approved.status_code == 302

        again = browser.get(authorize(["identify"]))
        assert again.status_code == 302  # returning: straight back with a code
        assert again.headers["location"].startswith(REDIRECT + "?code=")

        assert browser.get(authorize(["identify"], ask_again=True)).status_code == 200
        assert browser.get(authorize(["identify", "email"])).status_code == 200  # more scopes
        with httpx.Client(
            timeout=30,
        ) as other_browser:
            assert other_browser.get(authorize(["identify"])).status_code == 200

        code = parse_qs(urlsplit(again.headers["location"]).query)["code"][0]
        state.revoke(state.issue_token(state.codes[code]))  # revoking ends the whole grant
        assert browser.get(authorize(["identify"])).status_code == 200


def test_the_emulator_refuses_an_unknown_prompt(emulator: tuple[EmulatorState, str]) -> None:
    _, url = emulator
    page = httpx.get(
        f"{url}/oauth2/authorize",
        timeout=30,
        params={
            "client_id": "client-1",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "identify",
            "prompt": "login",
        },
    )
    assert page.status_code == 400
    assert "prompt" in page.text


@pytest.mark.parametrize("mode", ["429", "cloudflare"])
async def test_rate_limits_are_discord_unavailable_and_logged_as_such(
    emulator: tuple[EmulatorState, str], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    state, url = emulator
    user = state.add_user("fred")
    discord = adapter(url)
    authorize_url = discord.authorization_url(
        state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
    )
    code = consent(authorize_url, user.id)["code"]
    state.faults["token"] = mode
    with pytest.raises(errors.DiscordUnavailable):
        await discord.exchange_code(code=code, code_verifier=VERIFIER)
    assert "Discord rate limited the token exchange" in caplog.text
    if mode == "429":
        assert "retry after 1.5 s" in caplog.text

    state.faults.clear()
    tokens = await discord.exchange_code(
        code=consent(authorize_url, user.id)["code"], code_verifier=VERIFIER
    )
    for endpoint, what in (("users_me", "/users/@me"), ("token_revoke", "the token revocation")):
        state.faults[endpoint] = mode
        caplog.clear()
        if endpoint == "users_me":
            with pytest.raises(errors.DiscordUnavailable):
                await discord.fetch_profile(tokens)
        else:
            await discord.revoke(tokens)  # best effort: logged, never raised
        assert f"Discord rate limited {what}" in caplog.text


@pytest.mark.parametrize("mode", ["cloudflare-403", "blocked"])
async def test_a_blocked_address_is_discord_unavailable_at_sign_in_not_a_refusal(
    emulator: tuple[EmulatorState, str], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A block of the service's address answers /users/@me with 403 (Cloudflare's HTML, or
    Discord's JSON code 40333) for everyone: each person was told that Discord "did not
    grant access", and the outage was logged as nothing but refusals."""
    state, url = emulator
    user = state.add_user("hana")
    discord = adapter(url)
    authorize_url = discord.authorization_url(
        state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
    )
    tokens = await discord.exchange_code(
        code=consent(authorize_url, user.id)["code"], code_verifier=VERIFIER
    )
    state.faults["users_me"] = mode
    with pytest.raises(errors.DiscordUnavailable):
        await discord.fetch_profile(tokens)
    assert "blocked?" in caplog.text
    state.faults.clear()
    # Discord's own 401 (its JSON, code 0) still says the token is not good.
    with pytest.raises(errors.DiscordDenied):
        await discord.fetch_profile(DiscordTokens("no-such-token", frozenset({"identify"})))


async def test_one_client_says_who_it_is_and_is_reused(
    emulator: tuple[EmulatorState, str],
) -> None:
    state, url = emulator
    user = state.add_user("gus")
    http = session("DiscordBot (https://link.example, 1.2)", timeout=30)
    discord = adapter(url, http=http)
    clients = set()
    for _ in range(3):
        authorize_url = discord.authorization_url(
            state="s" * 43, code_challenge=pkce_challenge(VERIFIER), scopes=["identify"]
        )
        tokens = await discord.exchange_code(
            code=consent(authorize_url, user.id)["code"], code_verifier=VERIFIER
        )
        await discord.fetch_profile(tokens)
        clients.add(id(http.client))
    assert len(clients) == 1  # one client (one TLS context, pooled connections) per process
    assert state.user_agents[-3:] == ["DiscordBot (https://link.example, 1.2)"] * 3
    await http.aclose()


async def test_a_role_connection_for_someone_unlinked_clears_the_username(
    emulator: tuple[EmulatorState, str],
) -> None:
    """After an unlink the push must clear the TaskFlow username Discord shows. Discord does
    not say that a field left out is cleared (and the emulator keeps it), so the adapter
    sends ``"platform_username": null``."""
    state, url = emulator
    user = state.add_user("hedy")
    state.role_metadata = [
        {"type": 7, "key": "linked", "name": "Linked", "description": "Linked"},
        {"type": 2, "key": "linked_days", "name": "Days", "description": "Days linked"},
    ]
    scopes = frozenset({"identify", "role_connections.write"})
    grant = state.codes[state.issue_code(user, scopes, REDIRECT, None)]
    access_token = state.issue_token(grant)
    discord = HttpDiscordRoleConnections(
        client_id="client-1",
        client_secret="secret-1",
        api_url=f"{url}/api/v10",
        http=session(timeout=30),
    )
    linked = RoleConnection("TaskFlow", "hedy_tf", {"linked": "1", "linked_days": "2"})
    await discord.push(access_token, linked)
    assert state.role_connections[user.id]["platform_username"] == "hedy_tf"

    await discord.push(access_token, role_connection(None, None, datetime.now(UTC)))  # unlinked
    shown = state.role_connections[user.id]
    assert shown["platform_username"] is None
    assert shown["metadata"] == {"linked": "0", "linked_days": "0"}


async def test_a_push_that_used_the_users_last_call_says_until_when(
    emulator: tuple[EmulatorState, str],
) -> None:
    """The emulator, as Discord, answers each push with the user's rate limit headers: the
    one that leaves no call (``X-RateLimit-Remaining: 0``) tells ``used_up`` its
    ``X-RateLimit-Reset-After``, as the bot's role calls read it; the next is a 429."""
    state, url = emulator
    user = state.add_user("ivy")
    state.role_metadata = [{"type": 7, "key": "linked", "name": "Linked", "description": "L"}]
    state.role_connection_limit, state.role_connection_limit_window = 2, 60.0
    scopes = frozenset({"identify", "role_connections.write"})
    grant = state.codes[state.issue_code(user, scopes, REDIRECT, None)]
    access_token = state.issue_token(grant)
    discord = role_connections(url)
    linked = RoleConnection("TaskFlow", "ivy_tf", {"linked": "1"})
    told: list[float] = []

    await discord.push(access_token, linked, used_up=told.append)
    assert told == []  # one call left
    await discord.push(access_token, linked, used_up=told.append)
    [seconds] = told
    assert 0 < seconds <= 60
    with pytest.raises(errors.DiscordRateLimited):
        await discord.push(access_token, linked, used_up=told.append)
    assert len(told) == 1  # a 429 pauses by its own retry_after


class HostileDiscord:
    """A stand-in that answers /users/@me with whatever ``mode`` says, and remembers the
    ``Cookie`` header of every request it gets."""

    def __init__(self) -> None:
        self.mode = "cookie"
        self.cookies: list[str | None] = []
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        self.cookies.append(headers.get(b"cookie", b"").decode() or None)
        self.paths.append(scope["path"])
        if scope["path"].endswith("/elsewhere"):
            status, extra, body = 200, [], PROFILE
        elif self.mode == "cookie":
            status, extra, body = 200, [(b"set-cookie", b"__cfruid=someone; Path=/")], PROFILE
        elif self.mode == "redirect":
            status, extra, body = 307, [(b"location", b"/api/v10/elsewhere")], b""
        else:  # "huge": well past what Discord ever answers
            status, extra, body = 200, [], b'{"id": "1", "pad": "' + b"x" * (2 * ANSWER_MAX) + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})


PROFILE = b'{"id": "80351110224678912", "username": "nelly", "verified": true}'


@pytest.fixture
def hostile() -> Iterator[tuple[HostileDiscord, str]]:
    discord = HostileDiscord()
    with serve(discord) as url:
        yield discord, url


async def test_no_cookie_set_by_discord_is_sent_again(hostile: tuple[HostileDiscord, str]) -> None:
    """Discord's (or Cloudflare's) cookies from one person's call never ride along another's."""
    discord, url = hostile
    oauth = adapter(url)
    for _ in range(2):
        profile = await oauth.fetch_profile(DiscordTokens("token", frozenset({"identify"})))
        assert profile.username == "nelly"
    assert discord.cookies == [None, None]


async def test_a_redirect_is_never_followed(hostile: tuple[HostileDiscord, str]) -> None:
    discord, url = hostile
    discord.mode = "redirect"
    with pytest.raises(errors.DiscordUnavailable):
        await adapter(url).fetch_profile(DiscordTokens("token", frozenset({"identify"})))
    assert discord.paths == ["/api/v10/users/@me"]  # never /elsewhere, bearer token and all


async def test_an_answer_larger_than_discord_sends_is_not_read_whole(
    hostile: tuple[HostileDiscord, str],
) -> None:
    discord, url = hostile
    discord.mode = "huge"
    failures: list[str | None] = []

    class Observer:
        def discord_call(self, endpoint: str, seconds: float, failure: str | None) -> None:
            failures.append(failure)

        def discord_failure(self, endpoint: str, failure: str) -> None:
            failures.append(failure)

    oauth = adapter(url, http=session(timeout=30, observer=Observer()))
    with pytest.raises(errors.DiscordUnavailable):
        await oauth.fetch_profile(DiscordTokens("token", frozenset({"identify"})))
    assert failures == ["transport"]


def role_connections(url: str, *, http: DiscordHttp | None = None) -> HttpDiscordRoleConnections:
    return HttpDiscordRoleConnections(
        client_id="client-1",
        client_secret="secret-1",
        api_url=f"{url}/api/v10",
        http=http or session(timeout=30),
    )


@pytest.mark.parametrize(
    ("mode", "retry_after", "global_limit", "shared_limit"),
    [
        ("429", 1.5, False, False),
        ("429-global", 1.5, True, False),
        # A resource's limit (X-RateLimit-Scope: shared), every caller's, not the token's.
        ("429-shared", 1.5, False, True),
        # Cloudflare's, which says nothing of how long: the calls pause, longer each time.
        ("cloudflare", None, False, False),
        # An address Cloudflare blocks: a 403 for every call, not Discord refusing this
        # user's token (which would refresh it, another call, and count a failure).
        ("cloudflare-403", None, False, False),
        ("blocked", None, False, False),
    ],
)
async def test_linked_roles_calls_read_a_rate_limit_or_a_block_as_one(
    emulator: tuple[EmulatorState, str],
    mode: str,
    retry_after: float | None,
    global_limit: bool,
    shared_limit: bool,
) -> None:
    state, url = emulator
    user = state.add_user("ines")
    state.role_metadata = [
        {"type": 7, "key": "linked", "name": "Linked", "description": "Linked"},
        {"type": 2, "key": "linked_days", "name": "Days", "description": "Days linked"},
    ]
    grant = state.codes[
        state.issue_code(user, frozenset({"identify", "role_connections.write"}), REDIRECT, None)
    ]
    access_token, refresh_token = state.issue_token(grant), state.issue_refresh_token(grant)
    discord = role_connections(url)
    linked = RoleConnection("TaskFlow", "ines_tf", {"linked": "1", "linked_days": "2"})

    for endpoint, call in (
        ("role_connection", lambda: discord.push(access_token, linked)),
        ("token", lambda: discord.refresh(refresh_token)),
    ):
        state.faults[endpoint] = mode
        with pytest.raises(errors.DiscordRateLimited) as limited:
            await call()
        assert (
            limited.value.retry_after,
            limited.value.global_limit,
            limited.value.shared_limit,
        ) == (retry_after, global_limit, shared_limit)
        del state.faults[endpoint]

    await discord.push(access_token, linked)  # nothing was taken or spent meanwhile
    assert (await discord.refresh(refresh_token)).access_token


class Proxy:
    """Something between the service and Discord that answers every call alike: by default an
    HTML page of ``status`` (a proxy's refusal, a captive portal)."""

    def __init__(self) -> None:
        self.status = 401
        self.content_type = b"text/html"
        self.body = b"<html>Access denied</html>"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type)],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


@pytest.mark.parametrize("status", [401, 403])
async def test_a_401_or_403_that_is_not_discords_is_a_block_not_a_refusal(status: int) -> None:
    """Only Discord's own JSON 401 means "this access token ended" (then refreshed); the same
    status from what stands in front of Discord answers every call alike."""
    proxy = Proxy()
    proxy.status = status
    failures: list[str] = []

    class Observer:
        def discord_call(self, endpoint: str, seconds: float, failure: str | None) -> None:
            pass

        def discord_failure(self, endpoint: str, failure: str) -> None:
            failures.append(f"{endpoint}:{failure}")

    with serve(proxy) as url:
        discord = role_connections(url, http=session(timeout=30, observer=Observer()))
        linked = RoleConnection("TaskFlow", "jo_tf", {"linked": "1", "linked_days": "2"})
        with pytest.raises(errors.DiscordRateLimited) as pushed:
            await discord.push("access", linked)
        with pytest.raises(errors.DiscordRateLimited) as refreshed:
            await discord.refresh("refresh")
    assert pushed.value.retry_after is None
    assert refreshed.value.retry_after is None
    assert failures == ["role_connection:invalid_response", "token_refresh:invalid_response"]


async def test_discords_own_401_to_a_push_still_asks_for_a_refresh(
    emulator: tuple[EmulatorState, str],
) -> None:
    _, url = emulator
    with pytest.raises(errors.DiscordDenied):  # Discord's JSON: {"code": 0, "message": ...}
        await role_connections(url).push(
            "no-such-token", RoleConnection("TaskFlow", None, {"linked": "0"})
        )
    with pytest.raises(errors.DiscordGrantRevoked):  # the token endpoint's OAuth JSON
        await role_connections(url).refresh("no-such-refresh-token")


@pytest.mark.parametrize("body", [b"[]", b'"slow down"', b"1.5"])
async def test_a_429_whose_json_is_not_an_object_is_still_a_rate_limit(body: bytes) -> None:
    """The log line read ``retry_after`` with ``body.get``: JSON that is not an object raised
    AttributeError out of the adapter (a 500 at the OAuth callback, a broken pass)."""
    proxy = Proxy()
    proxy.status, proxy.content_type, proxy.body = 429, b"application/json", body
    with serve(proxy) as url:
        oauth = adapter(url)
        with pytest.raises(errors.DiscordUnavailable):
            await oauth.exchange_code(code="code", code_verifier=VERIFIER)
        with pytest.raises(errors.DiscordUnavailable):
            await oauth.fetch_profile(DiscordTokens("token", frozenset({"identify"})))
        await oauth.revoke(DiscordTokens("token", frozenset({"identify"})))  # logged only
        with pytest.raises(errors.DiscordRateLimited):
            await role_connections(url).push("access", RoleConnection("TaskFlow", None, {}))
