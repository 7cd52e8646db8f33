"""Domain values and entities: plain frozen dataclasses, no behaviour that needs I/O."""

from __future__ import annotations

import enum
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.errors import InvalidDiscordId, InvalidEmail, InvalidInput, InvalidUsername
from domain.names import has_hidden_characters

MAX_SNOWFLAKE = 2**63 - 1  # Discord ids are stored in a signed 64-bit BIGINT
ONE_TIME_SECRET_TTL = timedelta(minutes=10)
EMAIL_VERIFICATION_TTL = timedelta(hours=24)
PASSWORD_RESET_TTL = timedelta(hours=1)
# A sensitive change (password, email, unlinking Discord) needs a proof of identity this recent.
REAUTH_WINDOW = timedelta(minutes=10)
# Email linking "confirm": how long the person has to prove the TaskFlow side (a password, or
# the link emailed to the account's address, which may take a few minutes to arrive).
LINK_PROPOSAL_TTL = timedelta(minutes=30)
USERNAME_MAX = 32
DISCORD_NAME_MAX = 64  # the columns that keep Discord usernames and display names
DISCORD_AVATAR_MAX = 128
EMAIL_MAX = 254
# Characters that would let an address smuggle more recipients or headers into an email.
_NOT_IN_EMAIL = frozenset('<>,;:"()[]\\\x7f')
_USERNAME_RE = re.compile(r"^[a-z0-9_.-]{2,32}$")


def _not_an_id(raw: object) -> str:
    shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
    return f"{shown} is not a Discord id. {InvalidDiscordId.message}"


@dataclass(frozen=True, slots=True, order=True)
class DiscordId:
    """A Discord snowflake: a positive integer that fits a signed 64-bit column."""

    value: int

    def __post_init__(self) -> None:
        # bool is an int subclass; True must not become Discord id 1.
        if type(self.value) is not int or not 0 < self.value <= MAX_SNOWFLAKE:
            raise InvalidDiscordId(
                f"{self.value!r} is not a Discord id. {InvalidDiscordId.message}"
            )

    @classmethod
    def parse(cls, raw: object) -> DiscordId:
        if isinstance(raw, DiscordId):
            return raw
        if isinstance(raw, str):
            text = raw.strip()
            # isdecimal() alone accepts other scripts' digits; Discord ids are ASCII.
            if not (text.isascii() and text.isdecimal()) or len(text) > 19:
                raise InvalidDiscordId(_not_an_id(raw))
            return cls(int(text))
        if type(raw) is int:
            return cls(raw)
        raise InvalidDiscordId(_not_an_id(raw))

    def __str__(self) -> str:
        return str(self.value)

    def __hash__(self) -> int:
        # The generated one hashes a one-item tuple; ids are dict keys on the hot paths.
        return hash(self.value)


@dataclass(frozen=True, slots=True, order=True)
class AccountId:
    value: uuid.UUID

    @classmethod
    def new(cls) -> AccountId:
        return cls(uuid.uuid4())

    @classmethod
    def parse(cls, raw: str) -> AccountId:
        try:
            return cls(uuid.UUID(raw))
        except (ValueError, AttributeError, TypeError):
            raise InvalidInput(f"{raw!r} is not an account id.") from None

    def __str__(self) -> str:
        return str(self.value)


def normalize_email(email: str | None) -> str | None:
    """Emails are matched case-insensitively; surrounding blanks never count; the domain is
    matched as mail software resolves it (see ``_mapped_domain`` and ``_ascii_domain``)."""
    if email is None:
        return None
    cleaned = email.strip().lower()
    local, at, domain = cleaned.rpartition("@")
    if at and not domain.isascii():
        cleaned = f"{local}@{_ascii_domain(_mapped_domain(domain))}"
    return cleaned or None


# Full stops IDNA reads as the dot between labels (UTS #46 maps them to ".").
_LABEL_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))


def _mapped_domain(domain: str) -> str:
    """A domain written with characters beyond ASCII, mapped as mail software maps it
    before it looks the domain up (IDNA's UTS #46 mapping: compatibility forms folded, so
    example.com written in fullwidth letters is example.com, then lower case)."""
    return unicodedata.normalize("NFKC", domain).lower().translate(_LABEL_DOTS)


def _ascii_domain(mapped: str) -> str:
    """A mapped domain in the form DNS knows it: each label beyond ASCII as its A-label
    ("bücher.de" is xn--bcher-kva.de). Stored so, one mailbox is one address to the
    unique index (whichever way it was typed), and a mail server without SMTPUTF8 takes
    it."""
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in mapped.split(".")
    )


