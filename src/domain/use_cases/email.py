"""Email: verification, password reset, changing the address, and delivering the queue.

Use cases never send email themselves: they queue it in their own transaction (see
``_shared.queue_email``), so a slow or broken mail server never blocks or breaks a request,
and an email goes out exactly when its change committed. ``DeliverEmails`` sends the queue,
retrying failures, and issues the one-time link of a verification or reset email at the
moment it sends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain import errors
from domain.emails import OneTimeLink, compose
from domain.model import (
    EMAIL_VERIFICATION_TTL,
    PASSWORD_RESET_TTL,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    DeliveryStatus,
    EmailKind,
    EmailPurpose,
    EmailToken,
    Link,
    OutgoingEmail,
    SignInMethod,
    normalize_email,
    validate_email,
)
from domain.policies import SecretStatus
from domain.ports import (
    Clock,
    EmailSender,
    PasswordHasher,
    TokenIssuer,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.use_cases._secrets import EmailLinks, Refusal, use_secret
from domain.use_cases._shared import (
    digest_of,
    prove_identity,
    queue_email,
    retry_on_conflict,
    start_session,
)
from domain.use_cases.accounts import SignedIn, _PasswordUseCase, validate_password

# After a failed send, wait this long before each next try; then give up.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# A sender that claimed an email and died lets it go after this long.
CLAIM_LEASE = timedelta(minutes=2)
# Asking for emailed links: at most one a minute and five an hour per account.
RESEND_LIMITS = ((timedelta(minutes=1), 1), (timedelta(hours=1), 5))
# Changing the email (each change emails the new address): fixing a typo right after
# sign-up is fine, but not a stream of addresses.
CHANGE_LIMITS = ((timedelta(hours=1), 5),)

LINK_KINDS = {
    EmailKind.VERIFY_EMAIL: (EmailPurpose.VERIFY, EMAIL_VERIFICATION_TTL),
    EmailKind.RESET_PASSWORD: (EmailPurpose.RESET, PASSWORD_RESET_TTL),
}

_EXPIRED = {
    EmailPurpose.VERIFY: "This link has expired: email confirmation links work for 24 hours. "
    "Ask for a new one on your account page.",
    EmailPurpose.RESET: "This link has expired: password reset links work for 1 hour. "
    "Ask for a new one on the password reset page.",
}
_CONSUMED = {
    EmailPurpose.VERIFY: "This link has already been used. Your account page shows whether "
    "your email is confirmed.",
    EmailPurpose.RESET: "This link has already been used. Ask for a new one on the password "
    "reset page if you still need it.",
}


def _refusal_for(purpose: EmailPurpose) -> Refusal:
    def refusal(status: SecretStatus) -> errors.SecretRefused:
        if status is SecretStatus.EXPIRED:
            return errors.SecretExpired(_EXPIRED[purpose])
        if status is SecretStatus.CONSUMED:
            return errors.SecretConsumed(_CONSUMED[purpose])
        return errors.SecretUnknown(
            "This link is not valid. Copy the whole link from the email, or ask for a new one."
        )

    return refusal


def _same_address(account: Account, token: EmailToken) -> bool:
    return normalize_email(account.email) == normalize_email(token.email)


async def _within_limits(
    uow: UnitOfWork,
    account_id: AccountId,
    kind: EmailKind,
    now: datetime,
    limits: tuple[tuple[timedelta, int], ...] = RESEND_LIMITS,
) -> bool:
    for window, allowed in limits:
        if await uow.outgoing_emails.count_since(account_id, kind, now - window) >= allowed:
            return False
    return True


# -- delivering the queue ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: list[OutgoingEmail] = field(default_factory=list)
    retrying: list[OutgoingEmail] = field(default_factory=list)
    failed: list[OutgoingEmail] = field(default_factory=list)  # given up
    cancelled: list[OutgoingEmail] = field(default_factory=list)


class DeliverEmails:
    """Send what is due in the queue. Safe to run in several processes at once."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        sender: EmailSender,
        base_url: str,
    ) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock
        self._sender, self._base_url = sender, base_url

    async def execute(self, limit: int = 20) -> DeliveryReport:
        report = DeliveryReport()
        async with self._uow() as uow:
            due = await uow.outgoing_emails.due(self._clock.now(), limit)
        for email in due:
            await self._deliver(email, report)
        return report

    async def _deliver(self, email: OutgoingEmail, report: DeliveryReport) -> None:
        now = self._clock.now()
        link: OneTimeLink | None = None
        async with self._uow() as uow:
            claimed = await uow.outgoing_emails.claim(email.id, now, now + CLAIM_LEASE)
            if claimed is None:
                return  # another sender has it
            account = await uow.accounts.get(claimed.account_id) if claimed.account_id else None
            if account is None or not _still_wanted(claimed, account):
                cancelled = replace(claimed, status=DeliveryStatus.CANCELLED, finished_at=now)
                await uow.outgoing_emails.save(cancelled)
                await uow.commit()
                report.cancelled.append(cancelled)
                return
            if claimed.kind in LINK_KINDS:
                purpose, ttl = LINK_KINDS[claimed.kind]
                secret = self._tokens.issue()
                await uow.email_tokens.add(
                    EmailToken(secret.digest, purpose, account.id, claimed.to, now, now + ttl)
                )
                link = OneTimeLink(secret.token, now + ttl)
            await uow.commit()  # the link works before the email can arrive
        try:
            message = compose(
                claimed, username=account.username, base_url=self._base_url, link=link
            )
            await self._sender.send(message)
        except errors.EmailNotSent as exc:
            await self._failed(claimed, exc.code, report)
            return
        except Exception:
            await self._failed(claimed, "unexpected_error", report)
            return
        sent = replace(
            claimed, status=DeliveryStatus.SENT, attempts=claimed.attempts + 1, finished_at=now
        )
        async with self._uow() as uow:
            await uow.outgoing_emails.save(sent)
            await uow.commit()
        report.sent.append(sent)

    async def _failed(self, email: OutgoingEmail, error: str, report: DeliveryReport) -> None:
        # The link's token stays: the server may have taken the message before failing, and
        # an undelivered token is only a digest that expires.
        now = self._clock.now()
        attempts = email.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            after = replace(
                email,
                status=DeliveryStatus.FAILED,
                attempts=attempts,
                finished_at=now,
                last_error=error,
            )
            report.failed.append(after)
        else:
            after = replace(
                email,
                attempts=attempts,
                next_attempt_at=now + RETRY_DELAYS[attempts - 1],
                last_error=error,
            )
            report.retrying.append(after)
        async with self._uow() as uow:
            await uow.outgoing_emails.save(after)
            await uow.commit()


