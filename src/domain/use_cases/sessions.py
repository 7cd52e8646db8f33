"""Web sessions: who is signed in, the account page's list of sessions, signing out (here, one
elsewhere, everywhere), and proving identity again before a sensitive change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain import errors
from domain.model import Account, AuditEvent, AuditKind, EmailPurpose, Session, SignInMethod
from domain.policies import identity_recently_proved
from domain.ports import Clock, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._passwords import (
    Passwords,
    new_device_token,
    signed_in_key,
    trusted_device,
)
from domain.use_cases._shared import (
    SESSION_SUCCESSOR,
    BrowserCookies,
    browser_sessions,
    digest_of,
    made_just_now,
    plausible_token,
    renew_session,
    session_token_after,
    sign_out_browser,
    signed_in,
    spend_browser_offers,
    stop_sign_ins_under_way,
)

# "Last used" is written at most this often: reading who is signed in must not cost a write
# on every request.
LAST_SEEN_PRECISION = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class SignedInAs:
    session: Session
    account: Account
    recently_proved: bool  # a sensitive change would go through without asking again


class CurrentSession:
    """Who holds this session cookie, if anyone (expired sessions count as none)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, session_token: str | None) -> SignedInAs | None:
        if digest_of(self._tokens, session_token) is None:
            return None
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:  # on every page: takes no write lock
            try:
                session, account = await signed_in(uow, self._tokens, session_token, now)
            except errors.NotSignedIn:
                return None
        if session.last_seen_at is None or now - session.last_seen_at >= LAST_SEEN_PRECISION:
            session = replace(session, last_seen_at=now)
            async with self._uow() as uow:
                await uow.sessions.touch(session.digest, now)
                await uow.commit()
        return SignedInAs(session, account, identity_recently_proved(session, account, now))


class SignOut:
    """The session of this browser's cookie ends, and so does any session a form renewed it
    into whose answer never reached the browser (sent twice: see ``successors_of``), which
    would otherwise live on, proved, with nobody signing it out: one renewed in the last
    ``SENT_TWICE_WITHIN``, the edge included (the window the second request of a form sent
    twice is answered it in, ``made_just_now``). Past it, the successor is held by the browser
    that got it, and an old cookie (a copy a thief kept, the very one its owner changed the
    password against) must not sign that browser out.

    The email-linking offer waiting in this browser (its cookie, ``proposal_token``) is
    spent with it: its cookie is expired wherever a session ends, and the Discord sign-in's
    callback that made it, loaded again within the minute (the next person at a shared
    computer going back in the history), would otherwise set that cookie again (its token
    derived from the round trip's binding value: see ``FinishDiscordConfirmation``). So are
    the offers of the Discord sign-ins bound to this browser (its ``bindings``) whose answer, with
    the cookie, never reached it."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(
        self, browser: BrowserCookies, *, keeping: str | None = None, handed_over: bool = False
    ) -> None:
        """``browser``: its session, its offer and its binding cookie's values (a Discord
        sign-in bound to one of them whose answer never reached the browser in the last
        ``SENT_TWICE_WITHIN``, ``sign_in_successors``, ends too). ``keeping``: the session
        the request answers (a form sent twice is answered the one its first request made),
        which goes on. No session token: only the offer ends (and the sessions above).
        ``handed_over``: ``keeping`` is a Discord sign-in's, handed over by its callback
        loaded again; as that sign-in's own transaction, this marks none of the browser's
        Discord round trips (``stop_sign_ins_under_way``): another tab's finishes."""
        if not browser.names_anything():  # no digest worked out: sign_out_browser does
            return
        now = self._clock.now()
        async with self._uow() as uow:
            # First, before any lock: see ``stop_sign_ins_under_way``.
            marked = not handed_over and await stop_sign_ins_under_way(
                uow, self._tokens, browser, now
            )
            if await sign_out_browser(uow, self._tokens, browser, now, keeping=keeping) or marked:
                await uow.commit()


@dataclass(frozen=True, slots=True)
class SessionList:
    current: Session
    sessions: Sequence[Session]  # live ones, newest first, the current one included


class ListSessions:
    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, session_token: str | None) -> SessionList:
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            session, account = await signed_in(uow, self._tokens, session_token, now)
            every = await uow.sessions.list_for_account(account.id)
        return SessionList(session, [s for s in every if now < s.expires_at])