def normalize_username(username: str) -> str:
    return username.strip().lower()


def validate_username(username: str) -> str:
    name = normalize_username(username)
    if not _USERNAME_RE.fullmatch(name):
        raise InvalidUsername("A username is 2 to 32 characters: letters, digits, '.', '_' or '-'.")
    return name


def validate_email(email: str) -> str:
    """The address as it is stored and sent to: ``normalize_email``'s form, its domain in
    ASCII. Checked as typed and as mail software reads it (a fullwidth at sign is an "@").
    For an address an account is to take (a sign-up, an email change): none holding a
    character that draws nothing or stacks over the lines (``has_hidden_characters``).
    ``email_to_look_up`` for one that is only looked for."""
    address = email_to_look_up(email)
    typed = email.strip().lower()
    local, at, domain = typed.rpartition("@")
    mapped = f"{local}@{_mapped_domain(domain)}" if at else typed
    decoded = _a_labels_decoded(address)
    if any(has_hidden_characters(text) for text in (typed, mapped, address, decoded)):
        # "\u3164@example.com" (a Hangul filler) shows as "@example.com", and
        # "al\u2800ice@example.com" (the braille blank) as alice@example.com, on the account
        # page and in the notices: no mailbox needs one. Such an address stored before this
        # check stays where it is (found by ``email_to_look_up``), and no account takes
        # it again.
        raise InvalidEmail(_HIDDEN_IN_EMAIL)
    if unicodedata.normalize("NFC", local) != local:
        # The local part is stored as typed (the mailbox's: "\uff42ob" stays "\uff42ob"), but
        # "jose\u0301" (the accent typed apart) is the same text as "jos\u00e9" to Unicode and
        # to the eye, and was an address apart for the unique index: a second account for
        # one mailbox. Refused in any other form than the composed one (NFC, as RFC 6532
        # asks); one stored before is still looked up.
        raise InvalidEmail(_SECOND_SPELLING_IN_EMAIL)
    return address


_HIDDEN_IN_EMAIL = (
    "An email address cannot hold invisible characters (blank letters, direction marks, "
    "zero-width spaces) or stacked accents: type it again by hand."
)
_SECOND_SPELLING_IN_EMAIL = (
    "An email address cannot hold an accent typed apart from its letter (a second spelling "
    "of the same address): type it again by hand."
)


def email_to_look_up(email: str) -> str:
    """The address as ``validate_email`` checks it (its stored form), less the check for
    characters that draw nothing or stack (``has_hidden_characters``): for a form that only
    looks an address up (a password reset request), which finds an address stored before
    that check, as signing in with it does. Format characters are refused still (migration
    0018 removed every stored address holding one)."""
    typed = email.strip().lower()
    local, at, domain = typed.rpartition("@")
    mapped = f"{local}@{_mapped_domain(domain)}" if at else typed
    if len(mapped) > EMAIL_MAX:
        # Refused before its labels are encoded: each label beyond ASCII only grows as its
        # A-label, so the stored form would be refused too, and Python's punycode takes time
        # growing with the square of a label's length (16,000 Chinese characters in one
        # domain, a 48 KB form field, held the event loop 50 seconds at each reset request).
        raise InvalidEmail("Enter an email address like name@example.com.")
    normalized = normalize_email(email)
    if (
        normalized is None
        or len(normalized) > EMAIL_MAX
        or any(
            text.count("@") != 1
            or text.startswith("@")
            or text.endswith("@")
            or any(ch.isspace() or ord(ch) < 32 or ch in _NOT_IN_EMAIL for ch in text)
            for text in (typed, mapped)
        )
    ):
        raise InvalidEmail("Enter an email address like name@example.com.")
    if "" in normalized.rpartition("@")[2].split("."):
        # An empty label: a dot at either end of the domain or two in a row, which SMTP does
        # not take. "bob@example.com." is the DNS root's spelling of example.com (Postfix
        # strips the dot and delivers to bob@example.com): another account for one mailbox.
        raise InvalidEmail("Enter an email address like name@example.com.")
    if has_format_characters(typed + mapped + _a_labels_decoded(normalized)):
        raise InvalidEmail(_HIDDEN_IN_EMAIL)
    if has_encoded_word(typed) or has_encoded_word(mapped):
        raise InvalidEmail(
            "An email address cannot hold '=?…?=' (mail software reads it as an encoded "
            "word, and delivers to another address): type the address itself."
        )
    return normalized


