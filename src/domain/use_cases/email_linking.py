"""Email linking ``confirm`` (Keycloak's "first broker login"): a Discord sign-in whose verified
email is an existing account's is linked only after the person proves the TaskFlow side, with
the account's password or with a one-time link emailed to its address.

The Discord side is already proved (the OAuth round trip); what waits is a ``LinkProposal``
whose token lives only in this browser's cookie. The emailed link works together with that
cookie: it proves the mailbox, the cookie says which Discord account this browser proved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    LINK_PROPOSAL_TTL,
    Account,
    AccountId,
    AuditEvent,
    AuditKind,
    DiscordUser,
    EmailKind,
    EmailPurpose,
    EmailToken,
    LinkedRole,
    LinkProposal,
    SignInMethod,
)
from domain.policies import SecretStatus
from domain.ports import Clock, IssuedSecret, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._email_links import RESEND_LIMITS, consume_email_link, within_limits
from domain.use_cases._passwords import Passwords, new_device_token, throttle_key
from domain.use_cases._secrets import use_secret
from domain.use_cases._shared import (
    SENT_TWICE_WITHIN,
    SESSION_TTL,
    BrowserCookies,
    apply_link,
    browser_offers,
    digest_of,
    made_just_now,
    queue_email,
    retry_on_conflict,
    session_token_after,
    sign_out_browser,
    start_session,
    still_the_password,
    stop_sign_ins_under_way,
)
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox


def proposal_refusal(status: SecretStatus) -> errors.DomainError:
    if status is SecretStatus.EXPIRED:
        return errors.SecretExpired(
            "This confirmation took longer than 30 minutes. Sign in with Discord again."
        )
    if status is SecretStatus.CONSUMED:
        return errors.SecretConsumed("This Discord account was already linked. Sign in again.")
    return errors.SecretUnknown(
        "There is no Discord sign-in waiting in this browser. Open the emailed link in the "
        "browser where you signed in with Discord, or sign in with Discord again."
    )


async def create_link_proposal(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    *,
    discord: DiscordUser,
    account_id: AccountId,
    destination: str,
    now: datetime,
    secret: IssuedSecret | None = None,
) -> str:
    """In the caller's transaction: a proposal for the account, its token for the cookie
    (``secret``, if not a random one: see ``session_token_after``)."""
    secret = secret or tokens.issue()
    await uow.link_proposals.add(
        LinkProposal(secret.digest, discord, account_id, destination, now, now + LINK_PROPOSAL_TTL)
    )
    return secret.token


def offers_emailed_link(account: Account) -> bool:
    """The emailed link proves the mailbox, and the mailbox proves the account only if the
    account's address was confirmed: whoever registered someone else's address (never
    confirmed) must not receive that person's Discord link when they click. Otherwise only
    the account's password can prove it."""
    return account.email is not None and account.email_verified


@dataclass(frozen=True, slots=True)
class ProposalShown:
    proposal: LinkProposal
    account: Account


