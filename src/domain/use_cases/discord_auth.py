"""Sign in with Discord and link Discord from the account page (OAuth2 + PKCE)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain import errors
from domain.model import (
    ONE_TIME_SECRET_TTL,
    ROLE_CONNECTIONS_SCOPE,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    AuthPurpose,
    DiscordProfile,
    EmailLinking,
    Link,
    LinkedRole,
    PendingLogin,
    RoleConnectionToken,
    RoleSync,
    Session,
    SignInMethod,
)
from domain.names import isolated_handle
from domain.policies import (
    LINK_REFUSALS,
    ConfirmBeforeLinking,
    CreateAccount,
    LinkAndSignIn,
    LoginDecision,
    Refuse,
    SecretStatus,
    SignInLinkedAccount,
    choose_username,
    constant_time_equals,
    decide_link,
    decide_login,
    pkce_challenge,
    sign_in_destination,
)
from domain.ports import (
    Clock,
    DiscordOAuth,
    IssuedSecret,
    TokenIssuer,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.use_cases._addresses import address_held
from domain.use_cases._passwords import Passwords
from domain.use_cases._secrets import default_refusal, use_secret
from domain.use_cases._shared import (
    AFTER_DISCORD_PROOF,
    AFTER_DISCORD_SIGN_IN,
    BINDINGS_KEPT,
    NO_COOKIES,
    PROPOSAL_AFTER_DISCORD_SIGN_IN,
    SENT_TWICE_WITHIN,
    SESSION_TTL,
    BrowserCookies,
    LinkResult,
    apply_link,
    digest_of,
    for_the_same_account,
    made_just_now,
    not_signed_out_since,
    plausible_token,
    prove_identity,
    renew_session,
    retry_on_conflict,
    session_of_pending,
    session_token_after,
    sign_out_browser,
    signed_in,
    start_session,
)
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.use_cases.email_linking import create_link_proposal
from domain.use_cases.tickets import refuse_replaced, ticket_refusal
from domain.webhooks import account_created

if TYPE_CHECKING:
    from domain.use_cases.role_connections import RoleConnectionFlow

SCOPES: dict[AuthPurpose, tuple[str, ...]] = {
    AuthPurpose.LOGIN: ("identify", "email"),
    AuthPurpose.LINK: ("identify",),  # linking needs nothing but the id
    AuthPurpose.TICKET: ("identify",),
    AuthPurpose.REAUTH: ("identify",),
    # Linked Roles: the connection needs role_connections.write, and nothing else but the id.
    AuthPurpose.ROLES: ("identify", ROLE_CONNECTIONS_SCOPE),
    AuthPurpose.ROLES_LINK: ("identify", ROLE_CONNECTIONS_SCOPE),
}
_ROLE_PURPOSES = (AuthPurpose.ROLES, AuthPurpose.ROLES_LINK)
PKCE = "pkce-verifier"  # what the PKCE verifier is derived for (from the state)


# Where a Discord sign-in may never return to: these paths carry one-time secrets, which a
# pending login must not store (and a signed-in person has no use for them after Discord).
@dataclass(frozen=True, slots=True)
class AuthStarted:
    authorize_url: str
    # This browser's binding values, newest first, for the binding cookie: a fresh one for
    # this flow (never a value the browser brought, which someone may have planted), then the
    # ones of flows still under way in other tabs.
    browser_tokens: tuple[str, ...]


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
        browser_tokens: Sequence[str],
        account_id: AccountId | None,
        ticket_digest: str | None = None,
        ask_again: bool = False,
    ) -> AuthStarted:
        now = self._clock.now()
        state = self._tokens.issue()
        binding = self._tokens.issue()
        pending = PendingLogin(
            state_digest=state.digest,
            purpose=purpose,
            browser_digest=binding.digest,
            destination=destination,
            created_at=now,
            expires_at=now + ONE_TIME_SECRET_TTL,
            account_id=account_id,
            ticket_digest=ticket_digest,
        )
        async with self._uow() as uow:
            await uow.pending_logins.add(pending)
            await uow.commit()
        verifier = self._tokens.derive(state.token, PKCE)  # 43 URL-safe chars, as PKCE wants
        url = self._oauth.authorization_url(
            state=state.token,
            code_challenge=pkce_challenge(verifier),
            scopes=SCOPES[purpose],
            ask_again=ask_again,
        )
        kept = [t for t in browser_tokens if plausible_token(t)][: BINDINGS_KEPT - 1]
        return AuthStarted(url, (binding.token, *kept))


class StartDiscordLogin(_StartDiscordAuth):
    async def execute(
        self, *, next_path: str | None, browser_tokens: Sequence[str], ask_again: bool = False
    ) -> AuthStarted:
        return await self._start(
            AuthPurpose.LOGIN,
            destination=sign_in_destination(next_path),
            browser_tokens=browser_tokens,
            account_id=None,
            ask_again=ask_again,
        )


class _StartLinking(_StartDiscordAuth):
    """Linking a Discord account is a sensitive change: the Discord account can sign in to
    the TaskFlow account from then on, so a stolen session cookie alone must not add one (it
    would outlive a password change). The same proof as for unlinking is needed."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        oauth: DiscordOAuth,
        passwords: Passwords,
    ) -> None:
        super().__init__(uow, tokens, clock, oauth)
        self._passwords = passwords

    async def _prove(self, session_token: str | None, current_password: str | None) -> Account:
        _, account = await prove_identity(
            self._uow,
            self._tokens,
            self._clock,
            self._passwords,
            session_token=session_token,
            current_password=current_password,
        )
        return account


class StartDiscordLink(_StartLinking):
    """ "Link Discord" on the account page."""

    async def execute(
        self,
        *,
        session_token: str | None,
        current_password: str | None = None,
        browser_tokens: Sequence[str],
    ) -> AuthStarted:
        account = await self._prove(session_token, current_password)
        return await self._start(
            AuthPurpose.LINK,
            destination="/account",
            browser_tokens=browser_tokens,
            account_id=account.id,
            ask_again=True,  # show which Discord account: a shared browser may be signed in
        )


