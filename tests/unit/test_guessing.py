"""Guessing passwords gets nowhere: a per-account throttle with backoff on every password
check, failed sign-ins audited, new passwords checked for strength, old hashes replaced."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.stores.memory import MemoryStore

from adapters.attempts import StorePasswordAttempts
from adapters.memory import MemoryDatabase
from adapters.passwords import Argon2PasswordHasher, ZxcvbnPasswordPolicy
from domain import errors
from domain.model import AuditKind, SignInMethod
from domain.policies import password_retry_wait
from domain.use_cases import BrowserCookies
from domain.use_cases._passwords import account_key, shared_signed_in_key, signed_in_key
from tests.harness import PASSWORD, Harness

WRONG = "not the password at all"


def test_the_backoff_doubles_after_five_free_tries_and_is_forgotten_after_an_hour() -> None:
    from datetime import UTC, datetime

    last = datetime(2026, 1, 1, tzinfo=UTC)
    assert password_retry_wait(4, last, last) is None
    assert password_retry_wait(5, last, last) == timedelta(seconds=15)
    assert password_retry_wait(6, last, last) == timedelta(seconds=30)
    assert password_retry_wait(5, last, last + timedelta(seconds=15)) is None
    assert password_retry_wait(40, last, last) == timedelta(minutes=15)  # capped
    assert password_retry_wait(40, last, last + timedelta(hours=1)) is None


@given(failures=st.integers(min_value=0, max_value=10**9), elapsed=st.integers(0, 7200))
def test_the_wait_is_never_longer_than_the_cap_however_many_failures(
    failures: int, elapsed: int
) -> None:
    """However many failures are stored (48 made the doubling overflow a timedelta: a 500
    for every password check of the account, the right password's too)."""
    from datetime import UTC, datetime

    last = datetime(2026, 1, 1, tzinfo=UTC)
    wait = password_retry_wait(failures, last, last + timedelta(seconds=elapsed))
    assert wait is None or timedelta(0) < wait <= timedelta(minutes=15)
    if failures >= 11 and elapsed < 900:  # from the 6th doubling on: the cap
        assert wait == timedelta(minutes=15) - timedelta(seconds=elapsed)


async def test_an_account_with_many_stored_failures_waits_instead_of_failing(h: Harness) -> None:
    """Failures pile up slowly (one every 16 minutes never reaches the hour that forgets
    them): the 49th wrong password, and the right one, get the wait, not a server error."""
    alice = await h.sign_up("alice", "alice@example.com")
    attempts = h.container.password_attempts()
    key = account_key(alice.account.id)
    for _ in range(60):
        await attempts.reserve(
            key, h.clock.now(), forget_after=timedelta(hours=1), wait_for=lambda *_: None
        )
    for password in (WRONG, PASSWORD):
        with pytest.raises(errors.TooManyRequests):
            await h.container.sign_in().execute(login="alice", password=password)
    h.clock.advance(timedelta(minutes=15))
    await h.container.sign_in().execute(login="alice", password=PASSWORD)


async def test_forty_wrong_current_passwords_are_stopped_after_five(h: Harness) -> None:
    """The issue's measurement: 25 wrong current passwords in 4.9 s, then the right one
    worked. Now the sixth try waits, however many addresses the tries come from."""
    alice = await h.sign_up("alice", "alice@example.com")
    outcomes = []
    for _ in range(40):
        try:
            await h.container.set_password().execute(
                session_token=alice.session_token,
                new_password="an entirely new password",
                current_password=WRONG,
            )
        except errors.InvalidCredentials:
            outcomes.append("wrong")
        except errors.TooManyRequests:
            outcomes.append("wait")
    assert outcomes == ["wrong"] * 5 + ["wait"] * 35
    with pytest.raises(errors.TooManyRequests):  # the right one waits too
        await h.container.confirm_password().execute(
            session_token=alice.session_token, password=PASSWORD
        )
    h.clock.advance(timedelta(seconds=15))
    confirmed = await h.container.confirm_password().execute(  # and then resets it
        session_token=alice.session_token, password=PASSWORD
    )
    with pytest.raises(errors.InvalidCredentials):  # (the session, under its new token)
        await h.container.confirm_password().execute(
            session_token=confirmed.session_token, password=WRONG
        )


async def test_strangers_guesses_do_not_stop_the_signed_in_owner_changing_the_password(
    h: Harness,
) -> None:
    """Under attack, the owner (signed in) changes the password: the checks of signed-in
    sessions count apart from the sign-in's, which strangers keep busy."""
    alice = await h.sign_up("alice", "alice@example.com")
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.sign_in().execute(login="alice", password=WRONG)
    with pytest.raises(errors.TooManyRequests):
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
    await h.container.set_password().execute(
        session_token=alice.session_token,
        new_password="an entirely new password",
        current_password=PASSWORD,
    )


async def test_a_password_reset_forgives_the_sessions_wrong_passwords_too(h: Harness) -> None:
    """Someone holding the linked Discord account guessed at the current password from its
    sessions; the owner resets it by email: a session without the password is not left
    waiting for their backoff."""
    alice = await h.sign_up("alice", "alice@example.com")
    thief = await h.session_for(alice.account.id, proved_with=SignInMethod.DISCORD)
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.confirm_password().execute(session_token=thief, password=WRONG)
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    new_password = "a fresh new password"
    done = await h.container.reset_password().execute(token=token, new_password=new_password)
    await h.container.confirm_password().execute(
        session_token=done.signed_in.session_token, password=new_password
    )
    owner_by_discord = await h.session_for(alice.account.id, proved_with=SignInMethod.DISCORD)
    await h.container.confirm_password().execute(
        session_token=owner_by_discord, password=new_password
    )


async def test_a_stolen_sessions_guesses_do_not_hold_up_the_owners_session(h: Harness) -> None:
    """The signed-in checks had one throttle per account: a stolen session cookie kept it
    waiting, which stopped the owner's password-confirmed changes, and the owner's right
    password forgave the thief's guesses (found by an attacker's review). A session that
    proved the password now has a throttle of its own."""
    alice = await h.sign_up("alice", "alice@example.com")
    owner = await h.container.sign_in().execute(login="alice", password=PASSWORD)
    thief = (await h.container.list_sessions().execute(alice.session_token)).current
    confirm = h.container.confirm_password()
    for _ in range(5):  # the thief, from the stolen sign-up session
        with pytest.raises(errors.InvalidCredentials):
            await confirm.execute(session_token=alice.session_token, password=WRONG)
    with pytest.raises(errors.TooManyRequests):
        await confirm.execute(session_token=alice.session_token, password=PASSWORD)

    # Not held up (and its session goes on under a new token).
    confirmed = await confirm.execute(session_token=owner.session_token, password=PASSWORD)
    await h.container.set_password().execute(
        session_token=confirmed.session_token,
        new_password="an entirely new password",
        current_password=PASSWORD,
    )
    # The owner's right password forgave nothing of the thief's (whose session the change
    # has ended anyway).
    attempts = h.container.password_attempts()
    assert (await attempts.failures(signed_in_key(thief)))[0] == 5
    assert (await attempts.failures(shared_signed_in_key(alice.account.id)))[0] == 0


async def test_sessions_without_the_password_share_one_budget_of_guesses(h: Harness) -> None:
    """Whoever holds the linked Discord account can make as many sessions as they like:
    those share one throttle per account, so more sessions buy no more guesses. Confirming
    the password gives a session its own."""
    alice = await h.sign_up("alice", "alice@example.com")
    confirm = h.container.confirm_password()
    for _ in range(5):
        made = await h.session_for(alice.account.id, proved_with=SignInMethod.DISCORD)
        with pytest.raises(errors.InvalidCredentials):
            await confirm.execute(session_token=made, password=WRONG)
    another = await h.session_for(alice.account.id, proved_with=SignInMethod.DISCORD)
    with pytest.raises(errors.TooManyRequests):
        await confirm.execute(session_token=another, password=PASSWORD)
    # A session that signed in with the password is not held up by them.
    await confirm.execute(session_token=alice.session_token, password=PASSWORD)


async def test_forty_wrong_passwords_sent_at_once_are_stopped_after_five(h: Harness) -> None:
    """Sent together, the guesses used to be checked all at once: each read the count
    before any earlier one had hashed and counted its failure (69 of 80 were checked by a
    real server). Each try is now counted before its hash."""
    await h.sign_up("alice", "alice@example.com")

    async def guess() -> str:
        try:
            await h.container.sign_in().execute(login="alice", password=WRONG)
        except errors.InvalidCredentials:
            return "wrong"
        except errors.TooManyRequests:
            return "wait"
        return "signed in"

    outcomes = await asyncio.gather(*(guess() for _ in range(40)))
    assert sorted(outcomes) == ["wait"] * 35 + ["wrong"] * 5
    with pytest.raises(errors.TooManyRequests):  # the owner too, as after 5 in a row
        await h.container.sign_in().execute(login="alice", password=PASSWORD)


async def test_twenty_right_passwords_sent_at_once_all_sign_in(h: Harness) -> None:
    """Checks of one account take turns: each right one clears the count before the next
    reserves its try, so a burst of right passwords (a form sent twice, tabs) is not
    mistaken for guessing."""
    await h.sign_up("alice", "alice@example.com")
    signed_in = await asyncio.gather(
        *(h.container.sign_in().execute(login="alice", password=PASSWORD) for _ in range(20))
    )
    assert len({s.session_token for s in signed_in}) == 20
    assert h.container.password_attempts().keys_in_use == 0


async def test_tries_reserved_at_once_are_counted_one_by_one() -> None:
    """The adapter's side: 20 reservations at the same time, each seeing the ones before."""
    attempts = StorePasswordAttempts(MemoryStore())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seen: list[int] = []

    def wait_for(failures: int, last: datetime | None) -> timedelta | None:
        seen.append(failures)
        return password_retry_wait(failures, last, now)

    waits = await asyncio.gather(
        *(
            attempts.reserve("k", now, forget_after=timedelta(hours=1), wait_for=wait_for)
            for _ in range(20)
        )
    )
    assert [w is None for w in waits].count(True) == 5
    assert seen == [0, 1, 2, 3, 4] + [5] * 15
    assert await attempts.failures("k") == (5, now)
    await attempts.clear("k")
    assert await attempts.failures("k") == (0, None)
    assert attempts.keys_in_use == 0  # no lock kept once unused


async def test_unknown_logins_are_throttled_alike(h: Harness) -> None:
    """Otherwise the throttle would tell which logins exist."""
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.sign_in().execute(login="nobody", password=WRONG)
    with pytest.raises(errors.TooManyRequests):
        await h.container.sign_in().execute(login="nobody", password=WRONG)


async def test_a_lock_out_by_username_does_not_tell_which_address_is_the_accounts(
    h: Harness,
) -> None:
    """Sharing one throttle, a stranger could lock it with the public username, then try an
    address: refused for waiting if it is the account's, wrong password if not."""
    await h.sign_up("alice", "alice.private@example.com")
    await h.sign_up("bob", "bob@example.com")
    sign_in = h.container.sign_in()
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    with pytest.raises(errors.TooManyRequests):
        await sign_in.execute(login="alice", password=WRONG)
    for address in ("alice.private@example.com", "bob@example.com", "nobody@example.com"):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login=address, password=WRONG)
    # The address has a throttle of its own, as unknown addresses do.
    for _ in range(4):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice.private@example.com", password=WRONG)
    with pytest.raises(errors.TooManyRequests):
        await sign_in.execute(login="alice.private@example.com", password=PASSWORD)


