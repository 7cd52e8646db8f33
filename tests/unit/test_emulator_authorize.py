"""The emulator's OAuth2 authorize page refuses and skips what Discord's does (DISCORD.md): a
returning user sees the consent screen again only with ``prompt=consent``, and a PKCE
challenge must have S256's shape."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from domain.policies import pkce_challenge
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.state import TestUser
from tests.web_support import Client

APP = "1200000000000000042"
REDIRECT = "http://127.0.0.1:1/cb"
CONSENT_SCREEN = "wants to access your Discord account"


def authorize_params(**changes: str | None) -> dict[str, str]:
    """What the service asks for, with ``changes`` (``None``: leave it out)."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "scope": "identify",
        "state": "s" * 43,
        "code_challenge": pkce_challenge("v" * 43),
        "code_challenge_method": "S256",
        "prompt": "none",
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


@pytest.fixture
async def browser() -> AsyncIterator[tuple[EmulatorState, Client]]:
    state = EmulatorState(APP, "secret", {REDIRECT})
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        yield state, client


async def _approve(client: Client, user: TestUser) -> None:
    """This browser's person presses Authorize: they granted ``identify`` and are signed in."""
    answer = await client.post(
        "/oauth2/authorize",
        data={**authorize_params(), "user_id": user.id, "decision": "approve"},
        follow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    assert answer.headers["location"].startswith(f"{REDIRECT}?code=")


async def _authorize(client: Client, **changes: Any) -> Any:
    return await client.get(
        "/oauth2/authorize", params=authorize_params(**changes), follow_redirects=False
    )


async def test_a_returning_user_sees_the_screen_again_only_with_prompt_consent(
    browser: tuple[EmulatorState, Client],
) -> None:
    """DISCORD.md: "prompt=consent forces the consent screen again; without it a returning
    user who already granted the same scopes is sent straight back" (the service always
    sends prompt, so only this emulator's own default rests on it)."""
    state, client = browser
    await _approve(client, state.add_user("nina"))
    for prompt in ("none", None):
        skipped = await _authorize(client, prompt=prompt)
        assert skipped.status_code == 302, prompt
        assert skipped.headers["location"].startswith(f"{REDIRECT}?code=")
    shown = await _authorize(client, prompt="consent")
    assert shown.status_code == 200
    assert CONSENT_SCREEN in shown.text


@pytest.mark.parametrize(
    "challenge",
    [
        "x",
        "",
        pkce_challenge("v" * 43)[:42],
        pkce_challenge("v" * 43) + "A",
        pkce_challenge("v" * 43) + "=",  # padded
        "+" * 43,  # base64, not base64url
        "/" * 43,
        "A" * 42 + "\n",
    ],
    ids=["one", "empty", "42", "44", "padded", "plus", "slash", "newline"],
)
async def test_a_code_challenge_that_is_not_s256s_shape_is_refused(
    browser: tuple[EmulatorState, Client], challenge: str
) -> None:
    """RFC 7636: the S256 challenge is BASE64URL(SHA256(verifier)) without padding, exactly
    43 characters of A-Z a-z 0-9 - _. Anything else is refused as the other bad authorize
    parameters are: a 400 page, no redirect."""
    state, client = browser
    user = state.add_user("otto")
    page = await _authorize(client, code_challenge=challenge)
    assert page.status_code == 400
    assert "code_challenge" in page.text
    decided = await client.post(
        "/oauth2/authorize",
        data={**authorize_params(code_challenge=challenge), "user_id": user.id},
        follow_redirects=False,
    )
    assert decided.status_code == 400
    assert state.codes == {}
    for refusal in (page, decided):  # titled alike, for a screen reader's list of headings
        assert "<h1>Invalid OAuth2 request</h1>" in refusal.text


async def test_pkce_is_s256_only_and_optional(browser: tuple[EmulatorState, Client]) -> None:
    _, client = browser
    for changes in ({}, {"code_challenge": "A" * 43}, {"code_challenge": None}):
        assert (await _authorize(client, **changes)).status_code == 200, changes
    plain = await _authorize(client, code_challenge_method="plain")
    assert plain.status_code == 400
    assert "S256" in plain.text


@pytest.mark.parametrize(
    ("verifier", "taken"),
    [
        ("v" * 43, True),
        ("aZ09-._~" * 16, True),  # 128 characters, every kind RFC 7636 allows
        ("v" * 42, False),
        ("v" * 129, False),
        ("v" * 42 + "+", False),
        ("v" * 42 + " ", False),
        ("v" * 42 + "é", False),
    ],
    ids=["43", "128-unreserved", "42", "129", "plus", "space", "beyond-ascii"],
)
async def test_a_code_verifier_that_is_not_rfc_7636s_shape_is_refused(
    browser: tuple[EmulatorState, Client], verifier: str, taken: bool
) -> None:
    """RFC 7636: a code_verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~. One of
    another shape is refused at the token endpoint even when its S256 challenge matches
    (a service that made a short verifier was taken by the emulator)."""
    state, client = browser
    user = state.add_user("pia")
    digest = hashlib.sha256(verifier.encode()).digest()  # its challenge, whatever it holds
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    code = state.issue_code(user, frozenset({"identify"}), REDIRECT, challenge)
    answer = await client.post(
        "/api/v10/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(APP, "secret"),
    )
    if taken:
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_request"
        assert "code_verifier" in answer.json()["error_description"]


@pytest.mark.parametrize(
    "redirect_uri", ["http://127.0.0.1:1/cb/", "http://127.0.0.1:1/other", "", None]
)
async def test_a_code_redeemed_with_another_redirect_uri_gets_discords_error(
    browser: tuple[EmulatorState, Client], redirect_uri: str | None
) -> None:
    """The token endpoint's answer to a ``redirect_uri`` other than the authorize request's
    (or none): Discord's ``invalid_request``, 'Invalid "redirect_uri" in request.', which
    names the field; the emulator said invalid_grant 'Invalid "code"', naming another."""
    state, client = browser
    user = state.add_user("pia")
    code = state.issue_code(user, frozenset({"identify"}), REDIRECT, None)
    form = {"grant_type": "authorization_code", "code": code}
    if redirect_uri is not None:
        form["redirect_uri"] = redirect_uri
    answer = await client.post("/api/v10/oauth2/token", data=form, auth=(APP, "secret"))
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_request",
        "error_description": 'Invalid "redirect_uri" in request.',
    }
    unknown = await client.post(
        "/api/v10/oauth2/token",
        data={**form, "code": "never-issued", "redirect_uri": REDIRECT},
        auth=(APP, "secret"),
    )
    assert unknown.json() == {
        "error": "invalid_grant",
        "error_description": 'Invalid "code" in request.',
    }


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"token": ""}, "invalid_request"),
        ({"access_token": "{token}"}, "invalid_request"),  # the field is named token
        ({"token": "{token}", "token_type_hint": "bearer"}, "unsupported_token_type"),
    ],
    ids=["no-token", "empty-token", "access-token-field", "unknown-hint"],
)
async def test_a_revocation_without_a_token_or_with_an_unknown_hint_is_refused(
    browser: tuple[EmulatorState, Client], form: dict[str, str], error: str
) -> None:
    """Discord's revocation endpoint answers a request without ``token`` 400
    ``{"error": "invalid_request"}`` (discord-api-docs#2259: a client that sent
    ``access_token`` met it), and a ``token_type_hint`` other than access_token or
    refresh_token ``unsupported_token_type`` (#6356); the emulator said 200 to both, so a
    service revoking nothing passed. Nothing is revoked."""
    state, client = browser
    user = state.add_user("pia")
    code = state.issue_code(user, frozenset({"identify"}), REDIRECT, None)
    tokens = await client.post(
        "/api/v10/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=(APP, "secret"),
    )
    access_token = tokens.json()["access_token"]
    sent = {key: value.format(token=access_token) for key, value in form.items()}
    answer = await client.post("/api/v10/oauth2/token/revoke", data=sent, auth=(APP, "secret"))
    assert (answer.status_code, answer.json()) == (400, {"error": error})
    assert state.grant_of(access_token) is not None
    for hint in ("access_token", "refresh_token", None):
        fine = {"token": "never-issued"} | ({"token_type_hint": hint} if hint else {})
        taken = await client.post("/api/v10/oauth2/token/revoke", data=fine, auth=(APP, "secret"))
        assert (taken.status_code, taken.json()) == (200, {})  # RFC 7009: unknown is fine


