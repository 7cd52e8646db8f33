"""The email pages through Litestar's test client, on in-memory adapters and the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest
from litestar.testing import AsyncTestClient, TestClient

from adapters.queue_listener import EMAIL_QUEUE_CHANNEL
from domain import errors
from domain.ports import EmailMessage
from entrypoints.container import build_container
from entrypoints.settings import SettingsError, load_settings
from entrypoints.web import create_app
from tests.bot_support import WAIT_SECONDS, wait_until
from tests.harness import PASSWORD, TEST_SECRET_KEY, Harness, make_settings
from tests.web_support import Client, csrf_token, double_click, post_form, sign_up

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def hx() -> Harness:
    """A harness whose app shows the outbox page, like the demo."""
    return Harness.build(build_container(make_settings(email_outbox_page=True)))


class _From:
    """The app as reached from ``host`` (the test client's own peer is "testclient")."""

    def __init__(self, app: Any, host: str) -> None:
        self.app, self.host = app, host

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": (self.host, 40000)}
        await self.app(scope, receive, send)


@pytest.fixture
async def client(hx: Harness) -> AsyncIterator[Client]:
    """A browser on this machine, like the demo's."""
    app = _From(create_app(hx.container), "127.0.0.1")
    async with AsyncTestClient(app=app) as test_client:
        yield cast(Client, test_client)


async def _email(hx: Harness, address: str, count: int = 1) -> EmailMessage:
    """Wait for the app's own email worker to send the ``count``-th email to ``address``."""
    await wait_until(lambda: len(hx.emails_to(address)) >= count)
    return hx.emails_to(address)[count - 1]


def _status(page: str) -> str:
    found = re.search(r'id="email-status"[^>]*>([^<]*)<', page)
    assert found, page
    return found.group(1)


async def test_sign_up_sends_the_confirmation_at_once_and_the_link_page_confirms(
    client: Client, hx: Harness
) -> None:
    await sign_up(client, "alice")
    message = await _email(hx, "alice@example.com")  # the worker was woken by the form
    token = hx.link_token(message, "/verify-email/")
    account_page = (await client.get("/account")).text
    assert "We sent a confirmation link at" in _status(account_page)
    assert 'action="/account/email/verify"' in account_page

    shown = await client.get(f"/verify-email/{token}")  # a mail scanner's GET spends nothing
    assert shown.status_code == 200
    assert "alice@example.com" in shown.text
    again = await client.get(f"/verify-email/{token}")
    confirmed = await client.post(
        f"/verify-email/{token}", data={"_csrf_token": csrf_token(again.text)}
    )
    assert confirmed.status_code == 200
    assert "Email confirmed" in confirmed.text
    assert _status((await client.get("/account")).text) == "Confirmed."

    reused = await post_form(client, "/account", f"/verify-email/{token}", {})
    assert reused.status_code == 410
    assert "already been used" in reused.text


async def test_confirmation_links_need_the_csrf_token_and_junk_links_get_404(
    client: Client, hx: Harness
) -> None:
    await sign_up(client, "bea")
    token = hx.link_token(await _email(hx, "bea@example.com"), "/verify-email/")
    assert (await client.post(f"/verify-email/{token}")).status_code == 403
    junk = await client.get("/verify-email/not-a-real-token-at-all")
    assert junk.status_code == 404
    assert "ask for a new one" in junk.text


async def test_asking_again_too_soon_is_a_clear_429(client: Client, hx: Harness) -> None:
    await sign_up(client, "cy")
    await _email(hx, "cy@example.com")
    hx.clock.advance(timedelta(minutes=2))
    sent = await post_form(client, "/account", "/account/email/verify", {})
    assert sent.status_code == 200
    assert "new confirmation link" in sent.text
    refused = await post_form(client, "/account", "/account/email/verify", {})
    assert refused.status_code == 429
    assert "one a minute" in refused.text
    assert 'href="/account"' in refused.text


async def test_a_failed_send_is_shown_on_the_account_page(client: Client, hx: Harness) -> None:
    class DownSender:
        async def send(self, message: EmailMessage) -> None:
            raise errors.EmailNotSent()

    hx.container.email_sender.override(DownSender())
    await sign_up(client, "dee")  # sign-up works although the mail server is down
    status = ""

    async def shown() -> bool:
        nonlocal status
        status = _status((await client.get("/account")).text)
        return "could not send" in status

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS  # the app's worker tries just after the sign-up
    while not await shown():
        assert loop.time() < deadline, status
        await asyncio.sleep(0.01)
    assert "We could not send the confirmation email so far (1 attempt(s))" in status


async def test_password_reset_pages_answer_the_same_for_unknown_addresses(
    client: Client, hx: Harness
) -> None:
    await sign_up(client, "eve")
    await client.post("/signout", data={"_csrf_token": csrf_token((await client.get("/")).text)})
    known = await post_form(
        client, "/password/reset", "/password/reset", {"email": "eve@example.com"}
    )
    unknown = await post_form(
        client, "/password/reset", "/password/reset", {"email": "zed@example.com"}
    )
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("eve@example.com", "X") == unknown.text.replace(
        "zed@example.com", "X"
    )
    bad = await post_form(client, "/password/reset", "/password/reset", {"email": "nope"})
    assert bad.status_code == 400
    assert "email address like" in bad.text

    token = hx.link_token(await _email(hx, "eve@example.com", 2), "/password/reset/")
    page = await client.get(f"/password/reset/{token}")
    assert "eve" in page.text
    short = await client.post(
        f"/password/reset/{token}",
        data={"new_password": "short", "_csrf_token": csrf_token(page.text)},
    )
    assert short.status_code == 400
    assert "at least 8" in short.text
    done = await client.post(
        f"/password/reset/{token}",
        data={"new_password": NEW_PASSWORD, "_csrf_token": csrf_token(page.text)},
    )
    assert done.status_code == 200  # followed to the account page, signed in
    assert "Your new password is saved" in done.text
    assert _status(done.text) == "Confirmed."  # the link proved the mailbox


async def test_a_double_clicked_reset_form_signs_its_person_in(client: Client, hx: Harness) -> None:
    """A double click on a reset link's "Save password": the browser left the first request
    for the second, whose answer was "This link has already been used": not signed in. It
    now gets the first one's session; and the form sent again with the first answer's cookie
    (the back button) keeps that session instead of ending it."""
    await sign_up(client, "eve")
    await client.post("/signout", data={"_csrf_token": csrf_token((await client.get("/")).text)})
    await post_form(client, "/password/reset", "/password/reset", {"email": "eve@example.com"})
    token = hx.link_token(await _email(hx, "eve@example.com", 2), "/password/reset/")
    page = await client.get(f"/password/reset/{token}")
    form = {"new_password": NEW_PASSWORD, "_csrf_token": csrf_token(page.text)}
    first, second = await double_click(client, f"/password/reset/{token}", form)
    assert first.headers["location"].startswith("/account?notice=password_reset")
    session = first.cookies["tfl_session"]
    assert second.headers["location"] == first.headers["location"]
    assert second.cookies["tfl_session"] == session
    third = await client.post(f"/password/reset/{token}", data=form, follow_redirects=False)
    assert third.cookies["tfl_session"] == session
    account = await client.get("/account")
    assert account.url.path == "/account"  # signed in, not sent to sign in


async def test_changing_the_email_from_the_account_page(client: Client, hx: Harness) -> None:
    await sign_up(client, "fin")
    wrong = await post_form(
        client,
        "/account",
        "/account/email",
        {"email": "fin@new.example", "current_password": "not it"},
    )
    assert wrong.status_code == 401
    changed = await post_form(
        client,
        "/account",
        "/account/email",
        {"email": "fin@new.example", "current_password": PASSWORD},
    )
    assert changed.status_code == 200
    assert "Your email address is changed" in changed.text
    assert "fin@new.example" in changed.text
    hx.link_token(await _email(hx, "fin@new.example"), "/verify-email/")


async def test_a_double_clicked_email_change_keeps_its_person_signed_in(
    client: Client, hx: Harness
) -> None:
    """A double click on "Change email" (with the password): the browser left the first
    request for the second, so the token the first renewed the session under never reached
    it, and the second came with the old one, ended: it was sent to sign in."""
    await sign_up(client, "fin")
    page = await client.get("/account")
    form = {
        "email": "fin@new.example",
        "current_password": PASSWORD,
        "_csrf_token": csrf_token(page.text),
    }
    first, second = await double_click(client, "/account/email", form)
    assert first.headers["location"] == "/account?notice=email_changed"
    renewed = first.cookies["tfl_session"]
    assert second.headers["location"] == "/account?notice=email_changed_twice"
    assert second.cookies["tfl_session"] == renewed
    account = await client.get(second.headers["location"])
    assert "sent twice and counted once" in account.text
    assert "fin@new.example" in account.text


async def test_the_email_form_tells_a_taken_address_only_within_its_limit(
    client: Client, hx: Harness
) -> None:
    """Each "another account uses this address" counts against the change's limit (helper-54's
    review: uncounted, one signed-in account could test any number of addresses)."""
    for i in range(5):
        await hx.sign_up(f"taken{i}", f"taken{i}@example.com", verified=True)
    await sign_up(client, "gus")  # its confirmation email is one of the hour's five

    async def change_to(address: str) -> Any:
        data = {"email": address, "current_password": PASSWORD}
        return await post_form(client, "/account", "/account/email", data)

    for i in range(4):
        taken = await change_to(f"taken{i}@example.com")
        assert taken.status_code == 409
        assert "Another account uses this email address" in taken.text
    limited = await change_to("taken4@example.com")
    assert limited.status_code == 429
    assert "too often in the last hour" in limited.text
    assert "Another account" not in limited.text


# How the web app names this module's client's budget (``client_budget``): 127.0.0.1.
TEST_CLIENT = "client:127.0.0.1"


async def _flood(hx: Harness, address: str, squatters: str) -> None:
    """As many confirmation emails to ``address`` as it may get in an hour from the test
    client (its share: RECIPIENT_LIMITS), each asked for by a new account that then changes
    its address away. (Another client would have a share of its own.)"""
    for i in range(5):
        squatter = await hx.container.sign_up().execute(
            username=f"{squatters}{i}", email=address, password=PASSWORD, client=TEST_CLIENT
        )
        await hx.container.change_email().execute(
            session_token=squatter.session_token,
            new_email=f"{squatters}{i}@evil.example",
            current_password=None,
            client=TEST_CLIENT,
        )


async def test_the_pages_say_when_an_address_had_all_its_confirmation_emails(
    client: Client, hx: Harness
) -> None:
    """Sign-up and the email change are made without the email, and say so (the account
    page's status tells it anyway); asking for a link is a 429 that says why."""
    await _flood(hx, "ida@example.com", "squat")
    data = {"username": "ida", "email": "ida@example.com", "password": PASSWORD}
    signed_up = await post_form(client, "/signup", "/signup", data)
    assert signed_up.status_code == 200, signed_up.text
    assert "We have not emailed you a confirmation link" in signed_up.text
    assert "Ask for a confirmation link" in _status(signed_up.text)
    refused = await post_form(client, "/account", "/account/email/verify", {})
    assert refused.status_code == 429
    assert "as many confirmation emails in the last hour" in refused.text

    await _flood(hx, "ida@new.example", "squad")
    data = {"email": "ida@new.example", "current_password": PASSWORD}
    changed = await post_form(client, "/account", "/account/email", data)
    assert changed.status_code == 200
    assert "Your email address is changed. We have not emailed it" in changed.text
    assert "Ask for a confirmation link" in _status(changed.text)


async def test_no_form_takes_an_address_with_invisible_characters(
    client: Client, hx: Harness
) -> None:
    """ "\u202e" shows what follows it reversed, a zero-width space not at all: the address
    would show as another on the account page and in notices (helper-54's review)."""
    data = {"username": "gil", "email": "\u202emoc.elpmaxe@lig", "password": PASSWORD}
    refused = await post_form(client, "/signup", "/signup", data)
    assert refused.status_code == 400
    assert "invisible characters" in refused.text
    await sign_up(client, "gil")
    changed = await post_form(
        client,
        "/account",
        "/account/email",
        {"email": "gil@new\u200b.example", "current_password": PASSWORD},
    )
    assert changed.status_code == 400
    assert "invisible characters" in changed.text
    assert "gil@example.com" in (await client.get("/account")).text
    # The reset request answers alike whether or not an account has the address.
    known, unknown = [
        await post_form(client, "/password/reset", "/password/reset", {"email": address})
        for address in ("gil@example.com\u200b", "zed@example.com\u200b")
    ]
    assert known.status_code == unknown.status_code == 400
    assert "invisible characters" in known.text
    assert known.text.replace("gil@", "X@") == unknown.text.replace("zed@", "X@")


async def test_no_form_takes_an_address_that_draws_nothing_or_looks_like_another(
    client: Client, hx: Harness
) -> None:
    """A Hangul filler draws nothing: "\u3164@example.com" shows as "@example.com", and
    "ke\u3164n@example.com" as "ken@example.com" on the account page and in notices. Both
    forms answer 400 in words; the account keeps its address. One stored before is still
    found by a reset request."""
    for address in ("\u3164@example.com", "ke\u3164n@example.com", "ken\u2800@example.com"):
        data = {"username": "ken", "email": address, "password": PASSWORD}
        refused = await post_form(client, "/signup", "/signup", data)
        assert refused.status_code == 400, address
        assert "invisible characters" in refused.text
        assert await hx.all_accounts_with_email(address) == []
    await sign_up(client, "ken")
    for address in (
        "ke\u3164n@new.example",
        "ken@new\uffa0.example",
        "k\u0301\u0301\u0301\u0301en@x.io",
    ):
        data = {"email": address, "current_password": PASSWORD}
        changed = await post_form(client, "/account", "/account/email", data)
        assert changed.status_code == 400, address
        assert "invisible characters" in changed.text
    assert "ken@example.com" in (await client.get("/account")).text
    # Stored before this rule: usable still (a reset link is sent to it).
    legacy = await hx.legacy_account("lea", "le\u3164a@example.com", verified=True)
    asked = await post_form(
        client, "/password/reset", "/password/reset", {"email": "le\u3164a@example.com"}
    )
    assert asked.status_code == 200, asked.text
    await _email(hx, "le\u3164a@example.com")
    assert (await hx.account(legacy.id)).email == "le\u3164a@example.com"


async def test_the_outbox_page_shows_the_emails_with_clickable_links(
    client: Client, hx: Harness
) -> None:
    await sign_up(client, "gil")
    token = hx.link_token(await _email(hx, "gil@example.com"), "/verify-email/")
    page = await client.get("/outbox", headers={"host": "127.0.0.1:8000"})  # the public URL's
    assert page.status_code == 200
    assert "gil@example.com" in page.text
    assert f'<a href="http://127.0.0.1:8000/verify-email/{token}">' in page.text


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost:8000"])
async def test_the_outbox_answers_only_to_the_public_urls_name(
    client: Client, hx: Harness, host: str
) -> None:
    """DNS rebinding: a page of attacker.example, its name now pointing at 127.0.0.1, reads
    the outbox of a demo on this machine with its own name in Host. It gets no link."""
    await sign_up(client, "hal")
    token = hx.link_token(await _email(hx, "hal@example.com"), "/verify-email/")
    page = await client.get("/outbox", headers={"host": host})
    assert page.status_code == 404
    assert "The outbox is shown only at http://127.0.0.1:8000/outbox." in page.text
    assert token not in page.text


async def test_the_outbox_is_not_shown_to_another_machine_whatever_host_it_sends(
    client: Client, hx: Harness
) -> None:
    """Found by an attacker's review: with a loopback public URL (no DEVELOPMENT needed) and
    `serve --host 0.0.0.0`, `curl -H 'Host: 127.0.0.1:8000' http://server:8000/outbox` read
    everyone's links. Now only this machine is shown the page (and told where it is)."""
    await sign_up(client, "ivy")
    token = hx.link_token(await _email(hx, "ivy@example.com"), "/verify-email/")
    remote = _From(create_app(hx.container), "203.0.113.7")
    async with AsyncTestClient(app=remote) as other:
        for host in ("127.0.0.1:8000", "server.example.net:8000"):
            page = await other.get("/outbox", headers={"host": host})
            assert page.status_code == 404
            assert token not in page.text
            assert "127.0.0.1:8000" not in page.text  # nor which Host to send
    local = await client.get("/outbox", headers={"host": "127.0.0.1:8000"})
    assert token in local.text


def test_a_development_outbox_with_a_public_name_is_shown_by_its_host_alone() -> None:
    """With TASKFLOW_LINK_DEVELOPMENT and a public URL that is not loopback (a development
    machine reached over the network), the Host check is what is left."""
    dev = Harness.build(
        build_container(
            make_settings(
                email_outbox_page=True, development=True, public_url="http://dev.example.test"
            )
        )
    )
    try:
        app = _From(create_app(dev.container), "192.0.2.10")
        with TestClient(app=app) as remote:
            assert remote.get("/outbox", headers={"host": "dev.example.test"}).status_code == 200
            assert remote.get("/outbox", headers={"host": "other.test"}).status_code == 404
    finally:
        dev.container.unwire()


async def test_the_outbox_page_exists_only_when_configured(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container)) as plain:
        assert (await plain.get("/outbox")).status_code == 404
    with pytest.raises(SettingsError, match="EMAIL_OUTBOX_PAGE"):
        load_settings(
            secret_key=TEST_SECRET_KEY,
            email_backend="smtp",
            smtp_host="mail.example",
            email_outbox_page=True,
            _env_file=None,
        )


