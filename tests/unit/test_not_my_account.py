"""Pre-account takeover through a confirmation email: someone signs up with another person's
address (a claim, allowed), and the address's owner gets our "confirm your address" email for
an account they never made (in-memory adapters, and the pages through Litestar's client).

The email and the link's page name the account and say not to confirm it unless it is yours;
the page's "This is not my account" takes the address off it (the link proves the mailbox,
as a reset link would). Confirming needs the account's own sign-in (``VerifyEmail``)."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from httpx import Response
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AccountId, AuditKind, DiscordId
from domain.use_cases import AuthOutcome, BrowserCookies
from domain.use_cases._passwords import trusted_device
from entrypoints.web import create_app
from tests.harness import PASSWORD, Browser, Harness
from tests.web_support import Client, csrf_token, post_form, sign_up

VICTIM = "victim@example.com"
# What a declined link's page says when it is opened (or its form sent) again.
DECLINED = "You told us that the TaskFlow account this link was for is not yours"


def _disowned(db: MemoryDatabase) -> list[tuple[AccountId | None, dict[str, str]]]:
    return [
        (e.account_id, dict(e.detail))
        for e in db.tables.audit
        if e.kind is AuditKind.EMAIL_DISOWNED
    ]


async def _mallory(h: Harness) -> tuple[AccountId, str]:
    """Mallory signs up with the victim's address: her account, and the link the victim got."""
    signed_up = await h.sign_up("mallory", VICTIM)
    await h.deliver()
    return signed_up.account.id, h.link_token(h.last_email(VICTIM), "/verify-email/")


async def test_the_confirmation_email_names_the_account_and_how_to_decline_it(h: Harness) -> None:
    await _mallory(h)
    text = " ".join(h.last_email(VICTIM).text.split())
    assert "for the TaskFlow account mallory:" in text
    assert "If you did not create the TaskFlow account mallory, do not confirm" in text
    assert '"This is not my account"' in text


async def test_not_my_account_takes_the_address_off_and_sign_in_with_discord_is_the_owners(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory, link = await _mallory(h)
    # Before: the victim's Discord (the address verified) is refused, DESIGN.md's row 3.
    victims_discord = h.discord_user(8100, username="victim_d", email=VICTIM, verified=True)
    with pytest.raises(errors.EmailBelongsToAccount):
        await h.discord_login(victims_discord)

    shown = await h.container.disown_email().execute(link)

    assert (shown.id, shown.username, shown.email) == (mallory, "mallory", VICTIM)
    account = await h.account(mallory)
    assert (account.email, account.email_verified) == (None, False)
    assert _disowned(db) == [(mallory, {"proof": "link"})]
    with pytest.raises(errors.SecretRefused):  # the link is spent: it confirms nothing now
        await h.container.verify_email().execute(link, mallory)
    # Mallory keeps the rest: she signs in with her username, not with the address.
    signed_in = await h.container.sign_in().execute(login="mallory", password=PASSWORD)
    assert signed_in.account.id == mallory
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login=VICTIM, password=PASSWORD)
    # No account has the address now: the victim's Discord sign-in makes the victim's own.
    done = await h.discord_login(victims_discord)
    assert done.outcome is AuthOutcome.CREATED
    assert done.account_id != mallory
    assert db.tables.links[victims_discord.id].account_id == done.account_id


async def test_not_my_account_ends_the_other_links_sent_to_the_address(h: Harness) -> None:
    mallory, link = await _mallory(h)
    await h.container.request_password_reset().execute(VICTIM)
    h.clock.advance(timedelta(minutes=2))
    await h.container.resend_verification().execute(mallory)
    await h.deliver()
    reset = h.link_token(
        next(m for m in h.emails_to(VICTIM) if "/password/reset/" in m.text), "/password/reset/"
    )
    newer = h.link_token(h.last_email(VICTIM), "/verify-email/")
    assert newer != link

    await h.container.disown_email().execute(link)

    with pytest.raises(errors.SecretRefused):
        await h.container.verify_email().execute(newer, mallory)
    with pytest.raises(errors.SecretRefused):
        await h.container.reset_password().execute(token=reset, new_password="a new passphrase!")
    assert (await h.account(mallory)).email is None


