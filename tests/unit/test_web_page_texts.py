"""What the pages say after a step goes wrong, through the web app (Litestar's test client,
in-memory adapters, the fake Discord): a form that failed keeps what was typed (passwords
aside), and an error page's words and links point the same way, the one that works."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient

from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness
from tests.web_support import Client, post_form

_SIGN_IN_LINK = re.compile(r'href="(/signin[^"]*)"')
_NEXT = re.compile(r'name="next" value="([^"]*)"')


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(h.container)) as test_client:
        yield test_client


async def _sign_up(client: Client, username: str = "alice") -> None:
    data = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    answer = await post_form(client, "/signup", "/signup", data)
    assert answer.status_code == 200, answer.text


async def test_a_refused_sign_up_does_not_welcome_who_then_signs_in(client: Client) -> None:
    """A review: "This username is taken… sign in", and the sign-in link of the refused
    sign-up form led an existing account, once signed in, to "Welcome to TaskFlow! We are
    emailing you a link to confirm your address", which nobody was sending. The form asked
    for its own ``next`` again, and that had become ``/account?notice=welcome``."""
    await _sign_up(client)
    await post_form(client, "/account", "/signout", {})

    taken = await post_form(
        client,
        "/signup",
        "/signup",
        {"username": "alice", "email": "other@example.com", "password": PASSWORD, "next": ""},
    )
    assert taken.status_code == 409
    sign_in_page = html.unescape(_SIGN_IN_LINK.findall(taken.text)[-1])  # "Already have one?"
    shown = await client.get(sign_in_page)
    next_path = html.unescape(_NEXT.findall(shown.text)[0])
    signed_in = await post_form(
        client, sign_in_page, "/signin", {"login": "alice", "password": PASSWORD, "next": next_path}
    )
    assert signed_in.status_code == 200
    assert "Welcome to TaskFlow" not in signed_in.text


async def test_a_throttled_sign_in_is_the_sign_in_form_again_with_the_way_to_a_reset(
    client: Client,
) -> None:
    """A review: after five wrong passwords, the next try answered "Slow down… Try again in 1
    minute, or reset the password" on a page whose one link was "Go home": the login typed
    was gone, and the reset the words offer had no link."""
    await _sign_up(client)
    await post_form(client, "/account", "/signout", {})
    for _ in range(5):
        wrong = await post_form(
            client, "/signin", "/signin", {"login": "alice@example.com", "password": "not it"}
        )
        assert wrong.status_code == 401
    throttled = await post_form(
        client, "/signin", "/signin", {"login": "alice@example.com", "password": "not it"}
    )
    assert throttled.status_code == 429
    assert "Too many wrong passwords for this account" in throttled.text
    assert 'name="login"' in throttled.text
    assert 'value="alice@example.com"' in throttled.text
    assert 'href="/password/reset"' in throttled.text


async def test_a_throttled_password_check_on_the_account_pages_links_to_the_reset(
    h: Harness, client: Client
) -> None:
    """The same throttle behind a signed-in form ("Confirm it is you"): its page offered
    "reset the password" with "Go to your account" as its only link."""
    await _sign_up(client)
    h.clock.advance(timedelta(minutes=11))  # the proof of the sign-up lapsed
    for _ in range(5):
        wrong = await post_form(client, "/account/confirm", "/account/confirm", {"password": "no"})
        assert wrong.status_code == 401
    throttled = await post_form(client, "/account/confirm", "/account/confirm", {"password": "no"})
    assert throttled.status_code == 429
    assert "or reset the password" in throttled.text
    assert 'href="/password/reset"' in throttled.text


@pytest.mark.parametrize(
    ("typed", "password", "status", "said"),
    [
        ("alice@new.example.com", "not it", 401, "Your current password is not right."),
        ("bob@example.com", PASSWORD, 409, "Another account uses this email address."),
        ("alice@example.com", PASSWORD, 400, "That is already your email address."),
    ],
)
async def test_a_refused_email_change_keeps_the_address_typed(
    h: Harness, client: Client, *, typed: str, password: str, status: int, said: str
) -> None:
    """A review: a wrong current password (or an address another account uses) on the
    account page's "Change email" answered a page whose "Try again" opened the account page
    with the form empty: the new address, typed once, was to be typed again."""
    async with AsyncTestClient(app=create_app(h.container)) as bob:
        await _sign_up(bob, "bob")
    await _sign_up(client)
    h.clock.advance(timedelta(minutes=11))  # the form asks for the current password
    refused = await post_form(
        client, "/account", "/account/email", {"email": typed, "current_password": password}
    )
    assert refused.status_code == status
    assert said in refused.text
    assert f'name="email" type="email" autocomplete="email" required value="{typed}"' in (
        refused.text
    )
    assert 'name="current_password"' in refused.text  # asked again, never filled in
    assert PASSWORD not in refused.text
    assert 'href="/account"' in refused.text  # and the way back
