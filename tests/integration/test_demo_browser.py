"""The demo, started exactly as the README says (``make demo``), driven by headless Chromium
through Playwright: the linking story by hand, as a newcomer would do it.

Fails on any console error, page error or 5xx response the browser sees. With
``UPDATE_SCREENSHOTS=1`` it also writes the README's screenshots to ``docs/screenshots/``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    Response,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.servers import PORT_TRIES, free_port, port_was_taken

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"
SHOTS = ROOT / "docs" / "screenshots"
# How long a step waits for the page (an action, or an ``expect``): generous, the suite runs
# with both cores busy, and a step that is ready early does not wait.
STEP_MS = 30_000
expect.set_options(timeout=STEP_MS)  # its own default is 5 s


@dataclass
class Demo:
    channel: str
    app: str
    outbox: str
    output: list[str] = field(default_factory=list)


@dataclass
class _Started:
    process: subprocess.Popen[str]
    output: list[str]
    reader: threading.Thread
    port: int
    emulator_port: int


def _start_demo(database: Path) -> _Started:
    """``make demo`` on two free ports, ready ("Press Ctrl-C to stop"); started again on two
    others when a port found free was taken by another process before the demo bound it."""
    for attempt in range(1, PORT_TRIES + 1):
        port = emulator_port = free_port()
        while emulator_port == port:
            emulator_port = free_port()
        args = f"--port {port} --emulator-port {emulator_port} --database {database}"
        process = subprocess.Popen(  # noqa: S603 - the README's command, with free ports
            ["make", "--no-print-directory", "demo", f"DEMO_ARGS={args}"],  # noqa: S607
            cwd=ROOT,
            # Every journey here signs in, signs up or starts a Discord round trip from
            # 127.0.0.1, together more often than the 20 a minute one address may (a person
            # clicking through the demo never comes close): the limit is a setting, raised
            # for this one browser.
            env={**os.environ, "TASKFLOW_LINK_AUTH_RATE_LIMIT_PER_MINUTE": "1000"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a terminal's job
        )
        output: list[str] = []
        ready = threading.Event()

        def read(process: subprocess.Popen[str], output: list[str], ready: threading.Event) -> None:
            assert process.stdout is not None
            for line in process.stdout:
                output.append(line)
                if "Press Ctrl-C to stop" in line:
                    ready.set()

        reader = threading.Thread(target=read, args=(process, output, ready), daemon=True)
        reader.start()
        started = _Started(process, output, reader, port, emulator_port)
        deadline = time.monotonic() + 180  # a first run installs the project first
        while not ready.wait(timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop_demo(started)
                said = "".join(output)
                if process.returncode and port_was_taken(said) and attempt < PORT_TRIES:
                    break  # another process took a port: two others
                pytest.fail("the demo did not start:\n" + said)
        else:
            return started
    raise AssertionError("unreachable")


def _stop_demo(started: _Started) -> None:
    process = started.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    started.reader.join(timeout=5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    database = tmp_path_factory.mktemp("demo") / "demo.db"
    started = _start_demo(database)
    output, port, emulator_port = started.output, started.port, started.emulator_port
    try:
        text = "".join(output)
        urls = re.findall(r"(http://\S+)", text)
        assert urls == [
            f"http://127.0.0.1:{emulator_port}/channel",
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port}/outbox",
        ], text
        channel, app, outbox = urls
        yield Demo(channel, app, outbox, output=output)
    finally:
        _stop_demo(started)
    log = "".join(output)
    assert "Demo stopped." in log, log
    assert "Traceback" not in log, log


@dataclass
class Problems:
    seen: list[str] = field(default_factory=list)
    # Chromium logs an error for every 4xx page; a refusal the test expects is not a problem.
    expected_status: set[int] = field(default_factory=set)

    def watch(self, context: BrowserContext) -> None:
        def console(message: ConsoleMessage) -> None:
            expected = any(
                f"status of {status} " in message.text for status in self.expected_status
            )
            if message.type == "error" and not expected:
                self.seen.append(
                    f"console error on {message.page and message.page.url}: {message.text}"
                )

        def response(answer: Response) -> None:
            if answer.status >= 500:
                self.seen.append(f"{answer.status} from {answer.url}")

        def page_error(error: Error) -> None:
            self.seen.append(f"page error: {error}")

        context.on("console", console)
        context.on("response", response)
        context.on("weberror", lambda web_error: page_error(web_error.error))


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat before the browser
        pytest.skip("Chromium is not installed: apt-get install -y chromium (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def problems() -> Iterator[Problems]:
    found = Problems()
    yield found
    assert found.seen == [], "\n".join(found.seen)


async def _context(chromium: Browser, problems: Problems) -> BrowserContext:
    context = await chromium.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(STEP_MS)
    problems.watch(context)
    return context


async def _shot(page: Page, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def _create_test_user(
    channel: Page, username: str, email: str = "", *, verified: bool = False
) -> None:
    await channel.fill("#username", username)
    if email:
        await channel.fill("#email", email)
    if verified:
        await channel.check("input[name=verified]")
    await channel.click("nav button[type=submit]")
    await expect(channel.locator("header")).to_contain_text(f"You are {username}")


async def _run(channel: Page, command: str) -> str:
    """Type a command in the channel and return the bot's newest reply."""
    before = await channel.locator(".bot-reply").count()
    await channel.fill("#composer", command)
    await channel.press("#composer", "Enter")
    await expect(channel.locator(".bot-reply")).to_have_count(before + 1)
    return await channel.locator(".bot-reply").last.inner_text()


async def _reload_until(page: Page, locator: Locator, count: int) -> None:
    """The channel page and the outbox have no JavaScript: reload one until ``locator``
    matches ``count`` elements (the role and email workers act just after the request that
    queued their work, not before its response)."""
    deadline = time.monotonic() + 60
    while await locator.count() != count:
        assert time.monotonic() < deadline, f"{locator} never matched {count} element(s)"
        await asyncio.sleep(0.1)
        await page.reload()


async def _authorize_as(page: Page, discord_username: str) -> None:
    """On the emulated Discord's consent screen, pick a test user and press Authorize."""
    await expect(page.locator("h1")).to_contain_text("wants to access your Discord account")
    choice = page.locator("label", has_text=re.compile(rf"@{re.escape(discord_username)} ·"))
    await choice.locator("input").check()
    await page.click("button[value=approve]")


async def _sign_in_with_discord(page: Page, app: str, discord_username: str) -> None:
    await page.goto(app)
    await page.get_by_role("link", name="Sign in with Discord").click()
    await _authorize_as(page, discord_username)


async def _sign_up(page: Page, username: str, email: str) -> None:
    await page.fill("#username", username)
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")