async def test_every_password_check_counts_towards_the_throttle(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.confirm_password().execute(
                session_token=alice.session_token, password=WRONG
            )
    with pytest.raises(errors.TooManyRequests):
        await h.container.change_email().execute(
            session_token=alice.session_token,
            new_email="alice@new.example",
            current_password=PASSWORD,
        )


async def test_a_password_reset_forgives_the_failures(h: Harness) -> None:
    await h.sign_up("alice", "alice@example.com")
    for login in ("alice", "alice@example.com"):
        for _ in range(6):
            with pytest.raises((errors.InvalidCredentials, errors.TooManyRequests)):
                await h.container.sign_in().execute(login=login, password=WRONG)
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    await h.container.reset_password().execute(token=token, new_password="a fresh new password")
    await h.container.sign_in().execute(login="alice", password="a fresh new password")
    await h.container.sign_in().execute(login="alice@example.com", password="a fresh new password")


async def test_failed_sign_ins_are_audited_with_the_login_hashed_and_the_client(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(
            login="Alice", password=WRONG, client_address="203.0.113.7"
        )
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login="mallory", password=WRONG)
    failed = [e for e in db.tables.audit if e.kind is AuditKind.SIGN_IN_FAILED]
    assert [e.account_id for e in failed] == [alice.account.id, None]
    assert failed[0].detail == {
        "login": h.container.tokens().derive("alice", "sign-in-login"),
        "client": "203.0.113.7",
    }
    assert "mallory" not in repr(failed)


async def test_a_login_is_kept_keyed_where_a_stolen_database_cannot_guess_it_back(
    h: Harness, db: MemoryDatabase
) -> None:
    """A login field sometimes holds a password (typed into the wrong box). The audit trail
    and the throttles name a login by an HMAC under the server's key: a plain SHA-256 in a
    copy of the database (or of Redis) gave it back to a dictionary at billions of guesses a
    second, where the account's own hash is argon2id."""
    typed = "Tr0ub4dor&3 horse"
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login=typed, password=WRONG)
    plain = hashlib.sha256(typed.lower().encode()).hexdigest()
    [failed] = [e for e in db.tables.audit if e.kind is AuditKind.SIGN_IN_FAILED]
    assert plain not in repr(failed)
    store = h.container.password_attempts()
    assert (await store.failures(f"login:{plain}"))[0] == 0
    keyed = h.container.tokens().derive(typed.lower(), "sign-in-login")
    assert failed.detail["login"] == keyed
    assert (await store.failures(f"login:{keyed}"))[0] == 1