def _a_labels_decoded(address: str) -> str:
    """What the A-labels of ``address``'s domain (in lower case) encode (``xn--bcher-kva`` is
    "bücher"); a label that is no punycode encodes nothing. An A-label is the same domain as
    its Unicode form, and shows none of the invisible characters it may hold: typed as
    ASCII, a zero-width space inside a label went past the check that refuses it typed as
    Unicode (migration 0018 decodes them likewise, to remove such stored addresses)."""
    decoded = []
    for label in address.rpartition("@")[2].split("."):
        if label.startswith("xn--"):
            try:
                decoded.append(label[4:].encode("ascii").decode("punycode"))
            except (ValueError, OverflowError):  # UnicodeError is a ValueError
                continue
    return "".join(decoded)


_ENCODED_WORD = re.compile(r"=\?.*\?=")


def has_encoded_word(text: str) -> bool:
    """Whether ``text`` holds something shaped like an RFC 2047 encoded word (``=?utf-8?q?…?=``).
    RFC 2047 forbids them in an address, and mail software that meets one decodes it all the
    same: Python's header parser reads "=?us-ascii?q?bob?=@example.com" as bob@example.com, so
    one mailbox could confirm any number of "different" addresses. No mailbox needs one."""
    return _ENCODED_WORD.search(text) is not None


def has_format_characters(text: str) -> bool:
    """Unicode's format characters (category Cf: bidirectional controls, zero-width spaces
    and joiners, the soft hyphen...) show as nothing, or reorder what follows them: an
    address holding one shows as another ("\u202emoc.elpmaxe@ecila" as alice@example.com)
    on the account page and in the notices. No mailbox needs one."""
    return any(unicodedata.category(ch) == "Cf" for ch in text)


# Bidirectional controls: they reorder what follows them on screen, so a name holding one can
# show as something it is not ("\u202egnp.exe" shows as "exe.png"). Other format characters
# stay (the zero-width joiner builds emoji).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


# Control characters, and lone surrogates (JSON's "\ud800": no encoding can store them).
_DROPPED = frozenset({"Cc", "Cs"})


def clean_text(value: object, limit: int) -> str | None:
    """Text from outside (Discord, a form) as we keep it: a string without control
    characters, lone surrogates or bidirectional controls, cut to ``limit`` (a column's
    size); ``None`` for anything else or nothing."""
    if not isinstance(value, str):
        return None
    kept = (
        ch for ch in value if unicodedata.category(ch) not in _DROPPED and ch not in _BIDI_CONTROLS
    )
    cleaned = "".join(kept)[:limit]
    return cleaned or None


@dataclass(frozen=True, slots=True)
class DiscordUser:
    """Who ran a Discord command: what the interaction tells us about the invoker."""

    id: DiscordId
    username: str
    global_name: str | None = None
    avatar: str | None = None

    @classmethod
    def from_discord(
        cls, user_id: object, username: object, global_name: object, avatar: object
    ) -> DiscordUser:
        """What Discord sent, made safe to show and store: names and the avatar hash cut to
        their columns and stripped of control characters (Discord's own limits are lower, but
        whatever sends it may not be Discord)."""
        name = clean_text(username, DISCORD_NAME_MAX)
        if name is None:
            raise InvalidInput("A Discord user needs a username.")
        return cls(
            DiscordId.parse(user_id),
            name,
            clean_text(global_name, DISCORD_NAME_MAX),
            clean_text(avatar, DISCORD_AVATAR_MAX),
        )

    @property
    def display_name(self) -> str:
        return self.global_name or self.username


@dataclass(frozen=True, slots=True)
class DiscordProfile:
    """What Discord's ``/users/@me`` says about the person who authorised us."""

    id: DiscordId
    username: str
    global_name: str | None
    avatar: str | None
    email: str | None
    verified: bool

    @property
    def user(self) -> DiscordUser:
        return DiscordUser(self.id, self.username, self.global_name, self.avatar)

    @property
    def email_to_match(self) -> str | None:
        """The email the accounts are searched for (whether or not Discord verified it), or
        ``None``. Never one holding a character that draws nothing, reorders the text or
        stacks (``has_hidden_characters``): "le\u3164a@example.com" shows as
        lea@example.com, and no form takes it. It matches no account, not even one that
        stored it before forms refused it (its refusal would tell whoever typed it on
        Discord that the address has an account here), and the account Discord makes
        takes none (``verified_email``): it counts as no email at all."""
        email = self.email.strip() if self.email else ""
        if not email or has_hidden_characters(email) or has_format_characters(email):
            return None
        return email

    @property
    def verified_email(self) -> str | None:
        """The email only when Discord vouches for it; otherwise it must never be matched.

        Nor is an address with a character beyond ASCII: lower-casing can turn it into
        another address (the Kelvin sign "\u212a" becomes "k", so "\u212aim@example.com"
        would match kim@example.com's account), and Discord vouches for the mailbox it
        wrote to, which a mail server may tell apart (an attacker's review). Nor is one that
        no form takes (``validate_email``): "bob@example.com." was stored, confirmed, on an
        account of its own, where mail software delivers bob@example.com's mail."""
        email = self.email_to_match
        if not self.verified or email is None or not email.isascii():
            return None
        try:
            return validate_email(email)
        except InvalidEmail:
            return None


