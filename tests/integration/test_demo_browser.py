"""The demo, started exactly as the README says (``make demo``), driven by headless Chromium
through Playwright: the linking story by hand, as a newcomer would do it.

Fails on any console error, page error or 5xx response the browser sees. With
``UPDATE_SCREENSHOTS=1`` it also writes the README's screenshots to ``docs/screenshots/``.
"""

from __future__ import annotations

import re

from playwright.async_api import Browser, expect

from tests.integration.demo_browser import (
    PASSWORD,
    Demo,
    Problems,
    _authorize_as,
    _confirmation_link,
    _context,
    _create_test_user,
    _emailed_link,
    _outbox_email,
    _password_refused,
    _reads_in_order,
    _refused_field,
    _reload_until,
    _run,
    _shot,
    _sign_in_with_discord,
    _sign_in_with_password,
    _sign_out,
    _sign_up,
    _signed_up_and_confirmed,
)


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
    link = await _confirmation_link(page, demo.outbox, "wendy@example.com")
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
    await _signed_up_and_confirmed(page, demo, "hana", "hana@example.com")
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
