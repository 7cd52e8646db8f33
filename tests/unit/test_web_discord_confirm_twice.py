"""A "Confirm with Discord" callback loaded twice (a double click on Discord's Authorize, a
reload during the round trip): the browser leaves the first load for the second, and never
receives the first one's answer (the session renewed under a new token). The second load
must not sign its person out, and must give nothing to anyone else. Through the web app
(Litestar's test client, in-memory adapters, the fake Discord)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AuthPurpose, DiscordId, SignInMethod
from domain.ports import DiscordTokens
from domain.use_cases.discord_auth import DISCORD_TIMEOUT, KEPT_PAST_EXPIRY, confirming_for
from entrypoints.container import build_container
from entrypoints.settings import Settings
from entrypoints.web import create_app
from tests.harness import Harness, make_settings
from tests.web_support import Client, csrf_token

USED = "this one was used already"  # state_refusal's words: no link was followed
FINISHING = "Finishing your confirmation"
FAILED = "Confirming with Discord did not go through"


async def _signed_in_with_discord(client: Client, h: Harness, discord_id: int, name: str) -> None:
    h.discord_user(discord_id, username=name, email=f"{name}@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    done = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")
    assert done.status_code == 200, done.text


async def _back_from_discord(h: Harness, client: Client, discord_id: int) -> str:
    """Start "Confirm with Discord" and approve it at Discord: the callback's URL."""
    confirm = await client.get("/account/confirm")
    started = await client.post(
        "/account/confirm/discord",
        data={"_csrf_token": csrf_token(confirm.text)},
        follow_redirects=False,
    )
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


def _cookies_back(client: Client, cookies: dict[str, str]) -> None:
    """The browser's cookies as they were: it never received the first load's answer."""
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value)


def _refreshes_to(page: str) -> str:
    """Where the page's ``<meta http-equiv="refresh">`` leads (its link says the same)."""
    found = re.search(r'http-equiv="refresh" content="\d+; url=([^"]+)"', page)
    assert found is not None, page
    url = found.group(1).replace("&amp;", "&")
    assert f'href="{found.group(1)}"' in page  # and a link, should the refresh not happen
    return url


