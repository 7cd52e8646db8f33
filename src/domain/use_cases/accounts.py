"""Password accounts and sessions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    EMAIL_MAX,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    EmailKind,
    EmailPurpose,
    Session,
    SignInMethod,
    clean_text,
    validate_email,
    validate_username,
)
from domain.policies import identity_recently_proved
from domain.ports import Clock, IssuedSecret, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._addresses import claim_refused, confirmed_elsewhere
from domain.use_cases._email_links import client_name, queue_to_unproved
from domain.use_cases._passwords import (
    Passwords,
    account_key,
    new_device_token,
    signed_in_key,
    throttle_key,
    trusted_device,
)
from domain.use_cases._shared import (
    AFTER_PASSWORD_CHANGE,
    NO_COOKIES,
    SENT_TWICE_WITHIN,
    SESSION_TTL,
    BrowserCookies,
    made_just_now,
    plausible_token,
    queue_notice,
    renew_session,
    retry_on_conflict,
    session_token_after,
    sign_out_browser,
    signed_in,
    start_session,
    still_the_password,
    stop_sign_ins_under_way,
)
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.webhooks import account_created

# What names a login in a failed sign-in's audit event and in its throttle: an HMAC under the
# server's key, never a plain digest that a copy of the database gives back to a dictionary.
_LOGIN_PURPOSE = "sign-in-login"


def keyed_login(tokens: TokenIssuer, login: str) -> str:
    """The name of ``login`` (as typed at sign-in) in a failed sign-in's audit event and in
    its throttle: an HMAC under the server's key, so that only the server (or an operator
    holding its key: ``taskflow-link audit --login``) finds a login's events."""
    return tokens.derive(login.strip().lower(), _LOGIN_PURPOSE)


@dataclass(frozen=True, slots=True)
class SignedIn:
    account: Account
    session_token: str
    # A password sign-in's device token: this browser is trusted with this account from now
    # on (its wrong passwords have a throttle of their own; see ``throttle_key``).
    device_token: str | None = None
    # A sign-up's confirmation email: queued, or withheld because its address had as many as
    # it may get (``RECIPIENT_LIMITS``). Other sign-ins send none.
    confirmation_sent: bool = True
    # A sign-up form sent twice (a double click): the other request made the account, and
    # this one answers that request's session (which its browser may never have received).
    sent_twice: bool = False


class _PasswordUseCase:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: Passwords,
        session_ttl: timedelta = SESSION_TTL,
        *,
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords
        self._session_ttl = session_ttl
        self._webhooks = webhooks  # for the use cases that create accounts or unlink

    async def _password_session(
        self,
        uow: UnitOfWork,
        account_id: AccountId,
        now: datetime,
        secret: IssuedSecret | None = None,
    ) -> str:
        return await start_session(
            uow,
            self._tokens,
            account_id,
            now,
            self._session_ttl,
            method=SignInMethod.PASSWORD,
            secret=secret,
        )


# What the session a sign-up starts is derived for, from the form's secret and the new
# account's id (see ``session_token_after``).
_SESSION_OF_SIGN_UP = "session-of-sign-up"


def _sign_up_session(tokens: TokenIssuer, form_secret: str, account_id: AccountId) -> IssuedSecret:
    return session_token_after(tokens, form_secret, f"{_SESSION_OF_SIGN_UP}:{account_id}")


