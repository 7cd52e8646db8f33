"""Sign in with Discord and link Discord from the account page (OAuth2 + PKCE)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    ONE_TIME_SECRET_TTL,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    AuthPurpose,
    DiscordProfile,
    PendingLogin,
)
from domain.policies import (
    CreateAccount,
    LinkAndSignIn,
    Refuse,
    SignIn,
    choose_username,
    decide_login,
    pkce_challenge,
    safe_destination,
)
from domain.ports import Clock, DiscordOAuth, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._secrets import use_secret
from domain.use_cases._shared import (
    SESSION_TTL,
    apply_link,
    plausible_token,
    retry_on_conflict,
    start_session,
)

SCOPES: dict[AuthPurpose, tuple[str, ...]] = {
    AuthPurpose.LOGIN: ("identify", "email"),
    AuthPurpose.LINK: ("identify",),  # linking needs nothing but the id
}


@dataclass(frozen=True, slots=True)
class AuthStarted:
    authorize_url: str
    browser_token: str  # to set as the browser-binding cookie


class _StartDiscordAuth:
    def __init__(
        self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock, oauth: DiscordOAuth
    ) -> None:
        self._uow, self._tokens, self._clock, self._oauth = uow, tokens, clock, oauth

    async def _start(
        self,
        purpose: AuthPurpose,
        *,
        destination: str,
        browser_token: str | None,
        account_id: AccountId | None,
    ) -> AuthStarted:
        now = self._clock.now()
        state = self._tokens.issue()
        verifier = self._tokens.issue().token  # 43 URL-safe chars: a valid PKCE verifier
        # Reuse this browser's binding so that two tabs can sign in at once.
        if not plausible_token(browser_token):
            browser_token = self._tokens.issue().token
        pending = PendingLogin(
            state_digest=state.digest,
            purpose=purpose,
            browser_digest=self._tokens.digest(browser_token),
            pkce_verifier=verifier,
            destination=destination,
            created_at=now,
            expires_at=now + ONE_TIME_SECRET_TTL,
            account_id=account_id,
        )
        async with self._uow() as uow:
            await uow.pending_logins.add(pending)
            await uow.commit()
        url = self._oauth.authorization_url(
            state=state.token, code_challenge=pkce_challenge(verifier), scopes=SCOPES[purpose]
        )
        return AuthStarted(url, browser_token)


class StartDiscordLogin(_StartDiscordAuth):
    async def execute(self, *, next_path: str | None, browser_token: str | None) -> AuthStarted:
        return await self._start(
            AuthPurpose.LOGIN,
            destination=safe_destination(next_path),
            browser_token=browser_token,
            account_id=None,
        )


class StartDiscordLink(_StartDiscordAuth):
    async def execute(self, *, account_id: AccountId, browser_token: str | None) -> AuthStarted:
        async with self._uow() as uow:
            if await uow.accounts.get(account_id) is None:
                raise errors.NotSignedIn()
        return await self._start(
            AuthPurpose.LINK,
            destination="/account",
            browser_token=browser_token,
            account_id=account_id,
        )


class AuthOutcome(enum.StrEnum):
    SIGNED_IN = "signed_in"
    LINKED_AND_SIGNED_IN = "linked_and_signed_in"
    CREATED = "created"
    LINKED = "linked"
    ALREADY_LINKED = "already_linked"


@dataclass(frozen=True, slots=True)
class AuthCompleted:
    purpose: AuthPurpose
    outcome: AuthOutcome
    account_id: AccountId
    destination: str
    session_token: str | None  # a new session for login flows; None for link flows


@contextlib.asynccontextmanager
async def _decided_without_a_link() -> AsyncIterator[None]:
    """The decision was taken when this Discord id had no link. If linking now finds one,
    a concurrent first login won the race (a read-committed database shows its row to our
    later statement): decide again from the top instead of refusing the person.
    """
    try:
        yield
    except errors.DiscordLinkedElsewhere:
        raise errors.Conflict() from None


class CompleteDiscordAuth:
    """Discord's callback: check and consume the state, read the profile, apply a policy."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        oauth: DiscordOAuth,
        session_ttl: timedelta = SESSION_TTL,
    ) -> None:
        self._uow, self._tokens, self._clock, self._oauth = uow, tokens, clock, oauth
        self._session_ttl = session_ttl

    async def execute(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_token: str | None,
        signed_in_account: AccountId | None = None,
    ) -> AuthCompleted:
        pending = await self._consume_state(state, browser_token)
        # The state is spent from here on, whatever happens next: a callback URL works once.
        if error is not None:
            raise errors.DiscordDenied()
        if not code or len(code) > 512:
            raise errors.InvalidInput("Discord's answer had no authorisation code. Start again.")
        if pending.purpose is AuthPurpose.LINK and (
            pending.account_id is None or pending.account_id != signed_in_account
        ):
            raise errors.NotSignedIn(
                "Sign in to the account you started linking from, then link again."
            )
        tokens = await self._oauth.exchange_code(code=code, code_verifier=pending.pkce_verifier)
        try:
            profile = await self._oauth.fetch_profile(tokens)
        finally:
            await self._oauth.revoke(tokens)  # we keep no Discord tokens

        if pending.purpose is AuthPurpose.LINK:
            assert pending.account_id is not None  # noqa: S101 - checked above
            return await retry_on_conflict(lambda: self._link(pending, profile))
        return await retry_on_conflict(lambda: self._login(pending, profile))

    async def _consume_state(self, state: str | None, browser_token: str | None) -> PendingLogin:
        async with self._uow() as uow:
            try:
                return await use_secret(
                    uow.pending_logins,
                    self._tokens,
                    state,
                    self._clock.now(),
                    spend=True,
                    bound_to=lambda pending: pending.browser_digest,
                    browser_token=browser_token,
                )
            finally:
                await uow.commit()  # spent even when refused: a callback URL works once

    async def _link(self, pending: PendingLogin, profile: DiscordProfile) -> AuthCompleted:
        assert pending.account_id is not None  # noqa: S101
        now = self._clock.now()
        async with self._uow() as uow:
            result = await apply_link(
                uow, discord=profile.user, account_id=pending.account_id, now=now, via="oauth"
            )
            await uow.commit()
        return AuthCompleted(
            AuthPurpose.LINK,
            AuthOutcome.LINKED if result.created else AuthOutcome.ALREADY_LINKED,
            pending.account_id,
            pending.destination,
            session_token=None,
        )

    async def _login(self, pending: PendingLogin, profile: DiscordProfile) -> AuthCompleted:
        now = self._clock.now()
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(profile.id)
            email = profile.email.strip() if profile.email else ""
            matches = await uow.accounts.find_by_email(email) if email else []
            decision = decide_login(profile, link, matches)
            match decision:
                case SignIn(account_id):
                    outcome = AuthOutcome.SIGNED_IN
                case LinkAndSignIn(account_id):
                    async with _decided_without_a_link():
                        await apply_link(
                            uow, discord=profile.user, account_id=account_id, now=now, via="email"
                        )
                    outcome = AuthOutcome.LINKED_AND_SIGNED_IN
                case CreateAccount():
                    async with _decided_without_a_link():
                        account_id = await self._create_account(uow, decision, profile, now)
                    outcome = AuthOutcome.CREATED
                case Refuse(error):
                    await uow.audit.record(
                        AuditEvent(
                            AuditKind.LOGIN_REFUSED, now, None, profile.id, {"reason": error.code}
                        )
                    )
                    await uow.commit()
                    raise error()
            token = await start_session(uow, self._tokens, account_id, now, self._session_ttl)
            await uow.commit()
        return AuthCompleted(AuthPurpose.LOGIN, outcome, account_id, pending.destination, token)

    @staticmethod
    async def _create_account(
        uow: UnitOfWork, decision: CreateAccount, profile: DiscordProfile, now: datetime
    ) -> AccountId:
        taken = await uow.accounts.usernames_starting_with(decision.username_base)
        account = Account(
            id=AccountId.new(),
            username=choose_username(decision.username_base, taken),
            email=decision.email,
            email_verified=decision.email_verified,
            password_hash=None,  # Discord is its only way in until a password is set
            created_at=now,
        )
        await uow.accounts.add(account)
        await uow.audit.record(
            AuditEvent(AuditKind.ACCOUNT_CREATED, now, account.id, profile.id, {"via": "discord"})
        )
        await apply_link(uow, discord=profile.user, account_id=account.id, now=now, via="signup")
        return account.id
