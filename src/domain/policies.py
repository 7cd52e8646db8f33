"""Pure decision functions. Each receives values (never queries) and returns a decision."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import posixpath
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit

from domain import errors
from domain.model import (
    REAUTH_WINDOW,
    ROLE_PLATFORM_NAME,
    USERNAME_MAX,
    Account,
    AccountId,
    ApiKey,
    ApiScope,
    DiscordId,
    DiscordProfile,
    EmailLinking,
    Link,
    RoleConnection,
    Session,
    SignInMethod,
)

# -- login with Discord ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignInLinkedAccount:
    """The Discord account is linked: sign in to the account it is linked to."""

    account_id: AccountId


@dataclass(frozen=True, slots=True)
class LinkAndSignIn:
    account_id: AccountId


@dataclass(frozen=True, slots=True)
class CreateAccount:
    username_base: str
    email: str | None
    email_verified: bool


@dataclass(frozen=True, slots=True)
class ConfirmBeforeLinking:
    """Email linking ``confirm``: the person must prove the account's side first."""

    account_id: AccountId


@dataclass(frozen=True, slots=True)
class Refuse:
    error: type[errors.DomainError]


LoginDecision = SignInLinkedAccount | LinkAndSignIn | ConfirmBeforeLinking | CreateAccount | Refuse


def decide_login(
    profile: DiscordProfile,
    existing_link: Link | None,
    email_matches: Sequence[Account],
    *,
    email_linking: EmailLinking = EmailLinking.VERIFIED,
    signup: bool = True,
    linked_matches: Collection[AccountId] = (),
) -> LoginDecision:
    """The "login with Discord" table of DESIGN.md, row by row, under the operator's choices:
    how an address may link (``email_linking``) and whether Discord may create accounts.

    ``email_matches`` are the accounts whose email equals the profile's email
    (case-insensitively), whether or not Discord verified it: an unverified Discord email
    that names an existing account is refused rather than silently ignored.
    ``linked_matches``: those of them already linked to a Discord account (another one: this
    profile's has no link), which the link table refuses to link again.
    """
    if existing_link is not None:
        return SignInLinkedAccount(existing_link.account_id)
    # Marked shared (before addresses were unique), an account stays ambiguous even once the
    # others have moved to another address: no one proved which of them this address names.
    if len(email_matches) > 1 or any(account.email_shared for account in email_matches):
        return Refuse(errors.AmbiguousEmail)
    if len(email_matches) == 1:
        account = email_matches[0]
        if profile.verified_email is not None:
            linkable = email_linking is EmailLinking.CONFIRM or (
                email_linking is EmailLinking.VERIFIED and account.email_verified
            )
            if linkable and account.id in linked_matches:
                # Decided here, not by the link that would follow: refused and audited like
                # every other row, before a proof is asked for (or emailed) in vain.
                return Refuse(errors.EmailAccountLinkedToOtherDiscord)
            if email_linking is EmailLinking.CONFIRM:
                return ConfirmBeforeLinking(account.id)
            if email_linking is EmailLinking.VERIFIED and account.email_verified:
                if account.discord_unlinked_at is not None:
                    # Its owner unlinked Discord before: maybe from this very Discord account,
                    # because someone else holds it. Only a proof of the account links again.
                    return ConfirmBeforeLinking(account.id)
                return LinkAndSignIn(account.id)
        # Either side unverified (or linking by email is off): matching would let whoever
        # controls the unverified side take over the other (pre-account takeover). Point to
        # the safe path instead.
        return Refuse(errors.EmailBelongsToAccount)
    if not signup:
        return Refuse(errors.SignupDisabled)
    # Only an address Discord vouches for (verified: true, ASCII only) comes along, confirmed.
    # Nobody proved owning any other: kept unconfirmed, it handed the account to whoever reads
    # that mailbox (a password reset takes an account whose address nobody confirmed, and
    # unlinks its Discord) and kept the address's owner from signing up with it. The account
    # starts without one; its page offers to add one, confirmed by an emailed link.
    email = profile.verified_email
    return CreateAccount(
        username_base=username_base_from_discord(profile.username),
        email=email,
        email_verified=email is not None,
    )


# -- linking -------------------------------------------------------------------------------------