async def test_a_confirmed_address_is_not_taken_off_by_an_older_link(
    h: Harness, db: MemoryDatabase
) -> None:
    """A link sent before its owner confirmed the address (with a newer one) is refused: the
    address is the account's, proved by its own sign-in and the mailbox."""
    signed_up = await h.sign_up("olga", "olga@example.com")
    await h.deliver()
    older = h.link_token(h.last_email("olga@example.com"), "/verify-email/")
    h.clock.advance(timedelta(minutes=2))
    await h.container.resend_verification().execute(signed_up.account.id)
    await h.mark_email_verified(signed_up.account.id)

    with pytest.raises(errors.InvalidInput, match="confirmed for that account"):
        await h.container.disown_email().execute(older)

    account = await h.account(signed_up.account.id)
    assert (account.email, account.email_verified) == ("olga@example.com", True)
    assert _disowned(db) == []


async def test_a_link_to_an_address_the_account_left_takes_nothing(h: Harness) -> None:
    mallory, link = await _mallory(h)
    await h.container.change_email().execute(
        session_token=await h.session_for(mallory),
        new_email="mallory@example.com",
        current_password=PASSWORD,
    )
    with pytest.raises(errors.EmailLinkOutdated):
        await h.container.disown_email().execute(link)
    assert (await h.account(mallory)).email == "mallory@example.com"


async def test_the_link_page_says_a_decline_is_for_good(h: Harness, client: Client) -> None:
    """Since 7094c45 a decline is kept for as long as the account (it may never claim the
    address again, and nothing undoes it), but the button's page said only "your address is
    taken off that account": an owner who pressed it on their own account's link, by
    mistake, learnt afterwards that the account could never have its address again."""
    _, link = await _mallory(h)
    page = await client.get(f"/verify-email/{link}")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page.text)).split())
    assert "your address is taken off that account, which cannot take it again" in text


async def test_the_link_page_names_the_account_and_offers_not_mine(
    h: Harness, db: MemoryDatabase, client: Client
) -> None:
    mallory, link = await _mallory(h)
    page = await client.get(f"/verify-email/{link}")  # the victim: not signed in
    assert page.status_code == 200
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page.text)).split())
    assert "for the TaskFlow account mallory." in text
    assert "Did you create the account mallory? If not, do not confirm" in text
    assert "This is not my account" in text
    assert "Confirm my email" not in text  # only mallory, signed in, may confirm

    refused = await client.post(f"/verify-email/{link}/not-mine")  # no CSRF token
    assert refused.status_code == 403
    assert (await h.account(mallory)).email == VICTIM

    done = await client.post(
        f"/verify-email/{link}/not-mine",
        data={"_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/email/not-mine"
    landed = await client.get(done.headers["location"])
    assert landed.status_code == 200
    assert "Your email address is no longer on that TaskFlow account" in landed.text
    assert (await h.account(mallory)).email is None
    assert _disowned(db) == [(mallory, {"proof": "link"})]

    again = await client.post(
        f"/verify-email/{link}/not-mine", data={"_csrf_token": csrf_token(page.text)}
    )
    assert again.status_code == 410  # sent again: it was declined (see the test below)
    assert DECLINED in html.unescape(again.text)


def _said(page: Response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page.text)).split())