class EndSession:
    """ "Sign out" next to one session on the account page (a device left signed in)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, browser: BrowserCookies, session_id: str) -> bool:
        """``True`` when the session was ended; ending the current one (``browser``'s
        session) signs out here (see ``SignOut``: the sessions a form sent twice renewed it
        into, the email-linking offer waiting in this browser, and what the Discord sign-ins
        bound to it made without their answer reaching it, end with it), in the same
        transaction."""
        try:
            wanted = uuid.UUID(session_id)
        except ValueError:
            raise errors.NotFound("There is no such session.") from None
        now = self._clock.now()
        async with self._uow() as uow:
            session, account = await signed_in(uow, self._tokens, browser.session_token, now)
            if wanted == session.id:  # first, before any lock: see stop_sign_ins_under_way
                await stop_sign_ins_under_way(uow, self._tokens, browser, now)
                # Before its session: a sign-out in a browser with copies of its cookies
                # spends them first (see ``browser_offers``).
                await spend_browser_offers(uow, self._tokens, browser, now)
                # Its own session among the others its cookies name, as one set (see
                # ``lock``), before it ends by its id.
                await uow.sessions.lock(browser_sessions(self._tokens, browser))
            if not await uow.sessions.remove_by_id(account.id, wanted):
                raise errors.NotFound("There is no such session (it may have ended already).")
            await uow.audit.record(
                AuditEvent(AuditKind.SIGNED_OUT, now, account.id, detail={"session": "other"})
            )
            if wanted == session.id:  # marked and spent above
                await sign_out_browser(uow, self._tokens, browser, now, offers_spent=True)
            await uow.commit()
        return wanted == session.id


@dataclass(frozen=True, slots=True)
class SignedOutEverywhere:
    ended: int  # sessions
    # The browser that asked, when it was a trusted device: a new token (the old one ended
    # with the others), so that strangers' guesses do not lock out the owner who just used
    # the button. ``None``: it was not trusted, and is not now.
    device_token: str | None


class EndAllSessions:
    """ "Sign out everywhere": every session of the account ends, this one included, and no
    other browser is a trusted device for its password any more (a lost device, or the next
    person at a shared computer, keeps no budget of password tries of its own), and no reset
    link sent or queued before works (it would sign in whoever holds it)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(
        self, browser: BrowserCookies, device_token: str | None = None
    ) -> SignedOutEverywhere:
        """``device_token``: the asking browser's (see ``SignIn``). ``browser``: its session,
        and the email-linking offer waiting in it, which ends too (see ``SignOut``), in the
        same transaction, as do the proposals of the Discord sign-ins bound to it (its
        binding cookie's values)."""
        now = self._clock.now()
        kept = None
        async with self._uow() as uow:
            # First, before any lock: see ``stop_sign_ins_under_way``.
            await stop_sign_ins_under_way(uow, self._tokens, browser, now)
            _, account = await signed_in(uow, self._tokens, browser.session_token, now)
            fresh = await uow.accounts.lock(account.id)
            # Before the sessions (see ``browser_offers``): a sign-out in a browser with
            # copies of its cookies spends them first, then ends one of these.
            await spend_browser_offers(uow, self._tokens, browser, now)
            if fresh is not None:
                updated = replace(fresh, device_epoch=fresh.device_epoch + 1)
                await uow.accounts.update(updated)
                if trusted_device(self._tokens, fresh, device_token):
                    kept = new_device_token(self._tokens, updated)
            # The queued ones are cancelled when sent: the device epoch moved on.
            await uow.email_tokens.consume_all(account.id, EmailPurpose.RESET, now)
            # The account's sessions and the browser's, as one set (see ``lock``).
            await uow.sessions.lock(browser_sessions(self._tokens, browser), account_id=account.id)
            ended = await uow.sessions.remove_for_account(account.id)
            await uow.audit.record(
                AuditEvent(AuditKind.SIGNED_OUT, now, account.id, detail={"session": "all"})
            )
            await sign_out_browser(uow, self._tokens, browser, now, offers_spent=True)  # marked
            await uow.commit()
        return SignedOutEverywhere(ended, kept)


@dataclass(frozen=True, slots=True)
class IdentityConfirmed:
    account: Account
    session_token: str  # the session, renewed: the cookie's old token has ended
    # The same form was sent twice (a double click): the other request confirmed, and this
    # one answers that confirmation's token (which its own browser may never have received).
    sent_twice: bool = False


class ConfirmPassword:
    """Prove again, with the account's password, before a sensitive change ("sudo mode").
    The session goes on under a new token (see ``renew_session``).

    The form sent twice (a double click) signed its person out: both requests came with the
    old token, the first renewed the session, and the browser, which had left that request
    for the second, never received the new token; the second found the old one ended. The new
    token is derived from the old one (``session_token_after``, ``SESSION_SUCCESSOR``), so
    the second request, with the old token and the right password within
    ``SENT_TWICE_WITHIN`` of the confirmation, is answered that same token: one confirmation,
    still signed in. A copy of the old cookie still rides on nothing without the password."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: Passwords,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords

    async def execute(self, *, session_token: str | None, password: str) -> IdentityConfirmed:
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            try:
                session, account = await signed_in(uow, self._tokens, session_token, now)
            except errors.NotSignedIn:
                session, account = await self._confirmed_just_now(uow, session_token, now)
        if account.password_hash is None:
            raise errors.InvalidInput(
                "Your account has no password: confirm it is you with Discord instead."
            )
        if not await self._passwords.check(signed_in_key(session), account.password_hash, password):
            raise errors.InvalidCredentials("Your password is not right.")
        assert session_token is not None  # noqa: S101 - a session was found by it
        successor = session_token_after(self._tokens, session_token, SESSION_SUCCESSOR)
        if session.digest == successor.digest:  # the other request confirmed already
            return IdentityConfirmed(account, successor.token, sent_twice=True)
        now = self._clock.now()
        try:
            async with self._uow() as uow:
                renewed = await renew_session(
                    uow,
                    self._tokens,
                    session,
                    now,
                    proved_with=SignInMethod.PASSWORD,
                    secret=successor,
                )
                await uow.commit()
        except errors.NotSignedIn:  # renewed meanwhile: by the other request, if by any
            async with self._uow(read_only=True) as uow:
                _, account = await self._confirmed_just_now(uow, session_token, now)
            return IdentityConfirmed(account, successor.token, sent_twice=True)
        return IdentityConfirmed(account, renewed)

    async def _confirmed_just_now(
        self, uow: UnitOfWork, session_token: str | None, now: datetime
    ) -> tuple[Session, Account]:
        """The session and account that ``session_token`` was confirmed into with the
        password in the last ``SENT_TWICE_WITHIN`` (and has kept since), or ``NotSignedIn``."""
        if not plausible_token(session_token):
            raise errors.NotSignedIn()
        successor = session_token_after(self._tokens, session_token, SESSION_SUCCESSOR)
        return await made_just_now(
            uow, self._tokens, successor, now, proved_with=SignInMethod.PASSWORD
        )
