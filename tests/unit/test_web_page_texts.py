"""What the pages say after a step goes wrong, through the web app (Litestar's test client,
in-memory adapters, the fake Discord): a form that failed keeps what was typed (passwords
aside), and an error page's words and links point the same way, the one that works."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from domain.model import DiscordId
from entrypoints.container import build_container
from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness, make_settings
from tests.web_support import Client, csrf_token, post_form, query, sign_up

_SIGN_IN_LINK = re.compile(r'href="(/signin[^"]*)"')
_NEXT = re.compile(r'name="next" value="([^"]*)"')


async def test_a_refused_sign_up_does_not_welcome_who_then_signs_in(client: Client) -> None:
    """A review: "This username is taken… sign in", and the sign-in link of the refused
    sign-up form led an existing account, once signed in, to "Welcome to TaskFlow! We are
    emailing you a link to confirm your address", which nobody was sending. The form asked
    for its own ``next`` again, and that had become ``/account?notice=welcome``."""
    await sign_up(client)
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
    await sign_up(client)
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
    await sign_up(client)
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
        await sign_up(bob, "bob")
    async with h.uow() as uow:  # only a confirmed address is another account's to keep
        [bobs] = await uow.accounts.find_by_email("bob@example.com")
        await uow.accounts.update(replace(bobs, email_verified=True))
        await uow.commit()
    await sign_up(client)
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


@pytest.mark.parametrize(
    ("current", "new", "status", "field", "said"),
    [
        ("not it", "a much better passphrase 9", 401, "current_password", "is not right."),
        (PASSWORD, "password1", 400, "new_password", "This password is too easy to guess."),
    ],
)
async def test_a_refused_password_change_is_its_form_again_with_the_error_on_its_field(
    client: Client, *, current: str, new: str, status: int, field: str, said: str
) -> None:
    """A review with a screen reader: a wrong current password, or a new password too easy to
    guess, on the account page's "Change password" answered a page of its own ("Wrong
    password", "That did not work") with no form, the error tied to no field; its "Try again"
    or "Go to your account" opened the account page with the form to find again. Now the form
    comes back, the field the error is about marked invalid, described by the error and
    focused (passwords are never filled in again)."""
    await sign_up(client)
    refused = await post_form(
        client, "/account", "/account/password", {"current_password": current, "new_password": new}
    )
    assert refused.status_code == status
    error = re.search(r'<p class="error" id="error" role="alert">([^<]*)</p>', refused.text)
    assert error is not None
    assert said in error.group(1)
    assert 'action="/account/password"' in refused.text
    tied = re.search(rf'<input id="{field}"[^>]*>', refused.text)
    assert tied is not None, refused.text
    assert 'aria-invalid="true" aria-describedby="error" autofocus' in tied.group(0)
    assert refused.text.count("aria-invalid") == 1  # that field only
    assert PASSWORD not in refused.text
    assert new not in refused.text
    assert 'href="/account"' in refused.text  # and the way back


async def _cancelled_at_discord(client: Client, started_from: Any) -> Any:
    """Press Cancel on Discord's consent screen of the round trip ``started_from`` began."""
    assert started_from.status_code == 302, started_from.text
    state = query(started_from.headers["location"])["state"]
    return await client.get(f"/auth/discord/callback?error=access_denied&state={state}")