async def test_a_declined_link_opened_again_says_it_was_declined(
    h: Harness, client: Client
) -> None:
    """Back to the link's page after "This is not my account" (or the button pressed again):
    it said "sent to an email address your account no longer uses", words for the account's
    owner, and wrong for the person who declined it. The page says what they did, and still
    does not name the account."""
    mallory, link = await _mallory(h)
    page = await client.get(f"/verify-email/{link}")
    token = csrf_token(page.text)
    done = await client.post(f"/verify-email/{link}/not-mine", data={"_csrf_token": token})
    assert done.status_code == 200

    for again in (
        await client.get(f"/verify-email/{link}"),
        await client.post(f"/verify-email/{link}/not-mine", data={"_csrf_token": token}),
    ):
        assert again.status_code == 410
        said = _said(again)
        assert DECLINED in said
        assert "no longer uses" not in said
        assert "mallory" not in said
        assert "Go to your account" not in said  # the person who declined has none here

    # Mallory types the address again: refused (see the test below), and the old link still
    # says it was declined (not "already used", words for the account's owner).
    with pytest.raises(errors.EmailDeclined):
        await h.container.change_email().execute(
            session_token=await h.session_for(mallory),
            new_email=VICTIM,
            current_password=PASSWORD,
        )
    again = await client.get(f"/verify-email/{link}")
    assert again.status_code == 410
    assert DECLINED in _said(again)
    assert "mallory" not in _said(again)


async def test_the_owners_own_page_still_offers_not_mine_only_while_unconfirmed(
    h: Harness,
) -> None:
    signed_up = await h.sign_up("pam", "pam@example.com")
    await h.deliver()
    older = h.link_token(h.last_email("pam@example.com"), "/verify-email/")
    async with AsyncTestClient(app=create_app(h.container)) as browser:
        page = await browser.get(f"/verify-email/{older}")
        assert "This is not my account" in page.text
        h.clock.advance(timedelta(minutes=2))
        await h.container.resend_verification().execute(signed_up.account.id)
        await h.mark_email_verified(signed_up.account.id)
        page = await browser.get(f"/verify-email/{older}")
        assert page.status_code == 200
        assert "This is not my account" not in page.text
        assert "Did you create" not in page.text


async def _web_discord_sign_in(
    browser: Client, h: Harness, discord_id: DiscordId, next_path: str = ""
) -> Response:
    query = f"?next={next_path}" if next_path else ""
    started = await browser.get(f"/auth/discord/login{query}", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], discord_id)
    return await browser.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )


async def test_a_link_by_the_confirmed_email_names_the_account_and_who_else_is_signed_in(
    h: Harness, db: MemoryDatabase
) -> None:
    """DESIGN.md's row 2 links into whichever account has the address confirmed: the page
    says which one (name, address) and that others are signed in to it, with what to do if
    it is not the person's (a reset with the address signs everyone else out)."""
    await h.sign_up("alice", "alice@example.com", verified=True)  # signed in there
    alices = h.discord_user(8300, username="alice_d", email="alice@example.com", verified=True)
    async with AsyncTestClient(app=create_app(h.container)) as browser:
        done = await _web_discord_sign_in(browser, h, alices.id)
        assert done.headers["location"] == "/account?notice=linked_by_email"
        page = await browser.get(done.headers["location"])
        text = " ".join(html.unescape(page.text).split())
        assert (
            "Discord is linked to your account. Your Discord account \u2068@alice_d\u2069 "
            "(id 8300) has the email address alice@example.com, confirmed for this TaskFlow "
            "account, alice: it was "
            "linked to it, and Sign in with Discord opens it from now on. This account is also "
            "signed in on 1 other device(s), listed below. If you did not create this account, "
            "do not use it: sign out, then ask for a password reset with that address, which "
            "signs everyone else out of it."
        ) in text
        # The next sign-in (already linked) says nothing of it.
        await browser.post(
            "/signout", data={"_csrf_token": csrf_token(page.text)}, follow_redirects=False
        )
        again = await _web_discord_sign_in(browser, h, alices.id)
        assert again.headers["location"] == "/account"