@dataclass(frozen=True, slots=True)
class Account:
    id: AccountId
    username: str
    email: str | None
    email_verified: bool
    password_hash: str | None
    created_at: datetime
    # An address is on one account only (the database enforces it), except for accounts
    # imported before that rule: those that shared an address keep it, marked here, and are
    # never matched by it (the login table's "ambiguous" row). Changing the email clears it.
    email_shared: bool = False
    # Moved on by "Sign out everywhere" and by every new password (set, changed or reset):
    # the trusted-device tokens (see ``_passwords``) made before it no longer count, as the
    # sessions it ended, nor do the password reset emails asked for before it and still
    # queued (``email_delivery``: sent later, they would carry a fresh link).
    device_epoch: int = 0
    # When Discord was last unlinked from this account. From then on a Discord sign-in with
    # the account's address never links it without a proof (``decide_login``): whoever
    # holds the Discord account the owner unlinked (perhaps because it was stolen) cannot
    # link it back by its email.
    discord_unlinked_at: datetime | None = None

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


class RoleConnectionLoss(enum.StrEnum):
    """Why a linked member's Linked Roles connection was lost: their tokens deleted, or kept
    but opened by no key here (nothing keeps the connection current)."""

    # Discord refused the refresh token (invalid_grant): the member removed the app in
    # Discord, or Discord ended the grant; or an answer of Discord's was lost (see README).
    REVOKED = "revoked"
    # No configured key opens the tokens: a configured key fails to open them, or their key
    # has been missing from every instance that tried for hours (kept, in case it comes
    # back), or they were deleted (``tokens rotate --drop-unreadable``): the key was lost.
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Link:
    discord_id: DiscordId
    account_id: AccountId
    linked_at: datetime
    discord_username: str
    discord_global_name: str | None = None
    discord_avatar: str | None = None
    # Linked Roles: when and why the connection kept for this Discord account was lost (its
    # tokens deleted while linked), until a new one is made: the account page says so and
    # offers to connect again. ``None``: nothing lost.
    role_connection_lost_at: datetime | None = None
    role_connection_lost_why: RoleConnectionLoss | None = None

    @property
    def discord_display_name(self) -> str:
        return self.discord_global_name or self.discord_username


# A link as a bulk lookup reads it, by position: its Discord id, its account's id as text (the
# UUID as ``str()`` writes it: lowercase, with hyphens), when it was made (aware, UTC), the
# Discord username and global name. A plain tuple, as the database gives it: a bulk lookup
# answers a thousand, and making a ``Link`` (with its ``DiscordId`` and ``AccountId``) for
# each was half of the request's CPU; a UUID object for each, which the answer writes as
# that text, was a twelfth (Postgres writes the text).
LinkRow = tuple[int, str, datetime, str, str | None]