async def test_link_in_discord_then_sign_in_with_discord_then_unlink(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "dora")
    reply = await _run(channel, "/link")
    assert "Only you can see this message" in reply
    await _shot(channel, "1-discord-link")

    async with context.expect_page() as opened:
        await channel.click("a.link-button")
    web = await opened.value
    await expect(web.locator("#ticket-discord")).to_contain_text("@dora")
    await web.get_by_role("link", name="Create an account").click()
    await _sign_up(web, "dora_tf", "dora@example.com")
    await expect(web.locator("#ticket-discord")).to_contain_text("@dora")  # back, signed in
    await expect(web.locator("main")).to_contain_text("Continue only if you ran /link yourself")
    await _shot(web, "2-confirm-page")
    await web.get_by_role("button", name="Continue with Discord").click()
    await _authorize_as(web, "dora")  # Discord proves this person is @dora
    await expect(web).to_have_url(f"{demo.app}/account?notice=linked_from_discord")
    await expect(web.locator(".notice")).to_contain_text("Discord is linked to your account")
    await expect(web.locator(".discord-user")).to_contain_text("@dora")
    await _shot(web, "3-linked")

    # The demo gives linked members a role in the emulated server: it appears next to dora.
    dora = channel.locator("nav li", has_text="@dora")
    await _reload_until(channel, dora.locator(".role", has_text="Linked to TaskFlow"), 1)
    await _shot(channel, "9-linked-role")

    assert "dora_tf" in await _run(channel, "/whoami")
    await _shot(channel, "4-discord-whoami")

    fresh = await _context(chromium, problems)
    page = await fresh.new_page()
    callbacks: list[str] = []
    page.on(
        "request",
        lambda request: (
            callbacks.append(request.url) if "/auth/discord/callback?" in request.url else None
        ),
    )
    await _sign_in_with_discord(page, demo.app, "dora")
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator("dd").first).to_have_text("dora_tf")
    await expect(page.get_by_role("button", name="Unlink Discord")).to_be_visible()
    await _shot(page, "5-signed-in-with-discord")
    # Signed out, then the page back from Discord opened again (the history): at once, this
    # sign-in was used, with a way to sign in again (not a page waiting for the first load).
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await expect(page).to_have_url(f"{demo.app}/")
    problems.expected_status.add(410)  # the refusal page's own status
    [callback] = callbacks
    await page.goto(callback)
    await expect(page.locator("h1")).to_have_text("This sign-in was already used")
    again = page.get_by_role("link", name="Sign in with Discord", exact=True)
    await expect(again).to_have_attribute("href", "/auth/discord/login?next=/account")
    await fresh.close()

    assert "no longer linked to the TaskFlow account dora_tf" in await _run(channel, "/unlink")
    assert "not linked to a TaskFlow account" in await _run(channel, "/whoami")
    await _reload_until(channel, dora.locator(".role"), 0)  # the role went with the link
    await context.close()


async def test_a_forwarded_link_button_is_refused(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Mal runs /link and sends the button to Vera, who follows it signed in to TaskFlow:
    Discord says she is @vera_d, not @mal, so nothing is linked."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "vera_d")
    await _create_test_user(channel, "mal")
    await _run(channel, "/link")
    button = await channel.locator("a.link-button").last.get_attribute("href")
    assert button is not None
    await context.close()

    victim = await _context(chromium, problems)
    web = await victim.new_page()
    await web.goto(button)
    await web.get_by_role("link", name="Create an account").click()
    await _sign_up(web, "vera", "vera@example.com")
    await expect(web.locator("#ticket-discord")).to_contain_text("@mal")
    await web.get_by_role("button", name="Continue with Discord").click()
    problems.expected_status.add(409)  # the refusal page's own status
    await _authorize_as(web, "vera_d")
    await expect(web.locator("h1")).to_have_text("That cannot be done")
    await expect(web.locator("main")).to_contain_text(
        "made for the Discord account \u2068@mal\u2069,"
    )
    await _shot(web, "8-forwarded-button-refused")
    await web.goto(f"{demo.app}/account")
    await expect(web.locator("main")).to_contain_text("No Discord account is linked")
    await victim.close()


async def test_verified_email_links_on_first_discord_sign_in_and_unverified_is_refused(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "erin", "erin@example.com")
    await expect(page.locator("#email-status")).to_contain_text("Not confirmed yet")

    await page.goto(demo.outbox)
    email = page.locator("article.email", has_text="erin@example.com").first
    await _reload_until(page, email, 1)  # the email worker may not have sent it yet
    await expect(email).to_contain_text("Confirm your email address for TaskFlow")
    await _shot(page, "6-outbox")
    await email.locator("a[href*='/verify-email/']").click()
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await context.close()

    channel_context = await _context(chromium, problems)
    channel = await channel_context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "erin_d", "erin@example.com", verified=True)
    await _create_test_user(channel, "mallory", "erin@example.com", verified=False)
    await channel_context.close()

    fresh = await _context(chromium, problems)
    page = await fresh.new_page()
    await _sign_in_with_discord(page, demo.app, "erin_d")
    await expect(page).to_have_url(f"{demo.app}/account?notice=linked_by_email")
    # It names the account it found by the address, and who else is signed in to it.
    notice = page.locator(".notice")
    await expect(notice).to_contain_text("Discord is linked to your account.")
    await expect(notice).to_contain_text("confirmed for this TaskFlow account, erin:")
    await expect(notice).to_contain_text("also signed in on 1 other device(s)")
    await expect(page.locator("dd").first).to_have_text("erin")  # the same account
    await expect(page.locator(".discord-user")).to_contain_text("@erin_d")  # linked
    await fresh.close()

    other = await _context(chromium, problems)
    page = await other.new_page()
    problems.expected_status.add(409)  # the refusal page's own status
    await _sign_in_with_discord(page, demo.app, "mallory")
    await expect(page.locator("h1")).to_have_text("That cannot be done")
    await expect(page.locator("main")).to_contain_text(
        "Sign in with your password and link Discord from your account page"
    )
    await _shot(page, "7-unverified-refused")
    await other.close()


