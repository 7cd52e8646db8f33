"""Everything the use cases do with passwords, in one place: check one (throttled per account,
so that guessing from many addresses gets nowhere), choose one (long enough and hard enough to
guess), hash one, and notice an old hash."""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from domain import errors
from domain.model import Account, Session, SignInMethod
from domain.policies import FORGET_FAILURES_AFTER, password_retry_wait
from domain.ports import Clock, PasswordAttempts, PasswordHasher, PasswordPolicy, TokenIssuer

MIN_PASSWORD = 8  # NIST SP 800-63B minimum; length beats composition rules
MAX_PASSWORD = 1024  # bounds the hashing work an attacker can ask for
# Rehashes of the same password that one sign-in waits out (each costs it one more hash).
_PASSWORD_CHANGES_TOLERATED = 2

T = TypeVar("T")


def password_length_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"Use a password of at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use a password of at most {MAX_PASSWORD} characters."
    return None


class Passwords:
    def __init__(
        self,
        hasher: PasswordHasher,
        attempts: PasswordAttempts,
        policy: PasswordPolicy,
        clock: Clock,
    ) -> None:
        self._hasher, self._attempts, self._policy, self._clock = hasher, attempts, policy, clock

    async def check(self, key: str, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` is right, under the throttle of ``key`` (an account, or an
        unknown login: unknown logins are throttled alike, so the throttle tells nothing).

        ``PasswordThrottled`` while the key must wait; an account without a password spends the
        time of a real check (no enumeration by timing)."""
        # Guesses sent at once are checked one after another, each seeing the ones before
        # (not all while the first ones hash); and the try counts as a failure from before
        # its hash until it proves right, for the checks of other instances.
        async with self._attempts.one_at_a_time(key):
            now = self._clock.now()
            wait = await self._attempts.reserve(
                key,
                now,
                forget_after=FORGET_FAILURES_AFTER,
                wait_for=lambda failures, last: password_retry_wait(failures, last, now),
            )
            if wait is not None:
                minutes = max(1, math.ceil(wait.total_seconds() / 60))
                raise errors.PasswordThrottled(
                    "Too many wrong passwords for this account. Try again in "
                    f"{minutes} minute{'s' if minutes > 1 else ''}, or reset the password."
                )
            if password_hash is None or len(password) > MAX_PASSWORD:
                await self._hasher.burn(password[:MAX_PASSWORD])
                right = False
            else:
                right = await self._hasher.verify(password_hash, password)
            if right:
                await self._attempts.clear(key)
            return right

    async def matches(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` is the one ``password_hash`` was made of, with no throttle:
        only for a caller that proved the account already (``SetPassword``, whose request
        found that a twin of it saved this password meanwhile)."""
        if len(password) > MAX_PASSWORD:
            return False
        return await self._hasher.verify(password_hash, password)

    async def new_hash(self, password: str, *, related: Sequence[str] = ()) -> str:
        """The hash of a new password, refused with ``WeakPassword`` when it is too short, too
        long or too easy to guess."""
        self.refuse_if_weak(password, related=related)
        return await self._hasher.hash(password)

    def refuse_if_weak(self, password: str, *, related: Sequence[str] = ()) -> None:
        problem = password_length_problem(password) or self._policy.weakness(
            password, related=related
        )
        if problem is not None:
            raise errors.WeakPassword(problem)

    async def forgive(self, key: str) -> None:
        """Forget the wrong passwords of ``key`` (after a password reset proved the mailbox)."""
        await self._attempts.clear(key)

    async def while_right(
        self, checked: str, password: str, run: Callable[[str], Awaitable[T]]
    ) -> T:
        """``run(checked)``: a transaction that starts with ``still_the_password(…, checked)``,
        ``checked`` being the hash ``password`` was found right for. When the account's hash
        changed in between and ``password`` is right for the new one too, a sign-in next to
        this one only replaced an outdated hash of the same password: ``run`` again with the
        new one. A reset or change (the password is not right any more) gives
        ``InvalidCredentials``. The new hash is checked without the throttle: this try was
        counted, and found right, already."""
        for attempt in range(_PASSWORD_CHANGES_TOLERATED + 1):
            try:
                return await run(checked)
            except errors.PasswordChanged as changed:
                new = changed.password_hash
                if (
                    attempt == _PASSWORD_CHANGES_TOLERATED
                    or new is None
                    or len(password) > MAX_PASSWORD
                    or not await self._hasher.verify(new, password)
                ):
                    raise errors.InvalidCredentials(changed.message) from None
                checked = new
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def rehash_if_outdated(self, password_hash: str, password: str) -> str | None:
        """A new hash when the stored one was made with older parameters (at sign-in, the
        only moment the password is known)."""
        if self._hasher.needs_rehash(password_hash):
            return await self._hasher.hash(password)
        return None


def account_key(account_id: object) -> str:
    """The throttle of the sign-ins to the account by its username (and of confirming a
    Discord link with its password)."""
    return f"account:{account_id}"


def email_sign_in_key(account_id: object) -> str:
    """The throttle of the sign-ins to the account by its email address. Apart from the
    username's: had they shared one, a stranger could lock it with the (public) username's
    guesses, then tell which address is the account's by the one try with it that is refused
    for waiting, where an address of no account (or of another) is not."""
    return f"{account_key(account_id)}:email"


def sign_in_keys(account_id: object) -> tuple[str, str]:
    """Every throttle of the account's sign-ins (a password reset forgives them)."""
    return account_key(account_id), email_sign_in_key(account_id)


def shared_signed_in_key(account_id: object) -> str:
    """The throttle of the password checks made by the account's sessions that never proved
    its password (see ``signed_in_key``)."""
    return f"{account_key(account_id)}:signed-in"


def signed_in_key(session: Session) -> str:
    """The throttle of the password checks a signed-in session makes (confirming it is you,
    changing the password or the email): apart from the sign-in's, so that strangers' guesses
    at the account do not stop its owner from changing the password under attack.

    A session that proved the password (signed in with it, or confirmed it since) has a
    throttle of its own: a stolen session's guesses do not keep the owner's waiting, and the
    owner's right password does not forgive the thief's. Such sessions cannot be made without
    the password. The others (signed in with Discord or an emailed link, which whoever holds
    the Discord account or the mailbox can make as many of as they like) share one per
    account: making more sessions buys no more guesses."""
    if SignInMethod.PASSWORD in (session.method, session.proved_with):
        return f"{shared_signed_in_key(session.account_id)}:session:{session.id}"
    return shared_signed_in_key(session.account_id)


# -- trusted devices -------------------------------------------------------------------------
# The throttle above is per account: anyone can keep an account's backoff running with a wrong
# password every minute or so, and the owner's right password was refused with it. A browser
# that signed in to the account before holds a device token for it (OWASP's "device cookie"):
# its tries are throttled on a budget of their own, so someone else's guesses do not lock it
# out. The token is ``<nonce>.<HMAC of the account, the nonce, the password's hash and the
# account's device epoch>``: only a sign-in to that account gets one, none can be made for
# another account, and a password reset or change ends them all (someone who once knew the
# password, and signed in from many browsers, does not keep a budget of guesses per browser
# for the new one). "Sign out everywhere" ends them too (it moves the epoch on): a lost
# device, or the next person at a shared computer, keeps no budget of its own. A rehash with
# new parameters ends them as well; the next sign-in of each browser gets a new one.

_DEVICE_PURPOSE = "trusted-device"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_NONCE_BYTES_OF_ID = 16  # hex characters of the nonce's digest in the throttle's key


def _device_mac(tokens: TokenIssuer, account: Account, password_hash: str, nonce: str) -> str:
    # Epoch 0 (never signed out everywhere) adds nothing: the tokens made before epochs
    # existed stay trusted. No stored hash holds a NUL, so no two inputs read alike.
    epoch = f"\x00{account.device_epoch}" if account.device_epoch else ""
    return tokens.derive(f"{account.id}.{nonce}.{password_hash}{epoch}", _DEVICE_PURPOSE)


def new_device_token(tokens: TokenIssuer, account: Account) -> str:
    """A device token for the browser that just proved the password of ``account``, as it is
    stored now (its password's hash and device epoch)."""
    if account.password_hash is None:
        raise ValueError("a device token is for an account with a password")
    nonce = tokens.issue().token
    return f"{nonce}.{_device_mac(tokens, account, account.password_hash, nonce)}"


def trusted_device(tokens: TokenIssuer, account: Account, device_token: str | None) -> bool:
    """Whether ``device_token`` was issued to this browser for ``account`` as it is stored now:
    its password's hash and device epoch."""
    return _device_key(tokens, account, device_token) is not None


def throttle_key(
    tokens: TokenIssuer, account: Account, device_token: str | None, *, by_email: bool = False
) -> str:
    """The throttle a password try for ``account`` counts on: the trusted device's when
    ``device_token`` was issued to this browser for this account, its current password and
    device epoch; otherwise the account's, for a sign-in ``by_email`` its address's."""
    device = _device_key(tokens, account, device_token)
    if device is not None:
        return device
    return email_sign_in_key(account.id) if by_email else account_key(account.id)


def _device_key(tokens: TokenIssuer, account: Account, device_token: str | None) -> str | None:
    if account.password_hash is not None and device_token and len(device_token) <= 256:
        nonce, _, mac = device_token.partition(".")
        expected = _device_mac(tokens, account, account.password_hash, nonce)
        if _NONCE.fullmatch(nonce) and hmac.compare_digest(mac.encode(), expected.encode()):
            return f"{account_key(account.id)}:device:{tokens.digest(nonce)[:_NONCE_BYTES_OF_ID]}"
    return None