class AuthPurpose(enum.StrEnum):
    """Why a Discord OAuth round trip was started."""

    LOGIN = "login"  # "Sign in with Discord"
    LINK = "link"  # "Link Discord" on the account page
    TICKET = "ticket"  # confirming a /link ticket: prove being the Discord account that ran it
    REAUTH = "reauth"  # proving again, before a sensitive change, to be the linked account
    # Discord's Linked Roles verification URL (``/discord/linked-role``): both ask for
    # ``role_connections.write`` and keep the token (encrypted) to push the role connection.
    ROLES = "roles"  # never links: signs in the linked account, or the signed-in one's link
    ROLES_LINK = "roles_link"  # links the signed-in account (proved at the start), as LINK


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """An OAuth ``state`` waiting for Discord's callback.

    It holds no live secret: the state, the browser binding and the ticket are kept as
    digests, and the PKCE verifier is derived again from the state with the server's key.
    """

    state_digest: str
    # A purpose a newer release started the round trip for (a rolling upgrade, a code-only
    # rollback) is read as its text: such a round trip is not this version's to finish
    # (``CompleteDiscordAuth`` refuses it, unspent). Never written by this version.
    purpose: AuthPurpose | str
    browser_digest: str
    destination: str
    created_at: datetime
    expires_at: datetime
    # The signed-in account, for every purpose but login; for login, the account its callback
    # signed in to, once it has (``PendingLoginRepository.mark_signed_in``).
    account_id: AccountId | None = None
    ticket_digest: str | None = None  # the /link ticket being confirmed (purpose ticket)
    consumed_at: datetime | None = None
    # When the callback that spent it ended without its purpose done (purpose reauth: the
    # session not renewed): the same callback loaded again says so (see ``CompleteDiscordAuth``).
    failed_at: datetime | None = None
    # Why it ended so, when a refusal the person can act on said it (its ``code``, such as
    # ``discord_signup_disabled``): the same callback loaded again tells it again. A code of a
    # newer release's (read back during a rolling upgrade) is told in the generic words.
    failure: str | None = None
    # When the browser it is bound to (its binding value) signed out, or signed in again,
    # after it was started: a sign-in not done by then starts no session, and makes no link
    # proposal (``PendingLoginRepository.mark_signed_out``; migration 0028).
    signed_out_at: datetime | None = None
    # The account a later Discord sign-in of that browser signed in to (the next person at a
    # shared computer, or the same person in another tab): a sign-in not done by then starts
    # a session (or makes a link proposal) only for that same account
    # (``PendingLoginRepository.supersede``; migration 0029).
    superseded_by: AccountId | None = None


@dataclass(frozen=True, slots=True)
class LinkTicket:
    """The one-time token behind the ``/link`` button. The URL holds the token only."""

    digest: str
    discord: DiscordUser
    created_at: datetime
    expires_at: datetime
    consumed_at: datetime | None = None


class SignInMethod(enum.StrEnum):
    """How a person proved who they are: to start a session, or again inside one."""

    PASSWORD = "password"  # noqa: S105 - sign-in, sign-up, a password set or changed, a reset
    DISCORD = "discord"  # a Discord round trip as the linked Discord account
    EMAIL_LINK = "email_link"  # a one-time link sent to the account's address


@dataclass(frozen=True, slots=True)
class Session:
    """A web session. The cookie holds the token; only its digest is stored. ``id`` is the
    public handle the account page shows (never the digest: it is the lookup key)."""

    digest: str
    account_id: AccountId
    created_at: datetime
    expires_at: datetime
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    # A method a newer release signed in with (during a rolling upgrade, or before a
    # rollback) is kept as its text: shown as written, and it proves nothing this version
    # asks for (``identity_recently_proved`` wants one of its own).
    method: SignInMethod | str = SignInMethod.PASSWORD
    last_seen_at: datetime | None = None
    # The last proof of identity in this session (signing in counts) and what it was: a
    # sensitive change needs a recent one (see ``policies.identity_recently_proved``).
    proved_at: datetime | None = None
    proved_with: SignInMethod | str | None = None


class ApiScope(enum.StrEnum):
    """What an API key may do. Each route of the JSON API needs one."""

    LINKS_READ = "links:read"  # look links up
    LINKS_WRITE = "links:write"  # unlink (DELETE /api/v1/links/{discord_id})


# A key created without naming scopes may only read.
DEFAULT_API_SCOPES = frozenset({ApiScope.LINKS_READ})
# "Last used" is a hint for people deciding whether a key can go, not an access log: it is
# written at most this often per key (and never on a request's path).
API_KEY_LAST_USED_EVERY = timedelta(minutes=1)
# Long enough for any service's rotation schedule; "forever" is no expiry at all.
MAX_API_KEY_LIFETIME = timedelta(days=3650)


def scopes_to_text(scopes: frozenset[ApiScope]) -> str:
    """How scopes are stored: their names, sorted, separated by spaces."""
    return " ".join(sorted(scopes))


def scopes_from_text(text: str) -> frozenset[ApiScope]:
    """Stored scopes back; a name this version does not know grants nothing (a newer version
    wrote it) rather than failing every request made with the key."""
    known = {scope.value: scope for scope in ApiScope}
    return frozenset(known[name] for name in text.split() if name in known)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: uuid.UUID
    name: str
    digest: str
    created_at: datetime
    revoked_at: datetime | None = None
    scopes: frozenset[ApiScope] = DEFAULT_API_SCOPES
    expires_at: datetime | None = None  # None: until revoked
    last_used_at: datetime | None = None  # to the minute (API_KEY_LAST_USED_EVERY)

    def expired(self, now: datetime) -> bool:
        """Valid strictly before ``expires_at``; at that instant it has expired."""
        return self.expires_at is not None and now >= self.expires_at