async def test_only_the_signed_in_owner_can_confirm_an_address(client: Client, hx: Harness) -> None:
    await sign_up(client, "hugo")
    token = hx.link_token(await _email(hx, "hugo@example.com"), "/verify-email/")
    async with AsyncTestClient(app=create_app(hx.container)) as stranger:
        page = await stranger.get(f"/verify-email/{token}")
        assert page.status_code == 200
        assert "Sign in to confirm" in page.text
        assert "Confirm my email" not in page.text
        form = await stranger.get("/signin")  # any page, for the CSRF token
        refused = await stranger.post(
            f"/verify-email/{token}", data={"_csrf_token": csrf_token(form.text)}
        )
        assert refused.status_code == 401
    account_page = (await client.get("/account")).text
    assert "Not confirmed yet" in _status(account_page)
    assert "<title>Your account · TaskFlow</title>" in account_page


async def test_a_confirmation_link_opened_signed_in_as_another_account_says_so(
    client: Client, hx: Harness
) -> None:
    """Its "Sign in to confirm" went to the sign-in page, which sends a browser already
    signed in straight back to the link: a loop with no word of why (an attacker's review)."""
    await sign_up(client, "iris")
    token = hx.link_token(await _email(hx, "iris@example.com"), "/verify-email/")
    async with AsyncTestClient(app=create_app(hx.container)) as other:
        await sign_up(other, "jude")
        page = await other.get(f"/verify-email/{token}")
        assert page.status_code == 200
        assert "You are signed in as <strong>jude</strong>" in page.text
        assert "Sign out, sign in to that" in page.text
        assert "Confirm my email" not in page.text
        assert f"/signin?next=/verify-email/{token}" not in page.text
        signed_out = await post_form(other, "/account", "/signout", {})
        assert signed_out.status_code == 200
        page = await other.get(f"/verify-email/{token}")
        assert f'href="/signin?next=/verify-email/{token}"' in page.text  # now it leads on
        shown = await other.get(f"/signin?next=/verify-email/{token}")
        assert 'value="/verify-email/' in shown.text