class SignUp(_PasswordUseCase):
    """A new account, signed in.

    The form sent twice (a double click) left its person signed out: the first request made
    the account and a session whose cookie the browser (it had left that request for the
    second) never received, and the second found the username taken. With a
    ``form_secret``, the session's token is derived from it and the account's id
    (``session_token_after``), and the second request, with the same secret, name, address
    and password (checked under the sign-in's throttle) within ``SENT_TWICE_WITHIN`` of the
    first, is answered that session. The web app's secret is the form's CSRF cookie: both
    requests of a double click come with it, another browser has its own (and a copy of it
    proves nothing without the password). Without the very session the secret derives, no
    password is checked: the form tests no password of any account."""

    async def execute(
        self,
        *,
        username: str,
        email: str,
        password: str,
        client: str | None = None,
        form_secret: str | None = None,
        browser: BrowserCookies = NO_COOKIES,
    ) -> SignedIn:
        """``client``: who asks (the web app's name for its budget: an IPv4 address, an IPv6
        /64 network), for the confirmation email's limits (``RECIPIENT_LIMITS``).
        ``form_secret``: what the same form sent twice comes with, and nobody else's does
        (see the class). ``browser``: the session this browser had and the email-linking
        offer waiting in it, which end in the account's transaction (see ``SignOut``,
        ``sign_out_browser``; the form sent twice: the first request ended them, both coming
        with the same cookies), with what the Discord sign-ins bound to it (its binding
        cookie's values) made without their answer reaching it."""
        name = validate_username(username)
        address = validate_email(email)
        password_hash = await self._passwords.new_hash(password, related=(name, address))
        now = self._clock.now()
        account = Account(AccountId.new(), name, address, False, password_hash, now)
        secret = form_secret if plausible_token(form_secret) else None
        made = _sign_up_session(self._tokens, secret, account.id) if secret else None

        async def attempt() -> tuple[str, bool]:
            async with self._uow() as uow:
                # First, before any lock: see ``stop_sign_ins_under_way``.
                await stop_sign_ins_under_way(uow, self._tokens, browser, now)
                if await uow.accounts.get_by_username(name) is not None:
                    raise errors.UsernameTaken()
                # Taken only by an account that confirmed it. Until then each account with it
                # only claims it, and the one that proves it takes it from the others
                # (``take_address``): someone else's sign-up with this person's address
                # cannot keep them from signing up with it.
                if confirmed_elsewhere(await uow.accounts.find_by_email(address), None):
                    raise errors.EmailTaken()
                await uow.accounts.add(account)  # Conflict if a racer took the name or email
                await uow.audit.record(
                    AuditEvent(
                        AuditKind.ACCOUNT_CREATED, now, account.id, None, {"via": "password"}
                    )
                )
                await self._webhooks.publish(uow, account_created(account, via="password"))
                token = await self._password_session(uow, account.id, now, made)
                await sign_out_browser(  # marked first, above
                    uow, self._tokens, browser, now, keeping=token
                )
                # Last, as it locks the address: confirmed by another account meanwhile (the
                # proof locked it first), it is refused as above. Past the address's limit
                # the account is made all the same, without the email: a refusal would tell
                # about the address what the form does not otherwise.
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
            return token, sent

        # Of simultaneous sign-ups with one name or address, the database lets one in; the
        # others run again, see the winner and get "taken", never a second account.
        try:
            token, sent = await retry_on_conflict(attempt)
        except errors.UsernameTaken:
            if secret is None:
                raise
            return await self._sent_twice(name, address, password, secret)
        return SignedIn(
            account, token, new_device_token(self._tokens, account), confirmation_sent=sent
        )

    async def _sent_twice(
        self, name: str, address: str, password: str, form_secret: str
    ) -> SignedIn:
        """For a request that found ``name`` taken: when its account was made by this form
        (its session, derived from ``form_secret``, started in the last
        ``SENT_TWICE_WITHIN``) with this address and this password (checked under the
        sign-in's throttle), that session; otherwise ``UsernameTaken``."""
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            account = await uow.accounts.get_by_username(name)
            if account is None:  # deleted meanwhile
                raise errors.UsernameTaken()
            made = _sign_up_session(self._tokens, form_secret, account.id)
            try:
                session, _ = await made_just_now(
                    uow, self._tokens, made, now, proved_with=SignInMethod.PASSWORD
                )
            except errors.NotSignedIn:
                raise errors.UsernameTaken() from None
            # What the first request said of the confirmation email: queued, or withheld.
            sent = await uow.outgoing_emails.latest(account.id, EmailKind.VERIFY_EMAIL) is not None
        if (
            session.account_id != account.id
            or now - account.created_at > SENT_TWICE_WITHIN
            or account.email != address
            or account.password_hash is None
        ):
            raise errors.UsernameTaken()
        try:
            right = await self._passwords.check(
                account_key(account.id), account.password_hash, password
            )
        except errors.PasswordThrottled:
            right = False  # the sign-in form says so, and offers a reset
        if not right:
            raise errors.UsernameTaken()
        device = new_device_token(self._tokens, account)
        return SignedIn(account, made.token, device, confirmation_sent=sent, sent_twice=True)


