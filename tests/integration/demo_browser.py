"""The demo, started as the README says (``make demo``), and headless Chromium through
Playwright, for test_demo_browser.py and test_demo_browser_pages.py: two files, so that two
xdist workers (``--dist loadfile``) can run them at once, each with its own demo."""

from __future__ import annotations

import asyncio
import fcntl
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


def _installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``make install``, which ``make demo`` runs first (nothing to do once installed), by one
    xdist worker at a time: the two demo files' workers, starting their demos together on a
    checkout not yet installed, would both create and fill the same environment."""
    lock = tmp_path_factory.getbasetemp().parent / "demo-install.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run(
            ["make", "--no-print-directory", "install"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    _installed(tmp_path_factory)
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


async def _confirmation_link(page: Page, outbox: str, to: str) -> str:
    """The link of the email asking ``to`` to confirm the address, from the outbox."""
    return await _emailed_link(page, outbox, to, "Confirm your email address", "/verify-email/")


async def _signed_up_and_confirmed(page: Page, demo: Demo, username: str, email: str) -> None:
    """A sign-up in ``page`` (as ``username``, with ``email``), its address then confirmed
    through the outbox's link: the page shows "Email confirmed"."""
    await page.goto(f"{demo.app}/signup")
    await _sign_up(page, username, email)
    await page.goto(await _confirmation_link(page, demo.outbox, email))
    await page.get_by_role("button", name="Confirm my email").click()
    await expect(page.locator("h1")).to_have_text("Email confirmed")


PHONE: ViewportSize = {"width": 375, "height": 740}  # a small phone's screen, CSS pixels


async def _fits_the_screen(page: Page) -> None:
    """Nothing on the page is wider than the screen: no sideways scrolling to read it."""
    wide, screen = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert wide <= screen, f"{page.url} is {wide} px wide on a {screen} px screen"


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


async def _names(page: Page, role: str) -> list[str]:
    """The accessible name of every control of ``role`` on the page, as Chromium's
    accessibility tree has it (what a screen reader's list of buttons, or of fields, reads)."""
    snapshot = await page.locator("body").aria_snapshot()
    return re.findall(rf'^\s*- {role} "((?:[^"\\]|\\.)*)"', snapshot, flags=re.MULTILINE)


async def _button_names(page: Page) -> list[str]:
    return await _names(page, "button")


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


_PASSWORD_FORMS = """() => [...document.querySelectorAll("form")]
  .filter((form) => form.querySelector("input[type=password]"))
  .map((form) => [
    form.getAttribute("action"),
    [...form.querySelectorAll("input[autocomplete=username]")].map((input) => input.value),
  ])"""


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