async def test_a_stream_of_wake_ups_makes_one_pass_per_gap() -> None:
    """A stream of wake-ups (commits that queue work, NOTIFYs from other instances) kept a
    worker passing back to back, each pass taking SQLite's write lock (found by an attacker's
    review, when any form POST woke the workers). A wake-up starts a pass no sooner than the
    gap after the last one began; wake-ups meanwhile make one pass."""
    import logging

    from adapters.queue_listener import BellListener, QueueBell
    from entrypoints.queue_worker import QueueWorker

    class Counting(QueueWorker):
        name = "counting"
        passes = 0

        async def pass_once(self) -> bool:
            self.passes += 1
            return False

        def listener(self) -> BellListener:
            return BellListener(QueueBell(), "nothing rings it")

    async def idle_after(worker: Counting, passes: int) -> None:
        for _ in range(10_000):  # a bound, not a deadline: each turn is one of the loop's
            if worker.idle and worker.passes == passes:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{worker.passes} passes, idle: {worker.idle}")

    log = logging.getLogger("test")
    patient = Counting(poll_seconds=3600, log=log, min_gap_seconds=3600)
    eager = Counting(poll_seconds=3600, log=log, min_gap_seconds=0)
    for worker in (patient, eager):
        worker.start()
        await idle_after(worker, 1)  # the first pass, at start
    try:
        for n in range(2, 6):  # without a gap, each wake-up once idle is a pass
            eager.wake()
            await idle_after(eager, n)
        for _ in range(100):
            patient.wake()
            await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        assert patient.passes == 1  # the hundred wait for the gap: then one pass
        assert not patient.idle
    finally:
        await patient.stop()
        await eager.stop()