class EmailLinking(enum.StrEnum):
    """Whether "Sign in with Discord" may link to the account that has the same email."""

    VERIFIED = "verified"  # when both addresses are verified (DESIGN.md's table)
    CONFIRM = "confirm"  # Discord's is verified, and the person proves the TaskFlow side first
    OFF = "off"  # never: link from the account page instead


@dataclass(frozen=True, slots=True)
class LinkProposal:
    """A Discord account that a Discord sign-in just proved, waiting for the person to prove
    the TaskFlow account with the same address (email linking ``confirm``): with its password,
    or with a link emailed to that address. The token lives in this browser's cookie only."""

    digest: str
    discord: DiscordUser
    account_id: AccountId
    destination: str
    created_at: datetime
    expires_at: datetime
    consumed_at: datetime | None = None


class EmailPurpose(enum.StrEnum):
    """What an emailed one-time link does."""

    VERIFY = "verify"
    RESET = "reset"
    LINK = "link"  # confirms a LinkProposal (email linking "confirm")


@dataclass(frozen=True, slots=True)
class EmailToken:
    """The secret behind an emailed link. ``email`` is the address it was sent to: the link
    stops working when the account's email changes. A link that confirms a Discord link names
    its ``LinkProposal`` (by digest), so it can only complete that one."""

    digest: str
    purpose: EmailPurpose
    account_id: AccountId
    email: str
    created_at: datetime
    expires_at: datetime
    consumed_at: datetime | None = None
    proposal_digest: str | None = None


class EmailKind(enum.StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a kind of email, not a password
    DISCORD_LINKED = "discord_linked"
    DISCORD_UNLINKED = "discord_unlinked"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    EMAIL_CHANGED = "email_changed"
    CONFIRM_DISCORD_LINK = "confirm_discord_link"
    ROLE_CONNECTION_LOST = "role_connection_lost"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the last retry
    CANCELLED = "cancelled"  # outdated before it went out (e.g. the address changed)


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """An email to send, queued in the same transaction as the change it reports.

    It holds no secret: the one-time link of a verification or reset email is issued when
    the email is sent, so the queue never stores a usable token.
    """

    id: uuid.UUID
    kind: EmailKind
    to: str
    account_id: AccountId | None
    created_at: datetime
    next_attempt_at: datetime
    # A newer release's status (a rolling upgrade, a rollback) as its text: never one a
    # worker claims (those are pending), only one the account page reads (``latest``).
    status: DeliveryStatus | str = DeliveryStatus.PENDING
    attempts: int = 0
    finished_at: datetime | None = None
    last_error: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # Who asked for it, for the limits per address nobody proved (``RECIPIENT_LIMITS``): the
    # client's budget as the web app names it (an IPv4 address, an IPv6 /64 network), or
    # ``None`` (a request from no client, or queued before migration 0022).
    client: str | None = None


# How much of a client's name an outgoing email keeps (the column's width).
CLIENT_MAX = 64


class AuditKind(enum.StrEnum):
    ACCOUNT_CREATED = "account_created"
    LINKED = "linked"
    LINK_REFUSED = "link_refused"
    UNLINKED = "unlinked"
    SIGNED_IN = "signed_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGNED_OUT = "signed_out"
    PASSWORD_SET = "password_set"  # noqa: S105 - an event name, not a password
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105
    EMAIL_VERIFIED = "email_verified"
    EMAIL_CHANGED = "email_changed"
    # An email change refused because another account uses the address: counted against the
    # change's limit, as the changes that send mail are (else a signed-in account could test
    # any number of addresses).
    EMAIL_CHANGE_REFUSED = "email_change_refused"
    # A confirmation or reset email not queued: its address, which nobody has proved, had as
    # many as it may get (``RECIPIENT_LIMITS``), while the sign-up, email change or reset
    # request went on without it. Here so that an operator asked "no email came" can tell.
    EMAIL_WITHHELD = "email_withheld"
    # An address taken from an account that never confirmed it: another account proved it
    # by our own emailed link (its confirmation link, a password reset; never Discord's
    # verified email). ``by`` names the account that proved it, ``proof`` how (``link``,
    # ``reset``).
    EMAIL_TAKEN = "email_taken"
    # An address removed from an account that never confirmed it, by whoever holds its
    # confirmation link ("This is not my account": the address's owner never made it).
    EMAIL_DISOWNED = "email_disowned"
    # The operator lifted such a decline (``taskflow-link email lift-decline``): the account
    # may claim that address again. Names no address, as ``email_disowned`` does not.
    EMAIL_DECLINE_LIFTED = "email_decline_lifted"
    LOGIN_REFUSED = "login_refused"
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    # The role for linked members (TASKFLOW_LINK_DISCORD_LINKED_ROLES), as Discord answered.
    DISCORD_ROLE_ADDED = "discord_role_added"
    DISCORD_ROLE_REMOVED = "discord_role_removed"
    DISCORD_ROLE_REFUSED = "discord_role_refused"  # not a member, no permission, role gone
    DISCORD_ROLE_FAILED = "discord_role_failed"  # Discord unavailable until the last retry
    ROLE_TOKENS_STORED = "role_tokens_stored"
    ROLE_TOKENS_DELETED = "role_tokens_deleted"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    # A newer release's kind is kept as its text (``known``): the trail it wrote during a
    # rolling upgrade, or before a rollback, is read and shown as written, never a failure.
    kind: AuditKind | str
    at: datetime
    account_id: AccountId | None = None
    discord_id: DiscordId | None = None
    detail: dict[str, str] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True, order=True)