async def test_a_round_trip_from_the_account_page_cancelled_at_discord_leads_back_there(
    client: Client,
) -> None:
    """A review: "Link Discord" on the account page, then Cancel at Discord, answered
    "Start again from the sign-in page" with a "Go home" button, under a header offering
    "Sign in": the person was signed in, and the sign-in page only sends them on to their
    account page."""
    await sign_up(client)
    page = await client.get("/account")
    started = await client.post(
        "/account/discord/link",
        data={"_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    cancelled = await _cancelled_at_discord(client, started)
    assert cancelled.status_code == 400
    assert "Discord did not grant access, so nothing was changed." in cancelled.text
    assert "sign-in page" not in cancelled.text
    assert "Start again from your account page." in cancelled.text
    assert 'href="/account">Go to your account</a>' in cancelled.text
    assert 'href="/signin"' not in cancelled.text  # not in the header either


async def test_a_discord_sign_in_cancelled_at_discord_links_to_the_sign_in_page(
    client: Client,
) -> None:
    """Signed out, the words say "Start again from the sign-in page": the button goes there
    (it was "Go home")."""
    started = await client.get("/auth/discord/login", follow_redirects=False)
    cancelled = await _cancelled_at_discord(client, started)
    assert cancelled.status_code == 400
    assert "Start again from the sign-in page." in cancelled.text
    assert 'class="button" href="/signin"' in cancelled.text


async def test_an_error_page_seen_signed_in_does_not_offer_to_sign_in(client: Client) -> None:
    """Every error page said "Sign in" in its header, to someone signed in too: an error page
    does not look the session up (it may be the database that failed), so it offers the
    account page to a browser that holds a session."""
    await sign_up(client)
    for path in ("/no-such-page", "/link/not-a-ticket", "/password/reset/not-a-token"):
        answer = await client.get(path)
        assert answer.status_code == 404
        assert 'href="/signin"' not in answer.text
        assert '<a href="/account">Your account</a>' in answer.text
    await post_form(client, "/account", "/signout", {})
    assert 'href="/signin">Sign in</a>' in (await client.get("/no-such-page")).text


async def _waiting_for_a_proof(h: Harness, client: Client) -> Any:
    """Email linking "confirm": bob's Discord sign-in waits for bob's proof (the page)."""
    await h.sign_up("bob", "bob@example.com", verified=True)
    h.discord_user(9002, username="bob_d", email="bob@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(9002))
    page = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    assert page.url.path == "/auth/discord/confirm-link"
    return page


async def _emailed_link_to_confirm(h: Harness, client: Client) -> str:
    """Bob's Discord sign-in waits for his proof, and he asks for the emailed link: its path."""
    page = await _waiting_for_a_proof(h, client)
    await client.post(
        "/auth/discord/confirm-link/email", data={"_csrf_token": csrf_token(page.text)}
    )
    return await h.emailed_link("bob@example.com", "/auth/discord/confirm-link/")


async def test_asking_twice_for_the_emailed_link_leads_back_to_the_waiting_page() -> None:
    """Pressed twice within a minute, "Email me a link instead" answers: "We emailed a link very
    recently… check your inbox", and the way on is the page that still waits (its password
    form too), not the sign-in page, which starts over."""
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            page = await _waiting_for_a_proof(h, client)
            action = "/auth/discord/confirm-link/email"
            sent = await client.post(action, data={"_csrf_token": csrf_token(page.text)})
            assert sent.status_code == 200
            again = await client.post(action, data={"_csrf_token": csrf_token(page.text)})
        assert again.status_code == 429
        assert "We emailed a link very recently" in again.text
        assert 'class="button" href="/auth/discord/confirm-link">Back</a>' in again.text
        assert 'href="/signin"' not in again.text.split("</header>", 1)[1]
    finally:
        h.container.unwire()


async def test_a_used_emailed_link_to_confirm_a_discord_link_points_one_way() -> None:
    """A review: opened again, the emailed link of email linking "confirm" said "Your account
    page shows whether Discord is linked", then "Start again from the sign-in page", over a
    "Go home" button: three ways, for one question the account page answers."""
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            path = await _emailed_link_to_confirm(h, client)
            shown = await client.get(path)
            done = await client.post(path, data={"_csrf_token": csrf_token(shown.text)})
            assert done.url.path == "/account"
            await post_form(client, "/account", "/signout", {})

            again = await client.get(path)
        assert again.status_code == 410
        assert "Your account page shows whether Discord is linked." in again.text
        assert "sign-in page" not in again.text
        assert 'class="button" href="/account">Go to your account</a>' in again.text
    finally:
        h.container.unwire()


async def test_an_expired_link_is_not_titled_used_up(h: Harness, client: Client) -> None:
    """A review: every 410 was titled "This link is used up", an expired link's too, over
    "This link has expired: email confirmation links work for 24 hours"."""
    await sign_up(client)
    path = await h.emailed_link("alice@example.com", "/verify-email/")
    h.clock.advance(timedelta(hours=25))
    expired = await client.get(path)
    assert expired.status_code == 410
    assert "This link has expired" in expired.text
    assert "used up" not in expired.text
    assert "<h1>This link has expired</h1>" in expired.text


@pytest.mark.parametrize(("mode", "promised"), [("verified", True), ("off", False)])
async def test_the_email_confirmed_page_promises_discord_sign_in_only_when_it_links_by_email(
    mode: str, *, promised: bool
) -> None:
    """The confirmation page kept its promise to the setting (TASKFLOW_LINK_EMAIL_LINKING),
    the page after its button did not: "Sign in with Discord now links a Discord account with
    the same confirmed email to this account", with ``off`` too, where it never does."""
    h = Harness.build(build_container(make_settings(email_linking=mode)))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            await sign_up(client)
            path = await h.emailed_link("alice@example.com", "/verify-email/")
            confirmed = await post_form(client, path, path, {})
        assert confirmed.status_code == 200
        assert "<h1>Email confirmed</h1>" in confirmed.text
        assert ("Sign in with Discord" in confirmed.text) is promised
    finally:
        h.container.unwire()


async def test_confirming_with_the_password_does_not_promise_a_password_change_without_it(
    h: Harness, client: Client
) -> None:
    """A review: after "Confirm it is you" with the password, the account page said "for the
    next 10 minutes you can change your password, email and Discord link without confirming
    again", over a "Change password" form that asks the current password all the same (a
    password is changed only by who types the current one)."""
    await sign_up(client)
    h.clock.advance(timedelta(minutes=11))
    asked = await client.get("/account/confirm")
    assert "Changing your email or Discord link needs a recent proof" in asked.text
    confirmed = await post_form(
        client, "/account/confirm", "/account/confirm", {"password": PASSWORD}
    )
    assert confirmed.url.query == b"notice=confirmed"
    notice = confirmed.text.split('<p class="notice" role="status">', 1)[1].split("</p>", 1)[0]
    assert "for the next 10 minutes" in notice
    assert "change your password" not in notice
    assert 'id="current_password" name="current_password"' in confirmed.text  # asked anyway
    assert 'id="email_password"' not in confirmed.text  # what the proof spares


class _Broken:
    async def execute(self, token: str) -> None:
        raise RuntimeError("a bug")


async def test_the_page_of_an_unexpected_error_has_a_language_a_style_and_a_way_back(
    h: Harness,
) -> None:
    """A review: a bug's 500 answered a bare "<title>Error</title><p>Something went wrong…":
    no language for screen readers, none of the site's style, and no link anywhere."""
    with h.container.show_link_ticket.override(providers.Factory(_Broken)):
        async with AsyncTestClient(app=create_app(h.container)) as client:
            answer = await client.get("/link/" + "A" * 43)
    assert answer.status_code == 500
    assert '<html lang="en">' in answer.text
    assert '<link rel="stylesheet" href="/static/style.css">' in answer.text
    assert '<link rel="icon" href="/static/favicon.svg"' in answer.text  # not /favicon.ico
    assert '<meta name="viewport"' in answer.text
    assert "<h1>" in answer.text
    assert 'href="/"' in answer.text
    assert "a bug" not in answer.text


async def test_every_column_of_the_sessions_table_has_a_header(client: Client) -> None:
    """A screen reader names a cell by its column's header: the column of the "Sign out"
    buttons had an empty one."""
    await sign_up(client)
    page = (await client.get("/account")).text
    table = page.split('<table class="sessions">', 1)[1].split("</thead>", 1)[0]
    headers = re.findall(r"<th>(.*?)</th>", table)
    assert len(headers) == 4
    assert all(re.sub(r"<[^>]+>", "", cell).strip() for cell in headers), headers


async def test_a_refused_new_password_on_the_reset_page_keeps_its_header(
    h: Harness, client: Client
) -> None:
    """The reset page, opened signed in, named the account in its header; refused a weak
    password, the same page offered "Sign in" instead."""
    await sign_up(client)
    await post_form(client, "/password/reset", "/password/reset", {"email": "alice@example.com"})
    path = await h.emailed_link("alice@example.com", "/password/reset/")
    weak = await post_form(client, path, path, {"new_password": "password1"})
    assert weak.status_code == 400
    assert "too easy to guess" in weak.text
    assert '<span class="visually-hidden">Your account: </span>alice</a>' in weak.text
    assert 'href="/signin"' not in weak.text


async def test_a_link_to_an_address_the_account_left_says_so_not_used(
    h: Harness, client: Client
) -> None:
    """A review: changing the address ends every link sent to the old one, and opened, such a
    link said "This link has already been used" to someone who never used it; the words made
    for it ("sent to an email address your account no longer uses") were never shown."""
    await sign_up(client)
    path = await h.emailed_link("alice@example.com", "/verify-email/")
    await post_form(client, "/account", "/account/email", {"email": "alice@example.org"})

    shown = await client.get(path)
    pressed = await post_form(client, "/account", path, {})  # the page as it was before
    for answer in (shown, pressed):
        assert "already been used" not in answer.text
        assert "an email address your account no longer uses" in answer.text
    assert not (await h.all_accounts_with_email("alice@example.org"))[0].email_verified


async def test_the_emailed_link_of_a_discord_link_to_an_address_the_account_left() -> None:
    """Email linking "confirm": the account's address changed while its link was on the way:
    the link said "already been used. Your account page shows whether Discord is linked"."""
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            path = await _emailed_link_to_confirm(h, client)
            bob = (await h.all_accounts_with_email("bob@example.com"))[0]
            await h.container.change_email().execute(
                session_token=await h.session_for(bob.id),
                new_email="bob@example.org",
                current_password=PASSWORD,
            )
            answer = await client.get(path)
        assert "already been used" not in answer.text
        assert "an email address the TaskFlow account no longer uses" in answer.text
        assert "nothing was linked" in answer.text
    finally:
        h.container.unwire()


async def test_a_wrong_password_on_the_discord_link_page_keeps_its_header() -> None:
    """Email linking "confirm": the page waiting for the account's proof, opened signed in
    (as another account, say), named that account in its header; refused a wrong password,
    the same page offered "Sign in" instead."""
    h = Harness.build(build_container(make_settings(email_linking="confirm")))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            await sign_up(client, "carol")
            page = await _waiting_for_a_proof(h, client)
            assert '<span class="visually-hidden">Your account: </span>carol</a>' in page.text
            wrong = await post_form(client, page.url.path, page.url.path, {"password": "nope"})
        assert wrong.status_code == 401
        assert "The password is not right." in wrong.text
        assert '<span class="visually-hidden">Your account: </span>carol</a>' in wrong.text
        assert 'href="/signin"' not in wrong.text
    finally:
        h.container.unwire()


@pytest.mark.parametrize("path", ["/signout", "/account/password", "/account/discord/link"])
async def test_opening_a_forms_address_says_it_is_no_page_and_what_to_do(
    client: Client, path: str
) -> None:
    """A walk through the pages: ``/signout`` typed in the address bar (or a form's address
    opened from a bookmark) answered "That did not work. This page does not accept that kind
    of request", a developer's words with nothing to do next."""
    await sign_up(client)
    answer = await client.get(path)
    assert answer.status_code == 405
    text = html.unescape(re.sub(r"<[^>]+>", " ", answer.text))
    assert "kind of request" not in text
    assert "That did not work" not in text
    assert "not a page to open" in text
    assert "Go back to the page with the form and use its button" in text
    assert 'href="/account"' in answer.text  # signed in: the page with those forms


@pytest.mark.parametrize("path", ["/account", "/"])
async def test_a_form_sent_to_a_page_is_not_told_the_page_is_a_forms_address(
    client: Client, path: str
) -> None:
    """A form sent to an address that is a page, not a form's (a page of an older version
    kept by the browser, whose form's address has moved): the 405 said "This address is
    where a form's button sends what you typed, not a page to open" and "Go back to the page
    with the form and use its button", of a page that is one, to someone who had just used a
    form's button. It says the form is out of date, and to open the page again."""
    await sign_up(client)
    token = csrf_token((await client.get("/account")).text)
    answer = await client.post(path, data={"_csrf_token": token})
    assert answer.status_code == 405
    text = html.unescape(re.sub(r"<[^>]+>", " ", answer.text))
    assert "not a page to open" not in text
    assert "use its button" not in text
    assert "Not a page" not in text
    assert "older version" in text
    assert "reload" in text


async def test_an_address_a_page_cannot_read_says_what_to_do_not_request(client: Client) -> None:
    """A page's address changed by hand (``switch=maybe``) answered "The request was not
    valid." and nothing else: a developer's word, and no way on."""
    answer = await client.get("/auth/discord/login?switch=maybe")
    assert answer.status_code == 400
    text = html.unescape(re.sub(r"<[^>]+>", " ", answer.text))
    assert "request" not in text
    assert "Go back, reload the page and try again" in text


@pytest.mark.parametrize(
    ("minutes", "status", "title", "said"),
    [
        # Its first load refused (here: declined at Discord): that reason, told again.
        (0, 400, "That did not work", "Discord did not grant access"),
        (11, 410, "This attempt has expired", "more than 10 minutes"),
    ],
)
async def test_the_page_back_from_discord_opened_again_or_late_speaks_of_no_link(
    h: Harness, client: Client, *, minutes: int, status: int, title: str, said: str
) -> None:
    """A walk through the pages: the page back from Discord reloaded (or opened again from
    the browser's history) said "This link is used up. This link has already been used", and
    one reached after 10 minutes at Discord "This link has expired": a person signing in
    with Discord followed no link."""
    started = await client.get("/auth/discord/login", follow_redirects=False)
    state = query(started.headers["location"])["state"]
    if minutes:
        h.clock.advance(timedelta(minutes=minutes))
    else:
        await client.get(f"/auth/discord/callback?error=access_denied&state={state}")
    answer = await client.get(f"/auth/discord/callback?error=access_denied&state={state}")
    assert answer.status_code == status
    page = html.unescape(answer.text)
    assert f"<title>{title} · TaskFlow</title>" in page
    assert f"<h1>{title}</h1>" in page
    assert said in page
    assert "link" not in html.unescape(re.sub(r"<[^>]+>|href=\"[^\"]*\"", " ", answer.text)).lower()
    assert "Start again from the sign-in page." in answer.text


async def test_the_sign_in_page_has_one_control_named_sign_in(client: Client) -> None:
    """A walk through the pages: the sign-in page's header offered a "Sign in" link (to this
    very page) beside its form's "Sign in" button: two controls of one name doing different
    things, the first one reached by the keyboard reloading the page."""
    for page in ("/signin", "/signin?next=/account"):
        shown = (await client.get(page)).text
        named = re.findall(r"<(?:a|button)\b[^>]*>\s*Sign in\s*</(?:a|button)>", shown)
        assert len(named) == 1, named
        assert '<button type="submit">Sign in</button>' in shown


async def test_the_home_page_is_titled_as_its_heading(client: Client) -> None:
    """A walk through the pages: the home page's title was "TaskFlow link · TaskFlow", a name
    the page uses nowhere (its heading: "TaskFlow x Discord", with a multiplication sign),
    TaskFlow twice in a tab."""
    page = (await client.get("/")).text
    assert "<title>TaskFlow \N{MULTIPLICATION SIGN} Discord · TaskFlow</title>" in page
    assert "<h1>TaskFlow \N{MULTIPLICATION SIGN} Discord</h1>" in page