@pytest.mark.parametrize("basic", [True, False], ids=["basic-auth", "secret-in-body"])
async def test_a_token_request_sent_as_json_is_an_unsupported_grant_type(
    browser: tuple[EmulatorState, Client], *, basic: bool
) -> None:
    """Discord's token endpoint reads an application/x-www-form-urlencoded body only (RFC
    6749): a JSON one has no grant_type for it, and it answers 400 ``unsupported_grant_type``
    (discord-api-docs#645, #5249: a JSON ``{}`` or a form without grant_type gets it, before
    the client is judged). The emulator said 401 invalid_client, which sends whoever debugs
    it after the client secret. The code is not spent."""
    state, client = browser
    user = state.add_user("pia")
    code = state.issue_code(user, frozenset({"identify"}), REDIRECT, None)
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if basic:
        answer = await client.post("/api/v10/oauth2/token", json=body, auth=(APP, "secret"))
    else:
        credentials = {"client_id": APP, "client_secret": "secret"}
        answer = await client.post("/api/v10/oauth2/token", json=body | credentials)
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"
    no_grant_type = await client.post("/api/v10/oauth2/token", data={"invalid": "true"})
    assert no_grant_type.status_code == 400
    assert no_grant_type.json()["error"] == "unsupported_grant_type"
    as_a_form = await client.post("/api/v10/oauth2/token", data=body, auth=(APP, "secret"))
    assert as_a_form.status_code == 200, as_a_form.text


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"grant_type": "client_credentials", "scope": "identify"}, "client_credentials"),
        ({"grant_type": "password", "username": "u", "password": "p"}, "password"),
        ({"scope": "identify"}, "None"),
    ],
)
async def test_a_grant_type_the_emulator_does_not_grant_is_refused_in_discords_words(
    browser: tuple[EmulatorState, Client], form: dict[str, str], named: str
) -> None:
    """A grant type the token endpoint does not take gets Discord's whole answer, its
    description naming the grant as Discord's does ('Grant type None is not supported' for
    none): the emulator's description was empty. The service never asks for the client
    credentials grant (Discord's token of the application's owner), so the emulator grants
    only the code and refresh grants, and says so in Discord's shape."""
    _, client = browser
    answer = await client.post("/api/v10/oauth2/token", data=form, auth=(APP, "secret"))
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "error": "unsupported_grant_type",
            "error_description": f"Grant type {named} is not supported",
        },
    )