class StartTicketLink(_StartLinking):
    """ "Continue with Discord" on the page behind a ``/link`` button: the ticket only says
    which Discord account to expect. Linking waits for a Discord round trip proving that the
    person here *is* that account, so a forwarded button cannot link the sender's Discord to
    the receiver's TaskFlow account."""

    async def execute(
        self,
        *,
        token: str,
        session_token: str | None,
        current_password: str | None = None,
        browser_tokens: Sequence[str],
    ) -> AuthStarted:
        now = self._clock.now()
        digest = digest_of(self._tokens, token)
        async with self._uow(read_only=True) as uow:
            ticket = await use_secret(
                uow.link_tickets, digest, now, spend=False, refusal=ticket_refusal
            )
            await refuse_replaced(uow.link_tickets, ticket)
            # Refuse now what the link would refuse later, before a pointless trip to Discord
            # and before asking for a proof that changes nothing (for an account without a
            # password, a Discord round trip of its own that ends on the account page). It
            # tells the session's holder only what the account page shows them.
            _, signed = await signed_in(uow, self._tokens, session_token, now)
            decision = decide_link(
                ticket.discord.id,
                signed.id,
                await uow.links.get_by_discord_id(ticket.discord.id),
                await uow.links.get_by_account(signed.id),
            )
        if decision in LINK_REFUSALS:
            raise LINK_REFUSALS[decision]()
        account = await self._prove(session_token, current_password)
        return await self._start(
            AuthPurpose.TICKET,
            destination="/account",
            browser_tokens=browser_tokens,
            account_id=account.id,
            ticket_digest=digest,
            ask_again=True,  # the person can pick the Discord account that ran /link
        )


# A Discord round trip proves nothing for an account with a password (see
# ``identity_recently_proved``): its renewal would only write over a password proof.
NO_DISCORD_PROOF = "Your account has a password: confirm it is you with your password."


class StartDiscordReauth(_StartDiscordAuth):
    """ "Confirm with Discord" before a sensitive change, for an account without a password:
    a round trip that must come back as the linked Discord account."""

    async def execute(
        self, *, session_token: str | None, browser_tokens: Sequence[str]
    ) -> AuthStarted:
        async with self._uow(read_only=True) as uow:
            _, account = await signed_in(uow, self._tokens, session_token, self._clock.now())
            if await uow.links.get_by_account(account.id) is None:
                raise errors.NotLinked(
                    "No Discord account is linked to your account: confirm with your password."
                )
            if account.has_password:
                raise errors.InvalidInput(NO_DISCORD_PROOF)
        return await self._start(
            AuthPurpose.REAUTH,
            destination="/account",
            browser_tokens=browser_tokens,
            account_id=account.id,
            ask_again=True,  # so that someone signed in as another Discord account can switch
        )


class AuthOutcome(enum.StrEnum):
    SIGNED_IN = "signed_in"
    LINKED_AND_SIGNED_IN = "linked_and_signed_in"
    CREATED = "created"
    LINKED = "linked"
    ALREADY_LINKED = "already_linked"
    CONFIRMED = "confirmed"  # identity proved again (purpose reauth)
    CONFIRM_NEEDED = "confirm_needed"  # email linking "confirm": prove the account's side first
    # Purpose reauth or login, its callback loaded twice: the first load is still under way
    # (asking Discord). Ask again in a moment (``FinishDiscordConfirmation``).
    CONFIRMING = "confirming"
    # A plain sign-in's callback loaded again from a browser still signed in as that sign-in
    # left it (the session it made, renewed by a form since, say): on to its destination,
    # nothing handed over (``FinishDiscordConfirmation``).
    STILL_SIGNED_IN = "still_signed_in"


@dataclass(frozen=True, slots=True)
class AuthCompleted:
    purpose: AuthPurpose
    outcome: AuthOutcome
    account_id: AccountId  # SIGN_IN_UNDER_WAY while a sign-in is CONFIRMING (not known yet)
    destination: str
    # A new session for login flows, the session renewed for REAUTH; None for the others.
    session_token: str | None
    proposal_token: str | None = None  # for the cookie, when the outcome is CONFIRM_NEEDED
    # Linked Roles: what became of the first push (``None``: another pusher had the user's
    # connection in hand, and pushes the new grant after its own push).
    role_sync: RoleSync | None = None
    # A callback loaded twice (``FinishDiscordConfirmation``): what its first load did, told
    # again (or that it is under way). Nothing was made again, so nothing is counted again.
    handed_over: bool = False


def state_refusal(status: SecretStatus) -> errors.DomainError:
    """The page back from Discord (the callback) with a state it cannot take: the person
    signed in to Discord, or linked, or confirmed it is them, and followed no link (the
    words of emailed links and ``/link`` buttons, "This link has expired", said nothing to
    them)."""
    if status is SecretStatus.CONSUMED:
        return errors.SecretConsumed(
            "Discord's answer can be used once, and this one was used already: the page back "
            "from Discord was reloaded, or opened again from the browser's history."
        )
    if status is SecretStatus.EXPIRED:
        return errors.SecretExpired(
            "You spent more than 10 minutes at Discord, so this attempt expired and nothing "
            "was changed."
        )
    if status is SecretStatus.UNKNOWN:
        return errors.SecretUnknown(
            "Discord's answer is not one this site is waiting for (its address is cut short, "
            "or it belongs to an older attempt), so nothing was changed."
        )
    return default_refusal(status)  # another browser's: its own words say so


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


# The Discord timeout's default (``TASKFLOW_LINK_DISCORD_TIMEOUT_SECONDS``).
DISCORD_TIMEOUT = timedelta(seconds=10)
# What a "Confirm with Discord" callback's load does besides its calls to Discord, at worst:
# its reads and writes (a lock waited for, a busy pool).
_FIRST_LOAD_BESIDES_DISCORD = timedelta(seconds=30)


def confirming_for(discord_timeout: timedelta) -> timedelta:
    """How long after its state was spent a "Confirm with Discord" callback's first load may
    still renew the session, at worst: its two calls to Discord (the code's exchange, the
    profile), each within ``discord_timeout``, and its database work; ``SENT_TWICE_WITHIN``
    at least. Its callback loaded again meanwhile is told to wait (``CONFIRMING``) that long,
    not less: a page that gave up before the renewal left its browser with the ended old
    cookie, signed out."""
    return max(SENT_TWICE_WITHIN, 2 * discord_timeout + _FIRST_LOAD_BESIDES_DISCORD)


# The account of a sign-in whose first load is still under way (``CONFIRMING``): not known
# yet, and the nil UUID is no account's.
SIGN_IN_UNDER_WAY = AccountId(uuid.UUID(int=0))
# A plain "Sign in with Discord" derives its new session's token from its round trip's
# binding value (``AFTER_DISCORD_SIGN_IN``), and its link proposal's when it asks for the
# account's proof first (``PROPOSAL_AFTER_DISCORD_SIGN_IN``): its callback loaded twice
# finds what the first load made (see ``FinishDiscordConfirmation``), and signing out in that
# browser ends it (``sign_in_successors``). The binding value is the server's, issued fresh
# for the round trip (never one the browser brought), and the callback is bound to it.


