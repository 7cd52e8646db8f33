"""Password accounts, sessions, API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import cast

import pytest

from adapters.api_key_cache import CachedApiKeyLookup
from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import ApiKey
from domain.ports import LinkDirectory
from domain.use_cases import BrowserCookies
from domain.use_cases.accounts import PasswordSet, SignedIn
from tests.harness import PASSWORD, Harness


async def test_sign_up_then_sign_in_with_username_or_email(h: Harness) -> None:
    created = await h.sign_up("Alice", "Alice@Example.com")
    assert created.account.username == "alice"
    assert created.account.email == "alice@example.com"
    assert created.account.password_hash is not None
    assert PASSWORD not in created.account.password_hash

    by_name = await h.container.sign_in().execute(login="ALICE", password=PASSWORD)
    by_email = await h.container.sign_in().execute(login="alice@EXAMPLE.com", password=PASSWORD)
    assert by_name.account.id == by_email.account.id == created.account.id
    assert len({created.session_token, by_name.session_token, by_email.session_token}) == 3


@pytest.mark.parametrize(
    ("login", "password"),
    [("alice", "wrong password!"), ("nobody", PASSWORD), ("", PASSWORD), ("alice", "x" * 5000)],
)
async def test_sign_in_refusals_look_the_same(h: Harness, login: str, password: str) -> None:
    await h.sign_up("alice", "alice@example.com")
    with pytest.raises(errors.InvalidCredentials) as refused:
        await h.container.sign_in().execute(login=login, password=password)
    assert refused.value.message == errors.InvalidCredentials.message


async def test_account_without_password_cannot_sign_in_with_one(h: Harness) -> None:
    done = await h.discord_login(h.discord_user(4001, username="discordonly", email="d@x.example"))
    assert (await h.account(done.account_id)).password_hash is None
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login="discordonly", password="")


async def test_sign_up_refusals(h: Harness, db: MemoryDatabase) -> None:
    await h.sign_up("alice", "alice@example.com", verified=True)
    with pytest.raises(errors.UsernameTaken):
        await h.sign_up("ALICE", "other@example.com")
    with pytest.raises(errors.EmailTaken):
        await h.sign_up("alice2", "ALICE@example.com")
    with pytest.raises(errors.WeakPassword):
        await h.sign_up("bob", "bob@example.com", password="short")
    with pytest.raises(errors.InvalidInput):
        await h.sign_up("b", "bob@example.com")
    with pytest.raises(errors.InvalidInput):
        await h.sign_up("bob", "not-an-email")
    assert len(db.tables.accounts) == 1


async def test_an_address_is_one_account_however_its_domain_is_written(
    h: Harness, db: MemoryDatabase
) -> None:
    """Mail software maps a domain beyond ASCII before it looks it up: fullwidth letters are
    ASCII ones, "bücher.de" is xn--bcher-kva.de. Stored as typed, each way of writing one
    mailbox was an account of its own, and confirmed through that one mailbox (and a mail
    server without SMTPUTF8 refused them all)."""
    await h.sign_up("owner", "bob@example.com", verified=True)
    with pytest.raises(errors.EmailTaken):
        await h.sign_up("copycat", "bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com")
    eve = await h.sign_up("eve", "Eve@BÜCHER.de", verified=True)
    assert eve.account.email == "eve@xn--bcher-kva.de"
    with pytest.raises(errors.EmailTaken):
        await h.sign_up("eve2", "eve@xn--bcher-kva.de")
    by_email = await h.container.sign_in().execute(login="eve@bücher.de", password=PASSWORD)
    assert by_email.account.id == eve.account.id
    assert len(db.tables.accounts) == 2


async def test_a_sign_up_form_sent_twice_says_to_sign_in(h: Harness, db: MemoryDatabase) -> None:
    """A double click on "Create account": the browser keeps the second answer, "This
    username is taken. Choose another one." for the account the first click made (its
    session cookie lost with the first answer), and choosing another name then ran into "An
    account with this email already exists" (an attacker's review, in Chromium). Said alike
    whoever holds the name: telling the creator apart would tell who has which address."""

    def sign_up() -> Awaitable[SignedIn]:
        return h.container.sign_up().execute(
            username="alice", email="alice@example.com", password=PASSWORD
        )

    done = await asyncio.gather(sign_up(), sign_up(), return_exceptions=True)
    [refused] = [d for d in done if isinstance(d, BaseException)]
    assert isinstance(refused, errors.UsernameTaken)
    assert "sign in" in refused.message
    assert len(db.tables.accounts) == 1


# The CSRF cookie both requests of a double click came with (Litestar's: 128 hex digits).
_FORM = "a1" * 64


def _sign_up_form(
    h: Harness,
    *,
    form: str | None = _FORM,
    email: str = "alice@example.com",
    password: str = PASSWORD,
) -> Awaitable[SignedIn]:
    return h.container.sign_up().execute(
        username="alice", email=email, password=password, form_secret=form
    )


async def test_a_sign_up_form_sent_twice_signs_its_person_in(
    h: Harness, db: MemoryDatabase
) -> None:
    """A double click on "Create account": the first request made the account and a session
    whose cookie the browser (it had left that request for the second) never received, and
    the second said "This username is taken": not signed in. The session's token is derived
    from the form's CSRF cookie, and the second request, with that cookie and the same name,
    address and password within a minute, is answered that session."""
    first = await _sign_up_form(h)
    second = await _sign_up_form(h)
    assert second.sent_twice
    assert not first.sent_twice
    assert second.session_token == first.session_token
    assert second.account.id == first.account.id
    assert await h.container.current_session().execute(second.session_token) is not None
    assert len(db.tables.accounts) == 1
    assert len(db.tables.sessions) == 1


async def test_a_sign_up_form_sent_twice_at_once_signs_in_both(
    h: Harness, db: MemoryDatabase
) -> None:
    done = await asyncio.gather(_sign_up_form(h), _sign_up_form(h))
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.session_token for d in done}) == 1
    assert len(db.tables.accounts) == 1
    assert len(db.tables.sessions) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"password": "another good password"},
        {"email": "alice@other.example"},
        {"form": "b2" * 64},  # another browser: the same name, address and password
        {"form": None},
    ],
)
async def test_a_sign_up_form_sent_twice_needs_the_same_form_and_browser(
    h: Harness, other: dict[str, str | None]
) -> None:
    await _sign_up_form(h)
    with pytest.raises(errors.UsernameTaken):
        await _sign_up_form(h, **other)  # type: ignore[arg-type]


async def test_a_sign_up_form_sent_twice_is_answered_for_a_minute_only(h: Harness) -> None:
    await _sign_up_form(h)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.UsernameTaken):
        await _sign_up_form(h)


async def test_a_sign_up_form_sent_again_guesses_under_the_sign_in_throttle(h: Harness) -> None:
    """Its password is checked as a sign-in's: wrong ones count against the account's
    throttle, and a throttled account's form sent twice is "taken" (no free guesses)."""
    await _sign_up_form(h)
    for _ in range(5):
        with pytest.raises(errors.UsernameTaken):
            await _sign_up_form(h, password="a wrong guess it is")
    with pytest.raises(errors.PasswordThrottled):
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
    with pytest.raises(errors.UsernameTaken):
        await _sign_up_form(h)