class LinkDecision(enum.Enum):
    LINK = "link"
    ALREADY_LINKED = "already_linked"  # idempotent success
    DISCORD_LINKED_ELSEWHERE = "discord_linked_elsewhere"
    ACCOUNT_HAS_OTHER_DISCORD = "account_has_other_discord"


def decide_link(
    discord_id: DiscordId,
    account_id: AccountId,
    link_of_discord: Link | None,
    link_of_account: Link | None,
) -> LinkDecision:
    """The link table of DESIGN.md: one Discord per account, one account per Discord."""
    if link_of_discord is not None:
        if link_of_discord.account_id == account_id:
            return LinkDecision.ALREADY_LINKED
        return LinkDecision.DISCORD_LINKED_ELSEWHERE
    if link_of_account is not None and link_of_account.discord_id != discord_id:
        return LinkDecision.ACCOUNT_HAS_OTHER_DISCORD
    return LinkDecision.LINK


LINK_REFUSALS: dict[LinkDecision, type[errors.DomainError]] = {
    LinkDecision.DISCORD_LINKED_ELSEWHERE: errors.DiscordLinkedElsewhere,
    LinkDecision.ACCOUNT_HAS_OTHER_DISCORD: errors.AccountLinkedToOtherDiscord,
}


def unlink_refusal(account: Account) -> type[errors.DomainError] | None:
    """Unlinking must never leave an account with no way to sign in."""
    return None if account.has_password else errors.UnlinkWouldLockOut


# -- API keys ---------------------------------------------------------------------------------


def require_scope(key: ApiKey, scope: ApiScope) -> None:
    """An API key may do only what its scopes say; the refusal names what is missing."""
    if scope not in key.scopes:
        has = ", ".join(sorted(key.scopes)) or "none"
        raise errors.MissingScope(
            f"This API key ({key.name!r}) lacks the scope {scope}; it has: {has}. "
            f"Create a key with --scope {scope} for this."
        )


# -- guessing passwords ----------------------------------------------------------------------

FREE_PASSWORD_TRIES = 5
FIRST_BACKOFF = timedelta(seconds=15)
LONGEST_BACKOFF = timedelta(minutes=15)
FORGET_FAILURES_AFTER = timedelta(hours=1)
# 15 s doubled 6 times is 16 minutes: from then on the wait is the longest one.
_DOUBLINGS_TO_CAP = math.ceil(math.log2(LONGEST_BACKOFF / FIRST_BACKOFF))


def password_retry_wait(
    failures: int, last_failure: datetime | None, now: datetime
) -> timedelta | None:
    """How long before the next password try for an account, or ``None`` (try now).

    Five wrong passwords are free; then each try waits twice as long as the one before,
    from 15 seconds up to 15 minutes, counted from the last failure; an hour without failures
    forgets them. An attacker spread over many addresses gets ~100 guesses a day per account;
    the owner, locked out at worst 15 minutes, can reset the password meanwhile.
    """
    if failures < FREE_PASSWORD_TRIES or last_failure is None:
        return None
    if now - last_failure >= FORGET_FAILURES_AFTER:
        return None
    # The doubling stops at the cap: past it, 2 ** n would overflow a timedelta (48 failures).
    doublings = failures - FREE_PASSWORD_TRIES
    backoff = LONGEST_BACKOFF if doublings >= _DOUBLINGS_TO_CAP else FIRST_BACKOFF * 2**doublings
    ready = last_failure + backoff
    return ready - now if now < ready else None


# -- re-authentication ("sudo mode") -------------------------------------------------------------


def identity_recently_proved(session: Session, account: Account, now: datetime) -> bool:
    """Whether this session proved, in the last ``REAUTH_WINDOW``, that it is the account's
    owner, the way the account can: with its password, or, for an account without one, with
    a Discord round trip as the linked Discord account. A stolen session cookie alone then
    cannot set a first password, change the email or unlink Discord."""
    if session.proved_at is None or now - session.proved_at >= REAUTH_WINDOW:
        return False
    wanted = SignInMethod.PASSWORD if account.has_password else SignInMethod.DISCORD
    return session.proved_with is wanted


# -- one-time secrets ------------------------------------------------------------------------------


