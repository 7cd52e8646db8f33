"""Delivering the email queue. Use cases never send email themselves: they queue it in their
own transaction (see ``_shared.queue_email``), so a slow or broken mail server never blocks or
breaks a request, and an email goes out exactly when its change committed. ``DeliverEmails``
sends the queue, retrying failures, and issues an email's one-time link at the moment it
sends it (the queue holds no secret)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain import errors
from domain.emails import OneTimeLink, compose
from domain.model import (
    Account,
    DeliveryStatus,
    EmailKind,
    EmailToken,
    OutgoingEmail,
    normalize_email,
)
from domain.ports import Clock, EmailSender, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._claims import Claims, Stopping
from domain.use_cases._email_links import LINK_KINDS

# After a failed send, wait this long before each next try; then give up.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# A sender that claimed an email and died lets it go after this long. The lease is renewed
# just before each email of a batch is sent, so it need only outlast one send: the SMTP
# timeout bounds a whole conversation and is at most two minutes, and the lease leaves a
# minute beyond it for the database round trips around the send.
CLAIM_LEASE = timedelta(minutes=3)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: list[OutgoingEmail] = field(default_factory=list)
    retrying: list[OutgoingEmail] = field(default_factory=list)
    failed: list[OutgoingEmail] = field(default_factory=list)  # given up
    cancelled: list[OutgoingEmail] = field(default_factory=list)
    # Sent, but the lease had run out meanwhile and another sender took the email over: this
    # sender's outcome was dropped (that sender's stands).
    taken_over: list[OutgoingEmail] = field(default_factory=list)
    # What failed for no reason the sender names (a bug, a library's surprise), recorded as
    # ``unexpected_error``: each email (as claimed) with its exception, for the worker's log.
    unexpected: list[tuple[OutgoingEmail, Exception]] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return any((self.sent, self.retrying, self.failed, self.cancelled, self.taken_over))


class DeliverEmails:
    """Send what is due in the queue. Safe to run in several processes at once: each pass
    claims a batch that no other sender gets, then sends it one email at a time."""

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

    async def execute(self, limit: int = 20, *, stopping: Stopping | None = None) -> DeliveryReport:
        """``stopping``: the worker's, when its process stops; the pass then sends nothing
        more, and lets go of the rest of its batch (see ``Claims``)."""
        report = DeliveryReport()
        now = self._clock.now()
        async with Claims(self._uow, self._clock, _release, stopping) as claims:
            async with self._uow() as uow:  # one short transaction: no lock outlives it
                claims.took(await uow.outgoing_emails.claim_due(now, now + CLAIM_LEASE, limit))
                await uow.commit()
            for email in claims:
                await self._deliver(email, report, claims)
        return report

    async def _deliver(
        self, email: OutgoingEmail, report: DeliveryReport, claims: Claims[OutgoingEmail]
    ) -> None:
        link: OneTimeLink | None = None
        async with self._uow() as uow:
            # The account first: every transaction locks it before anything else it touches.
            account = await self._account(uow, email)
            now = self._clock.now()
            # The lease runs from here (sending the batch's earlier emails may have taken a
            # while); if it ran out meanwhile, another sender may have the email now.
            claimed = await uow.outgoing_emails.renew_claim(email, now + CLAIM_LEASE)
            if claimed is None:
                return
            ends = await _link_ends(uow, claimed, account, now)
            if account is None or not _still_wanted(claimed, account) or ends is None:
                cancelled = replace(claimed, status=DeliveryStatus.CANCELLED, finished_at=now)
                # Renewed in this transaction: still this sender's.
                await uow.outgoing_emails.save(cancelled, leased_until=claimed.next_attempt_at)
                await uow.commit()
                report.cancelled.append(cancelled)
                return
            if claimed.kind in LINK_KINDS:
                purpose, _ = LINK_KINDS[claimed.kind]
                secret = self._tokens.issue()
                await uow.email_tokens.add(
                    EmailToken(
                        secret.digest,
                        purpose,
                        account.id,
                        claimed.to,
                        now,
                        ends,
                        proposal_digest=claimed.detail.get("proposal"),
                    )
                )
                link = OneTimeLink(secret.token, ends)
            await uow.commit()  # the link works before the email can arrive
            claims.holding(claimed)  # renewed: cut off while it is sent, let go as this
        try:
            message = compose(
                claimed, username=account.username, base_url=self._base_url, link=link
            )
            await self._sender.send(message)
        except errors.EmailNotSent as exc:
            final = isinstance(exc, errors.EmailRefused)
            await self._failed(claimed, exc.code, report, final=final)
            return
        except Exception as exc:
            report.unexpected.append((claimed, exc))
            await self._failed(claimed, "unexpected_error", report)
            return
        sent = replace(
            claimed, status=DeliveryStatus.SENT, attempts=claimed.attempts + 1, finished_at=now
        )
        await self._write_back(claimed, sent, report.sent, report)

    @staticmethod
    async def _account(uow: UnitOfWork, email: OutgoingEmail) -> Account | None:
        """The account as it is now. Locked for a link: a change that ends its links (a new
        address or password, "sign out everywhere") then either commits first, and the email
        is cancelled, or waits for this token, and ends it with the others."""
        if email.account_id is None:
            return None
        if email.kind in LINK_KINDS:
            return await uow.accounts.lock(email.account_id)
        return await uow.accounts.get(email.account_id)

    async def _failed(
        self, email: OutgoingEmail, error: str, report: DeliveryReport, *, final: bool = False
    ) -> None:
        """A failed send, tried again later; given up after ``MAX_ATTEMPTS``, or at once when
        it is ``final`` (the server refused the recipient for good: each try would issue
        another link, and ask the server again to deliver to a mailbox it does not have)."""
        # The link's token stays: the server may have taken the message before failing, and
        # an undelivered token is only a digest that expires.
        now = self._clock.now()
        attempts = email.attempts + 1
        if final or attempts >= MAX_ATTEMPTS:
            after = replace(
                email,
                status=DeliveryStatus.FAILED,
                attempts=attempts,
                finished_at=now,
                last_error=error,
            )
            listed = report.failed
        else:
            after = replace(
                email,
                attempts=attempts,
                next_attempt_at=now + RETRY_DELAYS[attempts - 1],
                last_error=error,
            )
            listed = report.retrying
        await self._write_back(email, after, listed, report)

    async def _write_back(
        self,
        claimed: OutgoingEmail,
        after: OutgoingEmail,
        listed: list[OutgoingEmail],
        report: DeliveryReport,
    ) -> None:
        """``after`` written back and reported in ``listed``, while the lease is still this
        sender's: a sender stalled past it (a paused process, clocks apart) must not undo
        what the one that took the email over did (a stale retry would send it once more)."""
        async with self._uow() as uow:
            kept = await uow.outgoing_emails.save(after, leased_until=claimed.next_attempt_at)
            await uow.commit()
        (listed if kept else report.taken_over).append(after)


async def _release(uow: UnitOfWork, email: OutgoingEmail, now: datetime) -> bool:
    return await uow.outgoing_emails.release(email, now)


class RequeueFailedEmails:
    """Send again what was given up (after the mail server was fixed, say): every failed
    email, or one by its id. Each goes back in the queue with a fresh round of attempts, and
    is checked again when it is sent (an outdated one is cancelled then, as any other)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, email_id: uuid.UUID | None = None) -> int:
        """How many emails were requeued; ``NotFound`` when ``email_id`` names no given-up
        email."""
        async with self._uow() as uow:
            requeued = await uow.outgoing_emails.requeue_failed(self._clock.now(), email_id)
            if email_id is not None and requeued == 0:
                raise errors.NotFound("No email with this id was given up.")
            await uow.commit()
        return requeued