async def test_sessions_expire_and_sign_out_ends_them(h: Harness) -> None:
    token = (await h.sign_up("alice", "alice@example.com")).session_token
    current = h.container.current_session()
    assert (await current.execute(token)) is not None
    assert await current.execute("nonsense") is None
    assert await current.execute(None) is None

    await h.container.sign_out().execute(BrowserCookies(session_token=token))
    assert await current.execute(token) is None

    other = (await h.container.sign_in().execute(login="alice", password=PASSWORD)).session_token
    h.clock.advance(timedelta(days=14))
    assert await current.execute(other) is None


async def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(
    h: Harness,
) -> None:
    signed_up = await h.sign_up("alice", "alice@example.com")
    elsewhere = await h.container.sign_in().execute(login="alice", password=PASSWORD)
    set_password = h.container.set_password()

    with pytest.raises(errors.InvalidCredentials):
        await set_password.execute(
            session_token=signed_up.session_token,
            new_password="a brand new password",
            current_password="not it at all",
        )
    with pytest.raises(errors.InvalidCredentials):  # a recent sign-in does not replace it
        await set_password.execute(
            session_token=signed_up.session_token,
            new_password="a brand new password",
            current_password=None,
        )
    done = await set_password.execute(
        session_token=signed_up.session_token,
        new_password="a brand new password",
        current_password=PASSWORD,
    )

    current = h.container.current_session()
    # This session goes on, under a new token: a copy of its old cookie ends with the others.
    renewed = await current.execute(done.session_token)
    assert renewed is not None
    assert renewed.recently_proved
    assert await current.execute(signed_up.session_token) is None
    assert await current.execute(elsewhere.session_token) is None
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
    await h.container.sign_in().execute(login="alice", password="a brand new password")


