"""Password accounts and sessions."""

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
    SignInMethod,
    validate_email,
    validate_username,
)
from domain.policies import identity_recently_proved
from domain.ports import Clock, PasswordHasher, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._shared import (
    SESSION_TTL,
    queue_email,
    queue_notice,
    retry_on_conflict,
    signed_in,
    start_session,
)

MIN_PASSWORD = 8  # NIST SP 800-63B minimum; length beats composition rules
MAX_PASSWORD = 1024  # bounds the hashing work an attacker can ask for


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise errors.WeakPassword(f"Use a password of at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise errors.WeakPassword(f"Use a password of at most {MAX_PASSWORD} characters.")
    return password


@dataclass(frozen=True, slots=True)
class SignedIn:
    account: Account
    session_token: str


class _PasswordUseCase:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: PasswordHasher,
        session_ttl: timedelta = SESSION_TTL,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords
        self._session_ttl = session_ttl


class SignUp(_PasswordUseCase):
    async def execute(self, *, username: str, email: str, password: str) -> SignedIn:
        name = validate_username(username)
        address = validate_email(email)
        password_hash = await self._passwords.hash(validate_password(password))
        now = self._clock.now()
        account = Account(AccountId.new(), name, address, False, password_hash, now)

        async def attempt() -> str:
            async with self._uow() as uow:
                if await uow.accounts.get_by_username(name) is not None:
                    raise errors.UsernameTaken()
                if await uow.accounts.find_by_email(address):
                    raise errors.EmailTaken()
                await uow.accounts.add(account)  # Conflict if a racer took the name or email
                await uow.audit.record(
                    AuditEvent(
                        AuditKind.ACCOUNT_CREATED, now, account.id, None, {"via": "password"}
                    )
                )
                await queue_email(
                    uow, EmailKind.VERIFY_EMAIL, to=address, account_id=account.id, now=now
                )
                token = await start_session(
                    uow,
                    self._tokens,
                    account.id,
                    now,
                    self._session_ttl,
                    method=SignInMethod.PASSWORD,
                )
                await uow.commit()
            return token

        # Of simultaneous sign-ups with one name or address, the database lets one in; the
        # others run again, see the winner and get "taken", never a second account.
        token = await retry_on_conflict(attempt)
        return SignedIn(account, token)


class SignIn(_PasswordUseCase):
    """Sign in with a username or an email and a password."""

    async def execute(self, *, login: str, password: str) -> SignedIn:
        login = login.strip()
        if not login or len(password) > MAX_PASSWORD:
            raise errors.InvalidCredentials()
        async with self._uow() as uow:
            account = await uow.accounts.get_by_username(login.lower())
            if account is None and "@" in login:
                matches = await uow.accounts.find_by_email(login)
                account = matches[0] if len(matches) == 1 else None
        if account is None or account.password_hash is None:
            await self._passwords.burn(password)  # same time as a real check
            raise errors.InvalidCredentials()
        if not await self._passwords.verify(account.password_hash, password):
            raise errors.InvalidCredentials()
        async with self._uow() as uow:
            token = await start_session(
                uow,
                self._tokens,
                account.id,
                self._clock.now(),
                self._session_ttl,
                method=SignInMethod.PASSWORD,
            )
            await uow.commit()
        return SignedIn(account, token)


class SetPassword(_PasswordUseCase):
    """Set or change the password. Changing one needs the current one; setting a first one
    (an account made by Discord sign-in) needs a recent Discord proof. Other sessions end."""

    async def execute(
        self,
        *,
        session_token: str | None,
        new_password: str,
        current_password: str | None,
    ) -> Account:
        validate_password(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            session, account = await signed_in(uow, self._tokens, session_token, now)
        if account.password_hash is not None:
            if not (
                current_password is not None
                and await self._passwords.verify(account.password_hash, current_password)
            ):
                raise errors.InvalidCredentials("Your current password is not right.")
        elif not identity_recently_proved(session, account, now):
            raise errors.ReauthenticationRequired()
        new_hash = await self._passwords.hash(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            fresh = await uow.accounts.lock(account.id)
            if fresh is None or fresh.password_hash != account.password_hash:
                raise errors.Conflict("Your password changed meanwhile. Try again.")
            updated = replace(fresh, password_hash=new_hash)
            await uow.accounts.update(updated)
            await uow.sessions.remove_for_account(account.id, keep=session.digest)
            # Choosing the password proves knowing it: this session may go on for a while.
            await uow.sessions.update(
                replace(session, proved_at=now, proved_with=SignInMethod.PASSWORD)
            )
            await uow.audit.record(AuditEvent(AuditKind.PASSWORD_SET, now, account.id))
            await queue_notice(uow, updated, EmailKind.PASSWORD_CHANGED, now)
            await uow.commit()
        return updated
