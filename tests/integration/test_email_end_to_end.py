"""Email end to end: the web app (uvicorn, Postgres) sends through the SMTP adapter to a real
SMTP server in the test process (aiosmtpd); the tests follow the links over HTTP."""

from __future__ import annotations

from datetime import timedelta

from tests.harness import PASSWORD
from tests.integration.mailbox import body, link_path
from tests.integration.stack import Browser, Stack, confirm_email, sign_up

NEW_PASSWORD = "a brand new passphrase"


async def test_the_confirmation_link_works_once(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    message = await stack.mailbox.wait_for("alice@example.com")
    assert message["Subject"] == "Confirm your email address for TaskFlow"
    assert "24 hours" in body(message)

    await confirm_email(browser, "alice@example.com")
    account = await browser.go("GET", "/account")
    assert 'id="email-status" class="muted">Confirmed.<' in account.text

    path = link_path(message, "/verify-email/")
    again = await browser.go("GET", path)
    assert again.status_code == 410
    assert "already been used" in again.text


async def test_a_refused_send_is_retried_and_its_link_works(stack: Stack, browser: Browser) -> None:
    """The mail server refuses the first try: the email stays queued and goes out at its retry
    (30 s later; the stack moves its manual clock there while the test waits)."""
    stack.mailbox.refuse_next = 1
    start = stack.clock.now()
    await sign_up(browser, "ruth", "ruth@example.com", verify=True)
    assert stack.mailbox.refuse_next == 0  # the first try reached the server and was refused
    assert stack.clock.now() - start >= timedelta(seconds=30)
    assert len(stack.mailbox.to("ruth@example.com")) == 1  # sent once, not twice


async def test_an_expired_confirmation_link_is_refused(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "bob", "bob@example.com", verify=False)
    path = link_path(await stack.mailbox.wait_for("bob@example.com"), "/verify-email/")
    stack.clock.advance(timedelta(hours=24))
    expired = await browser.go("GET", path)
    assert expired.status_code == 410
    assert "expired" in expired.text
    assert "24 hours" in expired.text
    account = await browser.go("GET", "/account")
    assert "Not confirmed yet" in account.text

    # A new link from the account page works.
    asked = await browser.submit("/account", "/account/email/verify", {})
    assert "new confirmation link" in asked.text
    await confirm_email(browser, "bob@example.com", count=2)


async def test_password_reset_signs_out_every_other_session(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "carol", "carol@example.com", verify=False)
    laptop = Browser(stack)
    signed_in = await laptop.submit("/signin", "/signin", {"login": "carol", "password": PASSWORD})
    assert signed_in.url.path == "/account"

    phone = Browser(stack)  # someone who forgot the password, signed in nowhere
    asked = await phone.submit("/password/reset", "/password/reset", {"email": "carol@example.com"})
    assert "If a TaskFlow account uses carol@example.com" in asked.text
    message = await stack.mailbox.wait_for("carol@example.com", 2)  # after the confirmation
    assert message["Subject"] == "Reset your TaskFlow password"
    path = link_path(message, "/password/reset/")
    done = await phone.submit(path, path, {"new_password": NEW_PASSWORD})
    assert done.url.path == "/account"
    assert "signed out everywhere else" in done.text

    for other in (browser, laptop):  # both earlier sessions are over
        page = await other.go("GET", "/account")
        assert page.url.path == "/signin"
    old = await laptop.submit("/signin", "/signin", {"login": "carol", "password": PASSWORD})
    assert old.status_code == 401
    new = await laptop.submit("/signin", "/signin", {"login": "carol", "password": NEW_PASSWORD})
    assert new.url.path == "/account"

    reused = await phone.go("GET", path)
    assert reused.status_code == 410
    notice = await stack.mailbox.wait_for("carol@example.com", 3)
    assert notice["Subject"] == "Your TaskFlow password was changed"
    await laptop.close()
    await phone.close()


async def test_an_expired_reset_link_is_refused(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "dan", "dan@example.com", verify=False)
    await browser.submit("/password/reset", "/password/reset", {"email": "dan@example.com"})
    path = link_path(await stack.mailbox.wait_for("dan@example.com", 2), "/password/reset/")
    stack.clock.advance(timedelta(hours=1))
    expired = await browser.go("GET", path)
    assert expired.status_code == 410
    assert "1 hour" in expired.text
    assert 'href="/password/reset"' in expired.text


async def test_unlinking_on_the_web_sends_a_notice(stack: Stack, browser: Browser) -> None:
    await sign_up(browser, "erin", "erin@example.com", verify=True)
    user = stack.emulator.add_user("erin_d", email="erin@example.com", verified=True)
    linked = await browser.sign_in_with_discord(user.id)  # same verified email: linked
    assert "Unlink Discord" in linked.text
    linked_notice = await stack.mailbox.wait_for("erin@example.com", 2)
    assert linked_notice["Subject"] == "A Discord account was linked to your TaskFlow account"
    assert "@erin_d" in body(linked_notice)

    # Signed in with Discord: for an account with a password, the password is the proof.
    page = await browser.submit("/account", "/account/discord/unlink", {})
    assert page.url.path == "/account/confirm"
    await browser.submit("/account", "/account/discord/unlink", {"current_password": PASSWORD})
    unlinked_notice = await stack.mailbox.wait_for("erin@example.com", 3)
    assert unlinked_notice["Subject"] == (
        "A Discord account was unlinked from your TaskFlow account"
    )