def _still_wanted(email: OutgoingEmail, account: Account) -> bool:
    """Links go only to the account's current address; a confirmed one needs no confirming."""
    current = normalize_email(account.email)
    if email.kind is EmailKind.VERIFY_EMAIL:
        return current == normalize_email(email.to) and not account.email_verified
    if email.kind is EmailKind.RESET_PASSWORD:
        return current == normalize_email(email.to)
    return True  # notices go where they were addressed (an old address, for EMAIL_CHANGED)


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailLinkShown:
    account: Account
    token: EmailToken


class ShowEmailLink:
    """Look at an emailed link without using it (the page with the confirm button)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, purpose: EmailPurpose) -> EmailLinkShown:
        refusal = _refusal_for(purpose)
        async with self._uow() as uow:
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
        if not _same_address(account, found):
            raise errors.EmailLinkOutdated()
        return EmailLinkShown(account, found)


async def _consume_link(
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
    refusal = _refusal_for(purpose)
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
    if not _same_address(locked, used):
        raise errors.EmailLinkOutdated()
    return used, locked


class VerifyEmail:
    """Follow the emailed link, signed in to its account: the email is confirmed.

    Signing in is required: otherwise someone who registered a victim's address could have
    the victim confirm it by one click, and the victim's "Sign in with Discord" would then be
    linked into the intruder's account (a pre-account takeover).
    """

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, signed_in: AccountId | None) -> Account:
        now = self._clock.now()
        async with self._uow() as uow:
            _, account = await _consume_link(
                uow,
                self._tokens,
                token,
                EmailPurpose.VERIFY,
                now,
                owner_only=True,
                signed_in=signed_in,
            )
            verified = replace(account, email_verified=True)
            await uow.accounts.update(verified)
            await uow.audit.record(AuditEvent(AuditKind.EMAIL_VERIFIED, now, account.id))
            await uow.commit()
        return verified


class ResendVerification:
    """A signed-in person asks for a new confirmation email (rate limited)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, account_id: AccountId) -> str:
        now = self._clock.now()
        async with self._uow() as uow:
            account = await uow.accounts.get(account_id)
            if account is None:
                raise errors.NotSignedIn()
            if account.email is None:
                raise errors.InvalidInput("Your account has no email address. Add one first.")
            if account.email_verified:
                raise errors.InvalidInput("Your email address is already confirmed.")
            if not await _within_limits(uow, account_id, EmailKind.VERIFY_EMAIL, now):
                raise errors.TooManyRequests(
                    "We sent you a confirmation email very recently. Check your inbox and spam "
                    "folder, or ask again in a few minutes (one a minute, five an hour)."
                )
            await queue_email(
                uow, EmailKind.VERIFY_EMAIL, to=account.email, account_id=account.id, now=now
            )
            await uow.commit()
        return account.email