class ShowLinkProposal:
    """The page that asks for the password or offers the emailed link."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, proposal_token: str | None) -> ProposalShown:
        async with self._uow(read_only=True) as uow:
            proposal = await use_secret(
                uow.link_proposals,
                digest_of(self._tokens, proposal_token),
                self._clock.now(),
                spend=False,
                refusal=proposal_refusal,
            )
            account = await uow.accounts.get(proposal.account_id)
        if account is None:
            raise proposal_refusal(SecretStatus.UNKNOWN)
        return ProposalShown(proposal, account)


@dataclass(frozen=True, slots=True)
class LinkConfirmed:
    account_id: AccountId
    session_token: str
    destination: str
    # Confirmed with the password: the browser is trusted as after a password sign-in.
    device_token: str | None = None
    # The same form was sent twice (a double click): the other request linked and signed in,
    # and this one answers that request's session (which its browser may never have got).
    sent_twice: bool = False


# What the session a confirmed Discord sign-in starts is derived for, from the token of its
# proposal (the browser's cookie; see ``session_token_after``): the form sent twice (a double
# click) finds the proposal spent by its other request, whose answer, the session's cookie,
# its browser never received ("This Discord account was already linked. Sign in again.").
# The second request, with the same proof again (the password, or the emailed link) within
# ``SENT_TWICE_WITHIN``, is answered that session; a copy of the cookie alone gets nothing.
_SESSION_OF_PROPOSAL = "session-of-link-proposal"


async def _confirmed_just_now(
    uow: UnitOfWork, tokens: TokenIssuer, proposal_token: str | None, now: datetime
) -> tuple[LinkProposal, Account, str]:
    """The proposal of ``proposal_token``, its account and the token of the session its
    confirmation started, if it was confirmed in the last ``SENT_TWICE_WITHIN`` (the session
    and the link it made still there); otherwise ``NotSignedIn``. The caller checks that the
    request proves what the confirmation proved."""
    digest = digest_of(tokens, proposal_token)
    proposal = await uow.link_proposals.get(digest) if digest is not None else None
    if proposal is None or proposal.consumed_at is None:
        raise errors.NotSignedIn()
    assert proposal_token is not None  # noqa: S101 - a proposal was found by it
    made = session_token_after(tokens, proposal_token, _SESSION_OF_PROPOSAL)
    session, account = await made_just_now(uow, tokens, made, now)
    link = await uow.links.get_by_discord_id(proposal.discord.id)
    if session.account_id != proposal.account_id or link is None or link.account_id != account.id:
        raise errors.NotSignedIn()
    return proposal, account, made.token


async def _spend_offers(
    uow: UnitOfWork, tokens: TokenIssuer, browser: BrowserCookies, now: datetime
) -> tuple[LinkProposal, dict[str, LinkProposal]]:
    """The proposal this browser's offer names, spent (or its refusal), with the browser's
    other offers (``browser_offers``, which its session's end spends: see
    ``_link_and_sign_in``), all in the caller's transaction and in their one order; and the
    others this spent, as they were (``_sent_for``). Its own first, then the others at its
    session's end, it waited for a sign-out in a browser holding a copy of its binding
    cookie (whose own proposal's digest came first) while that one waited for it: a
    deadlock, which Postgres broke by rolling one back."""
    own = digest_of(tokens, browser.proposal_token)
    if own is None:
        raise proposal_refusal(SecretStatus.UNKNOWN)
    proposal: LinkProposal | None = None
    others: dict[str, LinkProposal] = {}
    for digest in browser_offers(tokens, browser):
        if digest != own:
            if (spent := await uow.link_proposals.consume(digest, now)) is not None:
                others[digest] = spent
            continue
        proposal = await use_secret(
            uow.link_proposals, own, now, spend=True, refusal=proposal_refusal
        )
    assert proposal is not None  # noqa: S101 - its own offer is among them
    return proposal, others


async def _link_and_sign_in(
    uow: UnitOfWork,
    tokens: TokenIssuer,
    proposal: LinkProposal,
    proposal_token: str,
    now: datetime,
    *,
    ttl: timedelta,
    method: SignInMethod,
    roles: Sequence[LinkedRole],
    webhooks: WebhookOutbox,
    browser: BrowserCookies,
) -> LinkConfirmed:
    """``browser``: the session this browser had, which ends in this transaction (see
    ``sign_out_browser``), as a sign-in's does, with what the Discord sign-ins bound to it
    (its binding cookie's values) made without their answer reaching it. Its offers,
    ``proposal``'s among them, were spent by the caller (``_spend_offers``)."""
    await apply_link(
        uow,
        discord=proposal.discord,
        account_id=proposal.account_id,
        now=now,
        via="email",
        roles=roles,
        webhooks=webhooks,
    )
    # Every link emailed to confirm a Discord sign-in is done with: one sent for an earlier
    # sign-in of this Discord account (still waiting) would otherwise link it again after an
    # unlink, with no proof asked (see ``_sent_for``).
    await uow.email_tokens.consume_all(proposal.account_id, EmailPurpose.LINK, now)
    made = session_token_after(tokens, proposal_token, _SESSION_OF_PROPOSAL)
    token = await start_session(
        uow, tokens, proposal.account_id, now, ttl, method=method, secret=made
    )
    # Its round trips marked by the caller, first in its transaction.
    await sign_out_browser(uow, tokens, browser, now, keeping=token, offers_spent=True)
    await uow.commit()
    return LinkConfirmed(proposal.account_id, token, proposal.destination)


class ConfirmLinkWithPassword:
    """The account's password proves the TaskFlow side: link, and sign in."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: Passwords,
        session_ttl: timedelta = SESSION_TTL,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords
        self._session_ttl = session_ttl
        self._roles = tuple(linked_roles)
        self._webhooks = webhooks

    async def execute(
        self,
        *,
        browser: BrowserCookies,
        password: str,
        device_token: str | None = None,
        client_address: str | None = None,
    ) -> LinkConfirmed:
        """``browser``: its offer, the proposal this confirms, and the session it had, which
        ends in the link's transaction (the form sent twice: the first request ended it, both
        coming with the same cookie), with what the Discord sign-ins bound to it (its binding
        cookie's values) made unheld. ``device_token``: the browser's, as for a sign-in (its
        tries count on their own throttle when an earlier password sign-in to this account
        gave it). A wrong password is a failed sign-in, audited as one (with the Discord
        account and ``client_address``): whoever holds a Discord account with the account's
        address may be guessing it."""
        proposal_token = browser.proposal_token
        try:
            shown = await ShowLinkProposal(self._uow, self._tokens, self._clock).execute(
                proposal_token
            )
        except errors.SecretConsumed as consumed:  # by this form sent twice, if by anything
            return await self._sent_twice(
                proposal_token, password, device_token, client_address, consumed
            )
        password_hash = shown.account.password_hash
        if password_hash is None:
            raise errors.InvalidInput(
                "This account has no password: use the link we email to its address."
            )
        key = throttle_key(self._tokens, shown.account, device_token)
        if not await self._passwords.check(key, password_hash, password):
            await self._audit_failure(shown.account.id, shown.proposal, client_address)
            raise errors.InvalidCredentials("The password is not right.")
        assert proposal_token is not None  # noqa: S101 - a proposal was found by it

        async def attempt(checked: str) -> LinkConfirmed:
            now = self._clock.now()
            async with self._uow() as uow:
                # First, before any lock: see ``stop_sign_ins_under_way``.
                await stop_sign_ins_under_way(uow, self._tokens, browser, now)
                fresh = await still_the_password(uow, shown.account.id, checked)
                proposal, _ = await _spend_offers(uow, self._tokens, browser, now)
                done = await _link_and_sign_in(
                    uow,
                    self._tokens,
                    proposal,
                    proposal_token,
                    now,
                    ttl=self._session_ttl,
                    method=SignInMethod.PASSWORD,
                    roles=self._roles,
                    webhooks=self._webhooks,
                    browser=browser,
                )
            device = new_device_token(self._tokens, fresh)
            return replace(done, device_token=device)

        try:
            return await self._passwords.while_right(
                password_hash,
                password,
                lambda checked: retry_on_conflict(lambda: attempt(checked)),
            )
        except errors.SecretConsumed as consumed:  # raced this form sent twice, if anything
            return await self._sent_twice(
                proposal_token, password, device_token, client_address, consumed
            )

    async def _sent_twice(
        self,
        proposal_token: str | None,
        password: str,
        device_token: str | None,
        client_address: str | None,
        consumed: errors.SecretConsumed,
    ) -> LinkConfirmed:
        """For a request that found the proposal spent: when its confirmation (this form
        sent twice) was in the last ``SENT_TWICE_WITHIN`` and ``password`` is right (under
        the throttle of a sign-in: a copy of the cookie may be guessing), that confirmation's
        session; otherwise the refusal ``consumed``."""
        try:
            async with self._uow(read_only=True) as uow:
                proposal, account, token = await _confirmed_just_now(
                    uow, self._tokens, proposal_token, self._clock.now()
                )
        except errors.NotSignedIn:
            raise consumed from None
        key = throttle_key(self._tokens, account, device_token)
        if account.password_hash is None or not await self._passwords.check(
            key, account.password_hash, password
        ):
            await self._audit_failure(account.id, proposal, client_address)
            raise consumed
        device = new_device_token(self._tokens, account)
        return LinkConfirmed(account.id, token, proposal.destination, device, sent_twice=True)

    async def _audit_failure(
        self, account_id: AccountId, proposal: LinkProposal, client_address: str | None
    ) -> None:
        async with self._uow() as uow:
            await uow.audit.record(
                AuditEvent(
                    AuditKind.SIGN_IN_FAILED,
                    self._clock.now(),
                    account_id,
                    proposal.discord.id,
                    {"via": "link_confirm", "client": client_address or "unknown"},
                )
            )
            await uow.commit()


@dataclass(frozen=True, slots=True)
class LinkEmailed:
    address: str  # where the link goes
    # When the link stops working: with the Discord sign-in waiting for it (see DeliverEmails).
    expires_at: datetime


class EmailLinkConfirmation:
    """ "Email me a link": a one-time link to the account's address (rate limited)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, proposal_token: str | None) -> LinkEmailed:
        shown = await ShowLinkProposal(self._uow, self._tokens, self._clock).execute(proposal_token)
        address = shown.account.email
        if address is None or not offers_emailed_link(shown.account):
            raise errors.InvalidInput(
                "This account's email address is not confirmed, so a link sent there proves "
                "nothing about the account: enter its password instead."
            )
        now = self._clock.now()
        async with self._uow() as uow:
            kind = EmailKind.CONFIRM_DISCORD_LINK
            if not await within_limits(uow, shown.account.id, kind, now, RESEND_LIMITS):
                raise errors.TooManyRequests(
                    "We emailed a link very recently. Check your inbox and spam folder, or ask "
                    "again in a few minutes (one a minute, five an hour)."
                )
            await queue_email(
                uow,
                kind,
                to=address,
                account_id=shown.account.id,
                now=now,
                discord_username=shown.proposal.discord.username,
                discord_id=str(shown.proposal.discord.id),
                proposal=shown.proposal.digest,  # a digest, not the browser's secret
            )
            await uow.commit()
        return LinkEmailed(address, shown.proposal.expires_at)


async def _sent_for(
    uow: UnitOfWork,
    used: EmailToken,
    proposal: LinkProposal,
    spent_now: Mapping[str, LinkProposal] | None = None,
) -> bool:
    """Whether the emailed link was sent for the Discord sign-in waiting in this browser: for
    its proposal, or for an earlier one of the same Discord account and TaskFlow account that
    is still waiting too (the person signed in with Discord again while the email was on its
    way, which gave the browser a new proposal). The browser proves the Discord account the
    email names, the link the mailbox: the link the email offered is the one made. Another
    Discord account's sign-in, though it has the same address, is not the one the email
    named. ``spent_now``: the browser's other proposals the caller's transaction spent
    (``_spend_offers``): waiting still, until then."""
    if used.proposal_digest is None:
        return False
    if used.proposal_digest == proposal.digest:
        return True
    spent_now = spent_now or {}
    sent_for = spent_now.get(used.proposal_digest) or await uow.link_proposals.get(
        used.proposal_digest
    )
    return (
        sent_for is not None
        # Confirmed already (with the password): the link is done with, whatever came after
        # (an unlink by the owner, say).
        and (sent_for.consumed_at is None or sent_for.digest in spent_now)
        and sent_for.discord.id == proposal.discord.id
        and sent_for.account_id == proposal.account_id
    )


class ConfirmLinkWithEmail:
    """The emailed link, opened in the browser that holds the proposal: it proves the mailbox
    (of a confirmed address), the proposal proves Discord. Link, and sign in."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        session_ttl: timedelta = SESSION_TTL,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock
        self._session_ttl = session_ttl
        self._roles = tuple(linked_roles)
        self._webhooks = webhooks

    async def execute(
        self,
        *,
        browser: BrowserCookies,
        email_token: str,
    ) -> LinkConfirmed:
        """``browser``: its offer, the proposal this confirms, and the session it had, which
        ends in the link's transaction (the form sent twice: the first request ended it),
        with what the Discord sign-ins bound to it (its binding cookie's values) made
        unheld."""
        proposal_token = browser.proposal_token

        async def attempt() -> LinkConfirmed:
            now = self._clock.now()
            async with self._uow() as uow:
                # First, before any lock: see ``stop_sign_ins_under_way``.
                await stop_sign_ins_under_way(uow, self._tokens, browser, now)
                used, account = await consume_email_link(
                    uow, self._tokens, email_token, EmailPurpose.LINK, now
                )
                proposal, others = await _spend_offers(uow, self._tokens, browser, now)
                if proposal.account_id != account.id or not await _sent_for(
                    uow, used, proposal, others
                ):
                    raise errors.SecretUnknown(
                        "This link was sent for a Discord sign-in in another browser (or as "
                        "another Discord account). Open it in the browser where you signed in "
                        "with Discord."
                    )
                if not offers_emailed_link(account):  # unconfirmed since the email went out
                    raise errors.InvalidInput(
                        "This account's email address is not confirmed: enter its password."
                    )
                assert proposal_token is not None  # noqa: S101 - a proposal was found by it
                return await _link_and_sign_in(
                    uow,
                    self._tokens,
                    proposal,
                    proposal_token,
                    now,
                    ttl=self._session_ttl,
                    method=SignInMethod.EMAIL_LINK,
                    roles=self._roles,
                    webhooks=self._webhooks,
                    browser=browser,
                )

        try:
            return await retry_on_conflict(attempt)
        except errors.SecretConsumed as consumed:  # by this form sent twice, if by anything
            return await self._sent_twice(proposal_token, email_token, consumed)

    async def _sent_twice(
        self, proposal_token: str | None, email_token: str, consumed: errors.SecretConsumed
    ) -> LinkConfirmed:
        """For a request that found the emailed link or the proposal spent: when the
        proposal's confirmation (this form sent twice) was in the last
        ``SENT_TWICE_WITHIN`` and ``email_token`` is a link sent for it, used then too, that
        confirmation's session; otherwise the refusal ``consumed``. The browser's cookie
        alone proves nothing, nor does the link in another browser."""
        now = self._clock.now()
        digest = digest_of(self._tokens, email_token)
        async with self._uow(read_only=True) as uow:
            try:
                proposal, account, token = await _confirmed_just_now(
                    uow, self._tokens, proposal_token, now
                )
            except errors.NotSignedIn:
                raise consumed from None
            used = await uow.email_tokens.get(digest) if digest is not None else None
            if (
                used is None
                or used.purpose is not EmailPurpose.LINK
                or used.account_id != account.id
                or used.consumed_at is None
                or now - used.consumed_at > SENT_TWICE_WITHIN
                or not await _sent_for(uow, used, proposal)
            ):
                raise consumed
        return LinkConfirmed(account.id, token, proposal.destination, sent_twice=True)