def binding_of(
    tokens: TokenIssuer, pending: PendingLogin, browser_tokens: Sequence[str]
) -> str | None:
    """The binding value of this browser's that ``pending`` is bound to (among its newest
    ``BINDINGS_KEPT``, as the callback checks), or ``None``."""
    for binding in [t for t in browser_tokens if plausible_token(t)][:BINDINGS_KEPT]:
        if constant_time_equals(pending.browser_digest, tokens.digest(binding)):
            return binding
    return None


# How long the purge keeps a pending login past its expiry: a state spent at the end of its
# 10 minutes may have its first load still under way for ``confirming_for`` (2.5 minutes at
# the longest Discord timeout the settings take, a minute), and its callback loaded again
# meanwhile must find it spent: purged at its expiry, that load was told "not one this site
# is waiting for", its browser left with the ended old session cookie.
KEPT_PAST_EXPIRY = timedelta(minutes=5)


# The refusals a callback's first load ended with that its load again tells again, in their
# own words (``PendingLogin.failure`` holds the code): what the person can act on, told as
# each class says it (words made for the occasion, naming accounts, are not kept).
_TOLD_AGAIN: dict[str, type[errors.DomainError]] = {
    refusal.code: refusal
    for refusal in (
        errors.SignupDisabled,
        errors.AmbiguousEmail,
        errors.EmailBelongsToAccount,
        errors.EmailAccountLinkedToOtherDiscord,
        errors.DiscordNotLinkedYet,
        errors.DiscordDenied,
        errors.DiscordSignInStopped,
    )
}


# Refusals whose first load named accounts (``WrongDiscordAccount``: "signed in to Discord as
# @…, but…"): told again in their class's own words, which name nobody, yet say what to do.
_TOLD_AGAIN_UNNAMED: dict[str, type[errors.DomainError]] = {
    errors.WrongDiscordAccount.code: errors.WrongDiscordAccount,
}
_TOLD_AGAIN.update(_TOLD_AGAIN_UNNAMED)


def failure_of(refusal: BaseException | None) -> str | None:
    """The code to keep for ``refusal`` (``PendingLogin.failure``), when its load again can
    tell it again word for word (or in its class's words: ``_TOLD_AGAIN_UNNAMED``); ``None``:
    the generic words."""
    if not isinstance(refusal, errors.DomainError):
        return None
    kind = _TOLD_AGAIN.get(refusal.code)
    if kind is not type(refusal):
        return None
    if refusal.message != kind.message and refusal.code not in _TOLD_AGAIN_UNNAMED:
        return None
    return refusal.code


def failed_again(
    pending: PendingLogin, generic: type[errors.DomainError], now: datetime
) -> errors.DomainError:
    """What the callback of ``pending``, whose first load failed, says when loaded again: the
    first load's refusal (``failure``) within ``SENT_TWICE_WITHIN`` of it (a reload, a double
    click), as the session and the link proposal are handed over only then; later (the next
    person at a shared computer going back in the history: the binding cookie outlives a
    sign-out), or when none was kept, or its code is not one this version knows (a newer
    release's), ``generic``'s words. Its way on is the first load's."""
    recent = pending.failed_at is not None and now - pending.failed_at <= SENT_TWICE_WITHIN
    told = _TOLD_AGAIN.get((pending.failure or "") if recent else "", generic)()
    told.in_linked_roles = pending.purpose in _ROLE_PURPOSES
    return told


def signs_in(pending: PendingLogin) -> bool:
    """Whether the round trip of ``pending`` signs its person in: a plain "Sign in with
    Discord", or Linked Roles' verification URL started signed out (its account recorded
    once its callback signed in: ``mark_signed_in``)."""
    return pending.purpose is AuthPurpose.LOGIN or (
        pending.purpose is AuthPurpose.ROLES and pending.account_id is None
    )


def purpose_of(pending: PendingLogin) -> AuthPurpose:
    """What ``pending`` was started for, when this version knows it; else
    ``StartedByAnotherVersion``: a newer release's round trip is not this version's to
    finish (finished as anything else, it could sign someone in, or link, for nothing they
    asked)."""
    if isinstance(pending.purpose, AuthPurpose):
        return pending.purpose
    raise errors.StartedByAnotherVersion()


