"""Password reset: ask for an emailed link, then use it to choose a new password."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain import errors
from domain.model import (
    Account,
    AuditEvent,
    AuditKind,
    EmailKind,
    EmailPurpose,
    Link,
    LinkedRole,
    RoleAction,
    SignInMethod,
    email_to_look_up,
    normalize_email,
)
from domain.ports import Clock, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._addresses import lock_holders, take_address
from domain.use_cases._email_links import (
    client_name,
    consume_email_link,
    queue_to_unproved,
    refusal_for,
    within_limits,
)
from domain.use_cases._passwords import (
    Passwords,
    account_key,
    new_device_token,
    shared_signed_in_key,
    sign_in_keys,
)
from domain.use_cases._secrets import EmailLinks, use_secret
from domain.use_cases._shared import (
    NO_COOKIES,
    SESSION_TTL,
    BrowserCookies,
    browser_sessions,
    digest_of,
    made_just_now,
    queue_email,
    queue_role_changes,
    retry_on_conflict,
    session_token_after,
    sign_out_browser,
    spend_browser_offers,
    start_session,
    stop_sign_ins_under_way,
)
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.use_cases.accounts import SignedIn, _PasswordUseCase
from domain.webhooks import link_deleted


class RequestPasswordReset:
    """Email a reset link to every account with this address. Says nothing either way:
    the caller answers the same whether or not an account exists (no enumeration)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, email: str, client: str | None = None) -> None:
        """``client``: who asks, for the limits on reset links to an unconfirmed address."""
        # Looked up only: an address stored before forms refused hidden characters in one
        # (``validate_email``) still gets its reset link.
        address = email_to_look_up(email)
        now = self._clock.now()
        asker = client_name(client)
        async with self._uow() as uow:
            # Every account locked first, in one order (each one's limit locks it too, see
            # ``within_limits``): the address's own limit locks the address, after which no
            # account lock may be waited for. Each as it is once locked: an email change
            # that committed meanwhile took the address away from it.
            found = await uow.accounts.find_by_email(address)
            locked = [await uow.accounts.lock(a.id) for a in sorted(found, key=_by_id)]
            for account in locked:
                if (
                    account is None
                    or account.email is None
                    or normalize_email(account.email) != address
                    or not await within_limits(uow, account.id, EmailKind.RESET_PASSWORD, now)
                ):
                    continue  # silently: a refusal would tell that the account exists
                detail = {
                    "has_password": "yes" if account.has_password else "no",
                    # Sent only while it is the same: a new password or "sign out everywhere"
                    # meanwhile cancels it (``email_delivery._still_wanted``).
                    "device_epoch": str(account.device_epoch),
                }
                kind, to = EmailKind.RESET_PASSWORD, account.email
                if account.email_verified:  # its owner's: the per-account limit protects it
                    await queue_email(uow, kind, to=to, account_id=account.id, now=now, **detail)
                elif not await queue_to_unproved(
                    uow, kind, to=to, account_id=account.id, now=now, client=asker, **detail
                ):
                    continue  # withheld (and audited so), as silently
                await uow.audit.record(
                    AuditEvent(AuditKind.PASSWORD_RESET_REQUESTED, now, account.id)
                )
            await uow.commit()


def _by_id(account: Account) -> str:
    return str(account.id.value)


# What the session a reset starts is derived for, from the reset link's token (see
# ``session_token_after``).
_SESSION_OF_RESET = "session-of-reset-link"