async def _link_ends(
    uow: UnitOfWork, email: OutgoingEmail, account: Account | None, now: datetime
) -> datetime | None:
    """When the link an email carries (if any) stops working; ``None``: it would not work
    (the email is not wanted). The link that confirms a Discord link by email works with the
    Discord sign-in waiting for it (its proposal), so it ends when that does, not 30 minutes
    after a send that may come late (asked for 20 minutes after the sign-in, or retried); and
    once that sign-in was confirmed with the password, or ended, no such email goes out. Nor
    once the account was linked since it was asked for (a later sign-in of that Discord
    account confirmed, say), linked or unlinked: after an unlink, its link would link that
    Discord account again on its next sign-in, with no proof asked."""
    if email.kind not in LINK_KINDS:
        return now
    _, ttl = LINK_KINDS[email.kind]
    if email.kind is not EmailKind.CONFIRM_DISCORD_LINK:
        return now + ttl
    digest = email.detail.get("proposal")
    proposal = await uow.link_proposals.get(digest) if digest else None
    if proposal is None or proposal.consumed_at is not None or now >= proposal.expires_at:
        return None
    if account is not None and (
        await uow.links.get_by_account(account.id) is not None
        or (
            account.discord_unlinked_at is not None
            and account.discord_unlinked_at >= email.created_at
        )
    ):
        return None
    return min(now + ttl, proposal.expires_at)


def _still_wanted(email: OutgoingEmail, account: Account) -> bool:
    """Links go only to the account's current address; a confirmed one needs no confirming; a
    reset link asked for before a new password or "sign out everywhere" (the device epoch
    moved on) is not sent: those end the links already sent, and this one would come after
    them with a fresh token. One queued by a version that did not record the epoch counts as
    asked at epoch 0: it goes only if the account's epoch never moved (a retry or ``email
    retry`` hours later must not outlive a new password either)."""
    current = normalize_email(account.email)
    if email.kind is EmailKind.VERIFY_EMAIL:
        return current == normalize_email(email.to) and not account.email_verified
    if email.kind is EmailKind.RESET_PASSWORD:
        epoch = email.detail.get("device_epoch", "0")
        return current == normalize_email(email.to) and epoch == str(account.device_epoch)
    if email.kind is EmailKind.CONFIRM_DISCORD_LINK:
        return current == normalize_email(email.to)
    return True  # notices go where they were addressed (an old address, for EMAIL_CHANGED)