class FinishDiscordConfirmation:
    """A "Confirm with Discord" or a plain "Sign in with Discord" callback whose state is
    used: loaded twice (a double click on Discord's Authorize, a reload during the round
    trip: the browser left the first load, and never received its answer), or the page such a
    load answered while the first was under way (``AuthOutcome.CONFIRMING``). "Confirm with
    Discord" renews the session under a token derived from the old one, a sign-in starts one
    under a token derived from its binding value (``binding_of``), so this finds what the
    first load made. Reads only: nothing is spent, nothing waited for.

    ``discord_timeout``: each call to Discord's (the settings'), for how long the first load
    may be under way (``confirming_for``)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        *,
        discord_timeout: timedelta = DISCORD_TIMEOUT,
    ) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock
        self._confirming_for = confirming_for(discord_timeout)

    async def execute(
        self,
        *,
        state: str | None,
        browser_tokens: Sequence[str],
        session_token: str | None,
        refusal: errors.DomainError | None = None,
    ) -> AuthCompleted:
        """When this is the state's browser (its binding cookie, and its session cookie the
        old token of the state's account or the one the first load renewed it under): the
        session that load renewed in the last ``SENT_TWICE_WITHIN`` (``CONFIRMED``), or
        ``CONFIRMING`` while that load may still be asking Discord (the old session not
        renewed yet, the state spent less than ``confirming_for`` ago), or
        ``DiscordConfirmationFailed`` when it ended without renewing it. Anything else is
        ``refusal`` (the state's own: "already used"): a copy of the old cookie without the
        binding, another account's session, or later on."""
        refused = refusal or state_refusal(SecretStatus.CONSUMED)
        digest = digest_of(self._tokens, state)
        presented = [d for t in browser_tokens if (d := digest_of(self._tokens, t)) is not None]
        if digest is None or state is None:
            raise refused
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            pending = await uow.pending_logins.get(digest)
            if (
                pending is None
                or pending.consumed_at is None
                or not any(
                    constant_time_equals(pending.browser_digest, d)
                    for d in presented[:BINDINGS_KEPT]
                )
            ):
                raise refused
            # Its page leads back to the verification URL (from the waiting page too).
            refused.in_linked_roles = pending.purpose in _ROLE_PURPOSES
            purpose = purpose_of(pending)
            if purpose in (AuthPurpose.LOGIN, *_ROLE_PURPOSES):
                # Linked Roles' verification URL signs in as a plain sign-in does, when started
                # signed out; started signed in, its session under the token derived from the
                # state is none: its refusal told again, else refused as before.
                return await self._signed_in(
                    uow,
                    pending,
                    pending.consumed_at,
                    state,
                    refused,
                    binding=binding_of(self._tokens, pending, browser_tokens),
                    session_token=session_token,
                )
            if (
                purpose is not AuthPurpose.REAUTH
                or pending.account_id is None
                or not plausible_token(session_token)
            ):
                raise refused
            # The cookie's session first, its successor after: the first load's renewal ends
            # the one and makes the other at once, but a read-committed database (Postgres)
            # shows each read the last commit. Read in the other order, a renewal committed
            # in between hid both ('already used', its browser left with the ended cookie);
            # in this one, the successor's read comes after whatever the first read missed.
            try:
                old: Session | None = (await signed_in(uow, self._tokens, session_token, now))[0]
            except errors.NotSignedIn:
                old = None
            # The old token's successor (the first load's answer lost), or that token itself
            # (loaded again after the first answer).
            held = IssuedSecret(session_token, self._tokens.digest(session_token))
            made = session_token_after(self._tokens, session_token, AFTER_DISCORD_PROOF)
            for candidate in (made, held):
                try:  # renewed with Discord in the last SENT_TWICE_WITHIN...
                    session, _ = await made_just_now(
                        uow, self._tokens, candidate, now, proved_with=SignInMethod.DISCORD
                    )
                except errors.NotSignedIn:
                    continue
                if (
                    session.account_id == pending.account_id
                    and session.proved_at is not None
                    and session.proved_at >= pending.consumed_at  # ...by this round trip
                ):
                    return AuthCompleted(
                        purpose,
                        AuthOutcome.CONFIRMED,
                        session.account_id,
                        pending.destination,
                        session_token=candidate.token,
                        handed_over=True,
                    )
            if old is None:  # not renewed, nor live: ended (signed out, say)
                raise refused
            if old.account_id != pending.account_id or (  # not renewed: the old one, live
                # Proved since the state was spent (by another kind of proof): not the session
                # a first load under way renews, which would have ended it.
                old.proved_at is not None and old.proved_at >= pending.consumed_at
            ):
                raise refused
            if pending.failed_at is not None:
                raise failed_again(pending, errors.DiscordConfirmationFailed, now)
            if now - pending.consumed_at > self._confirming_for:
                raise refused
        return AuthCompleted(
            purpose,
            AuthOutcome.CONFIRMING,
            pending.account_id,
            pending.destination,
            session_token=None,
            handed_over=True,
        )

    async def _signed_in(
        self,
        uow: UnitOfWork,
        pending: PendingLogin,
        consumed_at: datetime,
        state: str,
        refused: errors.DomainError,
        *,
        binding: str | None,
        session_token: str | None,
    ) -> AuthCompleted:
        """A plain sign-in's callback again, from the browser that started it (its binding):
        the session the first load started under the token derived from its binding value
        (``made``; ``None``, not one of this browser's newest: refused), in the
        last ``SENT_TWICE_WITHIN`` (how it signed in told as the first load told it), or
        ``STILL_SIGNED_IN`` when this browser's session cookie (``session_token``) is still
        signed in as that sign-in left it (``_still_signed_in``), or ``DiscordSignInUsed``
        when this browser no longer holds that session (ended since, or renewed under a
        token it never received: the first load recorded the account it signed in to,
        ``mark_signed_in``; or later on, when that load linked by the confirmed email,
        saying so: ``_made_before``), or the link proposal it made in
        the last ``SENT_TWICE_WITHIN``, still waiting for the account's proof, under the
        token derived from its binding value (``CONFIRM_NEEDED``: the same step shown again; its
        cookie went with the answer the browser left), or ``CONFIRMING`` while no session
        is there yet and that load may still be under way, or ``DiscordSignInFailed`` when it
        ended without one. Anything else: ``refused``."""
        if binding is None:  # its binding value is not among this browser's newest few
            raise refused
        now = self._clock.now()
        made = session_token_after(self._tokens, binding, AFTER_DISCORD_SIGN_IN)
        # Whether the first load made it, in one read: a read-committed database (Postgres)
        # shows each statement the last commit, and a session committed between a first
        # read that missed it and a second that found it was taken for one made long ago
        # ('used already', the person of a double click left signed out).
        if await uow.sessions.get(made.digest) is not None:
            try:  # made by the first load: handed over within SENT_TWICE_WITHIN of it
                _, account = await made_just_now(
                    uow, self._tokens, made, now, proved_with=SignInMethod.DISCORD
                )
            except errors.NotSignedIn:  # made, but not just now (or ended since)
                return await self._made_before(
                    uow, pending, consumed_at, refused, session_token=session_token
                )
            return AuthCompleted(
                purpose_of(pending),
                # Linked Roles signs in only an account linked before (it never links).
                AuthOutcome.SIGNED_IN
                if pending.purpose is AuthPurpose.ROLES
                else await _how_signed_in(uow, account, consumed_at),
                account.id,
                pending.destination,
                session_token=made.token,
                handed_over=True,
            )
        if pending.account_id is not None:  # made (recorded with it), and ended since
            if pending.purpose is not AuthPurpose.LOGIN:
                # Linked Roles started signed in (no sign-in), refused: that refusal again.
                # Else, to the browser still signed in to its account: its connection made,
                # or under way (``_connected``); to any other, the state's own refusal, whose
                # way on is the verification URL.
                if pending.failed_at is not None:
                    raise failed_again(pending, errors.LinkedRoleVerificationFailed, now)
                connected = await self._connected(uow, pending, consumed_at, session_token)
                if connected is not None:
                    return connected
                raise refused
            still = await self._still_signed_in(uow, pending, consumed_at, session_token)
            if still is not None:  # renewed since (a form), under the cookie it holds
                return still
            raise errors.DiscordSignInUsed.bound_for(
                pending.destination,
                linked_by_email=await _linked_by_email(uow, pending, consumed_at),
            )
        waits = session_token_after(self._tokens, binding, PROPOSAL_AFTER_DISCORD_SIGN_IN)
        proposal = await uow.link_proposals.get(waits.digest)
        if proposal is not None:  # the first load asked for the account's proof first
            if (
                proposal.consumed_at is not None
                or now >= proposal.expires_at
                or now - proposal.created_at > SENT_TWICE_WITHIN
            ):
                raise refused
            return AuthCompleted(
                purpose_of(pending),
                AuthOutcome.CONFIRM_NEEDED,
                proposal.account_id,
                pending.destination,
                session_token=None,
                proposal_token=waits.token,
                handed_over=True,
            )
        ended = (
            failed_again(pending, errors.DiscordSignInFailed, now)
            if pending.failed_at is not None
            # Its browser signed out since it started: its first load starts no session now.
            else errors.DiscordSignInStopped()
            if pending.signed_out_at is not None
            else None
        )
        if ended is not None:
            ended.in_linked_roles = pending.purpose in _ROLE_PURPOSES
            raise ended
        if now - consumed_at > self._confirming_for:
            raise refused
        return AuthCompleted(
            purpose_of(pending),
            AuthOutcome.CONFIRMING,
            SIGN_IN_UNDER_WAY,
            pending.destination,
            session_token=None,
            handed_over=True,
        )

    async def _made_before(
        self,
        uow: UnitOfWork,
        pending: PendingLogin,
        consumed_at: datetime,
        refused: errors.DomainError,
        *,
        session_token: str | None,
    ) -> AuthCompleted:
        """The session a sign-in's first load made, not in the last ``SENT_TWICE_WITHIN``:
        ``STILL_SIGNED_IN`` to the browser still signed in to its account
        (``_still_signed_in``; Linked Roles': its connection, ``_connected``); else, when
        that load linked by the confirmed email, ``DiscordSignInUsed`` saying so in words
        that name nobody (``_linked_by_email``); else ``refused``."""
        still = await self._still_signed_in(uow, pending, consumed_at, session_token)
        if still is None:
            still = await self._connected(uow, pending, consumed_at, session_token)
        if still is not None:
            return still
        if await _linked_by_email(uow, pending, consumed_at):
            raise errors.DiscordSignInUsed.bound_for(
                pending.destination, linked_by_email=True
            ) from None
        raise refused from None

    async def _connected(
        self,
        uow: UnitOfWork,
        pending: PendingLogin,
        consumed_at: datetime,
        session_token: str | None,
    ) -> AuthCompleted | None:
        """Linked Roles' round trip started signed in (it connects, and may link, the
        account; it signs nobody in), or one that signed in past its hand-over, its callback
        loaded again from its browser (the binding) still signed in to that account (its
        session cookie, ``session_token``): the account
        page its first load led to, once that load stored the grant (its audit event, written
        with the tokens, since the state was spent; ``LINKED`` when it linked, and how the
        push stands now), or ``CONFIRMING`` while that load may still be under way. Nothing
        handed over: the cookie is the browser's own, and the page is the one its account
        page shows it anyway. ``None`` otherwise (signed out since, another account: the
        next person at a shared computer; or later on): the state's own refusal."""
        if pending.purpose not in _ROLE_PURPOSES:
            return None
        now = self._clock.now()
        session = await self._session_of(uow, pending, session_token, now)
        if session is None:
            return None
        account_id = session.account_id
        purpose = purpose_of(pending)
        # Another tab's round trip for this account, stored since, counts too: the account's
        # connection is what the page tells, and it is made.
        if await uow.audit.count_since(account_id, AuditKind.ROLE_TOKENS_STORED, consumed_at):
            link = await uow.links.get_by_account(account_id)
            linked = (
                purpose is AuthPurpose.ROLES_LINK
                and link is not None
                and link.linked_at >= consumed_at
            )
            row = await uow.role_connection_tokens.get(link.discord_id) if link else None
            return AuthCompleted(
                purpose,
                AuthOutcome.LINKED if linked else AuthOutcome.ALREADY_LINKED,
                account_id,
                pending.destination,
                session_token=None,
                role_sync=_push_standing(row, now),
                handed_over=True,
            )
        if now - consumed_at > self._confirming_for:
            return None
        return AuthCompleted(
            purpose,
            AuthOutcome.CONFIRMING,
            account_id,
            pending.destination,
            session_token=None,
            handed_over=True,
        )

    async def _still_signed_in(
        self,
        uow: UnitOfWork,
        pending: PendingLogin,
        consumed_at: datetime,
        session_token: str | None,
    ) -> AuthCompleted | None:
        """``STILL_SIGNED_IN`` when this browser's session cookie names a live session of the
        account a plain sign-in signed in to, started since its state was spent: the session
        its first load made, renewed by a form since (a proof of identity, a password chosen:
        a new token, the old one ended), or kept past ``SENT_TWICE_WITHIN``. The person is
        signed in as that sign-in left them, so its page loaded again goes on to its
        destination; nothing is handed over (the cookie is the browser's own), and a session
        the browser does not hold (renewed under a token it never received) stays nobody's
        to be handed here. Otherwise ``None``."""
        if pending.purpose is not AuthPurpose.LOGIN:
            return None
        session = await self._session_of(uow, pending, session_token, self._clock.now())
        if session is None or session.created_at < consumed_at:
            return None
        return AuthCompleted(
            AuthPurpose.LOGIN,
            AuthOutcome.STILL_SIGNED_IN,
            session.account_id,
            pending.destination,
            session_token=None,
            handed_over=True,
        )

    async def _session_of(
        self, uow: UnitOfWork, pending: PendingLogin, session_token: str | None, now: datetime
    ) -> Session | None:
        """The live session this browser's cookie (``session_token``) names when it is of
        the account ``pending`` signed in to or connected; ``None`` otherwise (no account
        recorded, no cookie, signed out since, another account)."""
        if pending.account_id is None or not plausible_token(session_token):
            return None
        try:
            session, _ = await signed_in(uow, self._tokens, session_token, now)
        except errors.NotSignedIn:
            return None
        return session if session.account_id == pending.account_id else None


def _push_standing(row: RoleConnectionToken | None, now: datetime) -> RoleSync | None:
    """How a kept connection's push stands, as a callback's own push would have said it:
    ``PUSHED`` when Discord has it (nobody pushing it, not due, no failure), ``FAILED`` while
    it waits to be tried again, else ``None`` (under way, or due: it follows in a moment)."""
    if row is None:
        return None
    if row.failures:
        return RoleSync.FAILED
    pushing = row.claimed_until is not None and row.claimed_until > now
    return RoleSync.PUSHED if not pushing and row.next_push_at > now else None


async def _linked_by_email(uow: UnitOfWork, pending: PendingLogin, since: datetime) -> bool:
    """Whether the plain sign-in of ``pending``, its state spent at ``since``, linked the
    account it signed in to (recorded: ``mark_signed_in``) by its confirmed email. Its page
    loaded again, no longer handed the session (later than a double click, or signed out
    since), still says so to the same browser (its binding), in words that name nobody: the
    notice that named the account went with the first answer, which may never have reached
    it (the email to the address says it too, and names the Discord account)."""
    if pending.purpose is not AuthPurpose.LOGIN or pending.account_id is None:
        return False
    account = await uow.accounts.get(pending.account_id)
    if account is None:
        return False
    return await _how_signed_in(uow, account, since) is AuthOutcome.LINKED_AND_SIGNED_IN


async def _how_signed_in(uow: UnitOfWork, account: Account, since: datetime) -> AuthOutcome:
    """What a sign-in whose state was spent at ``since`` did, as far as the database tells:
    linked ``account`` to Discord since then (by its confirmed email: the page says so), or
    made it, or signed in to it."""
    link = await uow.links.get_by_account(account.id)
    if link is None or link.linked_at < since:
        return AuthOutcome.SIGNED_IN
    return AuthOutcome.CREATED if account.created_at >= since else AuthOutcome.LINKED_AND_SIGNED_IN


class CompleteDiscordAuth:
    """Discord's callback: check and spend the state, read the profile, apply a policy.

    "Confirm with Discord" (purpose reauth) renews the session under a token derived from
    the old one (``session_token_after``), so that its callback loaded twice (a double click
    on Discord's Authorize, a reload: the browser leaves the first load, and never receives
    its answer) does not sign its person out: the second load finds the state used, and
    ``FinishDiscordConfirmation`` answers it the first load's session, or that the first is
    still under way, or that it failed."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        oauth: DiscordOAuth,
        session_ttl: timedelta = SESSION_TTL,
        *,
        email_linking: EmailLinking = EmailLinking.VERIFIED,
        signup: bool = True,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
        role_connections: RoleConnectionFlow | None = None,
        discord_timeout: timedelta = DISCORD_TIMEOUT,  # see ``FinishDiscordConfirmation``
    ) -> None:
        self._uow, self._tokens, self._clock, self._oauth = uow, tokens, clock, oauth
        self._session_ttl = session_ttl
        self._email_linking, self._signup = email_linking, signup
        self._roles = tuple(linked_roles)
        self._webhooks = webhooks
        # Only with Linked Roles turned on: the one flow that keeps Discord's token.
        self._role_connections = role_connections
        self._finish_confirmation = FinishDiscordConfirmation(
            uow, tokens, clock, discord_timeout=discord_timeout
        )

    async def execute(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser: BrowserCookies,
    ) -> AuthCompleted:
        """``browser``: its binding cookie's values (the round trip's among them), the
        session it has and the email-linking offer waiting in it; a sign-in ends both in its
        own transaction (see ``sign_out_browser``), with what this browser's other Discord
        sign-ins made without their answer reaching it."""
        try:
            pending = await self._spend_state(state, browser.bindings)
        except errors.SecretConsumed as consumed:  # by this very callback, loaded twice?
            return await self._finish_confirmation.execute(
                state=state,
                browser_tokens=browser.bindings,
                session_token=browser.session_token,
                refusal=consumed,
            )
        # The state is spent from here on, whatever happens next: a callback URL works once.
        try:
            done = await self._complete(pending, state, code, error, browser)
        except errors.DomainError as refusal:
            # Its page leads back to the verification URL (Discord's way in, and the only one).
            refusal.in_linked_roles = pending.purpose in _ROLE_PURPOSES
            refusal.from_link_button = pending.purpose is AuthPurpose.TICKET
            await self._failed(pending, refusal)
            raise
        except (Exception, asyncio.CancelledError):  # a fault, or the load cut off
            await self._failed(pending)
            raise
        if done.outcome is AuthOutcome.CONFIRM_NEEDED:
            # No session: its callback loaded again finds the proposal (under the token
            # derived from its binding value), or, that proposal used or later on, is refused.
            await self._failed(pending)
        return done

    async def _failed(
        self, pending: PendingLogin, refusal: errors.DomainError | None = None
    ) -> None:
        """A "Confirm with Discord" that ended without renewing the session, or a sign-in
        (Linked Roles' too) without a session: recorded, and why (``failure_of``), for its
        callback loaded again (``FinishDiscordConfirmation``), which tells the same reason.
        Not recorded (the database out of reach, say), that load waits out
        ``confirming_for`` instead; the error at hand stands."""
        if (
            pending.purpose is not AuthPurpose.REAUTH
            and pending.purpose not in _ROLE_PURPOSES  # started signed in, too
            and not signs_in(pending)
        ):
            return
        with contextlib.suppress(Exception):
            async with self._uow() as uow:
                await uow.pending_logins.mark_failed(
                    pending.state_digest, self._clock.now(), failure_of(refusal)
                )
                await uow.commit()

    async def _complete(
        self,
        pending: PendingLogin,
        state: str | None,
        code: str | None,
        error: str | None,
        browser: BrowserCookies,
    ) -> AuthCompleted:
        session_token = browser.session_token
        if error is not None:
            # From a /link button, its ticket is untouched: the button works again.
            raise (
                errors.TicketDenied()
                if pending.purpose is AuthPurpose.TICKET
                else errors.DiscordDenied()
            )
        if not code or len(code) > 512:
            raise errors.InvalidInput("Discord's answer had no authorisation code. Start again.")
        roles = pending.purpose in _ROLE_PURPOSES
        if roles and self._role_connections is None:
            raise errors.NotFound("Linked Roles are not turned on here.")
        if not signs_in(pending):
            async with self._uow(read_only=True) as uow:  # before asking Discord for nothing
                await self._session_of(uow, pending, session_token)
        tokens = await self._oauth.exchange_code(
            code=code, code_verifier=self._tokens.derive(state or "", PKCE)
        )
        # The token is read once and dropped, never stored, and not revoked: revoking ends the
        # whole grant, and Discord would show its consent screen again at every sign-in. Only
        # Linked Roles keep it (sealed), to keep the role connection current.
        profile = await self._oauth.fetch_profile(tokens)

        # Its callback loaded twice finds the session (see ``FinishDiscordConfirmation``), and
        # signing out in this browser ends it (``sign_in_successors``). The state was spent
        # bound to one of these values, so one derives it.
        binding = binding_of(self._tokens, pending, browser.bindings) or self._tokens.issue().token
        made = session_token_after(self._tokens, binding, AFTER_DISCORD_SIGN_IN)
        if roles and self._role_connections is not None:
            return await self._role_connections.complete(
                pending, profile, tokens, browser, made, binding=binding
            )

        if pending.purpose is AuthPurpose.LINK:
            return await retry_on_conflict(lambda: self._link(pending, profile, session_token))
        if pending.purpose is AuthPurpose.TICKET:
            return await retry_on_conflict(
                lambda: self._link_ticket(pending, profile, session_token)
            )
        if pending.purpose is AuthPurpose.REAUTH:
            return await self._reauthenticate(pending, profile, session_token)
        tries = itertools.count()  # the next try knows how many clashed before it
        waits = session_token_after(self._tokens, binding, PROPOSAL_AFTER_DISCORD_SIGN_IN)
        return await retry_on_conflict(
            lambda: self._login(
                pending,
                profile,
                made,
                waits,
                next(tries),
                browser=browser,
                binding=binding,
            )
        )

    async def _session_of(
        self, uow: UnitOfWork, pending: PendingLogin, session_token: str | None
    ) -> Session:
        return await session_of_pending(
            uow, self._tokens, self._clock.now(), pending, session_token
        )

    async def _reauthenticate(
        self, pending: PendingLogin, profile: DiscordProfile, session_token: str | None
    ) -> AuthCompleted:
        now = self._clock.now()
        async with self._uow() as uow:
            session = await self._session_of(uow, pending, session_token)
            account = await uow.accounts.get(session.account_id)
            if account is not None and account.has_password:  # one was set meanwhile
                raise errors.InvalidInput(NO_DISCORD_PROOF)
            link = await uow.links.get_by_account(session.account_id)
            if link is None or link.discord_id != profile.id:
                raise errors.WrongDiscordAccount(
                    "You signed in to Discord as "
                    f"{isolated_handle(profile.username)} (id {profile.id}), but this TaskFlow "
                    "account is linked to "
                    + (
                        f"{isolated_handle(link.discord_username)} (id {link.discord_id})"
                        if link
                        else "no Discord account"
                    )
                    + ". Sign in to Discord as the linked account, then try again."
                )
            assert session_token is not None  # noqa: S101 - the session was found by it
            renewed = await renew_session(
                uow,
                self._tokens,
                session,
                now,
                proved_with=SignInMethod.DISCORD,
                # Its callback loaded twice finds it (see ``FinishDiscordConfirmation``).
                secret=session_token_after(self._tokens, session_token, AFTER_DISCORD_PROOF),
            )
            await uow.commit()
        return AuthCompleted(
            purpose_of(pending),
            AuthOutcome.CONFIRMED,
            session.account_id,
            pending.destination,
            session_token=renewed,
        )

    async def _spend_state(self, state: str | None, browser_tokens: Sequence[str]) -> PendingLogin:
        presented = [d for t in browser_tokens if (d := digest_of(self._tokens, t)) is not None]
        digest = digest_of(self._tokens, state)
        async with self._uow() as uow:
            try:
                pending = await use_secret(
                    uow.pending_logins,
                    digest,
                    self._clock.now(),
                    spend=True,
                    refusal=state_refusal,
                    bound_to=lambda pending: pending.browser_digest,
                    browser_digests=presented[:BINDINGS_KEPT],
                )
            except errors.SecretRefused as refusal:
                # Expired, used, or another browser's: a Linked Roles one starts again there.
                found = await uow.pending_logins.get(digest) if digest is not None else None
                refusal.in_linked_roles = found is not None and found.purpose in _ROLE_PURPOSES
                # Refused, not spent (the unit of work rolls the consume back). Another
                # browser's: the binding refuses every other browser all the same, and
                # spending it let a callback URL tried elsewhere (leaked, or opened in the
                # wrong browser) burn the sign-in of the browser that started it. An expired
                # one: spent, its page reloaded said "used already", and a "Confirm with
                # Discord" one was taken for a first load under way ("Finishing your
                # confirmation…"), where it had expired. (A used or unknown one changed
                # nothing.)
                raise
            # A newer release's round trip (its purpose unknown here): refused before the
            # commit, so not spent; its callback loaded again by an instance of that release
            # still finishes it.
            purpose_of(pending)
            await uow.commit()  # spent, whatever happens next: a callback URL works once
        return pending

    async def _link(
        self, pending: PendingLogin, profile: DiscordProfile, session_token: str | None
    ) -> AuthCompleted:
        assert pending.account_id is not None  # noqa: S101 - checked by execute
        now = self._clock.now()
        async with self._uow() as uow:
            await self._session_of(uow, pending, session_token)
            result = await apply_link(
                uow,
                discord=profile.user,
                account_id=pending.account_id,
                now=now,
                via="oauth",
                roles=self._roles,
                webhooks=self._webhooks,
            )
            await uow.commit()
        return self._linked(pending, result)

    async def _link_ticket(
        self, pending: PendingLogin, profile: DiscordProfile, session_token: str | None
    ) -> AuthCompleted:
        """Spend the ticket and link, in one transaction, only when Discord just confirmed
        that this person is the account that ran ``/link``. A refused link rolls back (the
        ticket stays usable); a ticket made for another Discord account is spent, audited and
        refused."""
        assert pending.account_id is not None  # noqa: S101 - checked by execute
        now = self._clock.now()
        async with self._uow() as uow:
            await self._session_of(uow, pending, session_token)
            try:
                ticket = await use_secret(
                    uow.link_tickets, pending.ticket_digest, now, spend=True, refusal=ticket_refusal
                )
            except errors.SecretConsumed:
                done = await self._linked_in_another_tab(uow, pending, profile)
                if done is None:
                    raise
                return self._linked(pending, LinkResult(done, created=False))
            try:  # a newer /link committed since this round trip began: spent, refused
                await refuse_replaced(uow.link_tickets, ticket)
            except errors.TicketReplaced:
                await uow.commit()
                raise
            if ticket.discord.id != profile.id:
                await uow.audit.record(
                    AuditEvent(
                        AuditKind.LINK_REFUSED,
                        now,
                        pending.account_id,
                        profile.id,
                        {
                            "reason": errors.TicketForAnotherDiscord.code,
                            "ticket_discord_id": str(ticket.discord.id),
                        },
                    )
                )
                await uow.commit()
                raise errors.TicketForAnotherDiscord.naming(
                    ticket_username=ticket.discord.username, signed_in_as=profile.username
                )
            result = await apply_link(
                uow,
                discord=profile.user,
                account_id=pending.account_id,
                now=now,
                via="ticket",
                roles=self._roles,
                webhooks=self._webhooks,
            )
            await uow.commit()
        return self._linked(pending, result)

    @staticmethod
    async def _linked_in_another_tab(
        uow: UnitOfWork, pending: PendingLogin, profile: DiscordProfile
    ) -> Link | None:
        """The link a spent ticket's other round trip made, when this one asked for the same:
        the button was confirmed in two tabs (or browsers), and the other one linked it. Only
        for the ticket's own Discord account, now linked to this round trip's TaskFlow
        account: that is "already linked", where "this button has already been used" read as
        a failure. Anything else stays the ticket's refusal."""
        ticket = await uow.link_tickets.get(pending.ticket_digest or "")
        if ticket is None or ticket.discord.id != profile.id:
            return None
        link = await uow.links.get_by_discord_id(profile.id)
        return link if link is not None and link.account_id == pending.account_id else None

    @staticmethod
    def _linked(pending: PendingLogin, result: LinkResult) -> AuthCompleted:
        assert pending.account_id is not None  # noqa: S101
        return AuthCompleted(
            purpose_of(pending),
            AuthOutcome.LINKED if result.created else AuthOutcome.ALREADY_LINKED,
            pending.account_id,
            pending.destination,
            session_token=None,
        )

    async def _login(
        self,
        pending: PendingLogin,
        profile: DiscordProfile,
        made: IssuedSecret,
        waits: IssuedSecret,
        clashes: int = 0,
        *,
        browser: BrowserCookies = NO_COOKIES,
        binding: str | None = None,
    ) -> AuthCompleted:
        """``made``: the new session's token; ``waits``: a link proposal's (both derived from
        the round trip's binding value, ``binding``, for its callback loaded twice: see
        ``FinishDiscordConfirmation``). ``browser``: its session and offer, which end with
        the sign-in (see ``sign_out_browser``), with what its other Discord sign-ins (its
        binding cookie's values) made without their answer reaching it. Under ``binding``
        nothing is looked for: the session is ``made``, and no proposal is under ``waits``
        (made, it answered ``CONFIRM_NEEDED`` and committed instead of signing in; rolled
        back, it is not there; and the round trip's state is spent once, so no other
        callback completes it). A fresh value when the binding was not found among the
        browser's (``binding_of``), which none of them equals."""
        now = self._clock.now()
        async with self._uow() as uow:
            # Its round trip held before anything else (with the browser's others): its
            # browser signed out (or signed in again) while Discord answered, it starts nothing
            # (``not_signed_out_since``), nor for anyone but whom the browser's later Discord
            # sign-in signed in (``for_the_same_account``).
            held = await not_signed_out_since(uow, self._tokens, pending, browser)
            decision = await self._decide_login(uow, profile)
            match decision:
                case SignInLinkedAccount(account_id):
                    # Lock the account as an unlink does, then look at the link again: an
                    # unlink that committed meanwhile must not be followed by a session that
                    # the unlinked Discord account opened (decide again instead).
                    await uow.accounts.lock(account_id)
                    again = await uow.links.get_by_discord_id(profile.id)
                    if again is None or again.account_id != account_id:
                        raise errors.Conflict()
                    outcome = AuthOutcome.SIGNED_IN
                case ConfirmBeforeLinking(account_id):
                    await for_the_same_account(uow, self._tokens, held, browser, account_id)
                    proposal = await create_link_proposal(
                        uow,
                        self._tokens,
                        discord=profile.user,
                        account_id=account_id,
                        destination=pending.destination,
                        now=now,
                        secret=waits,
                    )
                    await uow.commit()
                    return AuthCompleted(
                        AuthPurpose.LOGIN,
                        AuthOutcome.CONFIRM_NEEDED,
                        account_id,
                        pending.destination,
                        session_token=None,
                        proposal_token=proposal,
                    )
                case LinkAndSignIn(account_id):
                    # Decided on unlocked reads: lock the account as an email change, an
                    # unlink, a deletion or another sign-in linking it does, then decide again
                    # on what is committed now. The address moved, unconfirmed, or the account
                    # linked or gone meanwhile: the same link would go to an account that no
                    # longer holds Discord's address (decide again from the top instead).
                    await uow.accounts.lock(account_id)
                    if await self._decide_login(uow, profile) != decision:
                        raise errors.Conflict()
                    async with _decided_without_a_link():
                        await apply_link(
                            uow,
                            discord=profile.user,
                            account_id=account_id,
                            now=now,
                            via="email",
                            roles=self._roles,
                            webhooks=self._webhooks,
                        )
                    outcome = AuthOutcome.LINKED_AND_SIGNED_IN
                case CreateAccount():
                    async with _decided_without_a_link():
                        account_id = await self._create_account(
                            uow, decision, profile, now, clashes=clashes
                        )
                    outcome = AuthOutcome.CREATED
                case Refuse(error):
                    await uow.audit.record(
                        AuditEvent(
                            AuditKind.LOGIN_REFUSED, now, None, profile.id, {"reason": error.code}
                        )
                    )
                    await uow.commit()
                    raise error()
            await for_the_same_account(uow, self._tokens, held, browser, account_id)
            token = await start_session(
                uow,
                self._tokens,
                account_id,
                now,
                self._session_ttl,
                method=SignInMethod.DISCORD,
                discord_id=profile.id,
                secret=made,
            )
            # Its callback loaded again once this session has ended is told so at once.
            await uow.pending_logins.mark_signed_in(pending.state_digest, account_id)
            await sign_out_browser(
                uow, self._tokens, browser, now, keeping=token, completing=binding
            )
            await uow.commit()
        return AuthCompleted(AuthPurpose.LOGIN, outcome, account_id, pending.destination, token)

    async def _decide_login(self, uow: UnitOfWork, profile: DiscordProfile) -> LoginDecision:
        """The login table's decision on what the transaction reads now: the Discord
        account's link, the accounts holding its address and their links."""
        link = await uow.links.get_by_discord_id(profile.id)
        email = profile.email_to_match
        matches = await uow.accounts.find_by_email(email) if email else []
        their_links = {m.id: await uow.links.get_by_account(m.id) for m in matches}
        if link is None:
            # Linked to this very Discord account since the read above (another callback of
            # its first sign-in, committed meanwhile): signed in as that account, not refused
            # as "linked to another Discord account".
            link = next(
                (t for t in their_links.values() if t is not None and t.discord_id == profile.id),
                None,
            )
        linked_matches = [
            account_id
            for account_id, theirs in their_links.items()
            if theirs is not None and theirs.discord_id != profile.id
        ]
        return decide_login(
            profile,
            link,
            matches,
            email_linking=self._email_linking,
            signup=self._signup,
            linked_matches=linked_matches,
        )

    async def _create_account(
        self,
        uow: UnitOfWork,
        decision: CreateAccount,
        profile: DiscordProfile,
        now: datetime,
        *,
        clashes: int = 0,
    ) -> AccountId:
        taken = await uow.accounts.usernames_starting_with(decision.username_base)
        account = Account(
            id=AccountId.new(),
            username=choose_username(decision.username_base, taken, clashes=clashes),
            email=decision.email,
            email_verified=decision.email_verified,
            password_hash=None,  # Discord is its only way in until a password is set
            created_at=now,
        )
        await uow.accounts.add(account)
        await uow.audit.record(
            AuditEvent(AuditKind.ACCOUNT_CREATED, now, account.id, profile.id, {"via": "discord"})
        )
        await self._webhooks.publish(uow, account_created(account, via="discord"))
        if decision.email is not None and await address_held(uow, decision.email, account.id):
            # Claimed meanwhile (a sign-up or an email change): no longer "no account has that
            # email"; decide again. Discord's verified email takes nothing from a claim.
            raise errors.Conflict()
        await apply_link(
            uow,
            discord=profile.user,
            account_id=account.id,
            now=now,
            via="signup",
            roles=self._roles,
            webhooks=self._webhooks,
        )
        return account.id