async def test_not_my_account_takes_a_typed_address_off_and_discord_makes_the_owners(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Mallory signs up with Wendy's address. Wendy gets the confirmation email for an
    account she never made: its page names the account, says not to confirm it, and "This
    is not my account" takes her address off it. Her Sign in with Discord (the address
    verified) then makes her own account, where it was refused (an account had the address)."""
    squatter = await _context(chromium, problems)
    page = await squatter.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "mallory_w", "wendy@example.com")
    await expect(page.locator("#email-status")).to_contain_text("Not confirmed yet")
    await squatter.close()

    channel_context = await _context(chromium, problems)
    channel = await channel_context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "wendy_d", "wendy@example.com", verified=True)
    await channel_context.close()

    owner = await _context(chromium, problems)
    page = await owner.new_page()
    link = await _emailed_link(
        page, demo.outbox, "wendy@example.com", "Confirm your email address", "/verify-email/"
    )
    email = await _outbox_email(page, demo.outbox, "wendy@example.com", "Confirm your email")
    await expect(email).to_contain_text("If you did not create the TaskFlow account mallory_w")
    await page.goto(link)
    await expect(page.locator("main")).to_contain_text("Did you create the account mallory_w?")
    await expect(page.get_by_role("button", name="Confirm my email")).to_have_count(0)
    await page.get_by_role("button", name="This is not my account").click()
    await expect(page).to_have_url(f"{demo.app}/email/not-mine")
    await expect(page.locator("h1")).to_have_text("Your address was removed")
    # Back to the link's page: it says she declined (not "an address your account no longer
    # uses"), and no longer names the account.
    problems.expected_status.add(410)  # the declined link's own page
    await page.go_back()
    await expect(page.locator("main")).to_contain_text(
        "You told us that the TaskFlow account this link was for is not yours"
    )
    await expect(page.locator("main")).not_to_contain_text("mallory_w")
    await expect(page.locator("main")).not_to_contain_text("no longer uses")

    await _sign_in_with_discord(page, demo.app, "wendy_d")
    await expect(page).to_have_url(re.compile(re.escape(f"{demo.app}/account")))
    await expect(page.locator("dd").first).to_have_text("wendy_d")  # her own, new account
    await expect(page.locator(".discord-user")).to_contain_text("@wendy_d")
    await owner.close()


async def _sign_out(page: Page) -> None:
    await page.locator("header").get_by_role("button", name="Sign out").click()
    await expect(page.locator("header")).to_contain_text("Sign in")
    await expect(page.locator("header")).not_to_contain_text("Sign out")


async def _sign_in_with_password(page: Page, app: str, login: str, password: str) -> None:
    await page.goto(f"{app}/signin")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def _password_refused(
    page: Page, app: str, problems: Problems, login: str, password: str
) -> None:
    """The sign-in form refuses ``login`` with ``password`` (its own page is a 401)."""
    problems.expected_status.add(401)
    await _sign_in_with_password(page, app, login, password)
    await expect(page.locator(".error")).to_have_text(
        "The username/email or password is not right."
    )


async def test_link_discord_from_the_account_page_then_sign_in_with_it_then_unlink(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Fay signs up with a password and links Discord from her account page (no /link in
    Discord): the account page's form, Discord's consent screen, back to the account page.
    Signed out, Sign in with Discord reaches her account; unlinking there asks her password."""
    channel_context = await _context(chromium, problems)
    channel = await channel_context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "fay_d")
    await channel_context.close()

    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(demo.app)
    await page.get_by_role("link", name="Create an account").click()
    await _sign_up(page, "fay", "fay@example.com")
    await expect(page).to_have_url(f"{demo.app}/account?notice=welcome")
    await expect(page.locator(".notice")).to_contain_text("Welcome to TaskFlow!")
    await expect(page.locator("main")).to_contain_text("No Discord account is linked")
    link_form = page.locator("form[action='/account/discord/link']")
    await expect(link_form.locator("input[type=hidden]")).to_have_count(1)  # its CSRF token
    # Signing up just now proved the password: the form does not ask it again.
    await expect(link_form.locator("input[type=password]")).to_have_count(0)
    await link_form.get_by_role("button", name="Link Discord").click()
    await _authorize_as(page, "fay_d")
    await expect(page).to_have_url(f"{demo.app}/account?notice=linked")
    await expect(page.locator(".notice")).to_contain_text("Discord is linked to your account")
    await expect(page.locator(".discord-user")).to_contain_text("@fay_d")

    await _sign_out(page)
    await expect(page).to_have_url(f"{demo.app}/")
    await page.goto(f"{demo.app}/account")  # signed out: the account page asks to sign in
    await expect(page.locator("h1")).to_have_text("Sign in to TaskFlow")
    await page.get_by_role("link", name="Sign in with Discord").click()
    await _authorize_as(page, "fay_d")
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator("dd").first).to_have_text("fay")
    await expect(page.locator(".discord-user")).to_contain_text("@fay_d")

    # Signed in with Discord, not with the password: unlinking asks for the password.
    unlink_form = page.locator("form[action='/account/discord/unlink']")
    problems.expected_status.add(401)  # the wrong password's answer
    await unlink_form.get_by_label("Current password").fill("not the password")
    await unlink_form.get_by_role("button", name="Unlink Discord").click()
    # The account page again, the error on the form's field (it was a "Wrong password" page
    # of its own, tied to no field, whose "Try again" opened the account page).
    await expect(page.locator("h1")).to_have_text("Your account")
    await _refused_field(
        page, "Current password to unlink Discord", "Your current password is not right."
    )
    await _reads_in_order(page)
    await expect(page.locator(".discord-user")).to_contain_text("@fay_d")  # still linked
    await unlink_form.get_by_label("Current password").fill(PASSWORD)
    await unlink_form.get_by_role("button", name="Unlink Discord").click()
    await expect(page).to_have_url(f"{demo.app}/account?notice=unlinked")
    await expect(page.locator(".notice")).to_contain_text("Discord is unlinked")
    await expect(page.locator("main")).to_contain_text("No Discord account is linked")
    await context.close()


async def _outbox_email(page: Page, outbox: str, to: str, subject: str) -> Locator:
    """Open the outbox and wait for the email to ``to`` with ``subject``."""
    await page.goto(outbox)
    email = page.locator("article.email").filter(has_text=subject).filter(has_text=to)
    await _reload_until(page, email, 1)  # the email worker may not have sent it yet
    return email


async def _emailed_link(page: Page, outbox: str, to: str, subject: str, path: str) -> str:
    """The link (to ``path``) in the email to ``to`` with ``subject``, from the outbox."""
    email = await _outbox_email(page, outbox, to, subject)
    link = await email.locator(f"a[href*='{path}']").get_attribute("href")
    assert link is not None
    return link