async def test_an_operator_finds_the_failed_sign_ins_of_a_login_by_the_login(h: Harness) -> None:
    """`taskflow-link audit --login`: the login is keyed, so the trail is searched by the
    HMAC the use case makes of the login given, as a sign-in makes it (any case, blanks
    around it), never by one the operator has to compute."""
    await h.sign_up("alice", "alice@example.com")
    for login, client in (("Alice", "203.0.113.1"), ("bob", "203.0.113.2"), (" alice", "x")):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.sign_in().execute(login=login, password=WRONG, client_address=client)
    await h.container.sign_in().execute(login="alice", password=PASSWORD)
    read = h.container.read_audit_trail()
    found = await read.execute(login=" ALICE ")
    assert [(e.kind, e.detail["client"]) for e in found] == [
        (AuditKind.SIGN_IN_FAILED, "203.0.113.1"),
        (AuditKind.SIGN_IN_FAILED, "x"),
    ]
    assert [e.detail["client"] for e in await read.execute(login="bob")] == ["203.0.113.2"]
    assert list(await read.execute(login="alice@example.com")) == []
    h.clock.advance(timedelta(minutes=2))
    assert list(await read.execute(login="alice", since=timedelta(minutes=1))) == []
    for blank in ("", "  "):
        with pytest.raises(errors.InvalidInput):
            await read.execute(login=blank)