class SecretStatus(enum.Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    WRONG_BROWSER = "wrong_browser"


SECRET_REFUSALS: dict[SecretStatus, type[errors.SecretRefused]] = {
    SecretStatus.UNKNOWN: errors.SecretUnknown,
    SecretStatus.CONSUMED: errors.SecretConsumed,
    SecretStatus.EXPIRED: errors.SecretExpired,
    SecretStatus.WRONG_BROWSER: errors.WrongBrowser,
}


def check_one_time_secret(
    *,
    found: bool,
    consumed_by_someone_else: bool,
    expires_at: datetime | None,
    now: datetime,
    expected_browser_digest: str | None = None,
    browser_digests: Collection[str] = (),
) -> SecretStatus:
    """Judge a one-time secret after the caller tried to consume it atomically.

    A secret is valid strictly before ``expires_at``: at the boundary it has expired.
    When a browser binding is expected, the digest of one of the binding values the browser
    presented must match (compared in constant time); none presented is a mismatch.
    """
    if not found:
        return SecretStatus.UNKNOWN
    if consumed_by_someone_else:
        return SecretStatus.CONSUMED
    if expires_at is None or now >= expires_at:
        return SecretStatus.EXPIRED
    if expected_browser_digest is not None and not any(
        constant_time_equals(expected_browser_digest, d) for d in browser_digests
    ):
        return SecretStatus.WRONG_BROWSER
    return SecretStatus.VALID


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- destinations ----------------------------------------------------------------------------------

MAX_DESTINATION_LENGTH = 2048


def safe_destination(raw: str | None) -> str:
    """Only a same-site path survives; anything else becomes ``/`` (no open redirects).

    Refused: empty, too long, not starting with a single ``/``, protocol-relative ``//``,
    backslashes (browsers read ``/\\host`` as ``//host``), any whitespace or control
    character (browsers strip tabs and newlines, turning ``/\\t/host`` into ``//host``),
    and anything that parses with a scheme or a host.
    """
    if not raw or len(raw) > MAX_DESTINATION_LENGTH:
        return "/"
    if not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return "/"
    return raw


# Paths that carry a one-time secret (a /link ticket, an emailed token): never kept as where
# a sign-in returns to, and redacted in logs.
SECRET_PATHS = ("/link/", "/verify-email/", "/password/reset/", "/auth/discord/confirm-link/")


def destination_path(destination: str) -> str:
    """The path a same-site ``destination`` reaches: percent-decoded (as the server decodes
    it), repeated slashes as one, and ``.``/``..`` segments resolved (as the browser resolves
    them, ``%2e`` included), so that ``/%6Cink/x``, ``/./link/x`` and ``/static/../link/x``
    are all ``/link/x``. For checks only: the destination itself is kept as it was."""
    path = re.sub(r"/+", "/", unquote(urlsplit(destination).path))
    resolved = posixpath.normpath(path)
    return f"{resolved}/" if path.endswith("/") and resolved != "/" else resolved


# How many times a destination is percent-decoded when looking for a secret in it.
_DECODINGS = 5


def _reaches(destination: str, paths: tuple[str, ...]) -> bool:
    """Whether a same-site ``destination`` reaches one of ``paths``, however it is spelled,
    or names one anywhere else: a page it reaches may send the browser on to a parameter of
    its query (``/signin?next=/link/…``). Decoded as often as it is encoded."""
    if destination_path(destination).startswith(paths):
        return True
    decoded = destination
    for _ in range(_DECODINGS):
        again = unquote(decoded)
        if again == decoded:
            return any(path in re.sub(r"/+", "/", decoded) for path in paths)
        decoded = again
    return True  # encoded more deeply than any page decodes: not worth keeping


def carries_secret(destination: str) -> bool:
    """Whether a same-site ``destination`` reaches a path with a one-time secret (see
    ``_reaches``)."""
    return _reaches(destination, SECRET_PATHS)


# Paths that go to or come back from Discord: loaded, they start a Discord round trip (which
# Discord may send straight back, signed in as the Discord account the browser holds) or
# finish one. Never where a sign-in goes on to.
ROUND_TRIP_PATHS = ("/auth/discord/login", "/auth/discord/callback", "/auth/discord/confirming")


def starts_round_trip(destination: str) -> bool:
    """Whether a same-site ``destination`` reaches a Discord round trip's start or end (see
    ``_reaches``): as where a password sign-in goes on to, ``/auth/discord/login`` took its
    person, this site's own redirect (no page to continue from), through a Discord sign-in,
    which Discord sends straight back: the session just made ended for the Discord account
    left signed in in the browser (on a shared computer, someone else's)."""
    return _reaches(destination, ROUND_TRIP_PATHS)


def password_sign_in_destination(raw: str | None) -> str:
    """Where a password sign-in or a sign-up goes on to (and the sign-in pages, signed in
    already): a same-site path (see ``safe_destination``), and the account page instead of a
    Discord round trip (see ``starts_round_trip``). A ``/link`` ticket's page is kept: its
    "Sign in" link sends its person back to it."""
    destination = safe_destination(raw)
    return "/account" if starts_round_trip(destination) else destination


def sign_in_destination(raw: str | None) -> str:
    """Where a Discord sign-in returns to: a same-site path (see ``safe_destination``), and
    the account page instead of one that carries a one-time secret (see ``carries_secret``)
    or a Discord round trip (see ``starts_round_trip``)."""
    destination = password_sign_in_destination(raw)
    return "/account" if carries_secret(destination) else destination


# -- usernames -----------------------------------------------------------------------------------

_NOT_USERNAME = re.compile(r"[^a-z0-9_.-]+")


def username_base_from_discord(discord_username: str) -> str:
    """Turn a Discord username into a valid TaskFlow username stem (never empty)."""
    base = _NOT_USERNAME.sub("", discord_username.strip().lower())[: USERNAME_MAX - 4]
    return base if len(base) >= 2 else f"user{base}"


def choose_username(base: str, taken: Collection[str], *, clashes: int = 0) -> str:
    """The first free name among ``base``, ``base2``, ``base3``… (``taken`` is lower-cased).

    A clash never matches the existing account: it only picks another name. After ``clashes``
    (sign-ups at the same moment picked the same name, and another one took it), ``base``
    taken, a suffix drawn at random among the free ones below 1000 · ``clashes``: racers part
    ways, where each would take the next free name again and one of them got it per try.
    """

    def named(suffix: int) -> str:
        return f"{base[: USERNAME_MAX - len(str(suffix))]}{suffix}"

    if base not in taken:
        return base
    if clashes > 0:
        free = [n for n in range(2, 1000 * clashes) if named(n) not in taken]
        if free:
            return named(secrets.choice(free))
    suffix = 2
    while named(suffix) in taken:
        suffix += 1
    return named(suffix)


# -- Discord Linked Roles ----------------------------------------------------------------------

ROLE_RETRY_AFTER = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)