async def test_api_keys_are_shown_once_stored_as_digest_and_revocable(
    h: Harness, db: MemoryDatabase
) -> None:
    h.container.api_keys.override(CachedApiKeyLookup(h.container.directory(), ttl_seconds=0))
    created = await h.container.create_api_key().execute("reminder-bot")
    assert created.token.startswith("tfl_")
    assert created.token not in repr(db.tables.api_keys)
    auth = h.container.authenticate_api_key()

    assert (await auth.execute(created.token)) == created.key
    assert await auth.execute(created.token + "x") is None
    assert await auth.execute("tfl_" + "A" * 43) is None
    assert await auth.execute(None) is None
    with pytest.raises(errors.InvalidInput):
        await h.container.create_api_key().execute("reminder-bot")

    await h.container.revoke_api_key().execute(" reminder-bot\n")  # as create strips it
    assert await auth.execute(created.token) is None
    with pytest.raises(errors.NotFound):
        await h.container.revoke_api_key().execute("reminder-bot")
    again = await h.container.create_api_key().execute("reminder-bot")
    assert await auth.execute(again.token) == again.key
    assert len(await h.container.list_api_keys().execute()) == 2


async def test_api_keys_are_cached_briefly_and_a_revocation_lands_within_that_time(
    h: Harness,
) -> None:
    """The lookup API checks the key from a cache (one query per lookup, not two); a revoked
    key stops working once its entry expires (TASKFLOW_LINK_API_KEY_CACHE_SECONDS)."""
    now = [1000.0]
    cache = CachedApiKeyLookup(h.container.directory(), ttl_seconds=5, clock=lambda: now[0])
    h.container.api_keys.override(cache)
    created = await h.container.create_api_key().execute("bot")
    auth = h.container.authenticate_api_key()
    assert await auth.execute(created.token) == created.key
    await h.container.revoke_api_key().execute("bot")
    now[0] += 3.9
    assert await auth.execute(created.token) == created.key  # still the cached answer
    now[0] += 0.2  # in the last fifth of its life: read again, in the background
    assert await auth.execute(created.token) == created.key
    for _ in range(5):
        await asyncio.sleep(0)  # the read
    assert await auth.execute(created.token) is None
    unknown = "tfl_" + "U" * 43
    assert await auth.execute(unknown) is None
    later = await h.container.create_api_key().execute("later")
    assert await auth.execute(later.token) == later.key  # a new key is never "unknown"


class _GatedDirectory:
    """The directory's key reads, counted, and held until ``gate`` opens."""

    def __init__(self, h: Harness) -> None:
        self.inner = h.container.directory()
        self.gate = asyncio.Event()
        self.reads = 0

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.api_key_by_digest(digest)


def _gated_cache(h: Harness, now: list[float]) -> tuple[_GatedDirectory, CachedApiKeyLookup]:
    """A cache (five seconds, on the clock ``now``) over a directory whose reads wait."""
    directory = _GatedDirectory(h)
    cache = CachedApiKeyLookup(
        cast("LinkDirectory", directory), ttl_seconds=5, clock=lambda: now[0]
    )
    return directory, cache


async def test_one_read_per_key_however_many_requests_find_its_entry_due(h: Harness) -> None:
    """An entry's expiry used to send every request of that moment to the database; now they
    wait for one read. A still-valid entry is read again in the background."""
    now = [1000.0]
    directory, cache = _gated_cache(h, now)
    created = await h.container.create_api_key().execute("bot")
    digest = h.container.tokens().digest(created.token)

    waiting = [asyncio.ensure_future(cache.by_digest(digest)) for _ in range(20)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # the first one's client leaves: the read goes on for the others
    directory.gate.set()
    answers = await asyncio.gather(*waiting[1:])
    assert answers == [created.key] * 19
    assert directory.reads == 1

    directory.gate.clear()
    now[0] += 4.5  # due for a read, still valid: read in the background, nobody waits
    answers = await asyncio.gather(*(cache.by_digest(digest) for _ in range(5)))
    assert answers == [created.key] * 5
    assert directory.reads == 2
    directory.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)  # the background read ends
    assert not cache._reading  # no read left behind

    directory.gate.clear()
    now[0] += 10  # expired: everyone waits, for one read
    late = [asyncio.ensure_future(cache.by_digest(digest)) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in late)
    directory.gate.set()
    assert await asyncio.gather(*late) == [created.key] * 5
    assert directory.reads == 3