async def test_a_keyed_login_never_has_the_form_of_a_plain_digest(
    h: Harness, db: MemoryDatabase
) -> None:
    """Migration 0020 removes from the audit trail the logins recorded as a plain SHA-256
    (64 lower-case hex digits), telling them by that form alone, and may run again after a
    rolling upgrade: what this version records must never take it (its HMAC is 43 characters
    of URL-safe base64)."""
    for typed in ("alice", "bob@example.com", "x" * 254):
        with pytest.raises(errors.InvalidCredentials):
            await h.container.sign_in().execute(login=typed, password=WRONG)
    logins = [e.detail["login"] for e in db.tables.audit if e.kind is AuditKind.SIGN_IN_FAILED]
    assert len(logins) == 3
    assert not any(re.fullmatch(r"[0-9a-f]{64}", login) for login in logins)


@pytest.mark.parametrize("login", ["a\x00b", "alice\n", "x" * 300])
async def test_logins_no_account_can_have_are_refused_before_any_lookup(
    h: Harness, login: str
) -> None:
    with pytest.raises(errors.InvalidCredentials):
        await h.container.sign_in().execute(login=login, password=WRONG)


@pytest.mark.parametrize(
    "password", ["password123", "aaaaaaaaaaaaaaaa", "qwertyuiop", "alice2026!", "alice@example.com"]
)
async def test_new_passwords_easy_to_guess_are_refused_with_advice(
    h: Harness, password: str
) -> None:
    with pytest.raises(errors.WeakPassword) as refused:
        await h.sign_up("alice", "alice@example.com", password=password)
    assert "too easy to guess" in refused.value.message