async def test_the_linked_by_email_notice_is_said_whatever_the_sign_in_was_bound_for(
    h: Harness,
) -> None:
    """With another destination than the account page (a same-site ``next``), the sign-in
    went there, and the notice that names the account it linked into was never said. The
    person sees it first, on the account page, with the way on to where they were going
    (never anywhere but a path of this site)."""
    await h.sign_up("alice", "alice@example.com", verified=True)
    alices = h.discord_user(8310, username="alice_d", email="alice@example.com", verified=True)
    async with AsyncTestClient(app=create_app(h.container)) as browser:
        done = await _web_discord_sign_in(browser, h, alices.id, "/account/confirm")
        assert done.status_code == 302
        landed = await browser.get(done.headers["location"])
        assert landed.status_code == 200
        said = _said(landed)
        assert (
            "Your Discord account \u2068@alice_d\u2069 (id 8310) has the email address "
            "alice@example.com"
        ) in said
        assert "If you did not create this account, do not use it" in said
        assert 'href="/account/confirm"' in landed.text  # on to where the sign-in was bound

        # The way on is a path of this site only (and none with a one-time secret),
        # whatever the query says.
        for elsewhere in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            page = await browser.get(
                "/account", params={"notice": "linked_by_email", "next": elsewhere}
            )
            assert page.status_code == 200
            assert "evil.example" not in page.text
            assert "Continue where you were going" not in page.text
        page = await browser.get(
            "/account", params={"notice": "linked_by_email", "next": "/link/abc"}
        )
        assert "/link/abc" not in page.text
        page = await browser.get(
            "/account", params={"notice": "linked_by_email", "next": '/x"><b>bold</b>'}
        )
        assert "<b>bold</b>" not in page.text  # escaped in the link


async def test_the_owners_reset_of_a_squatted_account_leaves_the_squatter_nothing(
    h: Harness, db: MemoryDatabase
) -> None:
    """The other way the address's owner may go (Sign in with Discord refused, "reset your
    password"): the reset link proves the mailbox and hands over the account. The squatter
    keeps nothing that lets her back in: not a session, not her browser's trusted device,
    not her password, not her Discord link, not a Discord link she had started adding."""
    mallory, _ = await _mallory(h)
    laptop = await h.container.sign_in().execute(login="mallory", password=PASSWORD)
    assert laptop.device_token is not None
    mallorys_discord = h.discord_user(8400, username="mallory_d")
    await h.discord_link(mallory, mallorys_discord)
    second = h.discord_user(8401, username="mallory_alt")  # a link started, not finished
    proof = await h.session_for(mallory)
    browser = Browser()
    started = await h.container.start_discord_link().execute(
        session_token=proof, current_password=PASSWORD, browser_tokens=browser.bindings
    )
    browser.bindings = started.browser_tokens
    approval = h.discord.approve(started.authorize_url, second.id)
    sessions = [laptop.session_token, proof]

    await h.container.request_password_reset().execute(VICTIM)
    await h.deliver()
    reset = h.link_token(h.last_email(VICTIM), "/password/reset/")
    done = await h.container.reset_password().execute(token=reset, new_password="the owner's own!")

    assert done.unlinked is not None
    assert done.unlinked.discord_id == mallorys_discord.id
    account = await h.account(mallory)
    assert (account.email, account.email_verified) == (VICTIM, True)
    current = h.container.current_session()
    for token in sessions:
        assert await current.execute(token) is None
    assert await current.execute(done.signed_in.session_token) is not None
    assert not trusted_device(h.container.tokens(), account, laptop.device_token)
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login="mallory", password=PASSWORD)
    assert mallorys_discord.id not in db.tables.links
    # Her unfinished "Link Discord" needed her session, which ended with the others.
    with pytest.raises(errors.NotSignedIn):
        await h.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(session_token=proof, bindings=browser.bindings),
        )
    assert second.id not in db.tables.links


async def test_the_linked_by_email_notice_is_said_only_of_a_confirmed_address(
    h: Harness, client: Client
) -> None:
    """The notice is the page's query (``?notice=linked_by_email``), which any link may carry:
    for an account whose address is not confirmed (or that has none) it said "has the email
    address None, confirmed for this TaskFlow account" and "if you did not create this
    account, do not use it". It says that only of a confirmed address, as linking by email
    needs one."""
    await sign_up(client, "carol")  # carol@example.com, not confirmed
    async with h.uow() as uow:
        carol = await uow.accounts.get_by_username("carol")
    assert carol is not None
    await h.discord_link(carol.id, h.discord_user(8500, username="carol_d"))

    page = await client.get("/account?notice=linked_by_email")
    assert page.status_code == 200
    assert "confirmed for this TaskFlow account" not in _said(page)
    assert "If you did not create this account" not in _said(page)

    async with h.uow() as uow:
        await uow.accounts.update(replace(carol, email=None))
        await uow.commit()
    page = await client.get("/account?notice=linked_by_email")
    assert page.status_code == 200
    assert "None" not in _said(page)
    assert "confirmed for this TaskFlow account" not in _said(page)


