"""Emailed one-time links (confirm an address, reset a password, confirm a Discord link):
looking at one, using one, and the limits on asking for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    EMAIL_VERIFICATION_TTL,
    LINK_PROPOSAL_TTL,
    PASSWORD_RESET_TTL,
    Account,
    AccountId,
    AuditKind,
    EmailKind,
    EmailPurpose,
    EmailToken,
    normalize_email,
)
from domain.policies import SecretStatus
from domain.ports import Clock, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._secrets import EmailLinks, Refusal, use_secret
from domain.use_cases._shared import digest_of

# Asking for emailed links: at most one a minute and five an hour per account.
RESEND_LIMITS = ((timedelta(minutes=1), 1), (timedelta(hours=1), 5))

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
        async with self._uow(read_only=True) as uow:
            found = await use_secret(
                EmailLinks(uow.email_tokens, purpose),
                digest_of(self._tokens, token),
                self._clock.now(),
                spend=False,
                refusal=refusal,
            )
            account = await uow.accounts.get(found.account_id)
        if account is None:
            raise refusal(SecretStatus.UNKNOWN)
        if not same_address(account, found):
            raise errors.EmailLinkOutdated()
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
    used = await use_secret(
        EmailLinks(uow.email_tokens, purpose), digest, now, spend=True, refusal=refusal
    )
    if locked is None or locked.id != used.account_id:
        raise refusal(SecretStatus.UNKNOWN)
    if not same_address(locked, used):
        raise errors.EmailLinkOutdated()
    return used, locked
