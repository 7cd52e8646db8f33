"""Confirming an email address, asking for a new confirmation link, what the account page says
about the address, and changing it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from domain import errors
from domain.model import (
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    EmailKind,
    EmailPurpose,
    OutgoingEmail,
    SignInMethod,
    normalize_email,
    normalize_username,
    validate_email,
)
from domain.ports import Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._addresses import (
    claim_refused,
    confirmed_elsewhere,
    lock_holders,
    take_address,
)
from domain.use_cases._email_links import (
    client_name,
    consume_email_link,
    queue_to_unproved,
    recipient_limit_message,
    recipient_refusal,
    within_limits,
)
from domain.use_cases._passwords import Passwords, signed_in_key
from domain.use_cases._shared import (
    AFTER_EMAIL_CHANGE,
    digest_of,
    made_just_now,
    plausible_token,
    prove_identity,
    queue_email,
    renew_session,
    retry_on_conflict,
    session_token_after,
)

# Changing the email (each change emails the new address): fixing a typo right after
# sign-up is fine, but not a stream of addresses. A change refused because another account
# uses the address counts too: that answer tells whether an address has an account, and
# uncounted it let one signed-in account test any number of addresses.
CHANGE_LIMITS = ((timedelta(hours=1), 5),)


class VerifyEmail:
    """Follow the emailed link, signed in to its account: the email is confirmed.

    Signing in is required: otherwise someone who registered a victim's address could have
    the victim confirm it by one click, and the victim's "Sign in with Discord" would then be
    linked into the intruder's account (a pre-account takeover).
    """

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, signed_in: AccountId | None) -> Account:
        # Two confirmations of one address at once: one takes it, the other runs again and
        # finds its account without it (its link outdated).
        return await retry_on_conflict(lambda: self._confirm(token, signed_in))

    async def _confirm(self, token: str, signed_in: AccountId | None) -> Account:
        now = self._clock.now()
        async with self._uow() as uow:
            # Proven ownership wins: the accounts that hold the address unconfirmed lose it.
            # Every one of them is locked before the link's own account (``lock_holders``).
            peek = await uow.email_tokens.get(digest_of(self._tokens, token) or "")
            mine = peek is not None and peek.account_id == signed_in
            locked = (
                await lock_holders(uow, peek.email, also=(peek.account_id,))
                if peek is not None and mine
                else frozenset()
            )
            used, account = await consume_email_link(
                uow,
                self._tokens,
                token,
                EmailPurpose.VERIFY,
                now,
                owner_only=True,
                signed_in=signed_in,
            )
            # EmailTaken (rolled back, the link unspent) if another account confirmed it.
            await take_address(
                uow, used.email, owner=account.id, locked=locked, now=now, proof="link"
            )
            verified = replace(account, email_verified=True)
            await uow.accounts.update(verified)
            await uow.audit.record(AuditEvent(AuditKind.EMAIL_VERIFIED, now, account.id))
            await uow.commit()
        return verified


class DisownEmail:
    """The address's owner says "this is not my account" with the emailed confirmation link:
    the address leaves the account that claims it, unconfirmed.

    Anyone may sign up with any address (a claim, not a proof), so the address's owner gets
    our confirmation email for an account they never made. The link proves the mailbox (as a
    reset link does, which would hand them the whole account); this lets them decline it
    instead: the account keeps everything else (username, password, sessions, Discord link)
    and has no address, its links to the address stop working, and "Sign in with Discord"
    with that address no longer finds it (no account has the address: the owner's own account
    is made, or theirs found). An address the account confirmed is its owner's and stays (a
    link sent before the confirmation is refused, spending nothing).

    The decline is kept (``DeclinedAddressRepository``): that account may not claim the
    address again (``ChangeEmail`` refuses it, ``EmailDeclined``), or its holder would get a
    new confirmation email for it the next minute. Refused rather than accepted without an
    email: the account learns nothing it did not see when the address left it, and an
    account holding the address unconfirmed again would again stand in the way of its
    owner's "Sign in with Discord". Kept for as long as the account: a decline that lapsed
    would only have the account wait. Other accounts are not concerned (each one's claim
    sends its own email, which may be declined the same way), nor is the address's owner.

    Refused from a browser signed in to that very account (``OwnAccountNotDeclined``): its
    person is the account, and would decline it for good by mistake (its page does not offer
    the button to them). Signed out, or signed in to another account, the link alone still
    declines: the mailbox's holder need have no account here."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, *, signed_in: AccountId | None = None) -> Account:
        """The account as it was (for the page that says which one lost the address).
        ``signed_in``: the account the asking browser is signed in to, if any."""
        now = self._clock.now()
        async with self._uow() as uow:
            # Refused (rolled back, the link unspent) when the account left the address.
            used, account = await consume_email_link(
                uow, self._tokens, token, EmailPurpose.VERIFY, now
            )
            if account.id == signed_in:  # rolled back: the link still confirms
                raise errors.OwnAccountNotDeclined(
                    f"You are signed in to {account.username}, the account this address was "
                    "added to, so it is your account: it cannot be declined (that would take "
                    "the address off it for good). If the address is yours, confirm it on "
                    "the link's page; if it is not, change it on your account page. Nothing "
                    "was changed."
                )
            if account.email_verified:
                raise errors.InvalidInput(
                    "This address is confirmed for that account: its owner confirmed it with "
                    "the emailed link. Nothing was changed."
                )
            await uow.accounts.update(
                replace(account, email=None, email_verified=False, email_shared=False)
            )
            for purpose in EmailPurpose:  # the other links sent to it stop working too
                await uow.email_tokens.consume_all(account.id, purpose, now)
            await uow.declined_addresses.add(account.id, used.email, now)
            await uow.audit.record(
                AuditEvent(AuditKind.EMAIL_DISOWNED, now, account.id, None, {"proof": "link"})
            )
            await uow.commit()
        return account