class SignIn(_PasswordUseCase):
    """Sign in with a username or an email and a password.

    Wrong passwords are throttled per account (see ``Passwords.check``), or per trusted
    device when the browser brings a ``device_token`` an earlier sign-in to this account gave
    it (someone else's guesses then do not lock its owner out), and audited with the login's
    digest and the client's address; a hash made with older parameters is replaced."""

    async def execute(
        self,
        *,
        login: str,
        password: str,
        client_address: str | None = None,
        device_token: str | None = None,
        browser: BrowserCookies = NO_COOKIES,
    ) -> SignedIn:
        """``browser``: the session this browser had and the email-linking offer waiting in
        it, which end in the sign-in's transaction (see ``SignOut``, ``sign_out_browser``),
        with what the Discord sign-ins bound to it (its binding cookie's values) made without
        their answer reaching it."""
        login = login.strip()
        if not login or clean_text(login, EMAIL_MAX) != login:  # too long, control characters
            raise errors.InvalidCredentials()
        by_email = False
        async with self._uow(read_only=True) as uow:
            account = await uow.accounts.get_by_username(login.lower())
            if account is None and "@" in login:
                matches = await uow.accounts.find_by_email(login)
                # The account that confirmed the address, else the only one that claims it
                # (several claims: each signs in with its username).
                matches = [m for m in matches if m.email_verified] or matches
                account = matches[0] if len(matches) == 1 else None
                by_email = True
        # Keyed: a login field sometimes holds a password (typed into the wrong box), and
        # this names the login in the audit trail and the throttles (Redis).
        login_digest = keyed_login(self._tokens, login)
        password_hash = account.password_hash if account else None
        if account is None:
            key = f"login:{login_digest}"
        else:
            key = throttle_key(self._tokens, account, device_token, by_email=by_email)
        right = await self._passwords.check(key, password_hash, password)  # unknown: same work
        if account is None or not right:
            await self._audit_failure(account, login_digest, client_address)
            raise errors.InvalidCredentials()
        assert password_hash is not None  # noqa: S101 - a right password has a hash

        async def start(checked: str) -> tuple[str, Account]:
            """The session's token, and the account as stored now."""
            rehashed = await self._passwords.rehash_if_outdated(checked, password)
            now = self._clock.now()
            async with self._uow() as uow:
                # First, before any lock: see ``stop_sign_ins_under_way``.
                await stop_sign_ins_under_way(uow, self._tokens, browser, now)
                fresh = await still_the_password(uow, account.id, checked)
                if rehashed is not None:
                    fresh = replace(fresh, password_hash=rehashed)
                    await uow.accounts.update(fresh)
                token = await self._password_session(uow, account.id, now)
                await sign_out_browser(uow, self._tokens, browser, now)
                await uow.commit()
            return token, fresh

        made, stored = await self._passwords.while_right(password_hash, password, start)
        if not trusted_device(self._tokens, stored, device_token):
            # New, or ended meanwhile: its hash was replaced, or "sign out everywhere".
            device_token = new_device_token(self._tokens, stored)
        return SignedIn(account, made, device_token)

    async def _audit_failure(
        self, account: Account | None, login_digest: str, client_address: str | None
    ) -> None:
        async with self._uow() as uow:
            await uow.audit.record(
                AuditEvent(
                    AuditKind.SIGN_IN_FAILED,
                    self._clock.now(),
                    account.id if account else None,
                    detail={"login": login_digest, "client": client_address or "unknown"},
                )
            )
            await uow.commit()


@dataclass(frozen=True, slots=True)
class PasswordSet:
    account: Account
    # For the browser that chose the password: the new hash ended every device token, its
    # own too, and without one a stranger's guesses would lock it out again.
    device_token: str
    session_token: str  # its session, renewed: a copy of its old cookie ends with the others
    # The same form was sent twice (a double click): the other request saved this password,
    # and this one answers that request's token (which its browser may never have received).
    sent_twice: bool = False


