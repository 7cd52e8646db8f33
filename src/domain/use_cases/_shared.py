"""Steps that several use cases take inside their own unit of work."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeGuard, TypeVar

from domain import errors
from domain.model import (
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    DiscordId,
    DiscordUser,
    EmailKind,
    Link,
    LinkedRole,
    OutgoingEmail,
    PendingLogin,
    RoleAction,
    RoleChange,
    Session,
    SignInMethod,
)
from domain.policies import LINK_REFUSALS, LinkDecision, decide_link, identity_recently_proved
from domain.ports import Clock, IssuedSecret, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._passwords import Passwords, signed_in_key
from domain.use_cases._webhooks import WebhookOutbox
from domain.webhooks import link_created

SESSION_TTL = timedelta(days=14)
# How long after a form renewed or started a session the same form, sent again with the same
# proof, is answered that session (see ``session_token_after``): a double click's second
# request comes at once.
SENT_TWICE_WITHIN = timedelta(minutes=1)
# What the forms that renew a session derive its new token for from the token before it, the
# browser's session cookie (see ``session_token_after``): each form its own purpose, so that
# no other form's session is found under it.
SESSION_SUCCESSOR = "session-successor"  # confirmed with the password ("sudo mode")
AFTER_PASSWORD_CHANGE = "session-after-password-change"  # noqa: S105 - a purpose
AFTER_EMAIL_CHANGE = "session-after-email-change"  # confirmed with the password
AFTER_DISCORD_PROOF = "session-after-discord-proof"  # "Confirm with Discord"
# What a "Sign in with Discord" (or Linked Roles' verification URL started signed out)
# derives its new session's token for from the binding value of its round trip (the one
# this browser's binding cookie holds for it: see ``session_token_after``): its callback
# loaded twice finds the session the first load made, and signing out with that cookie ends
# it when that load's answer never reached the browser (``sign_in_successors``).
AFTER_DISCORD_SIGN_IN = "session-after-discord-sign-in"
# What it derives the token of its link proposal for, when it asks for the account's proof
# first (email linking "confirm"): its callback loaded twice finds the proposal, whose cookie
# went with the answer the browser left, and shows the same step again; signing out in that
# browser spends it, its cookie or not (``sign_in_successors``).
PROPOSAL_AFTER_DISCORD_SIGN_IN = "proposal-after-discord-sign-in"
# How many flows one browser can have under way at once (tabs): its newest binding values.
BINDINGS_KEPT = 5
# Every one of them: signing out with a cookie ends what they made of it too
# (``successors_of``).
RENEWED_FROM_THE_COOKIE = (
    SESSION_SUCCESSOR,
    AFTER_PASSWORD_CHANGE,
    AFTER_EMAIL_CHANGE,
    AFTER_DISCORD_PROOF,
)
CONFLICT_ATTEMPTS = 3
# Tokens we issue are URL-safe base64; anything else cannot be ours, so it is refused
# before hashing (no work for junk, no unbounded input).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

T = TypeVar("T")


def plausible_token(token: str | None) -> TypeGuard[str]:
    return token is not None and _TOKEN_RE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class BrowserCookies:
    """What the browser a request came from holds, as its cookies say (the web app reads
    them once per request): the session it is signed in with, the email-linking offer
    waiting in it, and its binding values, newest first (those of its Discord round trips
    under way or just finished). A sign-in, a sign-out or any other end of its session ends
    what these name with it (``sign_out_browser``). Nothing here is checked: any of them may
    be junk, stale or planted, and is looked up (or refused) as such."""

    session_token: str | None = None
    proposal_token: str | None = None
    bindings: tuple[str, ...] = ()

    @classmethod
    def empty(cls) -> BrowserCookies:
        """A browser without any of them (a first visit, or a caller with no browser)."""
        return NO_COOKIES

    def without_session(self) -> BrowserCookies:
        """The same browser, its session left alone (the one the request answers)."""
        return replace(self, session_token=None)

    def without_offer(self) -> BrowserCookies:
        """The same browser, its offer left alone (spent by the request itself)."""
        return replace(self, proposal_token=None)

    def names_anything(self) -> bool:
        """Whether any of its values could be one of ours (``plausible_token``): without
        one, nothing can end, and no digest is worked out (``sign_out_browser`` works out
        each one once)."""
        return (
            plausible_token(self.session_token)
            or plausible_token(self.proposal_token)
            or any(plausible_token(b) for b in self.bindings)
        )


NO_COOKIES = BrowserCookies()


def digest_of(tokens: TokenIssuer, token: str | None) -> str | None:
    """The digest to look a presented token up by; ``None`` for anything that cannot be one
    of ours (refused before any lookup: no work for junk, no unbounded input)."""
    return tokens.digest(token) if plausible_token(token) else None


@dataclass(frozen=True, slots=True)
class LinkResult:
    link: Link
    created: bool  # False when the same link already existed (idempotent success)


async def apply_link(
    uow: UnitOfWork,
    *,
    discord: DiscordUser,
    account_id: AccountId,
    now: datetime,
    via: str,
    roles: Sequence[LinkedRole],
    webhooks: WebhookOutbox,
) -> LinkResult:
    """Link ``discord`` to ``account_id`` following the link policy, or raise its refusal.
    A new link spends the Discord account's ``/link`` tickets, is audited, queues the linked
    members' ``roles`` and is published (``link.created``), all in the caller's transaction."""
    link_of_discord = await uow.links.get_by_discord_id(discord.id)
    link_of_account = await uow.links.get_by_account(account_id)
    decision = decide_link(discord.id, account_id, link_of_discord, link_of_account)
    if decision is LinkDecision.ALREADY_LINKED:
        assert link_of_discord is not None  # noqa: S101 - guaranteed by the policy
        return LinkResult(link_of_discord, created=False)
    if decision in LINK_REFUSALS:
        raise LINK_REFUSALS[decision]()
    link = Link(
        discord_id=discord.id,
        account_id=account_id,
        linked_at=now,
        discord_username=discord.username,
        discord_global_name=discord.global_name,
        discord_avatar=discord.avatar,
    )
    await uow.links.add(link)
    # The Discord account's /link buttons end: an older one, leaked or forwarded, must not
    # link it again after an unlink.
    await uow.link_tickets.consume_for_discord(discord.id, now)
    # Linked Roles: tokens still kept from an earlier link (an unlink whose "not linked" push
    # has not gone through yet) now push "linked"; a deletion under way for the old state
    # (the unlink's, or a give-up's) loses its compare-and-swap and looks again.
    await uow.role_connection_tokens.mark_due(discord.id, now)
    await uow.audit.record(AuditEvent(AuditKind.LINKED, now, account_id, discord.id, {"via": via}))
    await queue_role_changes(
        uow, roles, RoleAction.ADD, discord_id=discord.id, account_id=account_id, now=now
    )
    await webhooks.publish(uow, link_created(link, via=via))
    if via != "signup":  # a brand-new account needs no alarm (nor a read of its row)
        account = await uow.accounts.get(account_id)
        if account is not None:
            await queue_notice(
                uow,
                account,
                EmailKind.DISCORD_LINKED,
                now,
                discord_username=discord.username,
                discord_id=str(discord.id),
            )
    return LinkResult(link, created=True)


async def queue_role_changes(
    uow: UnitOfWork,
    roles: Sequence[LinkedRole],
    action: RoleAction,
    *,
    discord_id: DiscordId,
    account_id: AccountId,
    now: datetime,
) -> None:
    """Queue the linked members' roles in the caller's transaction: Discord hears of a link
    or an unlink only if it commits, and never while the person waits (see
    ``ApplyRoleChanges``). A newer request for a member's role replaces an older pending one,
    so an unlink right after a link leaves the role off.

    An unlink also takes away every role Discord took (or may have taken: given up after
    timeouts) an add of for this member that the setting no longer names (taken out of it
    since, or named only by another instance's): a role the service handed out never stays
    on an unlinked member. A role never given (its add not sent, or refused) is left alone:
    the member may hold it for other reasons."""
    if action is RoleAction.REMOVE:
        given = [role for role in await uow.role_changes.added(discord_id) if role not in roles]
        roles = [*roles, *given]
    for role in roles:
        await uow.role_changes.request(
            RoleChange(discord_id, role, action, now, now, account_id=account_id)
        )


async def queue_email(
    uow: UnitOfWork,
    kind: EmailKind,
    *,
    to: str,
    account_id: AccountId | None,
    now: datetime,
    client: str | None = None,
    **detail: str,
) -> OutgoingEmail:
    """Queue an email in the caller's transaction: it goes out only if the change commits.
    ``client``: who asked (``OutgoingEmail.client``)."""
    email = OutgoingEmail(
        uuid.uuid4(), kind, to, account_id, now, now, detail=detail, client=client
    )
    await uow.outgoing_emails.add(email)
    return email


async def queue_notice(
    uow: UnitOfWork, account: Account, kind: EmailKind, now: datetime, **detail: str
) -> None:
    """A security notice, sent only to a verified address: an unverified one may belong to
    someone else (a typo), who must not learn about the account."""
    if account.email is not None and account.email_verified:
        await queue_email(uow, kind, to=account.email, account_id=account.id, now=now, **detail)


async def start_session(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    account_id: AccountId,
    now: datetime,
    ttl: timedelta = SESSION_TTL,
    *,
    method: SignInMethod,
    discord_id: DiscordId | None = None,
    secret: IssuedSecret | None = None,
) -> str:
    """A brand-new session (never reuse one across sign-ins: no session fixation). Signing in
    is a proof of identity: the session starts with it. ``discord_id``: the Discord account
    that signed in (a Discord sign-in), recorded with the event for `audit --discord-id`.
    ``secret``: its token, if not a random one (see ``session_token_after``)."""
    secret = secret or tokens.issue()
    session = Session(
        secret.digest,
        account_id,
        now,
        now + ttl,
        method=method,
        last_seen_at=now,
        proved_at=now,
        proved_with=method,
    )
    await uow.sessions.add(session)
    await uow.audit.record(
        AuditEvent(AuditKind.SIGNED_IN, now, account_id, discord_id, {"method": method.value})
    )
    return secret.token


async def renew_session(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    session: Session,
    now: datetime,
    *,
    proved_with: SignInMethod | None = None,
    secret: IssuedSecret | None = None,
) -> str:
    """``session`` under a new token, the old one ended, with a proof of identity made now
    when ``proved_with`` says how; its handle, expiry and password throttle stay. At every
    proof of identity and every change of the password or email (OWASP: a new session id at
    every change of privilege): a copy of the cookie taken before (a shared computer, a
    proxy's log) cannot ride on its owner's proof, nor outlive the change its owner makes
    (an attacker's review). ``NotSignedIn`` when the session ended meanwhile (signed out, or
    renewed by another request first). ``secret``: the new token, if not a random one."""
    secret = secret or tokens.issue()
    if not await uow.sessions.renew(session.digest, secret.digest, now, proved_with):
        raise errors.NotSignedIn()
    return secret.token


def session_token_after(tokens: TokenIssuer, secret: str, purpose: str) -> IssuedSecret:
    """The token a form renews or starts a session under, derived from the one-time secret
    the form came with (the session's old token, an emailed link's, a Discord sign-in's
    waiting proposal) with the server's key: an HMAC, which nobody without the key makes
    from the secret. A random one was lost with a form sent twice (a double click): both
    requests came with the same secret, the browser left the first for the second and never
    received the first one's answer, and the second found the secret spent (an ended session,
    a used link) and its person signed out or refused. The second, the same form with the
    same secret and the same proof again, is now answered that same token (see
    ``made_just_now``). ``purpose``: the form's own, so that no other form's session is
    found under it."""
    token = tokens.derive(secret, purpose)
    return IssuedSecret(token, tokens.digest(token))


def successors_of(tokens: TokenIssuer, session_token: str) -> list[str]:
    """The digests a form renews the session of ``session_token`` under (one for each of
    ``RENEWED_FROM_THE_COOKIE``). A form sent twice whose first answer was lost left its
    browser with the old, ended token and the session living on under one of these, which
    nobody holds: signing out with the old cookie ends it too, or it stayed signed in."""
    return [session_token_after(tokens, session_token, p).digest for p in RENEWED_FROM_THE_COOKIE]


def sign_in_successors(
    tokens: TokenIssuer,
    bindings: Sequence[str],
    purpose: str = AFTER_DISCORD_SIGN_IN,
    *,
    completing: str | None = None,
) -> list[str]:
    """The digests the Discord sign-ins bound to this browser (its binding cookie's values)
    start their sessions under (``AFTER_DISCORD_SIGN_IN``), or make their link proposals
    under (``PROPOSAL_AFTER_DISCORD_SIGN_IN``). A sign-in whose answer never reached the
    browser (the tab closed under it) left it with the cookies it had before and the new
    session (or proposal) living on, which nobody holds: signing out in that browser ends it
    too, or its callback opened again within the minute (the next person at a shared
    computer going back in the history) was handed it. ``completing``: the binding value
    of the sign-in the caller completes, left out (see ``sign_out_browser``)."""
    return [
        session_token_after(tokens, binding, purpose).digest
        for binding in [b for b in bindings if plausible_token(b)][:BINDINGS_KEPT]
        if binding != completing
    ]


async def made_just_now(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    made: IssuedSecret,
    now: datetime,
    *,
    proved_with: SignInMethod | None = None,
) -> tuple[Session, Account]:
    """The live session under ``made`` (see ``session_token_after``) and its account, when it
    got that token with a proof of identity (``proved_with`` one, when given) in the last
    ``SENT_TWICE_WITHIN``; otherwise ``NotSignedIn``. The caller has the second request
    prove what the first proved (a password, say) and ask for the same change: a copy of
    the secret alone gets nothing, nor does it later on."""
    session, account = await signed_in(uow, tokens, made.token, now)
    if (
        session.proved_at is None
        or (proved_with is not None and session.proved_with is not proved_with)
        or now - session.proved_at > SENT_TWICE_WITHIN
    ):
        raise errors.NotSignedIn()
    return session, account


async def signed_in(
    uow: UnitOfWork, tokens: TokenIssuer, session_token: str | None, now: datetime
) -> tuple[Session, Account]:
    """The live session this cookie names and its account, or ``NotSignedIn``."""
    digest = digest_of(tokens, session_token)
    session = await uow.sessions.get(digest) if digest is not None else None
    if session is None or now >= session.expires_at:
        raise errors.NotSignedIn()
    account = await uow.accounts.get(session.account_id)
    if account is None:
        raise errors.NotSignedIn()
    return session, account


async def session_of_pending(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    now: datetime,
    pending: PendingLogin,
    session_token: str | None,
) -> Session:
    """The session of the account that started a Discord round trip, read in the caller's
    transaction: it may have ended (signed out everywhere, an unlink) while Discord answered,
    and then nothing may be linked or proved for it.

    The account is locked first, as a password reset and "sign out everywhere" lock it: one
    that is under way ends the session before it is read here, and what the caller then
    links or proves is never written just after the reset that took the account back."""
    if pending.account_id is not None:
        await uow.accounts.lock(pending.account_id)
    try:
        session, account = await signed_in(uow, tokens, session_token, now)
    except errors.NotSignedIn:
        account = None
    if account is None or account.id != pending.account_id:
        raise errors.NotSignedIn("Sign in to the account you started from, then try again.")
    return session


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a whole transaction again when a concurrent writer won a uniqueness race, or the
    database rolled it back for another one (``StorageContention``: a deadlock broken).

    The second run sees the winner's rows, so the policies decide again with the truth
    (e.g. "already linked" instead of a duplicate-key error). Nothing of a rolled-back one
    was written, and its caller's one-time secret (a Discord callback's state and code) is
    often spent already: a "try again" answer could not be tried again.
    """
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except (errors.Conflict, errors.StorageContention):
            continue
    return await attempt()


async def still_the_password(uow: UnitOfWork, account_id: AccountId, checked: str) -> Account:
    """The account, locked, if its password hash is still ``checked`` (the one a password was
    just checked against, outside any transaction because hashing is slow). A password reset
    or change that committed meanwhile ended every session of the account: a session started
    from the old password must not outlive it (``PasswordChanged``, which
    ``Passwords.while_right`` turns into a second try or ``InvalidCredentials``). A reset that
    commits after this lock waits for it, and then ends this session too."""
    fresh = await uow.accounts.lock(account_id)
    if fresh is None:
        raise errors.PasswordChanged(None)
    if fresh.password_hash != checked:
        raise errors.PasswordChanged(fresh.password_hash)
    return fresh


async def prove_identity(
    uow_factory: UnitOfWorkFactory,
    tokens: TokenIssuer,
    clock: Clock,
    passwords: Passwords,
    *,
    session_token: str | None,
    current_password: str | None,
) -> tuple[Session, Account]:
    """The signed-in session and account, if it may make a sensitive change now: the right
    current password typed into the form, or a recent proof in this session (see
    ``identity_recently_proved``). Otherwise ``InvalidCredentials`` (a wrong password) or
    ``ReauthenticationRequired``. The password is checked outside any transaction (slow)."""
    now = clock.now()
    async with uow_factory(read_only=True) as uow:
        session, account = await signed_in(uow, tokens, session_token, now)
    if current_password and account.password_hash is not None:
        key = signed_in_key(session)
        if await passwords.check(key, account.password_hash, current_password):
            return session, account
        raise errors.InvalidCredentials("Your current password is not right.")
    if identity_recently_proved(session, account, now):
        return session, account
    raise errors.ReauthenticationRequired()


def binding_digests(tokens: TokenIssuer, bindings: Sequence[str]) -> set[str]:
    """The digests of this browser's binding values (its newest ``BINDINGS_KEPT`` plausible
    ones): its Discord round trips' pending logins are bound to them."""
    return {
        tokens.digest(binding)
        for binding in [b for b in bindings if plausible_token(b)][:BINDINGS_KEPT]
    }


async def stop_sign_ins_under_way(
    uow: UnitOfWork, tokens: TokenIssuer, browser: BrowserCookies, now: datetime
) -> bool:
    """Mark the Discord round trips bound to this browser (its binding cookie's values) as
    signed out of (``PendingLogin.signed_out_at``), in the caller's transaction: the first
    load of a callback still waiting on Discord starts no session afterwards, nor makes a
    link proposal (``not_signed_out_since``: its answer would otherwise come after this
    sign-out, and its callback opened again within the minute hand that session over).
    Whether any was marked. Only the values this browser holds name them: nobody else can
    make their digests.

    First in the caller's transaction, before it locks anything: it waits for a load that
    holds its own round trip (the first lock that load takes), and that load must never wait
    for this transaction meanwhile."""
    digests = binding_digests(tokens, browser.bindings)
    if not digests:
        return False
    return await uow.pending_logins.mark_signed_out(digests, now) > 0


async def not_signed_out_since(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    pending: PendingLogin,
    browser: BrowserCookies = NO_COOKIES,
) -> PendingLogin:
    """Hold the round trip of a Discord sign-in about to start its session (or make its link
    proposal), first in its transaction, with the browser's other round trips (its binding
    cookie's values, which ``for_the_same_account`` marks), and refuse it
    (``DiscordSignInStopped``: the transaction rolls back, nothing done) when its browser
    signed out, or signed in again, since it started (``stop_sign_ins_under_way``). A
    sign-out that marks it later waits for this transaction, then ends the session it
    started. The round trip as held (for ``for_the_same_account``)."""
    digests = binding_digests(tokens, browser.bindings)
    held = await uow.pending_logins.lock(pending.state_digest, digests)
    if held is not None and held.signed_out_at is not None:
        raise errors.DiscordSignInStopped()
    return held or pending


async def for_the_same_account(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    held: PendingLogin,
    browser: BrowserCookies,
    account_id: AccountId,
) -> None:
    """A Discord sign-in (``held``, its round trip as ``not_signed_out_since`` held it) about
    to start a session for ``account_id``, or make its link proposal: refused
    (``DiscordSignInStopped``) when another Discord sign-in of its browser signed in someone
    else since it started (the next person at a shared computer: that load's session would
    otherwise be made after theirs, and its callback opened again within the minute from
    that browser hand it over); else it records ``account_id`` on the browser's other round
    trips (``superseded_by``), which ``not_signed_out_since`` holds. The same person's
    other tab finishes (as before, each tab's answer its own session): a Discord sign-in
    does not mark its browser signed out."""
    if held.superseded_by is not None and held.superseded_by != account_id:
        raise errors.DiscordSignInStopped()
    digests = binding_digests(tokens, browser.bindings)
    await uow.pending_logins.supersede(digests, account_id, but=held.state_digest)


def browser_offers(
    tokens: TokenIssuer, browser: BrowserCookies, *, completing: str | None = None
) -> list[str]:
    """The digests of the link proposals this browser's cookies name (its offer, and those
    its Discord sign-ins made under its binding values: ``sign_in_successors``), in the
    order every transaction spends them in, the digests'. Two browsers whose cookies name
    each other's (copied binding cookies) spending them at once, one its own offer first,
    waited for each other (Postgres aborted one: a deadlock, a 503). After the round trips
    and the accounts a transaction locks, before the sessions (in the digests' order too)."""
    offer = digest_of(tokens, browser.proposal_token)
    offers = {offer} if offer is not None else set()
    offers.update(
        sign_in_successors(
            tokens, browser.bindings, PROPOSAL_AFTER_DISCORD_SIGN_IN, completing=completing
        )
    )
    return sorted(offers)


async def spend_browser_offers(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    browser: BrowserCookies,
    now: datetime,
    *,
    completing: str | None = None,
) -> bool:
    """The link proposals this browser's cookies name, spent in their order (see
    ``browser_offers``), in the caller's transaction: whether any was. A caller that ends
    sessions before ``sign_out_browser`` (``offers_spent``) spends them first."""
    ended = False
    for digest in browser_offers(tokens, browser, completing=completing):
        ended = await uow.link_proposals.consume(digest, now) is not None or ended
    return ended


async def sign_out_browser(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    browser: BrowserCookies,
    now: datetime,
    *,
    keeping: str | None = None,
    completing: str | None = None,
    offers_spent: bool = False,
) -> bool:
    """``SignOut``'s writes (see it), in the caller's transaction: whatever ends or replaces
    this browser's session (``EndSession``, ``EndAllSessions``, a sign-in) does it in its own
    one. As two transactions, a database failing between them left one done and not the
    other, answered with a 503 (the cookies not changed). ``browser``: its session, its
    offer, and its binding cookie's values, whose Discord sign-ins' sessions and link
    proposals made in the last ``SENT_TWICE_WITHIN`` end too (``sign_in_successors``): their
    answer never reached the browser, or they would be its cookies. Whether anything
    ended.

    ``completing``: the binding value of the Discord sign-in this transaction completes
    (``CompleteDiscordAuth._login``), whose own session is ``keeping`` and which made no
    proposal (it made one instead of signing in, and its state is spent once), so nothing
    under it is looked up: neither is there to end.

    ``offers_spent``: the caller spent the browser's offers already, in their order (see
    ``browser_offers``), before the rows it locked after them.

    It marks none of the browser's Discord round trips: a caller that ends the browser's
    session marks them itself (``stop_sign_ins_under_way``), first in its transaction, before
    any lock (a load that started its session before that waited for it has committed it,
    and it is read and ended here; a later one starts none). A Discord sign-in
    (``completing``), or its session handed over by its callback loaded again, marks none:
    two tabs of one browser signing in the same account with Discord each finish (the later
    one ends the session the other made, as before; another account: ``for_the_same_account``),
    and the two loads hold the browser's round trips in one order (``not_signed_out_since``:
    the later waits for the earlier, no deadlock)."""
    ended = False
    if not offers_spent:
        ended = await spend_browser_offers(uow, tokens, browser, now, completing=completing)
    kept = digest_of(tokens, keeping)
    own = digest_of(tokens, browser.session_token)
    # Only the cookie's own session ends whenever it is found; the others (renewed from it,
    # or made by a Discord sign-in of this browser's) only when nobody can hold them yet.
    # In one order, the digests': two browsers whose cookies name each other's sessions (a
    # copied cookie) ending them at once, each its own first, waited for each other
    # (Postgres aborted one: a deadlock, a 500). The second now waits for the first.
    for digest in browser_sessions(tokens, browser, completing=completing):
        session = await uow.sessions.get(digest) if digest != kept else None
        if session is not None and (digest == own or renewed_just_now(session, now)):
            await uow.sessions.remove(digest)
            await uow.audit.record(AuditEvent(AuditKind.SIGNED_OUT, now, session.account_id))
            ended = True
    return ended


def browser_sessions(
    tokens: TokenIssuer, browser: BrowserCookies, *, completing: str | None = None
) -> list[str]:
    """The digests of the sessions ``sign_out_browser`` may end for this browser, in the
    digests' order: its cookie's own, those renewed from it and those its Discord sign-ins
    made (see ``sign_out_browser``). A caller that ends an account's sessions too locks
    these with them first, as one set (``SessionRepository.lock``)."""
    own = digest_of(tokens, browser.session_token)
    successors = (
        successors_of(tokens, browser.session_token) if browser.session_token and own else []
    )
    made = sign_in_successors(tokens, browser.bindings, completing=completing)
    return sorted({*([own] if own else []), *successors, *made})


def renewed_just_now(successor: Session, now: datetime) -> bool:
    """Whether a successor (see ``successors_of``) got its token in the last
    ``SENT_TWICE_WITHIN``. Every form renews it with a proof of identity, which sets
    ``proved_at`` to the renewal's time (``created_at`` is the session's first sign-in, kept
    across renewals), and a later proof renews it under another token: under this one,
    ``proved_at`` is when it was made."""
    return successor.proved_at is not None and now - successor.proved_at <= SENT_TWICE_WITHIN