@contextmanager
def _discord_held(h: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    held = _Held(h)
    monkeypatch.setattr(h.discord, "exchange_code", held.exchange_code)
    yield held


# How long a test waits for a step of the other thread before it fails (not a timing under
# test: each step comes at once, unless something is broken).
_STEP = 30.0


class _Held:
    """Discord's token endpoint, answering only when told (``answer``, or ``fail``). The web
    app runs in the test client's own thread and event loop: threading events."""

    def __init__(self, h: Harness) -> None:
        self._exchange = h.discord.exchange_code
        self._asked, self._go = threading.Event(), threading.Event()
        self._failure: errors.DomainError | None = None

    async def exchange_code(self, *, code: str, code_verifier: str) -> DiscordTokens:
        self._asked.set()
        assert await asyncio.to_thread(self._go.wait, _STEP)
        if self._failure is not None:
            raise self._failure
        return await self._exchange(code=code, code_verifier=code_verifier)

    async def asked(self) -> None:
        assert await asyncio.to_thread(self._asked.wait, _STEP)

    def answer(self) -> None:
        self._go.set()

    def fail(self, failure: errors.DomainError) -> None:
        self._failure = failure
        self._go.set()


def _first_load(client: Client, url: str) -> asyncio.Future[Any]:
    """The callback's first load, in a thread of its own: the test client answers one
    request at a time per calling thread, and the second load comes meanwhile."""
    return asyncio.ensure_future(
        asyncio.to_thread(asyncio.run, client.get(url, follow_redirects=False))
    )


async def test_a_second_load_after_the_first_finished_keeps_its_person_signed_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Before: 'already used', and the browser's cookie the ended old token. Now the
    second load lands on the account page with the first one's token; loaded again with
    that token, it keeps it."""
    await _signed_in_with_discord(client, h, 7102, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7102)
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.headers["location"] == "/account?notice=confirmed_with_discord"
    renewed = first.cookies["tfl_session"]
    assert renewed != before["tfl_session"]
    _cookies_back(client, before)

    second = await client.get(callback, follow_redirects=False)
    assert second.status_code == 302, second.text
    assert second.headers["location"] == first.headers["location"]
    assert second.cookies["tfl_session"] == renewed
    third = await client.get(callback, follow_redirects=False)  # with the renewed cookie
    assert third.headers["location"] == first.headers["location"]
    account = await client.get(second.headers["location"])
    assert account.url.path == "/account"  # signed in, not sent to sign in
    assert "for the next 10 minutes" in account.text
    assert len(db.tables.sessions) == 1


async def test_a_second_load_while_the_first_asks_discord_is_finished_by_its_page(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second load comes while the first still asks Discord (the old session not
    renewed yet). It waits for nothing on the server: it answers a page that refreshes (no
    script) towards an address that hands over the first one's session once it is there."""
    await _signed_in_with_discord(client, h, 7104, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7104)
    before = dict(client.cookies)
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()  # the state spent, Discord asked

        second = await client.get(callback, follow_redirects=False)
        assert second.status_code == 200
        assert FINISHING in second.text
        assert "tfl_session" not in second.cookies
        again = _refreshes_to(second.text)
        assert again.startswith("/auth/discord/confirming?state=")
        still = await client.get(again, follow_redirects=False)
        assert still.status_code == 200
        assert FINISHING in still.text

        discord.answer()
        renewed = (await first).cookies["tfl_session"]
    _cookies_back(client, before)  # the first answer never reached the browser
    done = await client.get(again, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account?notice=confirmed_with_discord"
    assert done.cookies["tfl_session"] == renewed
    account = await client.get(done.headers["location"])
    assert account.url.path == "/account"
    assert "for the next 10 minutes" in account.text
    assert len(db.tables.sessions) == 1


@pytest.mark.parametrize("while_in_flight", [True, False])
async def test_a_second_load_says_so_when_the_first_failed(
    h: Harness,
    client: Client,
    db: MemoryDatabase,
    monkeypatch: pytest.MonkeyPatch,
    while_in_flight: bool,
) -> None:
    """The first load ended without renewing the session (here Discord failed): the second
    load, or the page it answered while the first was under way, says that confirming did
    not go through, and its person stays signed in with the old session, not proved."""
    await _signed_in_with_discord(client, h, 7105, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7105)
    old = client.cookies["tfl_session"]
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        if while_in_flight:
            waiting = await client.get(callback, follow_redirects=False)
            assert FINISHING in waiting.text
        discord.fail(errors.DiscordUnavailable())
        assert (await first).status_code == 502
    if while_in_flight:
        answer = await client.get(_refreshes_to(waiting.text), follow_redirects=False)
    else:
        answer = await client.get(callback, follow_redirects=False)
    assert answer.status_code == 400
    assert FAILED in answer.text
    assert USED not in answer.text
    assert client.cookies["tfl_session"] == old
    account = await client.get("/account")
    assert account.url.path == "/account"  # still signed in
    assert "for the next 10 minutes" not in account.text  # and not proved
    [confirming] = [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.REAUTH]
    assert confirming.failed_at is not None


async def another_browser_gets_nothing(
    h: Harness,
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    thief: Client,
    callback: str,
) -> None:
    """``thief`` (another browser) loads Discord's ``callback`` and its confirming page while
    ``client``'s first load of it asks Discord, and after that load: 'used already' each
    time, and no session cookie."""
    state = callback.split("state=", 1)[1]
    pages = (callback, f"/auth/discord/confirming?state={state}")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        for url in pages:
            refused = await thief.get(url, follow_redirects=False)
            assert refused.status_code == 410, refused.text
            assert USED in refused.text
        discord.answer()
        assert (await first).status_code == 302
    for url in pages:
        refused = await thief.get(url, follow_redirects=False)
        assert refused.status_code == 410, refused.text
        assert "tfl_session" not in refused.cookies


async def test_the_old_cookie_without_the_browsers_binding_gets_nothing(
    h: Harness, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the old session cookie and the callback's URL (a shared computer, a
    proxy's log), without the flow's binding cookie: 'already used', before the first
    load finished and after, and no session."""
    await _signed_in_with_discord(client, h, 7106, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7106)
    old = client.cookies["tfl_session"]
    async with AsyncTestClient(app=create_app(h.container)) as thief:
        thief.cookies.set("tfl_session", old)
        await another_browser_gets_nothing(h, monkeypatch, client, thief, callback)
        assert (await thief.get("/account", follow_redirects=False)).status_code == 302


async def test_another_accounts_session_cookie_gets_nothing(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The flow's binding cookie beside another account's session (another person signed in
    in that browser since, say): 'already used'; neither session is handed over, nor
    is the other one touched."""
    await _signed_in_with_discord(client, h, 7107, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7107)
    binding = client.cookies["tfl_oauth"]
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    async with AsyncTestClient(app=create_app(h.container)) as other:
        await _signed_in_with_discord(other, h, 7108, "eve")
        eve = other.cookies["tfl_session"]
        other.cookies.set("tfl_oauth", binding)
        sessions = dict(db.tables.sessions)
        refused = await other.get(callback, follow_redirects=False)
        assert refused.status_code == 410, refused.text
        assert USED in refused.text
        assert "tfl_session" not in refused.cookies
        state = callback.split("state=", 1)[1]
        refused = await other.get(f"/auth/discord/confirming?state={state}")
        assert refused.status_code == 410
        assert dict(db.tables.sessions) == sessions
        assert other.cookies["tfl_session"] == eve


async def test_a_second_load_after_the_minute_gets_nothing(
    h: Harness, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same browser more than a minute later: 'already used', as before, whether
    the first load is (as far as the database says) still under way or finished."""
    await _signed_in_with_discord(client, h, 7109, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7109)
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        h.clock.advance(timedelta(minutes=1, seconds=1))
        late = await client.get(callback, follow_redirects=False)
        assert late.status_code == 410
        assert USED in late.text
        discord.answer()
        assert (await first).status_code == 302  # its cookie kept: this browser's answer

    callback = await _back_from_discord(h, client, 7109)
    before = dict(client.cookies)
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    _cookies_back(client, before)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    refused = await client.get(callback, follow_redirects=False)
    assert refused.status_code == 410
    assert USED in refused.text


async def test_a_reload_after_another_proof_is_not_told_to_wait(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The first load finished and its answer arrived; then its person proved who they are
    again. Reloading the first callback's URL with the session that proof renewed: after
    another "Confirm with Discord", that same session (nothing changes); after a proof of
    another kind, 'already used', not the page that asks again and again until the
    minute is over (no first load under way renews that session)."""
    await _signed_in_with_discord(client, h, 7110, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7110)
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    h.clock.advance(timedelta(seconds=5))
    again = await _back_from_discord(h, client, 7110)
    assert (await client.get(again, follow_redirects=False)).status_code == 302
    current = client.cookies["tfl_session"]
    reloaded = await client.get(callback, follow_redirects=False)
    assert reloaded.status_code == 302, reloaded.text
    assert reloaded.cookies["tfl_session"] == current

    [(digest, session)] = db.tables.sessions.items()
    h.clock.advance(timedelta(seconds=5))
    proved = replace(session, proved_at=h.clock.now(), proved_with=SignInMethod.EMAIL_LINK)
    db.tables.sessions[digest] = proved
    reloaded = await client.get(callback, follow_redirects=False)
    assert reloaded.status_code == 410, reloaded.text
    assert USED in reloaded.text
    assert (await client.get("/account")).url.path == "/account"  # still signed in


async def test_a_second_load_waits_as_long_as_the_first_may_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With TASKFLOW_LINK_DISCORD_TIMEOUT_SECONDS raised to its most, a first load may ask
    Discord for two minutes (two calls, each within the timeout). Its page gave up after the
    minute ('already used', the browser's cookie the old token) and the first load renewed
    the session after that: signed out. It refreshes as long as the first load may take now,
    and hands over the session; after that, 'already used' as before."""
    h = Harness.build(build_container(make_settings(discord_timeout_seconds=60)))
    async with AsyncTestClient(app=create_app(h.container)) as client:
        await _signed_in_with_discord(client, h, 7111, "dora")
        h.clock.advance(timedelta(minutes=11))
        callback = await _back_from_discord(h, client, 7111)
        before = dict(client.cookies)
        with _discord_held(h, monkeypatch) as discord:
            first = _first_load(client, callback)
            await discord.asked()
            second = await client.get(callback, follow_redirects=False)
            assert FINISHING in second.text
            again = _refreshes_to(second.text)
            h.clock.advance(timedelta(minutes=2))  # past the minute, within two calls
            for url in (again, callback):  # the page, or the callback loaded once more
                still = await client.get(url, follow_redirects=False)
                assert still.status_code == 200, still.text
                assert FINISHING in still.text
            h.clock.advance(timedelta(seconds=31))  # and past the first load's worst case
            late = await client.get(again, follow_redirects=False)
            assert late.status_code == 410
            assert USED in late.text

            discord.answer()
            renewed = (await first).cookies["tfl_session"]
        _cookies_back(client, before)
        done = await client.get(again, follow_redirects=False)
        assert done.status_code == 302, done.text
        assert done.cookies["tfl_session"] == renewed


def test_the_wait_is_the_minute_on_the_default_timeout() -> None:
    """Two calls to Discord and the database work, or the minute of the other forms sent
    twice, whichever is longer: on the default timeout, the minute."""
    assert (
        DISCORD_TIMEOUT.total_seconds() == Settings.model_fields["discord_timeout_seconds"].default
    )
    assert confirming_for(DISCORD_TIMEOUT) == timedelta(minutes=1)
    assert confirming_for(timedelta(seconds=60)) == timedelta(minutes=2, seconds=30)


async def test_a_reload_of_an_expired_answer_is_told_it_expired_not_to_wait(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """An expired state was spent by the refusal that said so: loaded again (a reload, the
    second click), it was 'used', and a "Confirm with Discord" one was taken for a first load
    under way: "Finishing your confirmation…" for a minute, then "used already". An expired
    state is refused, not spent: each load says it expired."""
    await _signed_in_with_discord(client, h, 7120, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7120)
    h.clock.advance(timedelta(minutes=10, seconds=1))
    for _ in range(2):
        answer = await client.get(callback, follow_redirects=False)
        assert "more than 10 minutes at Discord" in answer.text, answer.text
        assert FINISHING not in answer.text
    confirming = [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.REAUTH]
    assert [p.consumed_at for p in confirming] == [None]


async def test_a_second_load_past_the_ten_minutes_is_still_finished_after_a_purge(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spent at the end of its 10 minutes, a "Confirm with Discord" state was the purge's
    from its expiry on, while its first load may still ask Discord: a purge in between (any
    instance's, hourly) and the second load was told "not one this site is waiting for", its
    browser left with the ended old cookie, signed out. A spent state outlives its expiry by
    as long as its first load may take."""
    await _signed_in_with_discord(client, h, 7121, "dora")
    h.clock.advance(timedelta(minutes=11))
    callback = await _back_from_discord(h, client, 7121)
    h.clock.advance(timedelta(minutes=9, seconds=59))
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()  # spent, one second before its expiry
        h.clock.advance(timedelta(seconds=30))
        await h.container.purge_expired().execute()
        second = await client.get(callback, follow_redirects=False)
        assert second.status_code == 200, second.text
        assert FINISHING in second.text
        discord.answer()
        assert (await first).status_code == 302
    assert [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.REAUTH]


def test_a_spent_state_is_kept_as_long_as_its_first_load_may_take() -> None:
    """At the longest Discord timeout the settings take."""
    longest = next(
        m.le for m in Settings.model_fields["discord_timeout_seconds"].metadata if hasattr(m, "le")
    )
    assert confirming_for(timedelta(seconds=longest)) < KEPT_PAST_EXPIRY
