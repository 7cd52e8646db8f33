"""The demo's pages, checked in headless Chromium (``demo_browser.py`` starts the demo as
``test_demo_browser.py`` does, one for each file: the two run on two xdist workers at once):
a phone's screen, another site's pop-ups and links, the order a screen reader reads, refused
forms, the password fields, focus and contrast, and a few shorter journeys.

Fails on any console error, page error or 5xx response the browser sees.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import Browser, expect

from tests.integration.demo_browser import (
    _LINK_PAGE,
    _PASSWORD_FORMS,
    PASSWORD,
    PHONE,
    STEP_MS,
    Demo,
    Problems,
    _another_site,
    _authorize_as,
    _button_names,
    _change_password,
    _confirmation_link,
    _context,
    _contrast,
    _create_test_user,
    _emailed_link,
    _fits_the_screen,
    _outbox_email,
    _reads_in_order,
    _refused_field,
    _reload_until,
    _round_trip_cookies,
    _run,
    _sign_in_budget_left,
    _sign_in_with_discord,
    _sign_in_with_password,
    _sign_out,
    _sign_up,
    _signed_up_and_confirmed,
)


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
    link = await _confirmation_link(page, demo.outbox, "kit@example.com")
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
    await _signed_up_and_confirmed(page, demo, "lena", "lena@example.com")

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
    await _signed_up_and_confirmed(page, demo, "nell", "nell@example.com")
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
    link = await _confirmation_link(page, demo.outbox, "pia@example.com")
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