@dataclass(frozen=True, slots=True)
class EmailStatus:
    """What the account page says about the address: the latest confirmation email."""

    account: Account
    latest_verification: OutgoingEmail | None


class ShowEmailStatus:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, account_id: AccountId) -> EmailStatus:
        async with self._uow() as uow:
            account = await uow.accounts.get(account_id)
            if account is None:
                raise errors.NotSignedIn()
            latest = await uow.outgoing_emails.latest(account_id, EmailKind.VERIFY_EMAIL)
        if latest is not None and normalize_email(latest.to) != normalize_email(account.email):
            latest = None  # sent to a previous address
        return EmailStatus(account, latest)


class ChangeEmail:
    """A new address starts unconfirmed; the old one (if confirmed) is told, and the account's
    other sessions end. A sensitive change: the address receives password resets."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: PasswordHasher,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords

    async def execute(
        self, *, session_token: str | None, new_email: str, current_password: str | None
    ) -> Account:
        address = validate_email(new_email)
        session, account = await prove_identity(
            self._uow,
            self._tokens,
            self._clock,
            self._passwords,
            session_token=session_token,
            current_password=current_password,
        )
        if normalize_email(account.email) == address:
            raise errors.InvalidInput("That is already your email address.")

        async def attempt() -> Account:
            now = self._clock.now()
            async with self._uow() as uow:
                fresh = await uow.accounts.lock(account.id)
                if fresh is None or fresh.email != account.email:
                    raise errors.Conflict("Your email changed meanwhile. Try again.")
                if not await _within_limits(
                    uow, account.id, EmailKind.VERIFY_EMAIL, now, CHANGE_LIMITS
                ):
                    raise errors.TooManyRequests(
                        "You changed your email or asked for confirmation links too often in "
                        "the last hour. Try again later."
                    )
                if any(a.id != account.id for a in await uow.accounts.find_by_email(address)):
                    raise errors.EmailTaken("Another account uses this email address.")
                updated = replace(fresh, email=address, email_verified=False, email_shared=False)
                await uow.accounts.update(updated)  # Conflict if a racer took the address
                for purpose in EmailPurpose:  # links sent to the old address stop working
                    await uow.email_tokens.consume_all(account.id, purpose, now)
                await uow.sessions.remove_for_account(account.id, keep=session.digest)
                await uow.audit.record(AuditEvent(AuditKind.EMAIL_CHANGED, now, account.id))
                if fresh.email is not None and fresh.email_verified:
                    await queue_email(
                        uow,
                        EmailKind.EMAIL_CHANGED,
                        to=fresh.email,
                        account_id=account.id,
                        now=now,
                        new_email=address,
                    )
                await queue_email(
                    uow, EmailKind.VERIFY_EMAIL, to=address, account_id=account.id, now=now
                )
                await uow.commit()
            return updated

        # A concurrent change to the same address makes the loser's write a Conflict; the
        # next attempt sees the winner and says the address is taken.
        return await retry_on_conflict(attempt)


# -- password reset ---------------------------------------------------------------------------


class RequestPasswordReset:
    """Email a reset link to every account with this address. Says nothing either way:
    the caller answers the same whether or not an account exists (no enumeration)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, email: str) -> None:
        address = validate_email(email)
        now = self._clock.now()
        async with self._uow() as uow:
            for account in await uow.accounts.find_by_email(address):
                if account.email is None or not await _within_limits(
                    uow, account.id, EmailKind.RESET_PASSWORD, now
                ):
                    continue  # silently: a refusal would tell that the account exists
                await queue_email(
                    uow,
                    EmailKind.RESET_PASSWORD,
                    to=account.email,
                    account_id=account.id,
                    now=now,
                    has_password="yes" if account.has_password else "no",
                )
                await uow.audit.record(
                    AuditEvent(AuditKind.PASSWORD_RESET_REQUESTED, now, account.id)
                )
            await uow.commit()