class ResetPassword(_PasswordUseCase):
    """Use the emailed link once: new password, every session ends, this browser signs in.

    The link proves the person reads the account's mailbox, so the address counts as
    confirmed from then on.

    The form sent twice (a double click) left its person signed out: the first request
    started a session whose cookie the browser (it had left that request for the second)
    never received, and the second found the link used. The session's token is derived from
    the link's (``session_token_after``), and the second request, with the same link and the
    very password the first saved (the account's password now) within ``SENT_TWICE_WITHIN``,
    is answered it. The used link alone (a mailbox read later) gets nothing.
    """

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
        super().__init__(uow, tokens, clock, passwords, session_ttl, webhooks=webhooks)
        self._roles = tuple(linked_roles)

    async def execute(
        self,
        *,
        token: str,
        new_password: str,
        browser: BrowserCookies = NO_COOKIES,
    ) -> PasswordReset:
        """``browser``: the session this browser had and the email-linking offer waiting in
        it, which end in the reset's transaction (see ``SignOut``, ``sign_out_browser``; the
        form sent twice: the first request ended them, both coming with the same cookies),
        with what the Discord sign-ins bound to it (its binding cookie's values) made without
        their answer reaching it."""
        try:
            async with self._uow(read_only=True) as uow:  # a bad link refused before hashing
                link = await use_secret(
                    EmailLinks(uow.email_tokens, EmailPurpose.RESET),
                    digest_of(self._tokens, token),
                    self._clock.now(),
                    spend=False,
                    refusal=refusal_for(EmailPurpose.RESET),
                )
                owner = await uow.accounts.get(link.account_id)
        except errors.SecretConsumed as consumed:  # by this form sent twice, if by anything
            return await self._sent_twice(token, new_password, consumed)
        related = (owner.username, owner.email or "") if owner else ()
        # Slow: outside the transaction. Refused when weak, before the link is spent.
        new_hash = await self._passwords.new_hash(new_password, related=related)
        try:
            return await retry_on_conflict(lambda: self._reset(token, new_hash, browser))
        except errors.SecretConsumed as consumed:  # raced this form sent twice, if anything
            return await self._sent_twice(token, new_password, consumed)

    async def _reset(
        self,
        token: str,
        new_hash: str,
        browser: BrowserCookies,
    ) -> PasswordReset:
        now = self._clock.now()
        made = session_token_after(self._tokens, token, _SESSION_OF_RESET)
        async with self._uow() as uow:
            # First, before any lock: see ``stop_sign_ins_under_way``.
            await stop_sign_ins_under_way(uow, self._tokens, browser, now)
            # The link proves the mailbox: the address is taken from the other accounts that
            # hold it unconfirmed, each locked before this one (``lock_holders``).
            peek = await uow.email_tokens.get(digest_of(self._tokens, token) or "")
            locked = (
                await lock_holders(uow, peek.email, also=(peek.account_id,))
                if peek is not None
                else frozenset()
            )
            used, account = await consume_email_link(
                uow, self._tokens, token, EmailPurpose.RESET, now
            )
            confirmed = account.email_verified
            if not confirmed:
                # Not when another account confirmed it (left beside it by an upgrade or an
                # older instance): the reset goes on, taking nothing and confirming nothing
                # (an address is one account's once confirmed).
                with contextlib.suppress(errors.EmailTaken):
                    await take_address(
                        uow, used.email, owner=account.id, locked=locked, now=now, proof="reset"
                    )
                    confirmed = True
            # Before the sessions (see ``browser_offers``): a sign-out in a browser with
            # copies of its cookies spends them first, then ends one of the account's.
            await spend_browser_offers(uow, self._tokens, browser, now)
            unlinked = await self._unlink_if_unconfirmed(uow, account, now)
            # Kept (a confirmed address): the person is told, in case it is not theirs.
            kept = None if unlinked else await uow.links.get_by_account(account.id)
            updated = replace(
                account,
                password_hash=new_hash,
                email_verified=confirmed,
                discord_unlinked_at=now if unlinked else account.discord_unlinked_at,
                device_epoch=account.device_epoch + 1,  # and the reset emails still queued
            )
            await uow.accounts.update(updated)
            await uow.email_tokens.consume_all(account.id, EmailPurpose.RESET, now)
            # The account's sessions and the browser's, as one set (see ``lock``).
            await uow.sessions.lock(browser_sessions(self._tokens, browser), account_id=account.id)
            await uow.sessions.remove_for_account(account.id)
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
                uow,
                self._tokens,
                account.id,
                now,
                self._session_ttl,
                method=SignInMethod.PASSWORD,
                secret=made,
            )
            await sign_out_browser(  # marked and spent first, above
                uow, self._tokens, browser, now, keeping=session, offers_spent=True
            )
            await uow.commit()
        # The owner proved the mailbox: the sign-in's failures, and those the sessions without a
        # password shared (all ended; the others had their own).
        for key in (*sign_in_keys(account.id), shared_signed_in_key(account.id)):
            await self._passwords.forgive(key)
        device = new_device_token(self._tokens, updated)  # it proved the mailbox
        return PasswordReset(SignedIn(updated, session, device), unlinked, kept)

    async def _sent_twice(
        self, token: str, new_password: str, consumed: errors.SecretConsumed
    ) -> PasswordReset:
        """For a request that found the link used: when a reset with it started a session in
        the last ``SENT_TWICE_WITHIN`` (this form sent twice) and ``new_password`` is the
        account's password now (checked under the sign-in's throttle: whoever reads the used
        link may be guessing), that session; otherwise the refusal ``consumed``."""
        digest = digest_of(self._tokens, token)
        async with self._uow(read_only=True) as uow:
            used = await uow.email_tokens.get(digest) if digest is not None else None
            if used is None or used.purpose is not EmailPurpose.RESET:
                raise consumed
            made = session_token_after(self._tokens, token, _SESSION_OF_RESET)
            try:
                _, account = await made_just_now(uow, self._tokens, made, self._clock.now())
            except errors.NotSignedIn:
                raise consumed from None
            kept = await uow.links.get_by_account(account.id)
        if (
            account.id != used.account_id
            or account.password_hash is None
            or not await self._passwords.check(
                account_key(account.id), account.password_hash, new_password
            )
        ):
            raise consumed
        device = new_device_token(self._tokens, account)
        return PasswordReset(SignedIn(account, made.token, device), None, kept, sent_twice=True)

    async def _unlink_if_unconfirmed(
        self, uow: UnitOfWork, account: Account, now: datetime
    ) -> Link | None:
        """Until now nobody had proved owning this address: whoever set the account up may
        not be its owner, and a Discord account they linked would keep them in after the
        reset. The owner takes the account back whole; they can link Discord again."""
        if account.email_verified:
            return None
        link = await uow.links.get_by_account(account.id)
        if link is None or not await uow.links.remove(link):
            return None
        await uow.link_tickets.consume_for_discord(link.discord_id, now)  # its /link buttons
        await uow.role_connection_tokens.mark_due(link.discord_id, now)  # Linked Roles
        await uow.audit.record(
            AuditEvent(
                AuditKind.UNLINKED, now, account.id, link.discord_id, {"via": "password_reset"}
            )
        )
        await queue_role_changes(
            uow,
            self._roles,
            RoleAction.REMOVE,
            discord_id=link.discord_id,
            account_id=account.id,
            now=now,
        )
        await self._webhooks.publish(uow, link_deleted(link, now=now, via="password_reset"))
        return link


@dataclass(frozen=True, slots=True)
class PasswordReset:
    signed_in: SignedIn
    unlinked: Link | None  # the Discord link removed because the address was unconfirmed
    # The Discord link left in place (the address was confirmed): it still signs in, so the
    # person is shown it, to unlink it if it is not theirs.
    still_linked: Link | None = None
    # The same form was sent twice (a double click): the other request reset the password,
    # and this one answers that request's session (which its browser may never have got).
    sent_twice: bool = False