@dataclass(frozen=True, slots=True)
class DeclineLifted:
    """A decline the operator lifted: the account, and the address as it was matched."""

    account: Account
    address: str


class LiftEmailDecline:
    """The operator lifts a decline (``DisownEmail``): that account may claim the address
    again. For the address's holder who pressed "This is not my account" on their own
    account's link by mistake, and has no other way back (nothing else undoes a decline). On
    the word of the address's holder only: lifted on the account's word, the account's next
    claim sends its holder the emails they declined. Audited (``email_decline_lifted``, naming
    no address, as ``email_disowned`` does not); the account gets no address back (it types
    it again, and confirms it by the emailed link)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, account: AccountId | str, email: str) -> DeclineLifted:
        """``account``: its id, or its username (any case). ``email`` is matched as
        ``normalize_email`` matches it. ``NotFound`` when there is no such account, or no
        decline of the address for it (nothing is written)."""
        address = normalize_email(email)
        if address is None:
            raise errors.InvalidInput("Give the email address whose decline to lift.")
        now = self._clock.now()
        async with self._uow() as uow:
            if isinstance(account, AccountId):
                account_id: AccountId | None = account
            else:
                named = await uow.accounts.get_by_username(normalize_username(account))
                account_id = named.id if named is not None else None
            # Locked as a decline and an email change lock it (``ChangeEmail`` reads the
            # declines under it).
            locked = await uow.accounts.lock(account_id) if account_id is not None else None
            if locked is None:
                raise errors.NotFound(f"There is no TaskFlow account {_named(account)}.")
            if not await uow.declined_addresses.remove(locked.id, address):
                raise errors.NotFound(
                    f"The account {locked.username} (id {locked.id}) has no decline of "
                    f"{address}: nothing was lifted."
                )
            await uow.audit.record(
                AuditEvent(AuditKind.EMAIL_DECLINE_LIFTED, now, locked.id, None, {"via": "cli"})
            )
            await uow.commit()
        return DeclineLifted(locked, address)


def _named(account: AccountId | str) -> str:
    return f"with id {account}" if isinstance(account, AccountId) else f"named {account.strip()!r}"


class ResendVerification:
    """A signed-in person asks for a new confirmation email (rate limited)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, account_id: AccountId, client: str | None = None) -> str:
        now = self._clock.now()
        asker = client_name(client)  # for the address's limits, as in ``SignUp``
        async with self._uow() as uow:
            # Locked before it is read: an email change under way finishes first, and the
            # link goes to the address the account has then.
            account = await uow.accounts.lock(account_id)
            if account is None:
                raise errors.NotSignedIn()
            if account.email is None:
                raise errors.InvalidInput("Your account has no email address. Add one first.")
            if account.email_verified:
                raise errors.InvalidInput("Your email address is already confirmed.")
            if not await within_limits(uow, account_id, EmailKind.VERIFY_EMAIL, now):
                raise errors.TooManyRequests(
                    "We sent you a confirmation email very recently. Check your inbox and spam "
                    "folder, or ask again in a few minutes (one a minute, five an hour)."
                )
            # Then the address's own limit, whichever accounts it had (after the account's
            # lock: see ``recipient_refusal``).
            refused = await recipient_refusal(
                uow, EmailKind.VERIFY_EMAIL, account.email, now, client=asker
            )
            if refused is not None:
                raise errors.TooManyRequests(recipient_limit_message(refused))
            await queue_email(
                uow,
                EmailKind.VERIFY_EMAIL,
                to=account.email,
                account_id=account.id,
                now=now,
                client=asker,
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
        async with self._uow(read_only=True) as uow:
            account = await uow.accounts.get(account_id)
            if account is None:
                raise errors.NotSignedIn()
            latest = await uow.outgoing_emails.latest(account_id, EmailKind.VERIFY_EMAIL)
        if latest is not None and normalize_email(latest.to) != normalize_email(account.email):
            latest = None  # sent to a previous address
        return EmailStatus(account, latest)


@dataclass(frozen=True, slots=True)
class EmailChanged:
    account: Account
    session_token: str  # the session, renewed: the cookie's old token has ended
    # The new address's confirmation email: queued, or withheld because the address had as
    # many as it may get (``RECIPIENT_LIMITS``).
    confirmation_sent: bool = True
    # The same form was sent twice (a double click): the other request made this change, and
    # this one answers that request's token (which its browser may never have received).
    sent_twice: bool = False


class ChangeEmail:
    """A new address starts unconfirmed; the old one (if confirmed) is told, and the account's
    other sessions end. A sensitive change: the address receives password resets.

    The form sent twice (a double click) signed its person out: both requests came with the
    old token, the first renewed the session under a new one that the browser (it had left
    that request for the second) never received. With the password typed into the form, the
    new token is derived from the old one (``session_token_after``), and the second request,
    with the old token, the same address and the right password within
    ``SENT_TWICE_WITHIN``, is answered it. Without the password (a recent proof made the
    change) the second brings nothing a copy of the old cookie lacks: it is signed out, as
    before."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: Passwords,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords

    async def execute(
        self,
        *,
        session_token: str | None,
        new_email: str,
        current_password: str | None,
        client: str | None = None,
    ) -> EmailChanged:
        address = validate_email(new_email)
        try:
            session, account = await prove_identity(
                self._uow,
                self._tokens,
                self._clock,
                self._passwords,
                session_token=session_token,
                current_password=current_password,
            )
        except errors.NotSignedIn:  # renewed by this form sent twice, if by anything
            return await self._sent_twice(session_token, address, current_password)
        if normalize_email(account.email) == address:
            raise errors.InvalidInput("That is already your email address.")

        # The password typed into the form is a proof made now (prove_identity checked it).
        typed = SignInMethod.PASSWORD if current_password and account.password_hash else None
        assert session_token is not None  # noqa: S101 - a session was found by it
        successor = session_token_after(self._tokens, session_token, AFTER_EMAIL_CHANGE)

        async def attempt() -> EmailChanged:
            now = self._clock.now()
            async with self._uow() as uow:
                fresh = await uow.accounts.lock(account.id)
                if fresh is None or fresh.email != account.email:
                    if fresh is not None and normalize_email(fresh.email) == address:
                        # Most often this form sent twice (a double click): the other request
                        # made this change and renewed the session under a token this browser
                        # may not have got (it shows this answer): "try again" is wrong here.
                        # With the password (checked above), it is answered that token.
                        if typed is not None:
                            try:
                                await made_just_now(
                                    uow, self._tokens, successor, now, proved_with=typed
                                )
                            except errors.NotSignedIn:
                                pass
                            else:
                                return EmailChanged(fresh, successor.token, sent_twice=True)
                        raise errors.Conflict(
                            f"Your email address is {address} already: the form was sent "
                            "twice. If you are asked to sign in, sign in again."
                        )
                    raise errors.Conflict("Your email changed meanwhile. Try again.")
                if await uow.sessions.get(session.digest) is None:
                    raise errors.NotSignedIn()  # the session asking ended meanwhile
                # Its holder said this account is not theirs (``DisownEmail``): not again.
                # Read under the account's lock, which a decline takes too.
                if await uow.declined_addresses.declined(account.id, address):
                    raise errors.EmailDeclined()
                if not await within_limits(
                    uow,
                    account.id,
                    EmailKind.VERIFY_EMAIL,
                    now,
                    CHANGE_LIMITS,
                    refusals=AuditKind.EMAIL_CHANGE_REFUSED,
                ):
                    raise errors.TooManyRequests(
                        "You changed your email or asked for confirmation links too often in "
                        "the last hour. Try again later."
                    )
                # Only an account that confirmed it keeps the address from others: until then
                # each is a claim, and the one that proves it takes it (``take_address``).
                holders = await uow.accounts.find_by_email(address)
                if confirmed_elsewhere(holders, account.id):
                    # Kept (committed), so that it counts against the limit above.
                    await uow.audit.record(
                        AuditEvent(
                            AuditKind.EMAIL_CHANGE_REFUSED,
                            now,
                            account.id,
                            None,
                            {"reason": errors.EmailTaken.code},
                        )
                    )
                    await uow.commit()
                    raise errors.EmailTaken("Another account uses this email address.")
                updated = replace(fresh, email=address, email_verified=False, email_shared=False)
                await uow.accounts.update(updated)  # Conflict if a racer took the address
                for purpose in EmailPurpose:  # links sent to the old address stop working
                    await uow.email_tokens.consume_all(account.id, purpose, now)
                await uow.sessions.remove_for_account(account.id, keep=session.digest)
                # And this one under a new token: a copy of its cookie ends with the others.
                renewed = await renew_session(
                    uow,
                    self._tokens,
                    session,
                    now,
                    proved_with=typed,
                    secret=successor if typed is not None else None,
                )
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
                # Last, as it locks the address; confirmed by another account meanwhile, it
                # is refused as above (the next attempt says so). Past the address's limit
                # the change is made all the same, without the email (the account page then
                # offers to ask again).
                if await claim_refused(uow, address, account.id):
                    raise errors.Conflict()
                sent = await queue_to_unproved(
                    uow,
                    EmailKind.VERIFY_EMAIL,
                    to=address,
                    account_id=account.id,
                    now=now,
                    client=client_name(client),
                )
                await uow.commit()
            return EmailChanged(updated, renewed, confirmation_sent=sent)

        # A concurrent change to the same address makes the loser's write a Conflict; the
        # next attempt sees the winner and says the address is taken.
        return await retry_on_conflict(attempt)

    async def _sent_twice(
        self, session_token: str | None, address: str, current_password: str | None
    ) -> EmailChanged:
        """The answer to a request whose session token had ended: when a change to
        ``address`` confirmed with the password renewed it in the last ``SENT_TWICE_WITHIN``
        (this form sent twice) and ``current_password`` is right (checked under the session's
        throttle: a copy of the old cookie may be guessing), that session's token. Otherwise,
        as for any ended session, ``NotSignedIn``."""
        if not current_password or not plausible_token(session_token):
            raise errors.NotSignedIn()
        successor = session_token_after(self._tokens, session_token, AFTER_EMAIL_CHANGE)
        async with self._uow(read_only=True) as uow:
            session, account = await made_just_now(
                uow, self._tokens, successor, self._clock.now(), proved_with=SignInMethod.PASSWORD
            )
        if normalize_email(account.email) != address or account.password_hash is None:
            raise errors.NotSignedIn()  # another change: the old token proves nothing
        if not await self._passwords.check(
            signed_in_key(session), account.password_hash, current_password
        ):
            raise errors.NotSignedIn()
        return EmailChanged(account, successor.token, sent_twice=True)