class LinkedRole:
    """A Discord role that linked members get, in one server (guild)."""

    guild_id: DiscordId
    role_id: DiscordId

    def __str__(self) -> str:
        return f"{self.guild_id}:{self.role_id}"


class RoleAction(enum.StrEnum):
    ADD = "add"  # the member is linked
    REMOVE = "remove"  # the member is no longer linked


class RoleChangeStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    REFUSED = "refused"  # Discord said no for good (not a member, no permission, no such role)
    FAILED = "failed"  # Discord was unavailable until the last retry


# An add whose row ends so may have reached the member: done, or given up (Discord timed out
# or answered 5xx at every try, which says nothing of whether it took the change). An unlink
# takes such a role away whatever its setting names (``RoleChangeRepository.added``).
ADD_MAY_HAVE_GIVEN = frozenset({RoleChangeStatus.DONE, RoleChangeStatus.FAILED})


@dataclass(frozen=True, slots=True)
class RoleChange:
    """A linked member's role to bring in line with the link, queued in the transaction of the
    link or unlink and applied by a worker after the commit (Discord being down never blocks
    or undoes a link).

    One row per member and role: a newer request (an unlink after a link) replaces what an
    older one asked for and raises ``version``, so a delivery still in flight for the older
    one cannot mark the newer one done. ``claimed_until`` is a worker's lease while it talks
    to Discord; a newer request leaves it, so the newer change goes out only after the one in
    flight has finished (never the other way round)."""

    discord_id: DiscordId
    role: LinkedRole
    action: RoleAction
    requested_at: datetime
    next_attempt_at: datetime
    # The account linked (or, for a removal, formerly linked): whose audit trail it is.
    account_id: AccountId | None = None
    status: RoleChangeStatus = RoleChangeStatus.PENDING
    attempts: int = 0
    version: int = 1
    claimed_until: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RoleChangeCount:
    """How many rows of the role queue for ``role`` say ``action``, ``status`` and
    ``last_error`` (``roles sync``'s account of what it asked for, whoever applied it). An
    action or a status a newer release wrote (a rolling upgrade, a rollback) is counted under
    its text: that release's to apply, never this version's."""

    role: LinkedRole
    action: RoleAction | str
    status: RoleChangeStatus | str
    last_error: str | None
    count: int


# -- Discord Linked Roles ----------------------------------------------------------------------

ROLE_CONNECTIONS_SCOPE = "role_connections.write"
ROLE_PLATFORM_NAME = "TaskFlow"  # what Discord shows as the connection's platform


class RoleMetadataType(enum.IntEnum):
    """How a server compares a metadata value with the value its role asks for (Discord's
    application role connection metadata types; the values are Discord's)."""

    INTEGER_LESS_THAN_OR_EQUAL = 1
    INTEGER_GREATER_THAN_OR_EQUAL = 2
    INTEGER_EQUAL = 3
    INTEGER_NOT_EQUAL = 4
    DATETIME_LESS_THAN_OR_EQUAL = 5
    DATETIME_GREATER_THAN_OR_EQUAL = 6
    BOOLEAN_EQUAL = 7
    BOOLEAN_NOT_EQUAL = 8


@dataclass(frozen=True, slots=True)
class RoleMetadataField:
    """One metadata record a server's role can require (Discord keeps at most 5)."""

    key: str  # a-z, 0-9 and _, 1 to 50 characters
    name: str  # 1 to 100 characters
    description: str  # 1 to 200 characters
    type: RoleMetadataType