async def test_a_failed_background_read_keeps_the_entry_until_it_expires(h: Harness) -> None:
    now = [1000.0]
    failing = [False]
    created = await h.container.create_api_key().execute("bot")
    digest = h.container.tokens().digest(created.token)
    inner = h.container.directory()

    class Outage:
        async def api_key_by_digest(self, wanted: str) -> ApiKey | None:
            if failing[0]:
                raise errors.StorageError()
            return await inner.api_key_by_digest(wanted)

    cache = CachedApiKeyLookup(cast("LinkDirectory", Outage()), ttl_seconds=5, clock=lambda: now[0])
    assert await cache.by_digest(digest) == created.key
    failing[0] = True
    now[0] += 4.5
    assert await cache.by_digest(digest) == created.key  # the read fails in the background
    for _ in range(5):
        await asyncio.sleep(0)
    assert await cache.by_digest(digest) == created.key  # still valid for another 0.5 s
    now[0] += 1
    with pytest.raises(errors.StorageError):
        await cache.by_digest(digest)


async def test_a_failed_key_read_fails_every_request_waiting_for_it_and_is_tried_again(
    h: Harness,
) -> None:
    created = await h.container.create_api_key().execute("bot")
    digest = h.container.tokens().digest(created.token)
    failures = [1]

    class Flaky:
        reads = 0

        async def api_key_by_digest(self, wanted: str) -> ApiKey | None:
            Flaky.reads += 1
            await asyncio.sleep(0)
            if failures[0]:
                failures[0] -= 1
                raise errors.StorageError()
            return await h.container.directory().api_key_by_digest(wanted)

    cache = CachedApiKeyLookup(cast("LinkDirectory", Flaky()), ttl_seconds=5)
    outcomes = await asyncio.gather(
        *(cache.by_digest(digest) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, errors.StorageError) for o in outcomes)
    assert Flaky.reads == 1
    assert await cache.by_digest(digest) == created.key
    assert Flaky.reads == 2