async def test_a_worker_woken_as_it_is_stopped_stops() -> None:
    """Python 3.11's ``asyncio.wait_for`` returns the awaited result when its task is
    cancelled in the loop turn the result arrives, and the cancellation is lost: a worker
    woken (its queue listener connecting, a commit) as `serve` shut down went on polling, and
    the shutdown waited for it for good, deaf to Ctrl-C and SIGTERM (seen with `serve` on a
    port in use, which starts the app and stops it at once)."""
    import logging

    from adapters.queue_listener import BellListener, QueueBell
    from entrypoints.queue_worker import QueueWorker

    class Idle(QueueWorker):
        name = "idle"

        async def pass_once(self) -> bool:
            return False

        def listener(self) -> BellListener:
            return BellListener(QueueBell(), "nothing rings it")

    worker = Idle(poll_seconds=3600, log=logging.getLogger("test"), min_gap_seconds=0)
    worker.start()
    for _ in range(10_000):  # a bound, not a deadline: each turn is one of the loop's
        if worker.idle:
            break
        await asyncio.sleep(0)
    assert worker.idle
    worker.wake()  # its wait ends in the next turn, as the stop cancels it
    stopping = asyncio.ensure_future(worker.stop())
    done, _ = await asyncio.wait([stopping], timeout=30)  # a deadline only: it hung for good
    assert stopping in done