async def test_a_grant_of_scopes_discord_documents_beyond_the_services_works(
    browser: tuple[EmulatorState, Client],
) -> None:
    """Discord grants any of its scopes an application may ask for; the emulator knew only
    the three the service asks for, and refused ``guilds`` or ``connections`` as invalid. A
    grant with them works (the token response names them); what they open is not emulated
    and is Discord's 404, never a page or an empty answer that looks like Discord's."""
    state, client = browser
    user = state.add_user("quinn")
    scope = "identify guilds connections guilds.members.read"
    page = await _authorize(client, scope=scope)
    assert page.status_code == 200
    assert "identify, guilds, connections, guilds.members.read" in page.text
    decided = await client.post(
        "/oauth2/authorize",
        data={**authorize_params(scope=scope), "user_id": user.id, "decision": "approve"},
        follow_redirects=False,
    )
    assert decided.status_code == 302, decided.text
    code = decided.headers["location"].split("code=")[1].split("&")[0]
    token = await client.post(
        "/api/v10/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": "v" * 43,
        },
        auth=(APP, "secret"),
    )
    assert token.status_code == 200, token.text
    assert token.json()["scope"].split() == sorted(scope.split())
    bearer = {"authorization": f"Bearer {token.json()['access_token']}"}
    me = await client.get("/api/v10/users/@me", headers=bearer)
    assert (me.status_code, me.json()["id"]) == (200, user.id)
    for route in ("/users/@me/guilds", "/users/@me/connections"):
        missing = await client.get(f"/api/v10{route}", headers=bearer)
        assert missing.status_code == 404, route
        assert missing.json() == {"message": "404: Not Found", "code": 0}


async def test_a_grant_without_identify_cannot_read_the_user(
    browser: tuple[EmulatorState, Client],
) -> None:
    state, client = browser
    """``identify`` is what opens /users/@me: a token of another scope alone is refused."""
    token = state.issue_token(_grant(state, "guilds"))
    me = await client.get("/api/v10/users/@me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 401


def _grant(state: EmulatorState, scope: str) -> Any:
    code = state.issue_code(state.add_user("rae"), frozenset(scope.split()), REDIRECT, None)
    grant = state.redeem_code(code, REDIRECT, None)
    assert not isinstance(grant, tuple)
    return grant


@pytest.mark.parametrize(
    ("scope", "said"),
    [
        ("", "none given"),
        ("identify nonsense", "Invalid scope nonsense."),
        ("identify Email", "Invalid scope Email."),  # Discord's scopes are lower case
        ("bot", "Scope bot is Discord's, but not emulated"),
        ("identify webhook.incoming", "Scope webhook.incoming is Discord's, but not emulated"),
        ("identify applications.commands", "applications.commands is Discord's, but not"),
        ("rpc identify.premium", "Scope identify.premium, rpc is Discord's, but not emulated"),
    ],
)
async def test_a_scope_the_emulator_does_not_grant_is_refused_by_name(
    browser: tuple[EmulatorState, Client], scope: str, said: str
) -> None:
    """Scopes that change the flow (adding the bot to a server, an incoming webhook) or need
    Discord's approval are refused with a 400 page naming them, as unknown ones are."""
    state, client = browser
    user = state.add_user("sol")
    page = await _authorize(client, scope=scope)
    decided = await client.post(
        "/oauth2/authorize",
        data={**authorize_params(scope=scope), "user_id": user.id, "decision": "approve"},
        follow_redirects=False,
    )
    for refusal in (page, decided):
        assert refusal.status_code == 400
        assert said in html.unescape(refusal.text)
    assert state.codes == {}