@pytest.mark.parametrize("length", [100, 101, 1024])
def test_passwords_longer_than_zxcvbn_reads_are_judged_by_their_start(length: int) -> None:
    """zxcvbn refuses more than 100 characters (a ValueError, a 500 on every form), and the
    README allows 1024: the first 100 are judged, so a weak start stays weak."""
    policy = ZxcvbnPasswordPolicy()
    assert policy.weakness(("q7#Kd9!zLm" * 103)[:length], related=("alice",)) is None
    assert policy.weakness("a" * length) is not None
    assert policy.weakness(("password" * 129)[:length]) is not None


async def test_a_1024_character_password_is_taken_and_signs_in(h: Harness) -> None:
    long = ("q7#Kd9!zLm" * 103)[:1024]
    await h.sign_up("alice", "alice@example.com", password=long)
    await h.container.sign_in().execute(login="alice", password=long)
    with pytest.raises(errors.WeakPassword):
        await h.sign_up("bob", "bob@example.com", password="a" * 1024)


async def test_weak_passwords_are_refused_when_changing_and_resetting_too(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    with pytest.raises(errors.WeakPassword):
        await h.container.set_password().execute(
            session_token=alice.session_token, new_password="password1", current_password=PASSWORD
        )
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    with pytest.raises(errors.WeakPassword):
        await h.container.reset_password().execute(token=token, new_password="alicealice")
    # refused before the link was spent: it still works with a good password
    await h.container.reset_password().execute(token=token, new_password="a fresh new password")


async def test_a_hash_with_old_parameters_is_replaced_at_sign_in(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    old_hash = db.tables.accounts[alice.account.id].password_hash
    assert old_hash is not None
    stronger = Argon2PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    with h.container.password_hasher.override(stronger):
        h.container.passwords.reset()  # a new deployment: the service built with the new one
        assert stronger.needs_rehash(old_hash)
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
        new_hash = db.tables.accounts[alice.account.id].password_hash
        assert new_hash is not None
        assert new_hash != old_hash
        assert not stronger.needs_rehash(new_hash)
        await h.container.sign_in().execute(login="alice", password=PASSWORD)
        assert db.tables.accounts[alice.account.id].password_hash == new_hash


async def test_a_sign_in_next_to_one_that_replaces_the_outdated_hash_still_signs_in(
    h: Harness, db: MemoryDatabase
) -> None:
    """Two sign-ins at once (a form sent twice, two tabs) after the hash parameters were
    raised: the first replaced the outdated hash, and the second, whose password was checked
    against the old one, was refused as "changed a moment ago" (found by an attacker's
    review). The password is right for the new hash too: it signs in."""
    alice = await h.sign_up("alice", "alice@example.com")
    old_hash = db.tables.accounts[alice.account.id].password_hash
    stronger = Argon2PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    real_hash = stronger.hash
    other: list[object] = []

    async def hash_while_another_signs_in(password: str) -> str:
        # Between this sign-in's check and its transaction, another one does all of its own.
        if not other:
            other.append("started")
            other[0] = await h.container.sign_in().execute(login="alice", password=PASSWORD)
        return await real_hash(password)

    stronger.hash = hash_while_another_signs_in  # type: ignore[method-assign]
    with h.container.password_hasher.override(stronger):
        h.container.passwords.reset()
        first = await h.container.sign_in().execute(login="alice", password=PASSWORD)
    second = other[0]
    assert isinstance(second, type(first))
    for signed_in in (first, second):
        assert await h.container.current_session().execute(signed_in.session_token) is not None
    new_hash = db.tables.accounts[alice.account.id].password_hash
    assert new_hash not in (None, old_hash)


async def test_while_right_runs_again_only_for_a_new_hash_of_the_same_password(
    h: Harness,
) -> None:
    passwords = h.container.passwords()
    hasher = h.container.password_hasher()
    same = await hasher.hash(PASSWORD)
    other = await hasher.hash("another password entirely")
    runs: list[str] = []

    def run_until(changes: list[str | None]) -> Any:
        async def run(checked: str) -> str:
            runs.append(checked)
            if changes:
                raise errors.PasswordChanged(changes.pop(0))
            return checked

        return run

    assert await passwords.while_right("h0", PASSWORD, run_until([same])) == same
    assert runs == ["h0", same]
    for changes in ([other], [None], [same, same, same]):
        runs.clear()
        with pytest.raises(errors.InvalidCredentials, match="changed a moment ago") as refused:
            await passwords.while_right("h0", PASSWORD, run_until(list(changes)))
        assert type(refused.value) is errors.InvalidCredentials  # not the hash-carrying one
    assert len(runs) == 3  # three rehashes in a row: given up after the third run


async def test_someone_elses_guesses_do_not_lock_out_a_browser_that_signed_in_before(
    h: Harness,
) -> None:
    """One wrong password a minute kept an account's backoff running for good, and its
    owner's right password was refused with it (found by an attacker's review). A browser
    that signed in to the account before brings its device token: its tries count on a
    throttle of their own (OWASP's device cookies)."""
    await h.sign_up("alice", "alice@example.com")
    sign_in = h.container.sign_in()
    mine = await sign_in.execute(login="alice", password=PASSWORD)
    assert mine.device_token is not None
    for _ in range(5):  # someone else, from anywhere
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    with pytest.raises(errors.TooManyRequests):  # a browser that never signed in here waits
        await sign_in.execute(login="alice", password=PASSWORD)
    again = await sign_in.execute(login="alice", password=PASSWORD, device_token=mine.device_token)
    assert again.device_token == mine.device_token  # the same device, still trusted

    bob = await h.sign_up("bob", "bob@example.com")
    nonce = mine.device_token.partition(".")[0]
    for not_alices in (
        bob.device_token,  # another account's
        f"{nonce}.{'A' * 43}",  # a forged one
        f"{mine.device_token}x",
        "garbage",
        "." * 300,
    ):
        with pytest.raises(errors.TooManyRequests):
            await sign_in.execute(login="alice", password=PASSWORD, device_token=not_alices)

    # The trusted browser's own wrong passwords have a throttle too.
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG, device_token=mine.device_token)
    with pytest.raises(errors.TooManyRequests):
        await sign_in.execute(login="alice", password=PASSWORD, device_token=mine.device_token)
    h.clock.advance(timedelta(hours=2))
    fresh = await sign_in.execute(login="alice", password=PASSWORD)
    assert fresh.device_token not in (None, mine.device_token)  # a new browser: a new token


async def test_a_password_reset_ends_every_device_token_but_its_own(h: Harness) -> None:
    """Someone who once knew the password could sign in from many browsers and keep a budget
    of guesses per browser for the next password: a reset (or a change) ends them all."""
    await h.sign_up("alice", "alice@example.com")
    sign_in = h.container.sign_in()
    minted = [(await sign_in.execute(login="alice", password=PASSWORD)).device_token for _ in "abc"]
    assert len(set(minted)) == 3
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    new_password = "a fresh new password"
    done = await h.container.reset_password().execute(token=token, new_password=new_password)
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    for old in minted:
        with pytest.raises(errors.TooManyRequests):
            await sign_in.execute(login="alice", password=new_password, device_token=old)
    mine = done.signed_in.device_token  # the browser that reset it is trusted
    assert await sign_in.execute(login="alice", password=new_password, device_token=mine)


async def test_sign_out_everywhere_ends_every_device_token(h: Harness) -> None:
    """A lost device, or the next person at a shared computer, kept its own budget of password
    tries (five, then a backoff) against the current password after "sign out everywhere"
    (found by an attacker's review). It now ends the device tokens with the sessions, but the
    asking browser's, which gets a new one (a second review: the owner who used the button
    under attack was locked out with the rest); the next sign-in of the others gets one."""
    await h.sign_up("alice", "alice@example.com")
    sign_in = h.container.sign_in()
    lost = await sign_in.execute(login="alice", password=PASSWORD)
    here = await sign_in.execute(login="alice", password=PASSWORD)
    done = await h.container.end_all_sessions().execute(
        BrowserCookies(session_token=here.session_token), here.device_token
    )
    renewed = done.device_token
    assert renewed not in (None, here.device_token)

    for _ in range(5):  # someone else's guesses
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    for old in (lost.device_token, here.device_token):
        with pytest.raises(errors.TooManyRequests):  # no budget of its own any more
            await sign_in.execute(login="alice", password=PASSWORD, device_token=old)
    # The browser that used the button is still trusted.
    assert await sign_in.execute(login="alice", password=PASSWORD, device_token=renewed)

    # A browser that was not trusted is not made so.
    bob = await h.sign_up("bob", "bob@example.com")
    for brought in (None, "forged.x", here.device_token):
        bobs = await h.session_for(bob.account.id, proved_with=SignInMethod.PASSWORD)
        signed_out = await h.container.end_all_sessions().execute(
            BrowserCookies(session_token=bobs), brought
        )
        assert signed_out.device_token is None

    h.clock.advance(timedelta(hours=2))
    again = await sign_in.execute(login="alice", password=PASSWORD, device_token=here.device_token)
    assert again.device_token not in (lost.device_token, here.device_token)  # a new one
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    assert await sign_in.execute(login="alice", password=PASSWORD, device_token=again.device_token)

    # Ending one other session leaves device tokens alone (the page says so: sign out
    # everywhere for a lost device).
    h.clock.advance(timedelta(hours=2))
    other = await sign_in.execute(login="alice", password=PASSWORD)
    sessions = await h.container.list_sessions().execute(again.session_token)
    ended = next(s for s in sessions.sessions if s.id != sessions.current.id)
    await h.container.end_session().execute(
        BrowserCookies(session_token=again.session_token), str(ended.id)
    )
    h.clock.advance(timedelta(hours=2))
    for _ in range(5):
        with pytest.raises(errors.InvalidCredentials):
            await sign_in.execute(login="alice", password=WRONG)
    assert await sign_in.execute(login="alice", password=PASSWORD, device_token=other.device_token)