class SetPassword(_PasswordUseCase):
    """Set or change the password. Changing one needs the current one; setting a first one
    (an account made by Discord sign-in) needs a recent Discord proof. Other sessions end, and
    so do the account's reset links, sent or still queued.

    The form sent twice (a double click) signed its person out: both requests came with the
    old token, the first renewed the session under a new one that the browser (it had left
    that request for the second) never received. The new token is derived from the old one
    (``session_token_after``), and the second request, with the old token and the very
    password the first saved (the account's password now, a proof of its own) within
    ``SENT_TWICE_WITHIN``, is answered it. Another new password is another change."""

    async def execute(
        self,
        *,
        session_token: str | None,
        new_password: str,
        current_password: str | None,
    ) -> PasswordSet:
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            try:
                session, account = await signed_in(uow, self._tokens, session_token, now)
                ended = False
            except errors.NotSignedIn:  # renewed by this form sent twice, if by anything
                session, account = await self._saved_just_now(uow, session_token, now)
                ended = True
        if ended:
            return await self._sent_twice(session_token, session, account, new_password)
        related = (account.username, account.email or "")
        self._passwords.refuse_if_weak(new_password, related=related)
        if account.password_hash is not None:
            if not await self._passwords.check(
                signed_in_key(session),
                account.password_hash,
                current_password or "",
            ):
                raise errors.InvalidCredentials("Your current password is not right.")
        elif not identity_recently_proved(session, account, now):
            raise errors.ReauthenticationRequired()
        new_hash = await self._passwords.new_hash(new_password, related=related)
        assert session_token is not None  # noqa: S101 - a session was found by it
        successor = session_token_after(self._tokens, session_token, AFTER_PASSWORD_CHANGE)
        try:
            return await self._save(session, account, new_hash, successor)
        except errors.PasswordChanged as changed:  # told apart outside the lock: hashing is slow
            if changed.password_hash is not None and await self._passwords.matches(
                changed.password_hash, new_password
            ):
                # Most often this form sent twice: the other request saved this password.
                async with self._uow(read_only=True) as uow:
                    try:
                        saved, account = await made_just_now(
                            uow,
                            self._tokens,
                            successor,
                            self._clock.now(),
                            proved_with=SignInMethod.PASSWORD,
                        )
                    except errors.NotSignedIn:
                        saved = None
                if saved is not None and saved.account_id == session.account_id:
                    device = new_device_token(self._tokens, account)
                    return PasswordSet(account, device, successor.token, sent_twice=True)
            raise await self._changed_meanwhile(changed.password_hash, new_password) from None

    async def _saved_just_now(
        self, uow: UnitOfWork, session_token: str | None, now: datetime
    ) -> tuple[Session, Account]:
        """The session that ``session_token`` was renewed into by a password change in the
        last ``SENT_TWICE_WITHIN`` (and has kept since), or ``NotSignedIn``."""
        if not plausible_token(session_token):
            raise errors.NotSignedIn()
        successor = session_token_after(self._tokens, session_token, AFTER_PASSWORD_CHANGE)
        return await made_just_now(
            uow, self._tokens, successor, now, proved_with=SignInMethod.PASSWORD
        )

    async def _sent_twice(
        self, session_token: str | None, session: Session, account: Account, new_password: str
    ) -> PasswordSet:
        """The answer to the second request of a form whose first saved a password and
        renewed the session (``session``, found by ``_saved_just_now``): its token, if
        ``new_password`` is that password (checked under the session's throttle: a copy of
        the old cookie may be guessing). Otherwise, as for any ended session,
        ``NotSignedIn``: the old token proves nothing, and tells nothing of the password."""
        assert session_token is not None  # noqa: S101 - a session was found after it
        if account.password_hash is None or not await self._passwords.check(
            signed_in_key(session), account.password_hash, new_password
        ):
            raise errors.NotSignedIn()
        successor = session_token_after(self._tokens, session_token, AFTER_PASSWORD_CHANGE)
        return PasswordSet(
            account, new_device_token(self._tokens, account), successor.token, sent_twice=True
        )

    async def _save(
        self, session: Session, account: Account, new_hash: str, successor: IssuedSecret
    ) -> PasswordSet:
        """The new hash, if the password is still the one checked (``PasswordChanged``
        otherwise); other sessions and reset links end, this session is renewed."""
        now = self._clock.now()
        async with self._uow() as uow:
            fresh = await uow.accounts.lock(account.id)
            if fresh is None or fresh.password_hash != account.password_hash:
                raise errors.PasswordChanged(fresh.password_hash if fresh is not None else None)
            if await uow.sessions.get(session.digest) is None:
                raise errors.NotSignedIn()  # the session asking ended meanwhile
            updated = replace(fresh, password_hash=new_hash, device_epoch=fresh.device_epoch + 1)
            await uow.accounts.update(updated)
            # A reset link sent before (a mailbox read once, a forwarded email) would undo the
            # new password and sign its owner out: it ends, as the other sessions do, and so
            # does one still queued (the device epoch moved on).
            await uow.email_tokens.consume_all(account.id, EmailPurpose.RESET, now)
            await uow.sessions.remove_for_account(account.id, keep=session.digest)
            # Choosing the password proves knowing it: this session may go on for a while,
            # under a new token (a copy of its cookie ends with the other sessions).
            renewed = await renew_session(
                uow,
                self._tokens,
                session,
                now,
                proved_with=SignInMethod.PASSWORD,
                secret=successor,
            )
            await uow.audit.record(AuditEvent(AuditKind.PASSWORD_SET, now, account.id))
            await queue_notice(uow, updated, EmailKind.PASSWORD_CHANGED, now)
            await uow.commit()
        return PasswordSet(updated, new_device_token(self._tokens, updated), renewed)

    async def _changed_meanwhile(
        self, changed_to: str | None, new_password: str
    ) -> errors.Conflict:
        """The refusal of a change that found the password changed since it was checked. Most
        often the same form sent twice (a double click): the other request saved this very
        password, and renewed the session under a token that browser may never have received
        (it shows this answer), so "try again" would be wrong words: the old password is no
        longer right. (This request proved the old password: it may learn that the new one is
        the one it chose.)"""
        if changed_to is not None and await self._passwords.matches(changed_to, new_password):
            return errors.Conflict(
                "Your new password is saved already: the form was sent twice. If you are "
                "asked to sign in, use the new password."
            )
        return errors.Conflict("Your password changed meanwhile. Try again.")