async def test_made_up_tokens_never_push_a_key_in_use_out_of_the_cache(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown digests are remembered apart from keys: a flood of invented tokens pushes out
    other unknown digests, and a real client's key is still answered from memory."""
    cache = CachedApiKeyLookup(h.container.directory(), ttl_seconds=60, max_entries=3)
    h.container.api_keys.override(cache)
    created = await h.container.create_api_key().execute("bot")
    auth = h.container.authenticate_api_key()
    assert await auth.execute(created.token) == created.key
    for n in range(10):
        assert await auth.execute(f"tfl_{n:043d}") is None

    looked_up: list[str] = []
    directory = h.container.directory()
    original = directory.api_key_by_digest

    async def counted(digest: str) -> ApiKey | None:
        looked_up.append(digest)
        return await original(digest)

    monkeypatch.setattr(directory, "api_key_by_digest", counted)
    assert await auth.execute(created.token) == created.key
    assert looked_up == []  # from the cache, not the database
    assert await auth.execute(f"tfl_{0:043d}") is None  # pushed out: asked again
    assert len(looked_up) == 1


async def test_known_answers_from_its_entries_and_never_reads(h: Harness) -> None:
    """What the per-key limit asks before it counts a request: no read, none started; a
    lapsed entry still answers (the limit's refusals never renew one)."""
    now = [1000.0]
    directory, cache = _gated_cache(h, now)
    directory.gate.set()
    created = await h.container.create_api_key().execute("bot")
    digest = h.container.tokens().digest(created.token)
    assert await cache.known(digest) is None  # never seen
    assert await cache.known("0" * 64) is None
    assert directory.reads == 0
    assert await cache.by_digest(digest) == created.key
    assert await cache.known(digest) == created.key
    now[0] += 4.5  # due for a refresh: known() leaves that to by_digest
    assert await cache.known(digest) == created.key
    assert directory.reads == 1
    assert not cache._reading
    now[0] += 1  # lapsed: still known, and still no read
    assert await cache.known(digest) == created.key
    assert directory.reads == 1
    assert not cache._reading

    uncached = CachedApiKeyLookup(
        cast("LinkDirectory", directory), ttl_seconds=0, clock=lambda: now[0]
    )
    assert await uncached.known(digest) == created.key  # no cache: it reads
    assert directory.reads == 2


async def test_closing_the_cache_ends_a_read_under_way(h: Harness) -> None:
    """At shutdown a background refresh still waiting for the database is ended (not left to
    die with the event loop), and the cache answers again afterwards."""
    now = [1000.0]
    directory, cache = _gated_cache(h, now)
    created = await h.container.create_api_key().execute("bot")
    digest = h.container.tokens().digest(created.token)
    directory.gate.set()
    assert await cache.by_digest(digest) == created.key
    directory.gate.clear()
    now[0] += 4.5  # due: read again in the background, which waits at the gate
    assert await cache.by_digest(digest) == created.key
    (refresh,) = cache._reading.values()
    for _ in range(3):
        await asyncio.sleep(0)
    assert directory.reads == 2  # under way, held at the gate
    await cache.close()
    assert refresh.cancelled()
    assert not cache._reading
    directory.gate.set()
    now[0] += 10
    assert await cache.by_digest(digest) == created.key
    assert directory.reads == 3


async def _live(h: Harness, token: str) -> bool:
    return await h.container.current_session().execute(token) is not None


async def test_a_password_form_sent_twice_keeps_its_person_signed_in(h: Harness) -> None:
    """A double click on "Save password": both requests came with the old session token, the
    first saved the password and renewed the session under a new token, which the browser
    (it had left that request for the second) never received; the second said "saved
    already ... sign in" and the person was signed out, the session living on under a token
    nobody held. The second, with the same new password, now gets the first one's token."""
    signed_up = await h.sign_up("alice", "alice@example.com")
    new = "a brand new password"

    def change_it() -> Awaitable[PasswordSet]:
        return h.container.set_password().execute(
            session_token=signed_up.session_token, new_password=new, current_password=PASSWORD
        )

    both = await asyncio.gather(change_it(), change_it())
    assert sorted(d.sent_twice for d in both) == [False, True]
    assert both[0].session_token == both[1].session_token != signed_up.session_token
    assert await _live(h, both[0].session_token)
    assert not await _live(h, signed_up.session_token)
    listed = await h.container.list_sessions().execute(both[0].session_token)
    assert len(listed.sessions) == 1
    await h.container.sign_in().execute(login="alice", password=new)


async def test_a_password_form_sent_again_after_the_first_answer_gets_its_session(
    h: Harness,
) -> None:
    """The second request of a double click, come once the first had answered: the old token
    had ended, and it was sent to sign in. With the new password it chose, within a minute,
    it gets the first one's token; a copy of the old cookie with another password (or none),
    or later on, gets nothing, and the new password is not shown to be wrong or right."""
    signed_up = await h.sign_up("alice", "alice@example.com")
    old = signed_up.session_token
    new = "a brand new password"
    set_password = h.container.set_password()
    first = await set_password.execute(
        session_token=old, new_password=new, current_password=PASSWORD
    )
    assert not first.sent_twice

    for other in ("another fresh passphrase", PASSWORD):  # not the same form
        with pytest.raises(errors.NotSignedIn):
            await set_password.execute(
                session_token=old, new_password=other, current_password=PASSWORD
            )
    second = await set_password.execute(
        session_token=old, new_password=new, current_password=PASSWORD
    )
    assert second.sent_twice
    assert second.session_token == first.session_token
    assert await _live(h, first.session_token)
    assert (await h.account(signed_up.account.id)).password_hash == first.account.password_hash

    h.clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(errors.NotSignedIn):  # a minute on: the old token proves nothing
        await set_password.execute(session_token=old, new_password=new, current_password=new)


async def test_a_password_changed_meanwhile_to_another_one_still_says_so(h: Harness) -> None:
    signed_up = await h.sign_up("alice", "alice@example.com")

    def change_to(password: str) -> Awaitable[PasswordSet]:
        return h.container.set_password().execute(
            session_token=signed_up.session_token,
            new_password=password,
            current_password=PASSWORD,
        )

    done = await asyncio.gather(
        change_to("a brand new password"),
        change_to("another fresh passphrase"),
        return_exceptions=True,
    )
    [refused] = [d for d in done if isinstance(d, BaseException)]
    assert isinstance(refused, errors.Conflict)
    assert "changed meanwhile" in refused.message


async def test_a_sign_up_form_sent_twice_says_whether_its_confirmation_went(h: Harness) -> None:
    """The second request answers the first one's sign-up, email included: when the first
    withheld the confirmation (the address had as many as it may get), the page the browser
    keeps said "We are emailing you a link to confirm your address"."""
    for n in range(5):  # the address's hourly share (RECIPIENT_LIMITS) used up
        await h.container.sign_up().execute(
            username=f"other{n}", email="alice@example.com", password=PASSWORD
        )
    first = await _sign_up_form(h)
    second = await _sign_up_form(h)
    assert second.sent_twice
    assert (first.confirmation_sent, second.confirmation_sent) == (False, False)


async def test_a_sign_up_form_sent_twice_says_its_confirmation_went(h: Harness) -> None:
    first = await _sign_up_form(h)
    second = await _sign_up_form(h)
    assert (first.confirmation_sent, second.confirmation_sent) == (True, True)