async def test_only_a_commit_that_queued_work_wakes_the_workers(
    hx: Harness, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wake-up is a pass over the queues (on SQLite, under the write lock). A refused
    POST, which anyone can send, and an anonymous sign-out queued nothing and wake no one;
    a sign-up queued a confirmation email and wakes the email worker only."""
    bell = hx.container.queue_bell()
    rung: list[frozenset[str]] = []
    ring = bell.ring

    def recorded(channels: frozenset[str]) -> None:
        rung.append(channels)
        ring(channels)

    monkeypatch.setattr(bell, "ring", recorded)
    page = await client.get("/signin")
    answers = [
        await client.post(
            "/signin",
            data={"login": "nobody", "password": "x", "_csrf_token": csrf_token(page.text)},
        ),
        await client.post("/signin", data={"login": "nobody", "password": "x"}),  # no CSRF
        await client.post("/nowhere", data={"a": "b"}),
        await client.post("/interactions", content=b"{}"),
        await client.delete("/api/v1/links/1"),
        await client.post("/signout", data={"_csrf_token": csrf_token(page.text)}),
    ]
    assert [r.status_code for r in answers] == [401, 403, 404, 404, 401, 200]  # 303 followed
    assert rung == []
    await sign_up(client, "ivy")  # queues a confirmation email
    assert rung == [frozenset({EMAIL_QUEUE_CHANNEL})]
    await _email(hx, "ivy@example.com")


async def test_an_email_queued_outside_the_pages_is_sent_without_waiting_for_the_poll() -> None:
    """Whatever commits an email (a bot command, the API, here a use case on an event loop
    other than the app's, in another thread) wakes the app's worker at once: with an hour's
    poll, both emails go out."""
    hx = Harness.build(build_container(make_settings(email_poll_seconds=3600)))
    async with AsyncTestClient(app=create_app(hx.container)):
        await hx.sign_up("ada", "ada@example.com")
        await _email(hx, "ada@example.com")
        await hx.sign_up("bob", "bob@example.com")  # the worker is idle by now
        message = await _email(hx, "bob@example.com")
    assert "confirm" in message.subject.lower()


async def test_the_bell_still_wakes_a_worker_whose_listening_across_instances_broke(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Should listening to other instances fail (a bug: outages are survived inside), the
    process's own commits still wake the worker."""
    from adapters.queue_listener import BellListener, QueueBell

    class Broken:
        async def listen(self, wake: object) -> None:
            raise RuntimeError("a bug")

    bell, woken = QueueBell(), asyncio.Event()
    listening = asyncio.create_task(BellListener(bell, "emails", Broken()).listen(woken.set))
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert "across instances stopped" in caplog.text
        bell.ring(["emails"])
        for _ in range(5):
            await asyncio.sleep(0)
        assert woken.is_set()
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    woken.clear()
    bell.ring(["emails"])  # unsubscribed once cancelled
    for _ in range(5):
        await asyncio.sleep(0)
    assert not woken.is_set()


@pytest.mark.parametrize(
    ("allow", "peer", "forwarded_for"),
    [
        # TASKFLOW_LINK_FORWARDED_ALLOW_IPS=* (documented) behind a proxy that appends the
        # peer (nginx's $proxy_add_x_forwarded_for): the leftmost address, which the client
        # wrote itself, says this machine (uvicorn's middleware took it for the client).
        ("*", "203.0.113.7", "127.0.0.1, 203.0.113.7"),
        # A reverse proxy on this machine (FORWARDED_ALLOW_IPS left empty): every request's
        # peer is 127.0.0.1, whoever sent it; nginx's default Host is the upstream's,
        # 127.0.0.1:8000, the public URL's name.
        ("", "127.0.0.1", "203.0.113.7"),
    ],
)
async def test_the_outbox_is_not_shown_to_another_machine_through_a_proxy(
    allow: str, peer: str, forwarded_for: str
) -> None:
    """Found by an attacker's review: the loopback check read the client address after
    X-Forwarded-For was applied, and a request a proxy forwarded from elsewhere still looked
    like this machine's. A forwarded request is now never shown the outbox."""
    h = Harness.build(
        build_container(make_settings(email_outbox_page=True, forwarded_allow_ips=allow))
    )
    try:
        async with AsyncTestClient(app=_From(create_app(h.container), peer)) as other:
            await sign_up(cast(Client, other), "ivy")
            token = h.link_token(await _email(h, "ivy@example.com"), "/verify-email/")
            page = await other.get(
                "/outbox", headers={"host": "127.0.0.1:8000", "x-forwarded-for": forwarded_for}
            )
        assert token not in page.text
        assert page.status_code == 404
    finally:
        h.container.unwire()


@pytest.mark.parametrize(
    ("mode", "promised"), [("verified", True), ("confirm", True), ("off", False)]
)
async def test_the_confirmation_page_promises_discord_sign_in_only_when_it_links_by_email(
    mode: str, promised: bool
) -> None:
    """A review: with TASKFLOW_LINK_EMAIL_LINKING=off, the confirmation page still said a
    confirmed email lets Sign in with Discord find the account, which it then never does."""
    hx = Harness.build(build_container(make_settings(email_outbox_page=True, email_linking=mode)))
    async with AsyncTestClient(app=_From(create_app(hx.container), "127.0.0.1")) as client:
        await sign_up(cast(Client, client), "alice")
        token = hx.link_token(await _email(hx, "alice@example.com"), "/verify-email/")
        shown = await client.get(f"/verify-email/{token}")
        assert shown.status_code == 200
        assert ('"Sign in with Discord" find your account' in shown.text) is promised


async def test_the_email_confirmed_page_is_shown_only_for_a_confirmed_address(
    client: Client, hx: Harness
) -> None:
    """Confirming lands on a page of its own (a GET, which back and reload show again): it
    says the address is confirmed only while the signed-in account's is."""
    signed_out = await client.get("/account/email/confirmed", follow_redirects=False)
    assert signed_out.headers["location"] == "/signin?next=/account"
    await sign_up(client, "cora")
    unconfirmed = await client.get("/account/email/confirmed", follow_redirects=False)
    assert unconfirmed.headers["location"] == "/account"
    token = hx.link_token(await _email(hx, "cora@example.com"), "/verify-email/")
    page = await client.get(f"/verify-email/{token}")
    confirmed = await client.post(
        f"/verify-email/{token}",
        data={"_csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )
    assert (confirmed.status_code, confirmed.headers["location"]) == (
        303,
        "/account/email/confirmed",
    )
    shown = await client.get("/account/email/confirmed")
    assert (
        "<bdi>cora@example.com</bdi> is confirmed for the TaskFlow account <strong>cora</strong>"
        in (shown.text)
    )


async def test_a_domain_without_a_dot_is_an_address_for_every_form_alike(client: Client) -> None:
    """ "a@x" is taken, as browsers' own check of an email field takes it: a top-level domain
    may receive mail itself (RFC 5321 names no rule against it, and some have had MX records),
    and a name inside a company's network is one too. Sign-up, email change and reset
    request take and refuse the same addresses (one ``validate_email``), dotless or not."""
    signed_up = await post_form(
        client, "/signup", "/signup", {"username": "dot", "email": "Dot@AI", "password": PASSWORD}
    )
    assert signed_up.status_code == 200
    assert "dot@ai" in (await client.get("/account")).text
    changed = await post_form(
        client, "/account", "/account/email", {"email": "dot@mail", "current_password": PASSWORD}
    )
    assert "Your email address is changed" in changed.text
    asked = await post_form(client, "/password/reset", "/password/reset", {"email": "dot@mail"})
    assert "If a TaskFlow account uses dot@mail" in asked.text
    for form, action, field in (
        ("/account", "/account/email", "email"),
        ("/password/reset", "/password/reset", "email"),
    ):
        refused = await post_form(
            client, form, action, {field: "dot@mail.", "current_password": PASSWORD}
        )
        assert refused.status_code == 400
        assert "Enter an email address like name@example.com." in refused.text