ROLE_METADATA: tuple[RoleMetadataField, ...] = (
    RoleMetadataField(
        "linked",
        "Linked to TaskFlow",
        "The Discord account is linked to a TaskFlow account",
        RoleMetadataType.BOOLEAN_EQUAL,
    ),
    RoleMetadataField(
        "linked_days",
        "Days linked to TaskFlow",
        "At least this many days since the Discord account was linked to TaskFlow",
        RoleMetadataType.INTEGER_GREATER_THAN_OR_EQUAL,
    ),
)


@dataclass(frozen=True, slots=True)
class RoleConnection:
    """What Discord shows (and servers' roles check) about a user's TaskFlow connection.
    Metadata values are strings, as Discord takes them: integers in decimal, booleans as
    ``1``/``0``."""

    platform_name: str
    platform_username: str | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class RoleConnectionToken:
    """A Discord user's OAuth tokens, kept only to keep their role connection current.

    ``sealed`` holds the access and refresh tokens encrypted (and bound to ``discord_id``:
    a sealed value moved to another row does not open). ``version`` grows with every write,
    so a writer that read an older row changes nothing (compare and swap). The row is due to
    be pushed to Discord again at ``next_push_at``: when ``linked_days`` next changes, at
    once after an unlink, or after a failure's back-off.

    ``claimed_until``: the lease of the one pusher (a worker, the CLI, the verification URL's
    callback) that may push the row to Discord now. Two pushes of one user on the wire at once
    could reach Discord in either order, the older state last: an unlink makes the row due
    but leaves the claim, and the claimant, whose write then finds a newer version, pushes
    again what is current.
    """

    discord_id: DiscordId
    sealed: str
    expires_at: datetime  # when the access token expires (not a secret)
    next_push_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int = 1
    failures: int = 0  # pushes that failed in a row (the back-off)
    claimed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class RoleConnectionCounts:
    """The kept role connections by where they stand at a moment, each counted once
    (``role-connections status``)."""

    current: int = 0  # pushed; pushed again when the days linked change
    due: int = 0  # to be pushed now (new, an unlink's, a retry whose time came): nobody on it
    retrying: int = 0  # failed, waiting for their next try (the back-off)
    pushing: int = 0  # a pusher (a worker, the CLI, a callback) holds it now
    # Kept, yet said lost to their linked member: no key here opens them (tried again now
    # and then, in case the key comes back), so nothing keeps the connection current.
    unreadable: int = 0

    @property
    def kept(self) -> int:
        return self.current + self.due + self.retrying + self.pushing + self.unreadable


@dataclass(frozen=True, slots=True)
class LostRoleConnection:
    """A linked member whose connection was lost (``Link.role_connection_lost_at``), and
    whether their tokens are still kept (unreadable ones are, in case the key comes back)."""

    discord_id: DiscordId
    since: datetime
    why: RoleConnectionLoss
    tokens_kept: bool


@dataclass(frozen=True, slots=True)
class RoleConnectionLossCount:
    why: RoleConnectionLoss
    tokens_kept: bool
    members: int


class RoleSync(enum.StrEnum):
    """What became of one attempt to bring a user's role connection up to date on Discord."""

    PUSHED = "pushed"  # Discord has the current values (linked)
    CLEARED = "cleared"  # Discord was told "not linked"; the tokens are deleted
    REVOKED = "revoked"  # Discord refused the refresh token (invalid_grant); tokens deleted
    FAILED = "failed"  # Discord did not answer properly: tried again later (back-off)
    UNREADABLE = "unreadable"  # no configured key opens the tokens: kept, tried again later
    # Sealed with a key not configured here (one newer than this instance's, during a
    # rotation's rollout, or one removed): left to an instance that has it, tried again soon.
    KEY_MISSING = "key_missing"
    # Another pusher has it now (its claim, taken once ours ran out) or deleted the tokens.
    GONE = "gone"
    # No longer linked, and Discord failed every push for about a week: tokens deleted.
    GIVEN_UP = "given_up"
    # Discord's global limit held this process, or its address is blocked: not pushed, left due
    # (no failure counted: nothing the row did) for the first pass after the pause.
    PAUSED = "paused"
    # Discord said this user's limit of the push has no call left (X-RateLimit-Remaining: 0,
    # their own token's, or its 429), or, for a row whose access token needs refreshing first,
    # the application's limit of the refresh grant: not pushed, due when it resets (no failure
    # counted); the pass goes on with the others, whose limits are their own.
    WAITING = "waiting"