class ResetPassword(_PasswordUseCase):
    """Use the emailed link once: new password, every session ends, this browser signs in.

    The link proves the person reads the account's mailbox, so the address counts as
    confirmed from then on.
    """

    async def execute(self, *, token: str, new_password: str) -> PasswordReset:
        validate_password(new_password)
        async with self._uow() as uow:  # refuse a bad link before the costly hash
            await use_secret(
                EmailLinks(uow.email_tokens, EmailPurpose.RESET),
                digest_of(self._tokens, token),
                self._clock.now(),
                spend=False,
                refusal=_refusal_for(EmailPurpose.RESET),
            )
        new_hash = await self._passwords.hash(new_password)  # slow: outside the transaction
        now = self._clock.now()
        async with self._uow() as uow:
            _, account = await _consume_link(uow, self._tokens, token, EmailPurpose.RESET, now)
            updated = replace(account, password_hash=new_hash, email_verified=True)
            await uow.accounts.update(updated)
            await uow.email_tokens.consume_all(account.id, EmailPurpose.RESET, now)
            await uow.sessions.remove_for_account(account.id)
            unlinked = await self._unlink_if_unconfirmed(uow, account, now)
            await uow.audit.record(
                AuditEvent(AuditKind.PASSWORD_SET, now, account.id, None, {"via": "reset"})
            )
            if account.email is not None:
                await queue_email(
                    uow,
                    EmailKind.PASSWORD_CHANGED,
                    to=account.email,
                    account_id=account.id,
                    now=now,
                )
            session = await start_session(
                uow, self._tokens, account.id, now, self._session_ttl, method=SignInMethod.PASSWORD
            )
            await uow.commit()
        return PasswordReset(SignedIn(updated, session), unlinked)

    @staticmethod
    async def _unlink_if_unconfirmed(
        uow: UnitOfWork, account: Account, now: datetime
    ) -> Link | None:
        """Until now nobody had proved owning this address: whoever set the account up may
        not be its owner, and a Discord account they linked would keep them in after the
        reset. The owner takes the account back whole; they can link Discord again."""
        if account.email_verified:
            return None
        link = await uow.links.get_by_account(account.id)
        if link is None or not await uow.links.remove(link):
            return None
        await uow.audit.record(
            AuditEvent(
                AuditKind.UNLINKED, now, account.id, link.discord_id, {"via": "password_reset"}
            )
        )
        return link


@dataclass(frozen=True, slots=True)
class PasswordReset:
    signed_in: SignedIn
    unlinked: Link | None  # the Discord link removed because the address was unconfirmed