async def test_password_reset_through_the_outbox(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Gus forgot his password: he asks for a link on the sign-in page, opens it from the
    outbox, chooses a new password. The new one signs in, the old one and the link do not."""
    new_password = "a new and longer secret"
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "gus", "gus@example.com")
    await expect(page.locator("dd").first).to_have_text("gus")
    await _sign_out(page)

    await page.goto(f"{demo.app}/signin")
    await page.get_by_role("link", name="Forgot your password?").click()
    await expect(page.locator("h1")).to_have_text("Reset or set your password")
    await page.fill("#email", "gus@example.com")
    await page.get_by_role("button", name="Email me a link").click()
    await expect(page.locator("h1")).to_have_text("Check your email")
    await expect(page.locator("main")).to_contain_text("If a TaskFlow account uses gus@example.com")

    link = await _emailed_link(
        page, demo.outbox, "gus@example.com", "Reset your TaskFlow password", "/password/reset/"
    )
    await page.locator(f"article.email a[href='{link}']").click()
    await expect(page.locator("h1")).to_have_text("Choose a new password")
    await expect(page.locator("main")).to_contain_text("For the TaskFlow account gus.")
    await page.fill("#new_password", new_password)
    await page.get_by_role("button", name="Save password").click()
    await expect(page).to_have_url(f"{demo.app}/account?notice=password_reset")
    await expect(page.locator(".notice")).to_contain_text("Your new password is saved")
    await expect(page.locator("dd").first).to_have_text("gus")  # signed in, as gus

    problems.expected_status.add(410)  # the used link's own page
    await page.goto(link)
    await expect(page.locator("h1")).to_have_text("This link is used up")
    await expect(page.get_by_role("link", name="Ask for a new link")).to_be_visible()
    await context.close()

    fresh = await _context(chromium, problems)
    page = await fresh.new_page()
    await _password_refused(page, demo.app, problems, "gus@example.com", PASSWORD)
    await expect(page.locator("header")).not_to_contain_text("Sign out")
    await _sign_in_with_password(page, demo.app, "gus@example.com", new_password)
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator("dd").first).to_have_text("gus")
    await fresh.close()


async def test_unlinking_the_only_way_in_is_refused_until_a_password_is_set(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Ivan's account was made by Sign in with Discord: it has no password. Unlinking Discord
    would lock him out, so it is refused with the way forward; with a password set, it works
    and the password signs him in."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "ivan_d")
    page = await context.new_page()
    await _sign_in_with_discord(page, demo.app, "ivan_d")
    await expect(page).to_have_url(f"{demo.app}/account")
    username = await page.locator("dd").first.inner_text()
    await expect(page.locator("main")).to_contain_text("not set — you sign in with Discord")
    await expect(page.locator(".discord-user")).to_contain_text("@ivan_d")

    problems.expected_status.add(409)  # the refusal page's own status
    await page.get_by_role("button", name="Unlink Discord").click()
    await expect(page.locator("h1")).to_have_text("That cannot be done")
    await expect(page.locator("main")).to_contain_text(
        "Discord is the only way to sign in to this account. Set a password on your account "
        "page first, then unlink."
    )
    await page.get_by_role("link", name="Go to your account").click()
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator(".discord-user")).to_contain_text("@ivan_d")  # still linked

    await expect(page.get_by_role("heading", name="Set password")).to_be_visible()
    await page.fill("#new_password", PASSWORD)
    await page.get_by_role("button", name="Save password").click()
    await expect(page.locator(".notice")).to_contain_text("Your password is saved")
    await page.get_by_role("button", name="Unlink Discord").click()
    await expect(page).to_have_url(f"{demo.app}/account?notice=unlinked")
    await expect(page.locator("main")).to_contain_text("No Discord account is linked")
    await context.close()

    fresh = await _context(chromium, problems)
    page = await fresh.new_page()
    await _sign_in_with_password(page, demo.app, username, PASSWORD)
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator("dd").first).to_have_text(username)
    await expect(page.locator("main")).to_contain_text("No Discord account is linked")
    await fresh.close()


async def test_changing_the_email_and_confirming_the_new_one_from_the_outbox(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Hana confirmed her email, then changes it on the account page: the old address is
    told, the new one gets a confirmation link; confirmed, the account page says so and the
    new address signs in, the old one no longer."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "hana", "hana@example.com")
    first = await _emailed_link(
        page, demo.outbox, "hana@example.com", "Confirm your email address", "/verify-email/"
    )
    await page.goto(first)
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await page.get_by_role("link", name="Go to your account").click()
    await expect(page.locator("#email-status")).to_have_text("Confirmed.")

    change = page.locator("form[action='/account/email']")
    await change.get_by_label("New email").fill("hana@new.example.com")
    await change.get_by_role("button", name="Change email").click()
    await expect(page).to_have_url(f"{demo.app}/account?notice=email_changed")
    await expect(page.locator(".notice")).to_contain_text("Your email address is changed")
    await expect(page.locator("dd").nth(1)).to_contain_text("hana@new.example.com")
    await expect(page.locator("#email-status")).to_contain_text("Not confirmed yet")

    # The confirmed old address is told where the account's email went.
    notice = await _outbox_email(
        page, demo.outbox, "hana@example.com", "Your TaskFlow email address was changed"
    )
    await expect(notice).to_contain_text(
        "was changed from hana@example.com to hana@new.example.com"
    )
    link = await _emailed_link(
        page,
        demo.outbox,
        "hana@new.example.com",
        "Confirm your email address for TaskFlow",
        "/verify-email/",
    )
    await page.locator(f"article.email a[href='{link}']").click()
    await expect(page.locator("main")).to_contain_text("hana@new.example.com")
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await page.get_by_role("link", name="Go to your account").click()
    await expect(page.locator("#email-status")).to_have_text("Confirmed.")
    await context.close()

    fresh = await _context(chromium, problems)
    page = await fresh.new_page()
    await _password_refused(page, demo.app, problems, "hana@example.com", PASSWORD)
    await _sign_in_with_password(page, demo.app, "hana@new.example.com", PASSWORD)
    await expect(page).to_have_url(f"{demo.app}/account")
    await expect(page.locator("dd").first).to_have_text("hana")
    await fresh.close()


PHONE: ViewportSize = {"width": 375, "height": 740}  # a small phone's screen, CSS pixels


async def _fits_the_screen(page: Page) -> None:
    """Nothing on the page is wider than the screen: no sideways scrolling to read it."""
    wide, screen = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= screen, f"{page.url} is {wide} px wide on a {screen} px screen"


async def test_the_pages_fit_a_phones_screen(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """A review at 375 px: the emulated channel kept its test users beside the channel,
    which left the messages a word wide, the composer a sliver and the page 584 px wide.
    The journey by phone: the channel, the /link button's page, the site's pages."""
    context = await chromium.new_context(viewport=PHONE)
    context.set_default_timeout(STEP_MS)
    problems.watch(context)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "uma")
    await _run(channel, "/link")
    await _fits_the_screen(channel)
    async with context.expect_page() as opened:
        await channel.click("a.link-button")
    web = await opened.value
    await expect(web.locator("#ticket-discord")).to_contain_text("@uma")
    await _fits_the_screen(web)
    for path in ("/", "/signin", "/password/reset", "/signup"):
        await web.goto(f"{demo.app}{path}")
        await _fits_the_screen(web)
    await _sign_up(web, "uma", "uma@example.com")
    await expect(web.locator("h1")).to_have_text("Your account")
    await _fits_the_screen(web)
    await _outbox_email(web, demo.outbox, "uma@example.com", "Confirm your email address")
    await _fits_the_screen(web)
    problems.expected_status.add(404)
    await web.goto(f"{demo.app}/no-such-page")
    await expect(web.locator("h1")).to_have_text("Not found")
    await _fits_the_screen(web)
    await context.close()


# Another site's page: one click opens a window at the target, and the page then re-points
# that window at it again and again, without another click.
_POPUP_PAGE = """<!doctype html><html><body>
<button id="go">Win a prize</button><p id="done"></p>
<script>
document.getElementById("go").onclick = () => {
  const target = TARGET;
  const opened = window.open(target, "prize");
  let n = 0;
  const timer = setInterval(() => {
    try { opened.location = target + n; } catch (e) { /* cut off by the page it reached */ }
    if (++n === 20) {
      clearInterval(timer);
      document.getElementById("done").textContent = "done";
    }
  }, 25);
};
</script></body></html>"""


# Another site's page with a plain link to the target.
_LINK_PAGE = """<!doctype html><html><body>
<a id="go" href=TARGET>Win a prize</a>
</body></html>"""


@contextmanager
def _another_site(target: str, page: str = _POPUP_PAGE) -> Iterator[str]:
    """A page of another site (``localhost``: the demo is ``127.0.0.1``), served on a free
    port while the block runs."""
    body = page.replace("TARGET", json.dumps(target)).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# The cookies of a round trip started in a browser, and of a session.
_ROUND_TRIP_COOKIES = {"tfl_oauth", "tfl_session"}


async def _round_trip_cookies(context: BrowserContext, app: str) -> dict[str, str]:
    cookies = await context.cookies(app)
    return {c["name"]: c["value"] for c in cookies if c["name"] in _ROUND_TRIP_COOKIES}


def _sign_in_budget_left(app: str) -> tuple[int, float]:
    """What is left of this machine's sign-in budget, as a Discord sign-in start says
    (spending one), and when its window ends (a clock time)."""
    answer = httpx.get(f"{app}/auth/discord/login")
    assert answer.status_code == 302, answer.text
    return int(answer.headers["ratelimit-remaining"]), time.time() + int(
        answer.headers["ratelimit-reset"]
    )


async def test_another_sites_popup_cannot_spend_this_sites_sign_in_budget(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """An attacker's review: after one click, another site's page re-pointed the window it
    had opened at ``/auth/discord/login`` again and again, until the page the window reached
    cut it off: up to 17 sign-in starts counted, and its visitor's whole network could not
    sign in for a minute. Chromium sends each re-point with the click's
    ``Sec-Fetch-User: ?1``, so nothing tells them from a link followed. Another site's
    navigation now gets a page of this site to continue from: the window ends there, no round
    trip started, and none of them counted.

    Earlier tests spent the budget, so it is compared with itself only; an attempt during
    which its window turned (a busy machine) proves nothing and is made again."""
    for _attempt in range(3):
        left, window_ends = _sign_in_budget_left(demo.app)
        context = await _context(chromium, problems)
        with _another_site(f"{demo.app}/auth/discord/login?next=/account%3F") as site:
            page = await context.new_page()
            await page.goto(site)
            async with context.expect_page() as opened:
                await page.click("#go")
            window = await opened.value
            await expect(page.locator("#done")).to_have_text("done")
        # This site's page to continue from, after the last re-point that got through.
        await expect(window.locator("h1")).to_have_text("Sign in with Discord")
        await expect(window.get_by_role("link", name="Continue to Discord")).to_be_visible()
        assert await _round_trip_cookies(context, demo.app) == {}  # none started, no session
        await context.close()
        left_after, _ = _sign_in_budget_left(demo.app)
        if time.time() < window_ends - 1:
            break
    else:
        pytest.fail("every attempt outlasted the sign-in budget's window")
    assert left_after == left - 1  # this probe's own, nothing else


async def test_another_sites_link_signs_nobody_in_and_one_click_goes_on(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """An attacker's review: Discord sends a returning person straight back, without its
    consent screen, so a link (or a redirect, or a window) of any site to
    ``/auth/discord/login`` signed its visitor's browser in to their Discord account's
    TaskFlow account, ending the session it had. Such a navigation now ends on a page of this
    site and signs nobody in; the person who meant to follow the link goes on with one click,
    straight back from Discord, to where the link said."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "wren_d")
    page = await context.new_page()
    await _sign_in_with_discord(page, demo.app, "wren_d")  # grants: a returning user from now
    await expect(page).to_have_url(f"{demo.app}/account")
    await _sign_out(page)
    before = await _round_trip_cookies(context, demo.app)
    assert "tfl_session" not in before

    target = f"{demo.app}/auth/discord/login?next=/account%3Fvia%3Dprize"
    with _another_site(target, _LINK_PAGE) as site:
        await page.goto(site)
        await page.click("#go")
        await expect(page.locator("h1")).to_have_text("Sign in with Discord")
    assert page.url == target
    await expect(page.locator("main")).to_contain_text("A page of another site sent you here")
    await expect(page.locator("header")).to_contain_text("Sign in")  # nobody signed in
    assert await _round_trip_cookies(context, demo.app) == before  # no round trip started

    await page.get_by_role("link", name="Continue to Discord").click()
    await expect(page).to_have_url(f"{demo.app}/account?via=prize")  # no consent screen
    await expect(page.locator("dd").first).to_have_text("wren_d")
    await context.close()


async def test_a_click_arriving_with_the_continue_page_does_not_go_on(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """An attacker's review: a page that asks for a double click can send the browser, on
    the first click, to the page to continue from, its link under the pointer: the second
    click followed it, and the person went on to Discord (and straight back, signed in)
    without meaning to. The link takes no click for its first moments (a CSS animation, no
    script): a click arriving with the page lands on the card around it, a later one goes on.

    The page's animations are held still while it loads (Chromium's DevTools), so the first
    click arrives while the link waits however busy the machine is; let go, the link is
    clicked once its style says it takes clicks."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    devtools = await context.new_cdp_session(page)
    await devtools.send("Animation.enable")
    await devtools.send("Animation.setPlaybackRate", {"playbackRate": 0})
    before = await _round_trip_cookies(context, demo.app)

    target = f"{demo.app}/auth/discord/login?next=/account"
    with _another_site(target, _LINK_PAGE) as site:
        await page.goto(site)
        await page.click("#go")
        await expect(page.locator("h1")).to_have_text("Sign in with Discord")
    link = page.get_by_role("link", name="Continue to Discord")
    await expect(link).to_have_css("pointer-events", "none")
    # What each click lands on (DevTools' scripts run whatever the page's policy says).
    await page.evaluate(
        """() => { window.clicked = [];
        addEventListener("click", (e) => window.clicked.push(e.target.tagName), true); }"""
    )
    box = await link.bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert await page.evaluate("() => window.clicked") == ["DIV"]  # the card's, not the link
    assert page.url == target
    assert await _round_trip_cookies(context, demo.app) == before  # nothing started

    await devtools.send("Animation.setPlaybackRate", {"playbackRate": 1})
    await expect(link).to_have_css("pointer-events", "auto")
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await expect(page.locator("h1")).to_contain_text("wants to access your Discord account")
    await context.close()


# -- a person with a keyboard and a screen reader, and an attacker -----------------------------


async def test_a_page_that_names_no_icon_gets_the_sites_icon(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """A review: Chromium asks for /favicon.ico wherever a page names no icon (a JSON answer
    opened in a tab, the probes), and its 404 was an error in the console of every one."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/healthz")
    icon = await page.request.get(f"{demo.app}/favicon.ico")
    assert icon.status == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in icon.headers["cache-control"]  # the same icon for every page
    assert (
        await icon.body() == await (await page.request.get(f"{demo.app}/static/favicon.svg")).body()
    )
    await context.close()


async def _names(page: Page, role: str) -> list[str]:
    """The accessible name of every control of ``role`` on the page, as Chromium's
    accessibility tree has it (what a screen reader's list of buttons, or of fields, reads)."""
    snapshot = await page.locator("body").aria_snapshot()
    return re.findall(rf'^\s*- {role} "((?:[^"\\]|\\.)*)"', snapshot, flags=re.MULTILINE)


async def _button_names(page: Page) -> list[str]:
    return await _names(page, "button")


async def test_the_account_pages_sign_out_buttons_each_say_which_session(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """A screen reader's list of buttons read "Sign out" for the header's button (this
    browser) and again for each other session's in the table: nothing told them apart."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "jude", "jude@example.com")
    await expect(page.locator("dd").first).to_have_text("jude")
    laptop = await _context(chromium, problems)
    elsewhere = await laptop.new_page()
    await _sign_in_with_password(elsewhere, demo.app, "jude", PASSWORD)
    await expect(elsewhere).to_have_url(f"{demo.app}/account")

    await page.reload()
    rows = page.locator("#sessions tbody tr")
    await expect(rows).to_have_count(2)
    names = await _button_names(page)
    assert len(names) == len(set(names)), names
    assert names.count("Sign out") == 1  # the header's: this browser
    other = rows.filter(has=page.get_by_role("button"))
    started = await other.locator("td").first.inner_text()
    button = other.get_by_role("button")
    await expect(button).to_have_accessible_name(re.compile(rf"^Sign out .*{re.escape(started)}"))
    await button.click()
    await expect(page.locator(".notice")).to_have_text("That session is signed out.")
    await expect(rows).to_have_count(1)
    await laptop.close()
    await context.close()


_OUTLINE = """() => {
  const levels = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")]
    .map((h) => Number(h.tagName[1]));
  const unlabelled = [...document.querySelectorAll("input, select, textarea")]
    .filter((c) => c.type !== "hidden" && !c.hidden)
    .filter((c) => !c.labels.length && !c.getAttribute("aria-label"))
    .map((c) => c.outerHTML);
  return { levels, unlabelled };
}"""


async def _reads_in_order(page: Page) -> None:
    """What a screen reader's lists of headings, buttons and fields find on the page: one
    heading of level 1, first, then no level skipped on the way down; no two buttons named
    alike; a label for every field, no two fields named alike."""
    found = await page.evaluate(_OUTLINE)
    levels = found["levels"]
    assert levels[:1] == [1], (page.url, levels)
    assert levels.count(1) == 1, (page.url, levels)
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels)), (page.url, levels)
    names = await _button_names(page)
    assert len(names) == len(set(names)), (page.url, names)
    assert found["unlabelled"] == [], (page.url, found["unlabelled"])
    fields = await _names(page, "textbox")
    assert len(fields) == len(set(fields)), (page.url, fields)


async def test_every_page_reads_in_order_to_a_screen_reader(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """The pages of the journeys, signed out and in, refusals too, and the emulated Discord's
    (the channel's list of test users came before its page's title, as headings of level 2
    before the one of level 1)."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "kit_d")
    await _run(channel, "/link")
    await _reads_in_order(channel)
    # The channel's name and its topic, read apart (they read "# taskflow-testYou are kit_d").
    topic = await channel.locator("main > header").aria_snapshot()
    assert re.search(r"# taskflow-test\s+You are", topic), topic
    ticket = await channel.locator("a.link-button").last.get_attribute("href")
    assert ticket is not None

    page = await context.new_page()
    problems.expected_status.update({400, 404, 409})
    for path in ("/", "/signin", "/signup", "/password/reset", "/no-such-page", ticket):
        await page.goto(path if path.startswith("http") else f"{demo.app}{path}")
        await _reads_in_order(page)
    await page.goto(f"{demo.app}/password/reset")
    await page.fill("#email", "nobody@example.com")
    await page.get_by_role("button", name="Email me a link").click()
    await expect(page.locator("h1")).to_have_text("Check your email")
    await _reads_in_order(page)
    await page.goto(f"{demo.app}/auth/discord/login")
    await expect(page.locator("h1")).to_contain_text("wants to access your Discord account")
    await _reads_in_order(page)  # the emulated Discord's consent screen

    await page.goto(f"{demo.app}/signup?next=/account")
    await _sign_up(page, "kit", "kit@example.com")
    await expect(page.locator("dd").first).to_have_text("kit")
    await _reads_in_order(page)
    # The header's link to the account says where it leads (it was named "kit" alone).
    account = page.locator("header").get_by_role("link", name="Your account: kit", exact=True)
    await expect(account).to_be_visible()
    await page.goto(f"{demo.app}/signup")  # signed in: sent on to the account page
    await page.goto(ticket)
    await expect(page.locator("#ticket-discord")).to_contain_text("@kit_d")
    await _reads_in_order(page)
    await page.goto(f"{demo.app}/account/confirm")
    await _reads_in_order(page)
    change = page.locator("form[action='/account/email']")
    await page.goto(f"{demo.app}/account")
    # An address the browser's own check takes, and the service refuses.
    await change.get_by_label("New email").fill("=?us-ascii?q?kit?=@example.com")
    await change.get_by_role("button", name="Change email").click()
    await expect(page.locator(".error")).to_contain_text("encoded word")
    await _reads_in_order(page)
    link = await _emailed_link(
        page, demo.outbox, "kit@example.com", "Confirm your email address", "/verify-email/"
    )
    await _reads_in_order(page)  # the outbox
    await page.goto(link)
    await _reads_in_order(page)
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await _reads_in_order(page)
    await context.close()


async def test_linking_by_proving_the_account_says_discord_is_linked(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """Lena unlinked Discord from her account once: her next Sign in with Discord, with the
    account's confirmed address, asks her to prove the account first (its password, or a link
    emailed to it). Proved either way, the account page said nothing of the link just made:
    every other way of linking says "Discord is linked to your account"."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "lena_d", "lena@example.com", verified=True)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "lena", "lena@example.com")
    confirm = await _emailed_link(
        page, demo.outbox, "lena@example.com", "Confirm your email address", "/verify-email/"
    )
    await page.goto(confirm)
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")

    for proof in ("emailed link", "password"):
        await page.goto(f"{demo.app}/account")
        first = proof == "emailed link"  # the emulated Discord asks once for each grant
        await page.get_by_role("button", name="Link Discord").click()
        if first:
            await _authorize_as(page, "lena_d")
        await expect(page.locator(".discord-user")).to_contain_text("@lena_d")
        unlink = page.locator("form[action='/account/discord/unlink']")
        if await unlink.get_by_label("Current password").count():  # no recent proof
            await unlink.get_by_label("Current password").fill(PASSWORD)
        await unlink.get_by_role("button", name="Unlink Discord").click()
        await expect(page.locator(".notice")).to_contain_text("Discord is unlinked")
        await _sign_out(page)

        await page.get_by_role("link", name="Sign in with Discord").click()
        if first:  # the email too, this time
            await _authorize_as(page, "lena_d")
        await expect(page.locator("h1")).to_have_text("Is this TaskFlow account yours?")
        if proof == "password":
            await page.get_by_label("The password of lena").fill(PASSWORD)
            await page.get_by_role("button", name="Link and sign in").click()
        else:
            await page.get_by_role("button", name="Email me a link instead").click()
            await expect(page.locator("h1")).to_have_text("Check your email")
            link = await _emailed_link(
                page,
                demo.outbox,
                "lena@example.com",
                "Confirm linking your Discord account",
                "/auth/discord/confirm-link/",
            )
            await page.goto(link)
            await page.get_by_role("button", name="Link and sign in").click()
        await expect(page).to_have_url(f"{demo.app}/account?notice=linked")
        await expect(page.locator(".notice")).to_have_text("Discord is linked to your account.")
        await expect(page.locator(".discord-user")).to_contain_text("@lena_d")
    await context.close()


async def _refused_field(page: Page, label: str, error: str, *, kept: str = "") -> None:
    """The form came back refused: the field labelled ``label`` is the one the error is
    about (invalid, described by the error's words, focused, so that a screen reader reads
    them with it), holding ``kept`` (passwords: nothing)."""
    field = page.get_by_label(label, exact=True)
    await expect(page.locator(".error")).to_contain_text(error)
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_have_accessible_description(re.compile(re.escape(error)))
    await expect(field).to_be_focused()
    await expect(field).to_have_value(kept)
    others = page.locator("main [aria-invalid]")
    await expect(others).to_have_count(1)  # only that one


async def _change_password(page: Page, app: str, current: str, new: str) -> None:
    """The account page's "Change password" form, filled in and sent."""
    await page.goto(f"{app}/account")
    form = page.locator("form[action='/account/password']")
    await form.get_by_label("Current password").fill(current)
    await form.get_by_label("New password").fill(new)
    await form.get_by_role("button", name="Save password").click()


async def test_a_refused_form_ties_its_error_to_the_field_and_keeps_what_was_typed(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """A review with a screen reader and a keyboard: a refused form said what was wrong at
    the top of the page, tied to no field; after it, the keyboard started again from the
    top of the page, and a field's own words never said it was the wrong one. The account
    page's "Change password" answered a page of its own, with no form at all."""
    problems.expected_status.update({400, 401, 409})
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "mona", "mona@example.com")
    await expect(page.locator("dd").first).to_have_text("mona")
    await page.goto(f"{demo.app}/account/confirm")
    await page.get_by_label("Your password").fill("not the password")
    await page.get_by_role("button", name="Confirm", exact=True).click()
    await _refused_field(page, "Your password", "Your password is not right.")
    await _change_password(page, demo.app, "not the password", "a much better passphrase 9")
    # The field's name, told apart from the account page's other "Current password" fields.
    await _refused_field(page, "Current password to change your password", "is not right")
    await _change_password(page, demo.app, PASSWORD, "password1")
    await _refused_field(page, "New password (at least 8 characters)", "too easy to guess")
    change = page.locator("form[action='/account/email']")
    await page.goto(f"{demo.app}/account")
    await change.get_by_label("New email").fill("=?us-ascii?q?mona?=@example.com")
    await change.get_by_role("button", name="Change email").click()
    await _refused_field(page, "New email", "encoded word", kept="=?us-ascii?q?mona?=@example.com")
    # Confirmed, the address is mona's: another sign-up with it is refused below (until then
    # it would be a claim beside hers).
    await page.goto(demo.outbox)
    email = page.locator("article.email", has_text="mona@example.com").first
    await _reload_until(page, email, 1)  # the email worker may not have sent it yet
    await email.locator("a[href*='/verify-email/']").click()
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await _sign_out(page)

    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "mona", "other@example.com")
    await _refused_field(page, "Username", "This username is taken.", kept="mona")
    await expect(page.get_by_label("Email")).to_have_value("other@example.com")
    await page.fill("#username", "mona2")
    await page.fill("#email", "mona@example.com")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await _refused_field(
        page, "Email", "An account with this email already exists.", kept="mona@example.com"
    )
    await page.fill("#email", "mona2@example.com")
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await _refused_field(page, "Password (at least 8 characters)", "too easy to guess")

    await _sign_in_with_password(page, demo.app, "mona", "not the password")
    await _refused_field(page, "Password", "The username/email or password is not right.", kept="")
    await expect(page.get_by_label("Username or email")).to_have_value("mona")

    await page.goto(f"{demo.app}/password/reset")
    await page.fill("#email", "=?us-ascii?q?mona?=@example.com")
    await page.get_by_role("button", name="Email me a link").click()
    await _refused_field(page, "Email", "encoded word", kept="=?us-ascii?q?mona?=@example.com")
    await context.close()


async def test_back_to_the_email_confirmed_page_shows_it_again(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """The "Email confirmed" page was the answer to the button's POST: going back to it
    from the account page showed Chromium's "Confirm Form Resubmission" (ERR_CACHE_MISS,
    the pages are never stored), and sending the form again, or reloading the page, said
    the link was used up, as if confirming had failed."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "nell", "nell@example.com")
    link = await _emailed_link(
        page, demo.outbox, "nell@example.com", "Confirm your email address", "/verify-email/"
    )
    await page.goto(link)
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await page.reload()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await page.get_by_role("link", name="Go to your account").click()
    await expect(page.locator("#email-status")).to_have_text("Confirmed.")
    await page.go_back()
    await expect(page.locator("h1")).to_have_text("Email confirmed")
    await expect(page.locator("main")).to_contain_text(
        "nell@example.com is confirmed for the TaskFlow account nell."
    )
    await context.close()


_PASSWORD_FORMS = """() => [...document.querySelectorAll("form")]
  .filter((form) => form.querySelector("input[type=password]"))
  .map((form) => [
    form.getAttribute("action"),
    [...form.querySelectorAll("input[autocomplete=username]")].map((input) => input.value),
  ])"""


async def test_every_password_field_says_whose_password_it_is(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """A password manager files a password under its account's username, and finds the one
    to fill in by it: the account's forms that ask for its password, or a new one, named no
    account (Chromium: "Password forms should have (optionally hidden) username fields"), so
    a new password was saved under no name, or offered for any account of the site."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "owen_d")
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "owen", "owen@example.com")
    await expect(page.locator("dd").first).to_have_text("owen")
    await page.get_by_role("button", name="Link Discord").click()
    await _authorize_as(page, "owen_d")
    await expect(page.locator(".discord-user")).to_contain_text("@owen_d")
    await _sign_out(page)
    # Signed in with Discord: each change asks for the password again.
    await page.get_by_role("link", name="Sign in with Discord").click()
    await _authorize_as(page, "owen_d")  # the email too, this time
    await expect(page.locator("dd").first).to_have_text("owen")
    seen = []
    for path in ("/account", "/account/confirm"):
        await page.goto(f"{demo.app}{path}")
        forms = await page.evaluate(_PASSWORD_FORMS)
        await _reads_in_order(page)  # the account page's three "Current password" told apart
        seen += [action for action, _ in forms]
        for action, usernames in forms:
            assert usernames == ["owen"], (path, action, usernames)
    assert {
        "/account/discord/unlink",
        "/account/password",
        "/account/email",
        "/account/confirm",
    } <= set(seen)
    await context.close()


async def test_every_sign_in_link_of_the_link_page_comes_back_to_it(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """The /link button's page, signed out, had two "Sign in" links: the header's, which the
    keyboard reaches first, led to the account page after signing in, and the /link button
    had to be pressed again in Discord; the page's own came back. Likewise the sign-up page's
    and the emailed confirmation link's."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "pia_d")
    await _run(channel, "/link")
    ticket = await channel.locator("a.link-button").last.get_attribute("href")
    assert ticket is not None
    page = await context.new_page()
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, "pia", "pia@example.com")
    link = await _emailed_link(
        page, demo.outbox, "pia@example.com", "Confirm your email address", "/verify-email/"
    )
    await _sign_out(page)

    for address in (ticket, link, f"{demo.app}/signup?next=/account/confirm"):
        await page.goto(address)
        sign_in = page.get_by_role("link", name="Sign in", exact=True)
        hrefs = {await each.get_attribute("href") for each in await sign_in.all()}
        assert len(hrefs) == 1, (address, hrefs)
    await page.goto(ticket)
    await page.keyboard.press("Tab")  # the site's name
    await page.keyboard.press("Tab")
    await expect(page.locator("header").get_by_role("link", name="Sign in")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.fill("#login", "pia")
    await page.fill("#password", PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#ticket-discord")).to_contain_text("@pia_d")
    await expect(page.get_by_role("button", name="Continue with Discord")).to_be_visible()
    await context.close()


_CONTRAST = """([element, property]) => {
  const rgb = (color) => color.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const luminance = (color) => {
    const [r, g, b] = rgb(color).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let behind = element.parentElement;
  while (getComputedStyle(behind).backgroundColor === "rgba(0, 0, 0, 0)") {
    behind = behind.parentElement;
  }
  const [a, b] = [getComputedStyle(element)[property], getComputedStyle(behind).backgroundColor]
    .map(luminance);
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


async def _contrast(locator: Locator, css_property: str) -> float:
    """The contrast ratio (WCAG's) of ``locator``'s ``css_property`` colour with what is
    behind it."""
    ratio: float = await locator.evaluate(f"(e) => ({_CONTRAST})([e, {css_property!r}])")
    return ratio


async def test_where_the_keyboard_is_and_where_to_type_can_be_seen(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """WCAG's non-text contrast (1.4.11) asks 3:1 of what shows where the keyboard is and
    of a field's edges: the focus ring was a pale blue (2:1 on the card's white) and the
    fields' borders a pale grey (1.3:1), nearly invisible to someone who sees little
    contrast."""
    context = await _context(chromium, problems)
    page = await context.new_page()
    await page.goto(f"{demo.app}/signin")
    for name in ("login", "password"):
        field = page.locator(f"#{name}")
        assert await _contrast(field, "borderTopColor") >= 3
        await page.keyboard.press("Tab")
        while not await field.evaluate("(e) => e === document.activeElement"):
            await page.keyboard.press("Tab")
        assert await _contrast(field, "outlineColor") >= 3
    await page.keyboard.press("Tab")
    button = page.get_by_role("button", name="Sign in", exact=True)
    await expect(button).to_be_focused()
    assert await _contrast(button, "outlineColor") >= 3


async def test_another_sites_popups_leave_a_link_buttons_round_trip_working(
    demo: Demo, chromium: Browser, problems: Problems
) -> None:
    """An attacker's review: while Opal was on Discord's consent screen for her /link button,
    a page of another site she had open started Discord sign-ins in her browser (a click,
    then the window it opened re-pointed at ``/auth/discord/login``). Her browser kept the
    binding values of its newest five round trips only, so hers was pushed out, and back from
    Discord she was told she had started in a different browser. Another site's navigations
    now start no round trip (each window ends on this site's page to continue from), so the
    binding values of hers stay."""
    context = await _context(chromium, problems)
    channel = await context.new_page()
    await channel.goto(demo.channel)
    await _create_test_user(channel, "opal")
    await _run(channel, "/link")
    button = await channel.locator("a.link-button").last.get_attribute("href")
    assert button is not None

    web = await context.new_page()
    await web.goto(button)
    await web.get_by_role("link", name="Create an account").click()
    await _sign_up(web, "opal_tf", "opal@example.com")
    await web.get_by_role("button", name="Continue with Discord").click()
    await expect(web.locator("h1")).to_contain_text("wants to access your Discord account")

    with _another_site(f"{demo.app}/auth/discord/login?switch=true&n=") as site:
        for _click in range(5):  # each click started one sign-in at least
            page = await context.new_page()
            await page.goto(site)
            async with context.expect_page() as opened:
                await page.click("#go")
            await expect(page.locator("#done")).to_have_text("done")
            window = await opened.value
            await expect(window.locator("h1")).to_have_text("Sign in with Discord")
            await window.close()
            await page.close()

    await _authorize_as(web, "opal")
    await expect(web).to_have_url(f"{demo.app}/account?notice=linked_from_discord")
    await expect(web.locator(".discord-user")).to_contain_text("@opal")
    await context.close()