async def test_a_link_used_before_a_later_decline_is_not_said_declined(
    h: Harness, client: Client
) -> None:
    """Only the links that a decline spent say so: Olga confirmed her address with its link,
    moved to another address, whose holder declined it; her old link, opened again, says what
    it said before (the account no longer uses that address), not that she declined it."""
    signed_up = await h.sign_up("olga", "olga@example.com")
    await h.deliver()
    used = h.link_token(h.last_email("olga@example.com"), "/verify-email/")
    await h.container.verify_email().execute(used, signed_up.account.id)
    h.clock.advance(timedelta(minutes=5))
    await h.container.change_email().execute(
        session_token=await h.session_for(signed_up.account.id),
        new_email="someone@example.com",
        current_password=PASSWORD,
    )
    await h.deliver()
    theirs = h.link_token(h.last_email("someone@example.com"), "/verify-email/")
    h.clock.advance(timedelta(minutes=5))
    await h.container.disown_email().execute(theirs)

    assert DECLINED in _said(await client.get(f"/verify-email/{theirs}"))
    again = await client.get(f"/verify-email/{used}")
    assert DECLINED not in _said(again)
    assert "no longer uses" in _said(again)


async def test_the_owner_signed_in_is_offered_confirm_not_a_decline(
    h: Harness, client: Client
) -> None:
    """A decline is for good and needs only the link, and the page offered it to the owner
    signed in to the very account the address was added to: that is how an owner declined
    their own account by mistake. Signed in to it, they are the account: the page offers
    confirming, and changing the address on the account page (it has no "remove"), and no
    "This is not my account"; signed out, or signed in to another account, the mailbox's
    holder still finds the button."""
    await sign_up(client, "pam")
    await h.deliver()
    link = h.link_token(h.last_email("pam@example.com"), "/verify-email/")

    own = _said(await client.get(f"/verify-email/{link}"))
    assert "Confirm my email" in own
    assert "This is not my account" not in own
    assert "Did you create" not in own
    page = await client.get(f"/verify-email/{link}")
    assert 'href="/account#change-email"' in page.text
    assert 'id="change-email"' in (await client.get("/account")).text

    await h.sign_up("other", "other@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as other:
        await post_form(other, "/signin", "/signin", {"login": "other", "password": PASSWORD})
        theirs = _said(await other.get(f"/verify-email/{link}"))
        assert "This is not my account" in theirs
        assert "Did you create the account pam?" in theirs
    async with AsyncTestClient(app=create_app(h.container)) as stranger:
        assert "This is not my account" in _said(await stranger.get(f"/verify-email/{link}"))


async def test_a_decline_from_a_browser_signed_in_to_that_account_is_refused(
    h: Harness, db: MemoryDatabase, client: Client
) -> None:
    """The button's POST sent by the account's own signed-in browser (a page left open from
    before, a form kept in history) is refused, saying why, and spends nothing: the link
    still confirms. The signed-out holder of the mailbox still declines as before."""
    await sign_up(client, "pam")
    await h.deliver()
    link = h.link_token(h.last_email("pam@example.com"), "/verify-email/")
    (pam,) = [a.id for a in db.tables.accounts.values()]

    token = csrf_token((await client.get("/account")).text)
    refused = await client.post(f"/verify-email/{link}/not-mine", data={"_csrf_token": token})
    assert refused.status_code == 409
    said = _said(refused)
    assert "You are signed in to pam, the account this address was added to" in said
    assert "Nothing was changed" in said
    assert (await h.account(pam)).email == "pam@example.com"
    assert _disowned(db) == []
    assert not db.tables.declined_addresses

    with pytest.raises(errors.OwnAccountNotDeclined):
        await h.container.disown_email().execute(link, signed_in=pam)
    confirmed = await post_form(client, f"/verify-email/{link}", f"/verify-email/{link}", {})
    assert confirmed.status_code == 200
    assert (await h.account(pam)).email_verified


async def test_the_signed_out_holder_or_another_account_still_declines(
    h: Harness, db: MemoryDatabase
) -> None:
    mallory, link = await _mallory(h)
    victim = await h.sign_up("victim", "victim@elsewhere.example")
    await h.container.disown_email().execute(link, signed_in=victim.account.id)
    assert (await h.account(mallory)).email is None
    assert _disowned(db) == [(mallory, {"proof": "link"})]


async def test_the_page_after_a_decline_says_removed_only_to_the_browser_that_declined(
    h: Harness, client: Client
) -> None:
    """``/email/not-mine`` said "Your address was removed" to anyone who opened it: another
    site's link to it told its visitor that their address had left some TaskFlow account.
    It says so once, to the browser whose "This is not my account" it answers (a cookie only
    that answer sets); opened otherwise (another browser, again later), a page that states
    nothing about anyone's address."""
    mallory, link = await _mallory(h)
    async with AsyncTestClient(app=create_app(h.container)) as stranger:
        direct = await stranger.get("/email/not-mine")
        assert direct.status_code == 200
        assert "Your address was removed" not in _said(direct)
        assert "no longer on that TaskFlow account" not in _said(direct)
        assert "This is not my account" in _said(direct)  # what the page is about

    page = await client.get(f"/verify-email/{link}")
    done = await client.post(
        f"/verify-email/{link}/not-mine", data={"_csrf_token": csrf_token(page.text)}
    )
    assert done.status_code == 200
    assert "Your address was removed" in _said(done)
    assert "Your email address is no longer on that TaskFlow account" in _said(done)
    assert (await h.account(mallory)).email is None

    again = await client.get("/email/not-mine")  # a flash: said once
    assert "Your address was removed" not in _said(again)


async def test_a_declined_account_cannot_claim_the_address_again(
    h: Harness, db: MemoryDatabase
) -> None:
    """After "This is not my account", the account typed the address again (an email change)
    and a new confirmation email went to its holder, as often as the address's limits let it:
    declining stopped nothing. That account's claim to that address is refused for good now,
    with words that say why; other accounts (the owner's own included) are not concerned."""
    mallory, link = await _mallory(h)
    await h.container.disown_email().execute(link)
    h.clock.advance(timedelta(minutes=5))
    sent = len(h.emails_to(VICTIM))
    session = await h.session_for(mallory)

    for typed in (VICTIM, "Victim@EXAMPLE.com"):  # however it is written
        with pytest.raises(errors.EmailDeclined, match="not theirs"):
            await h.container.change_email().execute(
                session_token=session, new_email=typed, current_password=PASSWORD
            )
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == sent  # no new email to the address's holder
    assert (await h.account(mallory)).email is None
    assert _disowned(db) == [(mallory, {"proof": "link"})]

    # Another address is hers to type.
    await h.container.change_email().execute(
        session_token=session, new_email="mallory@example.com", current_password=PASSWORD
    )
    assert (await h.account(mallory)).email == "mallory@example.com"

    # Other accounts may claim it (each gets its own email, which may be declined too), and
    # its owner signs up with it and confirms it.
    other = await h.sign_up("mallory2", VICTIM)
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == sent + 1
    owner = await h.sign_up("victim", VICTIM)
    await h.deliver()
    owners_link = h.link_token(h.last_email(VICTIM), "/verify-email/")
    await h.container.verify_email().execute(owners_link, owner.account.id)
    assert (await h.account(owner.account.id)).email_verified
    assert (await h.account(other.account.id)).email is None  # taken by the proof


async def test_the_email_form_says_why_a_declined_address_is_refused(
    h: Harness, client: Client
) -> None:
    page = await client.get("/signup")
    form = {"username": "mallory", "email": VICTIM, "password": PASSWORD}
    signed_up = await client.post("/signup", data={**form, "_csrf_token": csrf_token(page.text)})
    assert signed_up.status_code == 200
    await h.deliver()
    await h.container.disown_email().execute(h.link_token(h.last_email(VICTIM), "/verify-email/"))
    sent = len(h.emails_to(VICTIM))

    refused = await post_form(
        client, "/account", "/account/email", {"email": VICTIM, "current_password": PASSWORD}
    )
    assert refused.status_code == 400
    said = _said(refused)
    assert "The owner of this email address told us that this TaskFlow account is not" in said
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == sent


def _lifted(db: MemoryDatabase) -> list[tuple[AccountId | None, dict[str, str]]]:
    return [
        (e.account_id, dict(e.detail))
        for e in db.tables.audit
        if e.kind is AuditKind.EMAIL_DECLINE_LIFTED
    ]


async def test_the_operator_lifts_a_decline_made_by_mistake(h: Harness, db: MemoryDatabase) -> None:
    """The address's owner pressed "This is not my account" on their own account's link:
    nothing on a page undoes it, and the account was refused the address for good. The
    operator lifts the decline (`email lift-decline`), found however the address is written
    and by the username in any case or by the account's id; it is audited, naming no address;
    the account may then claim the address, and its confirmation email goes out."""
    owner, link = await _mallory(h)
    await h.container.disown_email().execute(link)
    session = await h.session_for(owner)
    with pytest.raises(errors.EmailDeclined):
        await h.container.change_email().execute(
            session_token=session, new_email=VICTIM, current_password=PASSWORD
        )

    lifted = await h.container.lift_email_decline().execute(" MALLORY ", " Victim@EXAMPLE.com ")

    assert (lifted.account.id, lifted.account.username, lifted.address) == (
        owner,
        "mallory",
        VICTIM,
    )
    assert _lifted(db) == [(owner, {"via": "cli"})]
    assert (await h.account(owner)).email is None  # nothing given back: typed and confirmed
    sent = len(h.emails_to(VICTIM))
    await h.container.change_email().execute(
        session_token=session, new_email=VICTIM, current_password=PASSWORD
    )
    await h.deliver()
    assert len(h.emails_to(VICTIM)) == sent + 1
    assert (await h.account(owner)).email == VICTIM

    # Nothing left to lift: refused, and nothing more audited.
    for account in (owner, "mallory"):
        with pytest.raises(errors.NotFound, match=r"has no decline of victim@example\.com"):
            await h.container.lift_email_decline().execute(account, VICTIM)
    assert len(_lifted(db)) == 1


async def test_lifting_a_decline_touches_only_that_account_and_address(
    h: Harness, db: MemoryDatabase
) -> None:
    """Another account's decline of the address, and the account's decline of another
    address, stay; an account that does not exist is said as such."""
    mallory, link = await _mallory(h)
    await h.container.disown_email().execute(link)
    other = (await h.sign_up("mallory2", VICTIM)).account.id
    await h.deliver()
    await h.container.disown_email().execute(h.link_token(h.last_email(VICTIM), "/verify-email/"))

    with pytest.raises(errors.NotFound, match=r"has no decline of someone@example\.com"):
        await h.container.lift_email_decline().execute(mallory, "someone@example.com")
    with pytest.raises(errors.NotFound, match="There is no TaskFlow account named 'nobody'"):
        await h.container.lift_email_decline().execute("nobody", VICTIM)
    with pytest.raises(errors.NotFound, match="There is no TaskFlow account with id"):
        await h.container.lift_email_decline().execute(AccountId.new(), VICTIM)
    assert _lifted(db) == []

    await h.container.lift_email_decline().execute(mallory, VICTIM)
    async with db.unit_of_work(read_only=True) as uow:
        assert not await uow.declined_addresses.declined(mallory, VICTIM)
        assert await uow.declined_addresses.declined(other, VICTIM)
    assert _lifted(db) == [(mallory, {"via": "cli"})]