def linked_days(link: Link, now: datetime) -> int:
    """Whole days since the link was made (0 on the first day)."""
    return max(0, (now - link.linked_at) // timedelta(days=1))


def role_connection(link: Link | None, account: Account | None, now: datetime) -> RoleConnection:
    """What Discord should show about this Discord user now: linked (and for how many whole
    days) with the TaskFlow username, or not linked."""
    if link is None or account is None:
        return RoleConnection(ROLE_PLATFORM_NAME, None, {"linked": "0", "linked_days": "0"})
    return RoleConnection(
        ROLE_PLATFORM_NAME,
        account.username,
        {"linked": "1", "linked_days": str(linked_days(link, now))},
    )


def next_role_push(link: Link, now: datetime) -> datetime:
    """When ``linked_days`` next changes: the moment Discord must hear the new value."""
    return link.linked_at + timedelta(days=linked_days(link, now) + 1)


# Failed pushes in a row after which the tokens of someone no longer linked are deleted
# (about a week at the 6 h back-off): Discord may go on showing them linked, but the service
# does not keep a person's tokens for good to tell it. Someone still linked is retried.
ROLE_GIVE_UP_UNLINKED_AFTER = 30


def role_retry_at(failures: int, now: datetime) -> datetime:
    """When to push again after ``failures`` failed pushes in a row (1 min up to 6 h)."""
    return now + ROLE_RETRY_AFTER[min(max(failures, 1), len(ROLE_RETRY_AFTER)) - 1]
