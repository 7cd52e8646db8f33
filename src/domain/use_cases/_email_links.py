"""Emailed one-time links (confirm an address, reset a password, confirm a Discord link):
looking at one, using one, and the limits on asking for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    CLIENT_MAX,
    EMAIL_VERIFICATION_TTL,
    LINK_PROPOSAL_TTL,
    PASSWORD_RESET_TTL,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    EmailKind,
    EmailPurpose,
    EmailToken,
    normalize_email,
)
from domain.policies import SecretStatus
from domain.ports import Clock, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._secrets import EmailLinks, Refusal, use_secret
from domain.use_cases._shared import digest_of, queue_email

# Asking for emailed links: at most one a minute and five an hour per account.
RESEND_LIMITS = ((timedelta(minutes=1), 1), (timedelta(hours=1), 5))

# Emails to an address nobody has proved yet, per address, whichever accounts asked: at most
# five an hour and ten a day. The per-account limits alone let anyone flood a stranger's
# mailbox: sign up with the address (a confirmation email), change the account's address
# away (no password needed right after signing up), sign up again with it, and so on, a new
# account each time. Five an hour is what one account may ask for anyway (RESEND_LIMITS), so
# a person who asks for a new link a few times still gets each one.
#
# Counted per client (``OutgoingEmail.client``: an IPv4 address, an IPv6 /64 network), under a
# larger limit per address for all clients together (``ADDRESS_LIMITS``). Counted per address
# alone, whoever typed someone else's address (and changed it away, and signed up again) used
# up its emails and held back its owner's confirmation for a day; now they use up their own
# share, and holding the owner back takes as many networks as the larger limit has shares.
RECIPIENT_LIMITS = ((timedelta(hours=1), 5), (timedelta(days=1), 10))
ADDRESS_LIMITS = ((timedelta(hours=1), 10), (timedelta(days=1), 30))
# The emails that go to an address nobody may have proved, and count towards its limit: the
# confirmation of an address (sign-up, email change, "send me a new link") and a password
# reset to an account whose address is unconfirmed. The others go only to a confirmed
# address (notices, the link that confirms a Discord link by email), whose owner the
# per-account limits protect: a confirmed address is one account's. Each kind has limits of
# its own: a stranger asks for reset links to any address, with no account, and they spent
# the limit of the confirmation its owner asked for, signed in (ten reset requests and the
# owner of an unconfirmed account could not confirm it for a day); and whoever set up an
# account with someone else's address asked for confirmation links, spending the limit of
# the reset that gives the address's owner the account back.
UNPROVED_ADDRESS_KINDS = frozenset({EmailKind.VERIFY_EMAIL, EmailKind.RESET_PASSWORD})

# The emails that carry a one-time link, what the link does and how long it works.
LINK_KINDS = {
    EmailKind.VERIFY_EMAIL: (EmailPurpose.VERIFY, EMAIL_VERIFICATION_TTL),
    EmailKind.RESET_PASSWORD: (EmailPurpose.RESET, PASSWORD_RESET_TTL),
    EmailKind.CONFIRM_DISCORD_LINK: (EmailPurpose.LINK, LINK_PROPOSAL_TTL),
}

_EXPIRED = {
    EmailPurpose.LINK: "This link has expired: it works for 30 minutes. Sign in with Discord "
    "again to get a new one.",
    EmailPurpose.VERIFY: "This link has expired: email confirmation links work for 24 hours. "
    "Ask for a new one on your account page.",
    EmailPurpose.RESET: "This link has expired: password reset links work for 1 hour. "
    "Ask for a new one on the password reset page.",
}
_CONSUMED = {
    EmailPurpose.LINK: "This link has already been used. Your account page shows whether "
    "Discord is linked.",
    EmailPurpose.VERIFY: "This link has already been used. Your account page shows whether "
    "your email is confirmed.",
    # Also what a reset form sent twice (a double click) shows: the browser keeps the second
    # answer, and the first one's session cookie is lost with its own.
    EmailPurpose.RESET: "This link has already been used. Did you just save a new password with "
    "it (a form sent twice uses the link once)? Then sign in with that password. Otherwise ask "
    "for a new link on the password reset page if you still need one.",
}


# The smallest step of a stored time (Postgres keeps microseconds).
_INSTANT = timedelta(microseconds=1)

# A link to an address the account has left: changing the address ends every link sent to
# the old one (it reads as used), but what the person is told is why it no longer works.
_OUTDATED = {
    EmailPurpose.LINK: "This link was sent to an email address the TaskFlow account no longer "
    "uses, so it cannot confirm the link: nothing was linked.",
    EmailPurpose.VERIFY: errors.EmailLinkOutdated.message,
    EmailPurpose.RESET: "This link was sent to an email address the account no longer uses, "
    "so it no longer works.",
}


async def refuse_if_declined(uow: UnitOfWork, digest: str | None, purpose: EmailPurpose) -> None:
    """``EmailLinkDeclined`` for a confirmation link that a decline spent ("This is not my
    account", with it or with another link to its address: ``DisownEmail`` audits it at the
    moment it spends them): the person opening it again declined, and "the account no longer
    uses the address" or "already used" are words for the account's owner. Not for a link
    spent otherwise (used, or its address left) before a later decline. Read again here: a
    concurrent decline (a double click) may have spent it just now."""
    if purpose is not EmailPurpose.VERIFY or digest is None:
        return
    token = await uow.email_tokens.get(digest)
    if token is None or token.purpose is not purpose or token.consumed_at is None:
        return
    spent, kind = token.consumed_at, AuditKind.EMAIL_DISOWNED
    at_or_after = await uow.audit.count_since(token.account_id, kind, spent)
    if at_or_after and at_or_after > await uow.audit.count_since(
        token.account_id, kind, spent + _INSTANT
    ):  # a decline at the very moment the link was spent
        raise errors.EmailLinkDeclined()


def refusal_for(purpose: EmailPurpose) -> Refusal:
    def refusal(status: SecretStatus) -> errors.SecretRefused:
        if status is SecretStatus.EXPIRED:
            return errors.SecretExpired(_EXPIRED[purpose])
        if status is SecretStatus.CONSUMED:
            return errors.SecretConsumed(_CONSUMED[purpose])
        return errors.SecretUnknown(
            "This link is not valid. Copy the whole link from the email, or ask for a new one."
        )

    return refusal


def same_address(account: Account, token: EmailToken) -> bool:
    return normalize_email(account.email) == normalize_email(token.email)


async def within_limits(
    uow: UnitOfWork,
    account_id: AccountId,
    kind: EmailKind,
    now: datetime,
    limits: tuple[tuple[timedelta, int], ...] = RESEND_LIMITS,
    *,
    refusals: AuditKind | None = None,
) -> bool:
    """Whether one more email of ``kind`` may be queued for the account. The account is
    locked first (until the transaction ends), so that simultaneous requests take turns:
    each counts what the one before it queued (twenty at once queued up to eleven).
    ``refusals``: the audited refusals that count as much as an email does."""
    await uow.accounts.lock(account_id)
    for window, allowed in limits:
        since = now - window
        used = await uow.outgoing_emails.count_since(account_id, kind, since)
        if refusals is not None:
            used += await uow.audit.count_since(account_id, refusals, since)
        if used >= allowed:
            return False
    return True


async def recipient_refusal(
    uow: UnitOfWork,
    kind: EmailKind,
    to: str,
    now: datetime,
    limits: tuple[tuple[timedelta, int], ...] = RECIPIENT_LIMITS,
    *,
    client: str | None = None,
) -> timedelta | None:
    """``None`` when one more email of ``kind`` (one of ``UNPROVED_ADDRESS_KINDS``) may go to
    ``to``, an address nobody has proved, at the request of ``client``, else the window it
    has had all its emails of that kind of: of ``ADDRESS_LIMITS`` (every client's), or of
    ``limits`` (this client's). The recipient is locked first (after the caller's account
    locks, see ``OutgoingEmailRepository.lock_recipient``), so that simultaneous requests
    from several accounts, on several instances, take turns."""
    address = normalize_email(to) or to
    await uow.outgoing_emails.lock_recipient(address)
    for window, allowed in ADDRESS_LIMITS:
        used = await uow.outgoing_emails.count_to_since(address, {kind}, now - window)
        if used >= allowed:
            return window
    for window, allowed in limits:
        since = now - window
        used = await uow.outgoing_emails.count_to_since_from(address, {kind}, since, client)
        if used >= allowed:
            return window
    return None


def recipient_limit_message(window: timedelta) -> str:
    """What a person who asked for a link is told when their address had its emails."""
    last = "hour" if window <= timedelta(hours=1) else "24 hours"
    return (
        f"This address got as many confirmation emails in the last {last} as we send to an "
        "address that is not confirmed yet (five an hour and ten a day asked from one network, "
        "ten an hour and thirty a day in all). Use the newest link in your inbox or spam "
        "folder, or ask again later."
    )


def client_name(client: str | None) -> str | None:
    """How an outgoing email names the client that asked for it (``OutgoingEmail.client``)."""
    return client[:CLIENT_MAX] if client else None


async def queue_to_unproved(
    uow: UnitOfWork,
    kind: EmailKind,
    *,
    to: str,
    account_id: AccountId,
    now: datetime,
    client: str | None = None,
    **detail: str,
) -> bool:
    """Queue an email to an address nobody has proved, within its limits (``client``'s share
    and every client's); past them, nothing is queued (the caller's change goes on without
    it) and the withheld email is audited. Whether it was queued. Call it after the
    transaction's account locks and writes: it locks the recipient (``recipient_refusal``)."""
    if await recipient_refusal(uow, kind, to, now, client=client) is not None:
        await uow.audit.record(
            AuditEvent(AuditKind.EMAIL_WITHHELD, now, account_id, None, {"kind": kind.value})
        )
        return False
    await queue_email(uow, kind, to=to, account_id=account_id, now=now, client=client, **detail)
    return True


@dataclass(frozen=True, slots=True)
class EmailLinkShown:
    account: Account
    token: EmailToken


class ShowEmailLink:
    """Look at an emailed link without using it (the page with the confirm button)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, purpose: EmailPurpose) -> EmailLinkShown:
        refusal = refusal_for(purpose)
        digest = digest_of(self._tokens, token)
        async with self._uow(read_only=True) as uow:
            peek = await EmailLinks(uow.email_tokens, purpose).get(digest) if digest else None
            account = await uow.accounts.get(peek.account_id) if peek is not None else None
            if peek is not None and account is not None and not same_address(account, peek):
                await refuse_if_declined(uow, digest, purpose)
                raise errors.EmailLinkOutdated(_OUTDATED[purpose])  # before "already used"
            try:
                found = await use_secret(
                    EmailLinks(uow.email_tokens, purpose),
                    digest,
                    self._clock.now(),
                    spend=False,
                    refusal=refusal,
                )
            except errors.SecretConsumed:
                await refuse_if_declined(uow, digest, purpose)
                raise
        if account is None or account.id != found.account_id:
            raise refusal(SecretStatus.UNKNOWN)
        return EmailLinkShown(account, found)


async def consume_email_link(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    token: str,
    purpose: EmailPurpose,
    now: datetime,
    *,
    owner_only: bool = False,
    signed_in: AccountId | None = None,
) -> tuple[EmailToken, Account]:
    """Use the link once, in the caller's transaction (a refusal rolls it back). The account
    is locked first, so a concurrent change of it waits instead of being overwritten. With
    ``owner_only``, only someone signed in to the link's account (``signed_in``) may use it."""
    refusal = refusal_for(purpose)
    digest = digest_of(tokens, token)
    peek = await uow.email_tokens.get(digest) if digest is not None else None
    if owner_only and peek is not None and signed_in != peek.account_id:
        raise errors.NotSignedIn(
            "Sign in to the account this email belongs to, then open the link again."
        )
    locked = await uow.accounts.lock(peek.account_id) if peek is not None else None
    if (
        peek is not None
        and peek.purpose is purpose
        and locked is not None
        and not same_address(locked, peek)
    ):
        # Before spending: the email change that left the address spent it ("already used").
        await refuse_if_declined(uow, digest, purpose)
        raise errors.EmailLinkOutdated(_OUTDATED[purpose])
    try:
        used = await use_secret(
            EmailLinks(uow.email_tokens, purpose), digest, now, spend=True, refusal=refusal
        )
    except errors.SecretConsumed:
        await refuse_if_declined(uow, digest, purpose)
        raise
    if locked is None or locked.id != used.account_id:
        raise refusal(SecretStatus.UNKNOWN)
    return used, locked
